"""Object metadata and the resource base shared by every ``projectcalico.org/v3`` kind.

This module is the shape of a resource, not its validation rules (those live with each kind)
and not its storage (``pycalico.datastore``).  Invariants:

* Every resource is immutable (frozen); change one with ``model_copy(update=...)``.
* Field names are Python snake_case; the wire names (JSON/YAML, etcd values) are Calico's
  camelCase, produced by ``to_camel`` aliases.  Both spellings are accepted on input.
* ``metadata.resource_version`` is never authoritative inside a stored value: the datastore sets
  it from the etcd mod revision on every read.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from pycalico.model.fields import GO_DECODED

API_VERSION = "projectcalico.org/v3"


class CalicoModel(BaseModel):
    """Base of every wire object: camelCase aliases, unknown fields refused, immutable."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )


class ObjectMeta(CalicoModel):
    name: str = ""
    namespace: str | None = None
    generate_name: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    uid: str | None = None
    creation_timestamp: Annotated[str, GO_DECODED] | None = None
    resource_version: str | None = None
    generation: int | None = None
    deletion_timestamp: Annotated[str, GO_DECODED] | None = None
    finalizers: list[str] | None = None
    owner_references: list[dict[str, Any]] | None = None
    managed_fields: list[dict[str, Any]] | None = None


class Resource(CalicoModel):
    """A v3 resource. Subclasses set ``KIND``/``PLURAL``/``NAMESPACED`` and narrow ``spec``."""

    KIND: ClassVar[str] = ""
    PLURAL: ClassVar[str] = ""
    NAMESPACED: ClassVar[bool] = False

    api_version: str = Field(default=API_VERSION)
    kind: str = ""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str | None:
        return self.metadata.namespace

    @property
    def resource_version(self) -> str | None:
        return self.metadata.resource_version

    def with_metadata(self, **changes: Any) -> Resource:
        """A copy with some metadata fields replaced (by Python field name)."""
        return self.model_copy(update={"metadata": self.metadata.model_copy(update=changes)})

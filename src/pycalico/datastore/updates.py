"""Typed datastore updates: the one place raw ``(key, bytes)`` becomes ``ResourceUpdate``.

What it is: the key types (``ResourceKey`` for v3 resources, ``paths.AffinityKey`` for a
node's block affinities), the value of an affinity (``BlockAffinity``), and ``decode_update``,
which turns one raw syncer update into a ``ResourceUpdate(key, resource, revision)``.
``ResourceSyncer`` (``datastore.resource_syncer``) applies it to every raw update; Felix's
calculation graph and confd consume the result and never see etcd paths or bytes.  What it is
not: I/O (PURE: no asyncio, no etcd) nor a cache.

Invariants:

* A stored value that does not decode (or validate) is logged here, once, and delivered as
  ``resource=None`` — a delete, as Calico's syncer validation filter does — so no consumer
  ever holds an object the model rejects and a stale valid version is forgotten.
* ``resource.metadata.resourceVersion`` is the update's revision.
* Keys that are neither a v3 resource of a kind the model knows nor a block affinity give
  ``None`` (not an update anybody consumes).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import NamedTuple

from pycalico.datastore import paths
from pycalico.datastore.paths import AffinityKey
from pycalico.model.codec import decode_versioned_value
from pycalico.model.kinds import KINDS, KindInfo
from pycalico.model.meta import Resource
from pycalico.model.validation import ValidationFailure

log = logging.getLogger(__name__)

_BY_PLURAL: dict[str, KindInfo] = {info.plural: info for info in KINDS.values()}


class ResourceKey(NamedTuple):
    """A v3 resource's identity: ``kind`` is the Kind (``"WorkloadEndpoint"``).

    A named tuple, not a dataclass: the calculation graph hashes and compares keys in its inner
    loops, and a tuple does both in C (a dataclass's ``__eq__`` is Python code).
    """

    kind: str
    name: str
    namespace: str | None = None

    @classmethod
    def of(cls, resource: Resource) -> ResourceKey:
        meta = resource.metadata
        return cls(resource.kind or type(resource).KIND, meta.name, meta.namespace)

    @property
    def info(self) -> KindInfo:
        return KINDS[self.kind]

    @property
    def path(self) -> str:
        """The etcd key this resource is stored under."""
        return paths.resource_key(self.info, self.name, self.namespace)

    def __str__(self) -> str:
        scope = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind}({scope}{self.name})"


@dataclass(frozen=True, slots=True)
class BlockAffinity:
    """The value of a block affinity key: ``state`` is ``confirmed``, ``pending``,
    ``pendingDeletion`` or ``""`` (the legacy empty value)."""

    state: str


UpdateKey = ResourceKey | AffinityKey


@dataclass(frozen=True, slots=True)
class ResourceUpdate:
    key: UpdateKey
    resource: Resource | BlockAffinity | None  # None: deleted (or unreadable, see module doc)
    revision: int


def parse_key(key: str) -> UpdateKey | None:
    """The typed key of an etcd key; None for keys no consumer of the stream reads."""
    if key.startswith(paths.RESOURCE_ROOT):
        try:
            plural, namespace, name = paths.parse_resource_key(key)
        except paths.InvalidKey:
            return None
        info = _BY_PLURAL.get(plural)
        return None if info is None else ResourceKey(info.kind, name, namespace)
    if key.startswith(paths.IPAM_ROOT):
        try:
            return paths.parse_affinity_key(key)
        except (paths.InvalidKey, ValueError):
            return None
    return None


def affinity_value(value: bytes) -> BlockAffinity | None:
    """An affinity's stored value; None when it is marked deleted (as good as gone)."""
    if not value.strip():
        return BlockAffinity("")
    try:
        data = json.loads(value)
    except ValueError:
        return BlockAffinity("")
    if not isinstance(data, dict):
        return BlockAffinity("")
    if data.get("deleted"):
        return None
    state = data.get("state", "")
    return BlockAffinity(state if isinstance(state, str) else "")


def decode_update(key: str, value: bytes | None, revision: int) -> ResourceUpdate | None:
    """One raw syncer update (``value`` None: deleted) as a typed update, or None (module doc)."""
    typed = parse_key(key)
    if typed is None:
        return None
    if value is None:
        return ResourceUpdate(typed, None, revision)
    if isinstance(typed, AffinityKey):
        return ResourceUpdate(typed, affinity_value(value), revision)
    try:
        resource = decode_versioned_value(value, revision, kind=typed.info)
    except ValidationFailure as error:
        log.warning("Treating %s as deleted: its stored value does not decode: %s", key, error)
        return ResourceUpdate(typed, None, revision)
    return ResourceUpdate(typed, resource, revision)

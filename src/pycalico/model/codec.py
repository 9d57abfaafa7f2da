"""The v3 codec: YAML/JSON manifests in and out, and the etcd value form.

What it is: the one place that turns user text or stored bytes into validated, defaulted
resources and back.  ``decode_resource`` is the *untrusted* path (shape checks, Calico's write
defaults, every semantic rule); ``decode_value`` is the *trusted* path for values the datastore
stored itself (shape only: no defaults, no cross-field rules), because Felix and the CLI read
thousands of them.  What it is not: storage (``pycalico.datastore``) or the CLI's table output.

Invariants:

* ``decode_resource(encode_resource(r)) == r`` for every valid, defaulted resource ``r``.
* ``encode_resource`` prints what Calico prints: wire names, no null/empty/false-by-default noise,
  metadata.resourceVersion only if known; ``encode_value`` additionally never stores
  resourceVersion (the etcd mod revision is the truth).
* ``decode_versioned_value(raw, v, kind=k) == decode_value(raw, kind=k).with_metadata(
  resource_version=str(v))``, and ``decode_versioned_values`` is that for each value; the
  batch decoders raise the ``ValidationFailure`` ``decode_value`` raises for the first bad value.
* ``load_documents`` reports every problem of every document in one ``ValidationFailure``.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from pycalico.model.ipam import immutable_field_changes, pool_overlaps
from pycalico.model.kinds import KINDS, KindInfo, lookup_kind
from pycalico.model.manifest import GoYAMLDumper, conform, parse_manifest
from pycalico.model.meta import API_VERSION, Resource
from pycalico.model.validation import (
    CheckedResource,
    Issue,
    Problem,
    ValidationFailure,
    issues_from_pydantic,
)

__all__ = [
    "Problem",
    "ValidationFailure",
    "apply_defaults",
    "decode_resource",
    "decode_value",
    "decode_values",
    "decode_versioned_value",
    "decode_versioned_values",
    "document_label",
    "dump_json",
    "dump_yaml",
    "encode_resource",
    "encode_value",
    "immutable_field_changes",
    "load_documents",
    "pool_overlaps",
    "validate_resource",
]

# --- defaults and validation ------------------------------------------------------------------


def apply_defaults(resource: Resource, *, namespace: str = "default") -> Resource:
    """``resource`` with the defaults Calico fills in on write (idempotent)."""
    if isinstance(resource, CheckedResource):
        return resource.with_defaults(namespace=namespace)
    return resource


def validate_resource(resource: Resource) -> list[Issue]:
    """Every semantic problem with ``resource`` as ``(field path, message)``; empty if valid."""
    if isinstance(resource, CheckedResource):
        return list(resource.issues())
    return []


def document_label(document: str, data: Mapping[str, Any] | Resource | None) -> str:
    """``"file.yaml document 3 (IPPool 'pool-a')"``: where a problem is, for a person."""
    kind: object
    name: object
    namespace: object
    if isinstance(data, Resource):
        kind, name, namespace = data.kind, data.name, data.namespace
    elif isinstance(data, Mapping):
        raw_metadata = data.get("metadata")
        metadata: Mapping[str, Any] = raw_metadata if isinstance(raw_metadata, Mapping) else {}
        kind, name, namespace = data.get("kind"), metadata.get("name"), metadata.get("namespace")
    else:
        return document
    if not isinstance(kind, str) or not kind:
        return document
    if isinstance(name, str) and name:
        shown = f"{namespace}/{name}" if isinstance(namespace, str) and namespace else name
        return f"{document} ({kind} {shown!r})"
    return f"{document} ({kind})"


def decode_resource(
    data: Mapping[str, Any], *, document: str = "input", default_namespace: str = "default"
) -> Resource:
    """A validated, defaulted resource from one manifest object; raises ``ValidationFailure``."""
    resource, problems = _decode(data, document, default_namespace)
    if problems or resource is None:
        raise ValidationFailure(problems)
    return resource


def _decode(
    data: object, document: str, default_namespace: str, *, as_calicoctl: bool = False
) -> tuple[Resource | None, list[Problem]]:
    """One object to a resource.  ``as_calicoctl``: the object came from manifest text, so it is
    first conformed to the kind the way calicoctl's YAML decoding does (``manifest.conform``)."""
    if not isinstance(data, Mapping):
        got = type(data).__name__
        return None, [Problem(document, "", f"expected a resource (a mapping), got a {got}")]
    label = document_label(document, data)
    problems: list[Problem] = []
    api_version = data.get("apiVersion")
    if api_version is None:
        problems.append(Problem(label, "apiVersion", f"is required: use {API_VERSION}"))
    elif api_version != API_VERSION:
        problems.append(
            Problem(label, "apiVersion", f"{api_version!r} is not supported: use {API_VERSION}")
        )
    kind = data.get("kind")
    info = KINDS.get(kind) if isinstance(kind, str) else None
    if kind is None:
        problems.append(Problem(label, "kind", "is required"))
    elif info is None:
        problems.append(
            Problem(
                label,
                "kind",
                f"unknown kind {kind!r}: valid kinds are {', '.join(sorted(KINDS))}",
            )
        )
    if info is None:
        return None, problems
    undecodable = False
    if as_calicoctl:
        data, found = conform(data, info.model)
        problems.extend(Problem(label, f, m) for f, m in found)
        undecodable = bool(found)
    try:
        resource = info.model.model_validate(data)
    except ValidationError as error:
        problems.extend(Problem(label, f, m) for f, m in issues_from_pydantic(error))
        return None, problems
    if undecodable:
        # Go would not have decoded the document at all: rules on the values pydantic let
        # through (``blockSize: yes`` as 1) would only add misleading problems.
        return None, problems
    resource = resource.with_defaults(namespace=default_namespace)
    label = document_label(document, resource)
    problems.extend(Problem(label, f, m) for f, m in resource.issues())
    if problems:
        return None, problems
    # Re-read our own wire form, so that what the user spelled differently from Calico's output
    # (``labels: {}``, ``ingress: []``) is already what a later read of the stored value gives.
    return info.model.model_validate(encode_resource(resource)), problems


# --- encoding ---------------------------------------------------------------------------------


def _wire_value(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _wire(value)
    if isinstance(value, list | tuple):
        return [_wire_value(item) for item in value]
    if isinstance(value, dict):
        # Map entries are user data (labels, annotations): kept as they are, empty values too.
        return {key: _wire_value(item) for key, item in value.items()}
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)  # Go prints a whole float64 without a fraction
    return value


def _wire(model: BaseModel) -> dict[str, Any]:
    """A model's wire form, dropping what Go's ``omitempty`` drops: unset fields, fields at their
    zero default (``natOutgoing: false``), and empty strings, lists and objects.  Fields listed
    in ``ALWAYS_EMIT`` are printed even when empty (Calico's fields without omitempty)."""
    always: frozenset[str] = getattr(model, "ALWAYS_EMIT", frozenset())
    out: dict[str, Any] = {}
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if value is None:
            continue
        wire = _wire_value(value)
        if name not in always:
            if wire == "" or wire == [] or wire == {}:
                continue
            if not info.is_required() and info.default is not None and value == info.default:
                continue
        out[info.alias or name] = wire
    for key, value in (model.model_extra or {}).items():
        out[key] = _wire_value(value)
    return out


def encode_resource(resource: Resource) -> dict[str, Any]:
    """The wire form of ``resource`` (what ``calicoctl get -o yaml`` prints)."""
    out: dict[str, Any] = {
        "apiVersion": resource.api_version or API_VERSION,
        "kind": resource.kind or type(resource).KIND,
        "metadata": _wire(resource.metadata),
    }
    spec = getattr(resource, "spec", None)
    if isinstance(spec, BaseModel):
        out["spec"] = _wire(spec)
    status = getattr(resource, "status", None)
    if status:
        wire_status = _wire_value(status)
        if wire_status:
            out["status"] = wire_status
    return out


def _wrap(resources: Sequence[Resource], list_kind: str) -> dict[str, Any]:
    if len(resources) == 1:
        return encode_resource(resources[0])
    return {
        "apiVersion": API_VERSION,
        "kind": list_kind,
        "items": [encode_resource(resource) for resource in resources],
    }


def dump_yaml(resources: Sequence[Resource], *, list_kind: str = "List") -> str:
    """YAML as calicoctl prints it: keys sorted, one object as itself, several in a List."""
    return yaml.dump(
        _wrap(resources, list_kind), Dumper=GoYAMLDumper, sort_keys=True, default_flow_style=False
    )


def dump_json(resources: Sequence[Resource], *, list_kind: str = "List") -> str:
    """JSON (two-space indent): one object as itself, several in a List."""
    return json.dumps(_wrap(resources, list_kind), indent=2) + "\n"


# --- etcd values (the trusted path) -----------------------------------------------------------


def encode_value(resource: Resource) -> bytes:
    """The etcd value: compact JSON of the whole v3 object, without resourceVersion."""
    wire = encode_resource(resource)
    wire["metadata"].pop("resourceVersion", None)
    return json.dumps(wire, separators=(",", ":")).encode()


def _model_for(kind: str | KindInfo | type[Resource]) -> type[Resource]:
    if isinstance(kind, KindInfo):
        return kind.model
    if isinstance(kind, str):
        return KINDS[kind].model if kind in KINDS else lookup_kind(kind).model
    return kind


def decode_value(raw: bytes | str, *, kind: str | KindInfo | type[Resource]) -> Resource:
    """A resource from a stored value, trusting that it was validated when written.

    Only the shape is checked (in pydantic's compiled core); defaults and semantic rules are not
    re-run.  Raises ``ValidationFailure`` naming the bad field if the value does not fit.
    """
    model = _model_for(kind)
    try:
        resource = model.model_validate_json(raw)
    except ValidationError as error:
        raise ValidationFailure(
            [Problem(f"stored {model.KIND} value", f, m) for f, m in issues_from_pydantic(error)]
        ) from error
    if resource.kind != model.KIND:
        raise ValidationFailure(
            [Problem(f"stored {model.KIND} value", "kind", f"is {resource.kind!r}")]
        )
    return resource


def _set_resource_version(resource: Resource, version: str) -> Resource:
    """``resource`` with ``metadata.resourceVersion`` set *in place*: only for a resource this
    module has just decoded and nobody else holds yet.

    Equal to ``resource.with_metadata(resource_version=version)`` (the same field values and
    fields set) at a twentieth of the cost: ``with_metadata`` copies two models, which for a
    range read of 10,000 objects is most of the decoding time again.
    """
    metadata = resource.metadata
    metadata.__dict__["resource_version"] = version
    metadata.__pydantic_fields_set__.add("resource_version")
    return resource


def decode_versioned_value(
    raw: bytes | str, version: int, *, kind: str | KindInfo | type[Resource]
) -> Resource:
    """``decode_value`` with ``metadata.resourceVersion`` set to ``version`` (the etcd mod
    revision the datastore read the value at), replacing any the value holds."""
    return _set_resource_version(decode_value(raw, kind=kind), str(version))


def decode_values(
    raws: Iterable[bytes | str], *, kind: str | KindInfo | type[Resource]
) -> list[Resource]:
    """``decode_value`` for a whole range read, with the cyclic garbage collector paused.

    Decoding thousands of values allocates tens of thousands of objects, none of them cyclic
    garbage; left running, the collector rescans the growing heap over and over and more than
    doubles the cost (see ``bench.model_codec``).  The collector is restored even on error, and
    a batch of ``PROMOTE_AT`` or more resources is handed to its oldest generation
    (``_promote_young_objects``).
    """
    return _decode_many(raws, None, _model_for(kind))


def decode_versioned_values(
    raws: Sequence[bytes | str],
    versions: Sequence[int],
    *,
    kind: str | KindInfo | type[Resource],
) -> list[Resource]:
    """``decode_versioned_value`` for a whole range read (``versions[i]`` goes with
    ``raws[i]``), with the collector paused as in ``decode_values``.  Raises the
    ``ValidationFailure`` of the first value that does not fit."""
    if len(raws) != len(versions):
        raise ValueError(f"{len(raws)} values but {len(versions)} versions")
    return _decode_many(raws, versions, _model_for(kind))


def _decode_many(
    raws: Iterable[bytes | str], versions: Sequence[int] | None, model: type[Resource]
) -> list[Resource]:
    # Each value goes straight to the model's compiled validator; the Python wrapping of
    # ``decode_value`` (and ``model_validate_json``) is a fifth of the time at this volume.  A
    # value that does not fit is decoded again through ``decode_value`` for its error.  One
    # pydantic-core call for a whole JSON array of values was measured too: it is slower (it
    # parses the whole array before building a single model).
    validate = model.__pydantic_validator__.validate_json
    expected = model.KIND
    resources: list[Resource] = []
    append = resources.append
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        for index, raw in enumerate(raws):
            try:
                resource: Resource = validate(raw)
            except ValidationError:
                resource = decode_value(raw, kind=model)  # raises, naming the field
            if resource.kind != expected:
                resource = decode_value(raw, kind=model)  # raises, naming the kind
            if versions is not None:
                # While the new object is still in the processor's cache (a second pass over
                # the batch costs a sixth of the decoding time again).
                _set_resource_version(resource, str(versions[index]))
            append(resource)
        if paused and len(resources) >= PROMOTE_AT:
            _promote_young_objects()
        return resources
    finally:
        if paused:
            gc.enable()


PROMOTE_AT = 1000
"""From this many resources, a batch is moved straight to the collector's oldest generation."""


def _promote_young_objects() -> None:
    """Move every object the collector tracks as young into its oldest generation.

    A decoded batch is about 14 tracked objects per resource, none of them cyclic garbage, and
    long-lived by nature (a cache, a listing).  Left young, the first collection after the
    pause walks all of them (50 ms for 10,000 WorkloadEndpoints, half again the decoding
    time), then the middle generation walks them again.  ``gc.freeze()`` followed by
    ``gc.unfreeze()`` puts them (and the few hundred other young objects of the moment) where
    they would end up anyway, for the cost of two list splices; they are still walked by full
    collections, and cyclic garbage among them is still found there.  An application that froze
    objects itself (to share memory across ``fork``) is left alone: unfreezing would undo that.
    """
    if gc.get_freeze_count() == 0:
        gc.freeze()
        gc.unfreeze()


# --- manifests --------------------------------------------------------------------------------


def _list_kind(kind: object) -> str | None:
    """For ``List`` and ``<Kind>List`` the item kind ("" for a plain List), else None."""
    if kind == "List":
        return ""
    if isinstance(kind, str) and kind.endswith("List") and kind[: -len("List")] in KINDS:
        return kind[: -len("List")]
    return None


def load_documents(
    text: str, source: str = "-", *, default_namespace: str = "default"
) -> list[Resource]:
    """Every resource in a YAML or JSON text (multi-document, Lists expanded, empty docs
    skipped), validated and defaulted; raises one ``ValidationFailure`` with every problem."""
    name = "stdin" if source == "-" else source
    documents = parse_manifest(text, name)
    resources: list[Resource] = []
    problems: list[Problem] = []
    for index, document in enumerate(documents, start=1):
        if document is None or document == {}:
            continue
        label = f"{name} document {index}"
        item_kind = _list_kind(document.get("kind")) if isinstance(document, Mapping) else None
        if item_kind is None:
            entries: Iterable[tuple[str, Any]] = [(label, document)]
        else:
            assert isinstance(document, Mapping)
            items = document.get("items") or []
            if not isinstance(items, list):
                problems.append(Problem(label, "items", "must be a list of resources"))
                continue
            entries = [
                (f"{label} item {position}", _fill_item(item, item_kind, document))
                for position, item in enumerate(items, start=1)
            ]
        for entry_label, entry in entries:
            resource, found = _decode(entry, entry_label, default_namespace, as_calicoctl=True)
            problems.extend(found)
            if resource is not None:
                resources.append(resource)
    if problems:
        raise ValidationFailure(problems)
    return resources


def _fill_item(item: Any, kind: str, wrapper: Mapping[str, Any]) -> Any:
    """Items of a typed list may leave out their kind and apiVersion (the list says them)."""
    if not isinstance(item, Mapping):
        return item
    filled = dict(item)
    if kind and "kind" not in filled:
        filled["kind"] = kind
    if "apiVersion" not in filled and "apiVersion" in wrapper:
        filled["apiVersion"] = wrapper["apiVersion"]
    return filled

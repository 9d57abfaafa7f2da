"""Applying a ``calicoctl patch`` to a resource's wire form: parse the patch, apply it, check it.

Pure: JSON-like values in, JSON-like values out; no datastore, no printing.  The caller
(``pycalico.ctl.patch``) reads the stored resource, encodes it with ``encode_resource``, hands
the document here, and validates and writes what comes back.

The three ``--type`` values:

* ``strategic`` (calicoctl's default).  Calico runs Kubernetes' strategic merge patch against
  its v3 Go types, whose spec fields carry no ``patchStrategy``/``patchMergeKey`` tags (their
  lists are ``listType=atomic``/``set``): objects are merged key by key, ``null`` removes a key,
  lists are replaced whole.  That is exactly a JSON merge patch, which is what is applied here.
  Strategic-merge directives (``$patch``, ``$retainKeys``, ``$setElementOrder/...``) have no
  use on those types and are refused rather than stored as field names.
* ``merge``: a JSON merge patch, RFC 7386 (RFC 7396).
* ``json``: a JSON patch, RFC 6902, through the ``jsonpatch`` library, one operation at a time
  so a failure names the operation.

Not here: validating the result against the model (``pycalico.model.codec``) or the
compare-and-swap write.

Invariants: the input document is never modified; every refusal is a ``PatchError`` whose text
names the problem (the operation, the path, or the field).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jsonpatch
import yaml

STRATEGIC = "strategic"
MERGE = "merge"
JSON = "json"
PATCH_TYPES = (STRATEGIC, JSON, MERGE)
DEFAULT_PATCH_TYPE = STRATEGIC

# What a patch may not change: the resource's identity.  A different name or namespace would
# write another object (or none), and a different kind or apiVersion is no longer this resource.
IDENTITY_FIELDS = (
    ("apiVersion",),
    ("kind",),
    ("metadata", "name"),
    ("metadata", "namespace"),
)

_DESCRIPTIONS = {
    STRATEGIC: "strategic merge patch",
    MERGE: "JSON merge patch",
    JSON: "JSON patch",
}


class PatchError(ValueError):
    """The patch cannot be parsed or applied; the text says why."""


class _Loader(yaml.SafeLoader):
    """YAML as manifests are read: timestamps stay strings, as JSON has no date type."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def describe(patch_type: str) -> str:
    """``"JSON merge patch"``: the patch type as messages name it."""
    return _DESCRIPTIONS[patch_type]


def parse_patch(text: str, patch_type: str) -> Any:
    """The patch as a JSON value: a JSON text, else YAML (a superset Calico users also type).

    A merge patch must be an object and a JSON patch a list of operations.
    """
    if patch_type not in PATCH_TYPES:
        raise PatchError(f"--type must be one of {', '.join(PATCH_TYPES)}, not {patch_type!r}")
    if not text.strip():
        raise PatchError("the patch is empty")
    try:
        value = json.loads(text)
    except json.JSONDecodeError as json_error:
        if text.lstrip()[:1] in ("{", "["):  # meant as JSON: YAML's view of it would confuse
            raise PatchError(f"cannot parse the patch as JSON: {json_error}") from json_error
        try:
            value = yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
        except yaml.YAMLError as yaml_error:
            raise PatchError(
                f"cannot parse the patch as JSON or YAML: {_one_line(str(yaml_error))}"
            ) from yaml_error
    if patch_type == JSON:
        if not isinstance(value, list):
            raise PatchError(
                f"a JSON patch must be a list of operations, got {_json_type(value)}: "
                'e.g. [{"op": "replace", "path": "/spec/field", "value": 1}]'
            )
        return value
    if not isinstance(value, dict):
        raise PatchError(
            f"a {describe(patch_type)} must be an object, got {_json_type(value)}: "
            'e.g. {"spec": {"field": 1}}'
        )
    if patch_type == STRATEGIC:
        directive = _first_directive(value, "")
        if directive is not None:
            raise PatchError(
                f"strategic merge directive {directive} is not supported: Calico resources "
                "have no merge keys (their lists are replaced whole); use --type json to "
                "change part of a list"
            )
    return value


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, ``null`` removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Any, operations: Sequence[Any]) -> Any:
    """RFC 6902, all or nothing: a failing operation raises and ``target`` is left as it was."""
    document = copy.deepcopy(target)
    for index, operation in enumerate(operations, start=1):
        label = _operation_label(index, operation)
        try:
            document = jsonpatch.JsonPatch([operation]).apply(document, in_place=True)
        except jsonpatch.JsonPatchTestFailed as error:
            raise PatchError(f"{label}: test failed: {error}") from error
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
            raise PatchError(f"{label}: {_pointer_message(str(error))}") from error
        except (TypeError, KeyError, IndexError, ValueError) as error:
            raise PatchError(f"{label}: {error}") from error
    return document


def apply_patch(document: Mapping[str, Any], patch: Any, patch_type: str) -> dict[str, Any]:
    """``document`` patched (a new object), or ``PatchError``."""
    if patch_type == JSON:
        patched = json_patch(dict(document), patch)
    else:
        patched = merge_patch(dict(document), patch)
    if not isinstance(patched, dict):
        raise PatchError(
            f"the {describe(patch_type)} turns the resource into {_json_type(patched)}"
        )
    return patched


def identity_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """``"metadata.name: cannot be changed by a patch ('a' -> 'b')"`` for each identity field
    the patch changed."""
    problems = []
    for path in IDENTITY_FIELDS:
        old, new = _lookup(before, path), _lookup(after, path)
        if old != new:
            problems.append(
                f"{'.'.join(path)}: cannot be changed by a patch ({old!r} -> {new!r})"
                if new is not None
                else f"{'.'.join(path)}: cannot be removed by a patch (it is {old!r})"
            )
    return problems


# --- helpers ------------------------------------------------------------------------------------


def _lookup(document: Mapping[str, Any], path: Sequence[str]) -> Any:
    value: Any = document
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _first_directive(value: Any, path: str) -> str | None:
    """The first ``$``-key (a strategic merge directive) in a patch, as ``'$patch' at spec``."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and key.startswith("$"):
                return f"{key!r} at {path or 'the top level'}"
            found = _first_directive(item, f"{path}.{key}" if path else str(key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _first_directive(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def _operation_label(index: int, operation: Any) -> str:
    if isinstance(operation, Mapping):
        op, path = operation.get("op"), operation.get("path")
        if isinstance(op, str) and isinstance(path, str):
            return f"JSON patch operation {index} ({op} {path})"
    return f"JSON patch operation {index}"


# jsonpointer says "member 'x' not found in {<the whole document>}": keep the first part only.
_NOT_FOUND_IN = re.compile(r"^(member .+? not found) in .*$", re.DOTALL)


def _pointer_message(text: str) -> str:
    match = _NOT_FOUND_IN.match(text)
    return match.group(1) if match else text


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


__all__ = [
    "DEFAULT_PATCH_TYPE",
    "JSON",
    "MERGE",
    "PATCH_TYPES",
    "STRATEGIC",
    "PatchError",
    "apply_patch",
    "describe",
    "identity_changes",
    "json_patch",
    "merge_patch",
    "parse_patch",
]

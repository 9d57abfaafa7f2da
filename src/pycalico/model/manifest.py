"""Manifest text read the way Calico's calicoctl reads it: go-yaml v2 scalars, then Go's JSON rules.

What it is: the step between a user's YAML/JSON text and the model.  calicoctl parses a document
with go-yaml v2 (strict: a repeated mapping key is an error), converts the result to JSON guided
by the Go type it decodes into (a number or boolean bound for a Go ``string`` becomes a string),
then decodes that JSON with ``encoding/json`` (field names match case-insensitively, unknown fields
are refused).  This module reproduces those three behaviours on Python values:

* ``parse_manifest`` resolves every plain scalar as go-yaml v2 does, not as PyYAML's YAML 1.1
  does: no base-60 numbers (``5663:12`` stays a string), ``y``/``n`` are booleans, ``017`` and
  ``0o17`` are octal, ``1e3`` is a float, timestamps stay strings.  It refuses a mapping (YAML or
  JSON) that repeats a key.
* ``conform`` walks one document against a model class: a key matching a field only
  case-insensitively is renamed to the field's wire name (exact matches win, as in Go), a key
  matching no field of a closed model is reported as an unknown field, and an int, float or bool
  whose target is a string type becomes the string Go's converter makes (``1`` -> ``"1"``,
  ``1.10`` -> ``"1.1"`` via float32 formatting, ``true`` -> ``"true"``).

What it is not: validation (the model does that) or the trusted etcd path (stored values are
canonical JSON and never pass through here).

Invariants: ``conform`` never changes a value whose type already fits, and never mutates its
input; its issues use wire names and Calico's dotted paths.  A
target is a "string" exactly when its Go type is a string kind without its own JSON decoder:
``str``, a ``Literal`` of strings, or an ``Annotated`` ``str`` not marked ``GO_DECODED``.
"""

from __future__ import annotations

import json
import math
import re
import struct
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Final, Literal, Union

import yaml
from pydantic import BaseModel, BeforeValidator, PlainValidator, WrapValidator

from pycalico.model.fields import GO_DECODED
from pycalico.model.validation import Issue, Problem, ValidationFailure

# --- go-yaml v2 scalar resolution -------------------------------------------------------------

_BOOLS = {
    **dict.fromkeys(("y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE"), True),
    **dict.fromkeys(("on", "On", "ON"), True),
    **dict.fromkeys(("n", "N", "no", "No", "NO", "false", "False", "FALSE"), False),
    **dict.fromkeys(("off", "Off", "OFF"), False),
}
_NULLS = frozenset(("", "~", "null", "Null", "NULL"))
_SPECIAL_FLOATS = {
    **dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), math.inf),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -math.inf),
}
_GO_INT = re.compile(
    r"([-+]?)(?:0[xX]([0-9a-fA-F]+)|0[oO]([0-7]+)|0[bB]([01]+)|(0[0-7]*)|([1-9][0-9]*))"
)
_YAML_STYLE_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_DOT_FLOAT = re.compile(r"\.[0-9]+([eE][-+]?[0-9]+)?")
_INT64 = 1 << 63
_UINT64 = 1 << 64


def _go_int(plain: str) -> int | None:
    """Go's ``ParseInt(s, 0, 64)``, falling back to ``ParseUint``; None if neither parses."""
    match = _GO_INT.fullmatch(plain)
    if match is None:
        return None
    sign, hexa, octal, binary, legacy_octal, decimal = match.groups()
    if hexa is not None:
        value = int(hexa, 16)
    elif octal is not None:
        value = int(octal, 8)
    elif binary is not None:
        value = int(binary, 2)
    elif legacy_octal is not None:
        value = int(legacy_octal, 8)
    else:
        value = int(decimal)
    if sign == "-":
        return -value if value <= _INT64 else None
    if value < _INT64 or (not sign and value < _UINT64):
        return value
    return None


def go_scalar(text: str) -> object:
    """A plain (unquoted) YAML scalar as go-yaml v2 resolves it: None, bool, int, float or str."""
    first = text[:1]
    if first == "" or first in "yYnNtTfFoO~":
        if text in _NULLS:
            return None
        return _BOOLS.get(text, text)
    if first == ".":
        if text in _SPECIAL_FLOATS:
            return _SPECIAL_FLOATS[text]
        return float(text) if _DOT_FLOAT.fullmatch(text) else text
    if first in "+-0123456789":
        if text in _SPECIAL_FLOATS:
            return _SPECIAL_FLOATS[text]
        plain = text.replace("_", "")
        number = _go_int(plain)
        if number is not None:
            return number
        if _YAML_STYLE_FLOAT.fullmatch(plain):
            value = float(plain)
            if not math.isinf(value):  # Go's ParseFloat reports a range error
                return value
    return text


_GO_PLAIN = "tag:pycalico,2026:go-plain"
_MERGE = "tag:yaml.org,2002:merge"


class GoYAMLLoader(yaml.SafeLoader):
    """PyYAML's parser with go-yaml v2's scalar resolution and its strict duplicate-key check."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0]:
            return _MERGE if value == "<<" else _GO_PLAIN
        return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]

    def construct_go_plain(self, node: yaml.ScalarNode) -> object:
        return go_scalar(str(node.value))

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[tuple[type, object], int] = {}
        for index, (key_node, _) in enumerate(node.value):
            if key_node.tag == _MERGE:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                identity = (type(key), key)
                first = seen.setdefault(identity, index)
            except TypeError:
                continue  # an unhashable key: PyYAML reports it below
            if first != index:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} is repeated: a mapping may not repeat a key",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


GoYAMLLoader.add_constructor(_GO_PLAIN, GoYAMLLoader.construct_go_plain)
# ``construct_mapping`` above is reached through SafeLoader's ``construct_yaml_map``.


class GoYAMLDumper(yaml.SafeDumper):
    """YAML out that go-yaml v2 (and ``GoYAMLLoader``) reads back as written: a string that would
    resolve to something else unquoted (``"y"``, ``"0o17"``, ``"1e3"``) is quoted."""

    def ignore_aliases(self, data: Any) -> bool:
        return True

    def represent_go_str(self, data: str) -> yaml.ScalarNode:
        if go_scalar(data) is not data:
            return self.represent_scalar("tag:yaml.org,2002:str", data, style="'")
        return self.represent_str(data)


GoYAMLDumper.add_representer(str, GoYAMLDumper.represent_go_str)


def _refuse_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(
                f"key {key!r} is repeated in a JSON object: a mapping may not repeat a key"
            )
        out[key] = value
    return out


def parse_manifest(text: str, source: str) -> list[Any]:
    """Every document of a YAML or JSON text as Python values (go-yaml v2 scalars)."""
    stripped = text.lstrip()
    if stripped[:1] in ("{", "["):
        try:
            parsed = json.loads(text, object_pairs_hook=_refuse_repeated_keys)
        except json.JSONDecodeError:
            pass  # maybe YAML flow style or several JSON documents: let YAML try
        except ValueError as error:
            raise ValidationFailure([Problem(source, "", str(error))]) from error
        else:
            return list(parsed) if isinstance(parsed, list) else [parsed]
    try:
        return list(yaml.load_all(text, Loader=GoYAMLLoader))
    except yaml.YAMLError as error:
        raise ValidationFailure(
            [Problem(source, "", f"cannot parse YAML/JSON: {error}")]
        ) from error


# --- Go's string conversion -------------------------------------------------------------------


def go_float32_string(value: float) -> str:
    """Go's ``strconv.FormatFloat(value, 'g', -1, 32)``: the shortest float32 rendering."""
    if math.isnan(value):
        return "NaN"
    try:
        single = struct.unpack("f", struct.pack("f", value))[0]
    except OverflowError:
        single = math.copysign(math.inf, value)
    if math.isinf(single):
        return "+Inf" if single > 0 else "-Inf"
    if single == 0:
        return "-0" if math.copysign(1.0, single) < 0 else "0"
    for precision in range(9):
        text = f"{single:.{precision}e}"
        if struct.unpack("f", struct.pack("f", float(text)))[0] == single:
            break
    mantissa, _, exponent_text = text.partition("e")
    sign = "-" if mantissa.startswith("-") else ""
    digits = mantissa.lstrip("-").replace(".", "").rstrip("0") or "0"
    exponent = int(exponent_text)
    if exponent < -4 or exponent >= 6:
        fraction = f".{digits[1:]}" if len(digits) > 1 else ""
        return f"{sign}{digits[0]}{fraction}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if exponent < 0:
        return f"{sign}0.{'0' * (-exponent - 1)}{digits}"
    whole, fraction = digits[: exponent + 1], digits[exponent + 1 :]
    return f"{sign}{whole.ljust(exponent + 1, '0')}{'.' + fraction if fraction else ''}"


def go_string(value: object) -> object:
    """What Go's YAML-to-JSON converter makes of ``value`` bound for a string field."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float32_string(value)
    return value


# --- the target types -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Struct:
    model: type[BaseModel]


@dataclass(frozen=True)
class _Sequence:
    item: Target


@dataclass(frozen=True)
class _Map:
    value: Target


_STRING: Final = "string"
_BOOL: Final = "bool"
_NUMBER: Final = "number"
Target = _Struct | _Sequence | _Map | Literal["string", "bool", "number"] | None
"""What a value decodes into: a model, a list, a map, a Go string, bool or number, or a type
that decodes its own JSON or is not known (None: taken as it is)."""

_FUNCTIONAL_VALIDATORS = (BeforeValidator, PlainValidator, WrapValidator)


def target_of(annotation: object) -> Target:
    """The Go-side target of a pydantic field annotation."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        base, *metadata = typing.get_args(annotation)
        if any(item is GO_DECODED for item in metadata):
            return None
        if base is not str and any(isinstance(m, _FUNCTIONAL_VALIDATORS) for m in metadata):
            return None  # our normaliser stands for a Go type with its own decoding (ASNumber)
        return target_of(base)
    if origin is Union or origin is types.UnionType:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        targets = {target_of(member) for member in members}
        return targets.pop() if len(targets) == 1 and len(members) >= 1 else None
    if annotation is str:
        return _STRING
    if annotation is bool:
        return _BOOL
    if annotation in (int, float):
        return _NUMBER
    if origin is Literal:
        values = typing.get_args(annotation)
        if all(isinstance(a, str) for a in values):
            return _STRING
        return (
            _NUMBER if all(isinstance(a, int) and not isinstance(a, bool) for a in values) else None
        )
    if origin in (list, tuple, frozenset, set):
        args = typing.get_args(annotation)
        return _Sequence(target_of(args[0])) if args else None
    if origin is dict:
        args = typing.get_args(annotation)
        return _Map(target_of(args[1])) if len(args) == 2 else None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _Struct(annotation)
    return None


@dataclass(frozen=True)
class _Fields:
    exact: dict[str, Target]
    folded: dict[str, str]
    closed: bool


def _fold(name: str) -> str:
    return name.casefold()


@cache
def _fields(model: type[BaseModel]) -> _Fields:
    exact: dict[str, Target] = {}
    folded: dict[str, str] = {}
    for name, info in model.model_fields.items():
        wire = info.alias or name
        exact[wire] = target_of(info.annotation if not info.metadata else _annotated(info))
        folded.setdefault(_fold(wire), wire)
    return _Fields(exact, folded, model.model_config.get("extra") == "forbid")


def _annotated(info: Any) -> object:
    # pydantic moves ``Annotated`` metadata off the annotation; put the markers back.
    return typing.Annotated[(info.annotation, *info.metadata)]


# --- the walk ---------------------------------------------------------------------------------


def conform(document: object, model: type[BaseModel]) -> tuple[object, list[Issue]]:
    """``document`` as Go would hand it to ``model``, and the unknown fields found on the way."""
    issues: list[Issue] = []
    return _conform(document, _Struct(model), "", issues.append), issues


def _conform(value: object, target: Target, path: str, report: Callable[[Issue], None]) -> object:
    if target is None:
        return _string_keys(value, path, report)
    if target == _STRING:
        return go_string(value)
    if target in (_BOOL, _NUMBER):
        return _go_scalar_check(value, target, path, report)
    if isinstance(target, _Sequence):
        if not isinstance(value, list):
            return value
        return [
            _conform(item, target.item, f"{path}[{index}]", report)
            for index, item in enumerate(value)
        ]
    if not isinstance(value, dict):
        return value
    if isinstance(target, _Map):
        return {
            _key(k, path, report): _conform(v, target.value, f"{path}.{k}", report)
            for k, v in value.items()
        }
    assert isinstance(target, _Struct)
    return _conform_struct(value, _fields(target.model), path, report)


def _go_scalar_check(
    value: object, target: Target, path: str, report: Callable[[Issue], None]
) -> object:
    """Go's JSON decoder refuses a string (or a boolean for a number, a number for a boolean)."""
    if value is None:
        return value
    if target == _BOOL and not isinstance(value, bool):
        report((path, f"must be true or false, not {_json_type(value)} {value!r}"))
    elif target == _NUMBER and (isinstance(value, bool) or not isinstance(value, int | float)):
        report((path, f"must be a number, not {_json_type(value)} {value!r}"))
    return value


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def _conform_struct(
    value: dict[Any, Any], fields: _Fields, path: str, report: Callable[[Issue], None]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # Go's decoder applies keys in the order json.Marshal wrote them (sorted); a later key for
    # the same field replaces an earlier one.
    for raw_key in sorted(value, key=lambda k: str(go_map_key(k))):
        key = _key(raw_key, path, report)
        wire = key if key in fields.exact else fields.folded.get(_fold(key))
        child = f"{path}.{wire or key}" if path else (wire or key)
        if wire is None:
            if fields.closed:
                report((child, "unknown field"))
            else:
                out[key] = _string_keys(value[raw_key], child, report)
            continue
        out[wire] = _conform(value[raw_key], fields.exact[wire], child, report)
    return out


def go_map_key(key: object) -> str | None:
    """A YAML mapping key as the converter writes it into JSON; None if Go refuses the key."""
    if isinstance(key, str):
        return key
    if isinstance(key, bool | int | float):
        text = str(go_string(key))
        return {"+Inf": ".inf", "-Inf": "-.inf", "NaN": ".nan"}.get(text, text)
    return None


def _key(key: object, path: str, report: Callable[[Issue], None]) -> str:
    text = go_map_key(key)
    if text is None:
        report((path, f"a mapping key must be a string, number or boolean (got {key!r})"))
        return str(key)
    return text


def _string_keys(value: object, path: str, report: Callable[[Issue], None]) -> object:
    """A value bound for no particular type: only its mapping keys become strings, as in Go."""
    if isinstance(value, list):
        return [_string_keys(item, path, report) for item in value]
    if isinstance(value, dict):
        return {_key(k, path, report): _string_keys(v, path, report) for k, v in value.items()}
    return value

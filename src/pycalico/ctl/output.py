"""How `calicoctl get` prints resources: ps/wide tables, custom columns, YAML, JSON and names.

Pure: input is wire-form resources (camelCase dicts, as ``encode_resource`` gives them) and the
shape of the answer; output is the text to print.  Nothing here reads the datastore.

Shapes, as calicoctl prints them:

* A *list* (``get KIND`` with no name) is one result: one table, or one ``<Kind>List`` object
  (``apiVersion``, ``kind``, ``metadata.resourceVersion``, ``items``) in YAML/JSON.
* A *get* of one or more names gives one result per name: one table each (each followed by a
  blank line), a single object for one name, a YAML/JSON sequence of objects for several.
* Tables are laid out like Go's ``text/tabwriter`` with calicoctl's settings (minimum cell width
  5, padding 3, every cell padded, trailing blanks kept), so they compare byte for byte.
* YAML keys are sorted (calicoctl converts through JSON into a sorted YAML map); JSON keeps the
  field order and indents by two.  Whole-number floats print as integers in both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from pycalico.ctl.columns import TableContext, columns_for

Wire = Mapping[str, Any]

OUTPUT_FORMATS = ("ps", "wide", "yaml", "json", "name")


class OutputFormatError(ValueError):
    """The ``-o`` value is not one we can print."""


@dataclass(frozen=True, slots=True)
class ResultSet:
    """What one get/list produced.

    ``items`` are wire dicts.  ``is_list`` marks a list answer (``<Kind>List`` in YAML/JSON, one
    table); ``revision`` is the store revision of a list.
    """

    kind: str
    items: tuple[Wire, ...]
    is_list: bool
    revision: int = 0
    namespaced: bool = False


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """A parsed ``-o`` value: a format and, for ``custom-columns=A,B``, the headings."""

    format: str
    headings: tuple[str, ...] = ()


def parse_output(value: str) -> OutputSpec:
    """Parse ``-o``.  ``yml`` is accepted for ``yaml`` as calicoctl does."""
    if value in ("yaml", "yml"):
        return OutputSpec("yaml")
    if value in OUTPUT_FORMATS:
        return OutputSpec(value)
    key, _, rest = value.partition("=")
    if key == "custom-columns":
        if not rest:
            raise OutputFormatError("need to specify at least one column")
        return OutputSpec("custom-columns", tuple(rest.split(",")))
    if key in ("go-template", "go-template-file"):
        raise OutputFormatError(f"output format '{key}' is not supported by this calicoctl")
    raise OutputFormatError(f"unrecognized output format '{value}'")


# --- tables -----------------------------------------------------------------------------------


def tabwriter(rows: Sequence[Sequence[str]], min_width: int = 5, padding: int = 3) -> str:
    """Lay out rows like Go's tabwriter with every cell tab-terminated (calicoctl's use)."""
    if not rows:
        return ""
    columns = max(len(r) for r in rows)
    widths = [min_width] * columns
    for row in rows:
        for index, cell in enumerate(row):
            widths[index] = max(widths[index], len(cell) + padding)
    return "".join(
        "".join(cell.ljust(widths[i]) for i, cell in enumerate(row)) + "\n" for row in rows
    )


class UnknownHeading(ValueError):
    pass


def table_rows(
    result: ResultSet,
    *,
    wide: bool = False,
    headings: Sequence[str] = (),
    print_namespace: bool = False,
    context: TableContext | None = None,
) -> list[list[str]]:
    """Heading row then one row per item; ``headings`` overrides the kind's own (custom)."""
    context = context or TableContext()
    columns = columns_for(result.kind, result.namespaced)
    chosen = list(headings) or list(columns.wide_headings if wide else columns.headings)
    if print_namespace and "NAMESPACE" in columns.cells and not headings:
        chosen = ["NAMESPACE", *chosen]
    for heading in chosen:
        if heading not in columns.cells:
            raise UnknownHeading(
                f"Unknown heading {heading}, valid values are: " + ", ".join(columns.all_headings())
            )
    rows = [chosen]
    rows.extend([columns.cells[h](item, context) for h in chosen] for item in result.items)
    return rows


def format_tables(
    results: Sequence[ResultSet],
    *,
    wide: bool = False,
    headings: Sequence[str] = (),
    print_namespace: bool = False,
    context: TableContext | None = None,
) -> str:
    """One table per result, each followed by a blank line (calicoctl's layout)."""
    return "".join(
        tabwriter(
            table_rows(
                r, wide=wide, headings=headings, print_namespace=print_namespace, context=context
            )
        )
        + "\n"
        for r in results
    )


# --- documents --------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """Whole floats become ints (Go prints ``order: 100``, not ``100.0``)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def list_object(result: ResultSet) -> dict[str, Any]:
    """The ``<Kind>List`` wrapper calicoctl prints for a list."""
    return {
        "apiVersion": "projectcalico.org/v3",
        "items": [_plain(i) for i in result.items],
        "kind": f"{result.kind}List",
        "metadata": {"resourceVersion": str(result.revision)},
    }


def _document(results: Sequence[ResultSet]) -> Any:
    """One object, one list object, or a sequence, mirroring calicoctl's printers."""
    objects: list[Any] = []
    for result in results:
        if result.is_list:
            objects.append(list_object(result))
        else:
            objects.extend(_plain(i) for i in result.items)
    if len(objects) == 1:
        return objects[0]
    return objects


class _Dumper(yaml.SafeDumper):
    """Block style, lists not indented under their key (like Go's yaml.v2)."""


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    """Plain when it reads back as the same string, else double-quoted (as Go's yaml.v2)."""
    style: str | None = None
    if "\n" in data:
        style = "|"
    else:
        analysis = dumper.analyze_scalar(data)
        implicit = dumper.resolve(yaml.ScalarNode, data, (True, False))  # type: ignore[no-untyped-call]
        if not analysis.allow_block_plain or implicit != "tag:yaml.org,2002:str":
            style = '"'
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_presenter)


def format_yaml(results: Sequence[ResultSet]) -> str:
    document = _document(results)
    if document == []:
        return "[]\n"
    return yaml.dump(
        document, Dumper=_Dumper, sort_keys=True, default_flow_style=False, allow_unicode=True
    )


_META_ORDER = (
    "name",
    "generateName",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
)


def _ordered(mapping: Mapping[str, Any], first: Sequence[str]) -> dict[str, Any]:
    out = {k: mapping[k] for k in first if k in mapping}
    out.update((k, v) for k, v in mapping.items() if k not in out)
    return out


def _go_field_order(value: Any) -> Any:
    """Go's struct order for the envelope (``kind`` first) and ``metadata``."""
    if isinstance(value, list):
        return [_go_field_order(v) for v in value]
    if not isinstance(value, Mapping) or "kind" not in value:
        return value
    out = _ordered(value, ("kind", "apiVersion", "metadata"))
    if isinstance(out.get("metadata"), Mapping):
        out["metadata"] = _ordered(out["metadata"], _META_ORDER)
    if isinstance(out.get("items"), list):
        out["items"] = [_go_field_order(i) for i in out["items"]]
    return out


def format_json(results: Sequence[ResultSet]) -> str:
    document = _go_field_order(_document(results))
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def format_names(results: Sequence[ResultSet]) -> str:
    """``-o name``: ``<kind>/<name>`` (``<kind>/<namespace>/<name>`` when namespaced)."""
    lines = []
    for result in results:
        for item in result.items:
            meta = item.get("metadata") or {}
            parts = [result.kind.lower()]
            if meta.get("namespace"):
                parts.append(str(meta["namespace"]))
            parts.append(str(meta.get("name", "")))
            lines.append("/".join(parts) + "\n")
    return "".join(lines)


def render(
    results: Sequence[ResultSet],
    spec: OutputSpec,
    *,
    print_namespace: bool = False,
    context: TableContext | None = None,
) -> str:
    """The whole text of a ``get`` for the parsed ``-o`` value."""
    if spec.format == "yaml":
        return format_yaml(results)
    if spec.format == "json":
        return format_json(results)
    if spec.format == "name":
        return format_names(results)
    return format_tables(
        results,
        wide=spec.format == "wide",
        headings=spec.headings,
        print_namespace=print_namespace,
        context=context,
    )

"""The syntax tree of a Calico selector and its canonical rendering.

What this is: immutable node types (one per construct of the grammar in calico-reference.md
§2.1) and ``render``, which prints a tree in Calico's canonical form, the string Calico hashes
into a selector's unique id.  What this is not: the parser (``parser.py``), the evaluator
(``compiler.py``) or the public ``Selector`` (``selector.py``).

Invariants:

* Node types mirror Calico's AST one to one, so a tree renders exactly as Calico's
  ``Selector.String()`` renders the same tree: ``&&``/``||`` groups are always parenthesised and
  never flattened, ``!`` prints as a bare prefix, values are double-quoted unless they contain a
  double quote (then single-quoted), set members are sorted by code point and de-duplicated.
* ``InSet.values`` is always sorted and de-duplicated (``make_in_set`` guarantees it; the parser
  and every transform build sets through it).
* ``And``/``Or`` hold at least two operands.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

CompareOp = Literal["==", "!=", "contains", "starts with", "ends with"]
COMPARE_OPS: Final[tuple[CompareOp, ...]] = ("==", "!=", "contains", "starts with", "ends with")


@dataclass(frozen=True, slots=True)
class Compare:
    """``label <op> "value"``: one label against one string literal."""

    label: str
    op: CompareOp
    value: str


@dataclass(frozen=True, slots=True)
class InSet:
    """``label in {...}`` or, when ``negated``, ``label not in {...}``."""

    label: str
    values: tuple[str, ...]
    negated: bool = False


@dataclass(frozen=True, slots=True)
class Has:
    """``has(label)``: the label is present, whatever its value."""

    label: str


@dataclass(frozen=True, slots=True)
class All:
    """``all()`` (and the empty selector): matches everything."""


@dataclass(frozen=True, slots=True)
class Global:
    """``global()``: matches everything; only a namespaceSelector gives it a meaning (§2.2)."""


@dataclass(frozen=True, slots=True)
class Not:
    """``!operand``.  The parser collapses repeated ``!``; a ``!`` on a parenthesised ``!``
    expression stays two nodes, as in Calico."""

    operand: Node


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Node, ...]


Node = Compare | InSet | Has | All | Global | Not | And | Or


def make_in_set(label: str, values: Iterable[str], *, negated: bool = False) -> InSet:
    """An ``InSet`` with its values in canonical order (sorted by code point, no duplicates).

    Sorting by code point equals Go's byte-wise sort of the UTF-8 encoding, so the rendered set
    matches Calico's.
    """
    return InSet(label, tuple(sorted(set(values))), negated)


def _quote(value: str) -> str:
    # Calico has no escapes: a value holding '"' is printed between single quotes.  A value
    # holding both quote characters cannot be written at all (builders refuse to make one).
    return f"'{value}'" if '"' in value else f'"{value}"'


def _render_into(node: Node, out: list[str]) -> None:
    match node:
        case Compare(label, op, value):
            out.append(f"{label} {op} {_quote(value)}")
        case InSet(label, values, negated):
            members = ", ".join(_quote(v) for v in values)
            out.append(f"{label} {'not in' if negated else 'in'} {{{members}}}")
        case Has(label):
            out.append(f"has({label})")
        case All():
            out.append("all()")
        case Global():
            out.append("global()")
        case Not(operand):
            out.append("!")
            _render_into(operand, out)
        case And(operands) | Or(operands):
            joiner = " && " if isinstance(node, And) else " || "
            out.append("(")
            for index, operand in enumerate(operands):
                if index:
                    out.append(joiner)
                _render_into(operand, out)
            out.append(")")


def render(node: Node) -> str:
    """The canonical form of ``node`` (Calico's ``Selector.String()``)."""
    out: list[str] = []
    _render_into(node, out)
    return "".join(out)


def label_names(node: Node) -> frozenset[str]:
    """Every label name ``node`` refers to (in comparisons, sets and ``has``)."""
    names: set[str] = set()
    stack: list[Node] = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, Compare | InSet | Has):
            names.add(current.label)
        elif isinstance(current, Not):
            stack.append(current.operand)
        elif isinstance(current, And | Or):
            stack.extend(current.operands)
    return frozenset(names)


def depth(node: Node) -> int:
    """How deeply ``node`` nests (a leaf is 1)."""
    deepest = 0
    stack: list[tuple[Node, int]] = [(node, 1)]
    while stack:
        current, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(current, Not):
            stack.append((current.operand, level + 1))
        elif isinstance(current, And | Or):
            stack.extend((operand, level + 1) for operand in current.operands)
    return deepest


def group_depth(node: Node) -> int:
    """How deeply ``&&``/``||`` groups nest in ``node``: the parenthesis depth of its canonical
    form."""
    deepest = 0
    stack: list[tuple[Node, int]] = [(node, 0)]
    while stack:
        current, level = stack.pop()
        if isinstance(current, Not):
            stack.append((current.operand, level))
        elif isinstance(current, And | Or):
            deepest = max(deepest, level + 1)
            stack.extend((operand, level + 1) for operand in current.operands)
    return deepest

"""Turns a selector's syntax tree into a Python function of a label mapping.

What this is: ``compile_node(node)`` returns ``f(labels) -> bool`` implementing Calico's
semantics (calico-reference.md §2.1).  The tree is translated into one Python expression, e.g.
``a == "x" && has(b)`` becomes ``lambda labels: (labels.get('a') == 'x' and 'b' in labels)``,
and compiled once, so evaluating a selector costs about what a hand-written lambda costs.
Trees too deep for Python's compiler fall back to a tree of closures (slower, same answers).
What this is not: the parser, or a sandbox for arbitrary code: the generated source holds only
``repr()`` of label names and values (always valid, inert string literals) and fixed operators,
and is evaluated with no builtins.

Semantics, and how the generated code gets them:

* ``==``, ``in``, ``contains``, ``starts with``, ``ends with`` and ``has`` are false when the
  label is absent; ``!=`` and ``not in`` are true when it is absent.  ``labels.get(label)``
  gives ``None`` for an absent label, which equals no string and is in no set; the substring
  operators test ``label in labels`` first (a missing label must not match ``contains ""``).
* ``all()`` and ``global()`` are true.

Invariant: the function only uses ``labels.get(name)``, ``name in labels`` and ``labels[name]``
(after ``name in labels``), so any ``Mapping[str, str]`` works (a ``ChainMap`` of profile and
endpoint labels included).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from pycalico.model.selectors.nodes import (
    All,
    And,
    Compare,
    Global,
    Has,
    InSet,
    Node,
    Not,
    Or,
    depth,
)

Evaluator = Callable[[Mapping[str, str]], bool]

# CPython 3.11 refuses source nesting 200 parentheses deep; the generated code nests about one
# level per tree level plus three, so stay well clear.
MAX_GENERATED_DEPTH: Final = 150


class _SourceWriter:
    def expression(self, node: Node) -> str:
        match node:
            case Compare(label, op, value):
                get = f"labels.get({label!r})"
                if op == "==":
                    return f"{get} == {value!r}"
                if op == "!=":
                    return f"{get} != {value!r}"
                item = f"labels[{label!r}]"
                if op == "contains":
                    test = f"{value!r} in {item}"
                elif op == "starts with":
                    test = f"{item}.startswith({value!r})"
                else:
                    test = f"{item}.endswith({value!r})"
                return f"({label!r} in labels and {test})"
            case InSet(label, values, negated):
                get = f"labels.get({label!r})"
                if not values:
                    return "True" if negated else "False"
                if len(values) == 1:
                    return f"{get} {'!=' if negated else '=='} {values[0]!r}"
                # A set display after `in` is folded into a frozenset constant by CPython.
                members = ", ".join(repr(v) for v in values)
                return f"{get} {'not in' if negated else 'in'} {{{members}}}"
            case Has(label):
                return f"{label!r} in labels"
            case All() | Global():
                return "True"
            case Not(operand):
                # `not` binds looser than comparisons and tighter than and/or, and every
                # compound operand is already parenthesised.
                return f"not {self.expression(operand)}"
            case And(operands):
                return "(" + " and ".join(self.expression(o) for o in operands) + ")"
            case Or(operands):
                return "(" + " or ".join(self.expression(o) for o in operands) + ")"
        raise TypeError(f"not a selector node: {node!r}")  # pragma: no cover


def generate_source(node: Node) -> str:
    """The Python lambda expression that evaluates ``node``."""
    return f"lambda labels: {_SourceWriter().expression(node)}"


def _generated(node: Node) -> Evaluator:
    source = generate_source(node)
    code = compile(source, "<selector>", "eval")
    function: Evaluator = eval(code, {"__builtins__": {}})
    return function


def build_closures(node: Node) -> Evaluator:
    """A tree of closures evaluating ``node``: the fallback for trees too deep to compile."""
    match node:
        case Compare(label, op, value):
            if op == "==":
                return lambda labels: labels.get(label) == value
            if op == "!=":
                return lambda labels: labels.get(label) != value
            if op == "contains":
                return lambda labels: label in labels and value in labels[label]
            if op == "starts with":
                return lambda labels: label in labels and labels[label].startswith(value)
            return lambda labels: label in labels and labels[label].endswith(value)
        case InSet(label, values, negated):
            members = frozenset(values)
            if negated:
                return lambda labels: labels.get(label) not in members
            return lambda labels: labels.get(label) in members
        case Has(label):
            return lambda labels: label in labels
        case All() | Global():
            return lambda labels: True
        case Not(operand):
            inner = build_closures(operand)
            return lambda labels: not inner(labels)
        case And(operands):
            parts = tuple(build_closures(o) for o in operands)

            def conjunction(labels: Mapping[str, str]) -> bool:
                for part in parts:  # noqa: SIM110 - all() over a generator is twice as slow
                    if not part(labels):
                        return False
                return True

            return conjunction
        case Or(operands):
            parts = tuple(build_closures(o) for o in operands)

            def disjunction(labels: Mapping[str, str]) -> bool:
                for part in parts:  # noqa: SIM110 - all() over a generator is twice as slow
                    if part(labels):
                        return True
                return False

            return disjunction
    raise TypeError(f"not a selector node: {node!r}")  # pragma: no cover


def compile_node(node: Node) -> Evaluator:
    """The fastest available evaluator of ``node``."""
    if depth(node) <= MAX_GENERATED_DEPTH:
        try:
            return _generated(node)
        except (SyntaxError, RecursionError, MemoryError):  # pragma: no cover - depth-guarded
            pass
    return build_closures(node)

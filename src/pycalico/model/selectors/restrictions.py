"""What a selector demands of individual labels, for indexing selectors by label.

What this is: ``label_restrictions(node)``, Calico's ``LabelRestrictions()``: for each label a
selector constrains on every path to a match, whether it must be present, must be absent, or
must hold one of a known set of values.  Felix's label index can use it to consider a selector
only for endpoints that have (or lack) the label, and to key selectors by value.  What this is
not: a full satisfiability check; it is sound but incomplete (a label missing from the result
may still matter, e.g. in ``a != "x"``).

Invariants (soundness, tested as properties): if ``restrictions[label]`` says

* ``must_be_present``: no label map without ``label`` matches;
* ``must_be_absent``: no label map with ``label`` matches;
* ``one_of`` is not None: no label map whose ``label`` holds a value outside ``one_of``
  matches (an empty ``one_of`` means the selector matches nothing with the label, and, being
  required, nothing at all).

The combination rules follow Calico's: ``&&`` unions the demands (intersecting value sets),
``||`` keeps only demands every branch makes (uniting value sets), ``!`` keeps only
``!has(label)`` as "must be absent".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pycalico.model.selectors.nodes import And, Compare, Has, InSet, Node, Not, Or


@dataclass(frozen=True, slots=True)
class LabelRestriction:
    must_be_present: bool = False
    must_be_absent: bool = False
    one_of: frozenset[str] | None = None


_PRESENT = LabelRestriction(must_be_present=True)


def _and(parts: list[dict[str, LabelRestriction]]) -> dict[str, LabelRestriction]:
    merged: dict[str, LabelRestriction] = {}
    for part in parts:
        for label, restriction in part.items():
            base = merged.get(label, LabelRestriction())
            if base.one_of is None:
                one_of = restriction.one_of
            elif restriction.one_of is None:
                one_of = base.one_of
            else:
                one_of = base.one_of & restriction.one_of
            merged[label] = LabelRestriction(
                base.must_be_present or restriction.must_be_present,
                base.must_be_absent or restriction.must_be_absent,
                one_of,
            )
    return merged


def _or(parts: list[dict[str, LabelRestriction]]) -> dict[str, LabelRestriction]:
    merged = dict(parts[0])
    for part in parts[1:]:
        for label, restriction in list(merged.items()):
            other = part.get(label, LabelRestriction())
            present = restriction.must_be_present and other.must_be_present
            absent = restriction.must_be_absent and other.must_be_absent
            one_of = None
            if present and restriction.one_of is not None and other.one_of is not None:
                one_of = restriction.one_of | other.one_of
            if present or absent:
                merged[label] = LabelRestriction(present, absent, one_of)
            else:
                del merged[label]
    return merged


def _restrictions(node: Node) -> dict[str, LabelRestriction]:
    match node:
        case Compare(label, op, value):
            if op == "==":
                return {label: LabelRestriction(must_be_present=True, one_of=frozenset([value]))}
            if op == "!=":
                return {}
            return {label: _PRESENT}
        case InSet(label, values, negated):
            if negated:
                return {}
            return {label: LabelRestriction(must_be_present=True, one_of=frozenset(values))}
        case Has(label):
            return {label: _PRESENT}
        case Not(Has(label)):
            return {label: LabelRestriction(must_be_absent=True)}
        case And(operands):
            return _and([_restrictions(o) for o in operands])
        case Or(operands):
            return _or([_restrictions(o) for o in operands])
    # all(), global(), and any other negation: nothing is known.
    return {}


def label_restrictions(node: Node) -> Mapping[str, LabelRestriction]:
    """Per label, what ``node`` demands of it on every path to a match."""
    return _restrictions(node)

"""Tests of per-label restrictions (Calico's LabelRestrictions): examples and soundness."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pycalico.model.selectors import LabelRestriction, parse

PRESENT = LabelRestriction(must_be_present=True)
ABSENT = LabelRestriction(must_be_absent=True)


def one_of(*values: str) -> LabelRestriction:
    return LabelRestriction(must_be_present=True, one_of=frozenset(values))


EXAMPLES: list[tuple[str, dict[str, LabelRestriction]]] = [
    ("all()", {}),
    ("a == 'x'", {"a": one_of("x")}),
    ("a != 'x'", {}),
    ("a in {'x', 'y'}", {"a": one_of("x", "y")}),
    ("a not in {'x'}", {}),
    ("a contains 'x'", {"a": PRESENT}),
    ("a starts with 'x'", {"a": PRESENT}),
    ("a ends with 'x'", {"a": PRESENT}),
    ("has(a)", {"a": PRESENT}),
    ("!has(a)", {"a": ABSENT}),
    ("!(a == 'x')", {}),
    ("a == 'x' && has(b)", {"a": one_of("x"), "b": PRESENT}),
    ("a == 'x' && a in {'x', 'y'}", {"a": one_of("x")}),
    ("a == 'x' && a == 'y'", {"a": one_of()}),
    ("has(a) && a == 'x'", {"a": one_of("x")}),
    ("has(a) && !has(b)", {"a": PRESENT, "b": ABSENT}),
    ("a == 'x' || a == 'y'", {"a": one_of("x", "y")}),
    ("a == 'x' || has(a)", {"a": PRESENT}),
    ("a == 'x' || b == 'y'", {}),
    ("!has(a) || !has(a) && has(b)", {"a": ABSENT}),
    ("!has(a) || has(a)", {}),
    ("(a == 'x' && has(b)) || (a in {'z'} && has(c))", {"a": one_of("x", "z")}),
]


def test_examples() -> None:
    for text, expected in EXAMPLES:
        assert dict(parse(text).restrictions) == expected, text


LABELS = ["a", "b", "c"]
VALUES = ["", "x", "y", "xy"]
text_leaf = st.one_of(
    st.builds(
        lambda label, op, value: f"{label} {op} '{value}'",
        st.sampled_from(LABELS),
        st.sampled_from(["==", "!=", "contains", "starts with", "ends with"]),
        st.sampled_from(VALUES),
    ),
    st.builds(
        lambda label, op, values: f"{label} {op} {{{', '.join(repr(v) for v in values)}}}",
        st.sampled_from(LABELS),
        st.sampled_from(["in", "not in"]),
        st.lists(st.sampled_from(VALUES), max_size=3),
    ),
    st.builds(lambda label: f"has({label})", st.sampled_from(LABELS)),
    st.just("all()"),
)
text_st = st.recursive(
    text_leaf,
    lambda children: st.one_of(
        children.map(lambda c: f"!({c})"),
        st.lists(children, min_size=2, max_size=3).map(
            lambda cs: " && ".join(f"({c})" for c in cs)
        ),
        st.lists(children, min_size=2, max_size=3).map(
            lambda cs: " || ".join(f"({c})" for c in cs)
        ),
    ),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None)
@given(text_st, st.dictionaries(st.sampled_from(LABELS), st.sampled_from(VALUES)))
def test_restrictions_are_sound(text: str, labels: dict[str, str]) -> None:
    selector = parse(text)
    if not selector.evaluate(labels):
        return
    for label, restriction in selector.restrictions.items():
        if restriction.must_be_present:
            assert label in labels, (text, labels)
        if restriction.must_be_absent:
            assert label not in labels, (text, labels)
        if restriction.one_of is not None and label in labels:
            assert labels[label] in restriction.one_of, (text, labels)

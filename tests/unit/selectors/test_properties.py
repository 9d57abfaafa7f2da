"""Property tests: the parser, canonical form and evaluator against an independent model.

The model here is deliberately separate from the implementation: selectors are plain tuples,
written out as text with random (valid) spelling — whitespace, quote style, ``startswith`` /
``notin`` forms, redundant parentheses and ``!`` runs, unsorted sets with duplicates and
trailing commas — and evaluated by a direct tree walk that spells out Calico's semantics.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pycalico.model.selectors import SelectorParseError, and_selectors, parse, prefix_labels
from pycalico.model.selectors.compiler import build_closures

Model = tuple[Any, ...]

LABELS = ["a", "b", "c", "k8s-app", "x.io/y_z", "0"]
VALUES = ["", "a", "b", "ab", "ba", "x'y", 'x"y', "a b", "ü"]

labels_st = st.sampled_from(LABELS)
values_st = st.sampled_from(VALUES) | st.text(alphabet="ab '\"ü\t", max_size=4).filter(
    lambda v: not ('"' in v and "'" in v)
)
leaf_st = st.one_of(
    st.tuples(
        st.just("cmp"),
        labels_st,
        st.sampled_from(["==", "!=", "contains", "starts with", "ends with"]),
        values_st,
    ),
    st.tuples(st.just("in"), labels_st, st.lists(values_st, max_size=4), st.booleans()),
    st.tuples(st.just("has"), labels_st),
    st.just(("all",)),
    st.just(("global",)),
)


def _compound(children: st.SearchStrategy[Model]) -> st.SearchStrategy[Model]:
    return st.one_of(
        # Calico collapses "!!"; a "!" directly on a "!" is covered by its own example test.
        children.filter(lambda c: c[0] != "not").map(lambda c: ("not", c)),
        st.tuples(st.just("and"), st.lists(children, min_size=2, max_size=4)),
        st.tuples(st.just("or"), st.lists(children, min_size=2, max_size=4)),
    )


model_st = st.recursive(leaf_st, _compound, max_leaves=12)
label_map_st = st.dictionaries(labels_st, values_st, max_size=len(LABELS))


def model_evaluate(model: Model, labels: dict[str, str]) -> bool:
    kind = model[0]
    if kind == "cmp":
        _, label, op, value = model
        if label not in labels:
            return op == "!="
        actual = labels[label]
        return {
            "==": actual == value,
            "!=": actual != value,
            "contains": value in actual,
            "starts with": actual.startswith(value),
            "ends with": actual.endswith(value),
        }[op]
    if kind == "in":
        _, label, values, negated = model
        if label not in labels:
            return bool(negated)
        return bool((labels[label] in values) != negated)
    if kind == "has":
        return model[1] in labels
    if kind in ("all", "global"):
        return True
    if kind == "not":
        return not model_evaluate(model[1], labels)
    if kind == "and":
        return all(model_evaluate(m, labels) for m in model[1])
    return any(model_evaluate(m, labels) for m in model[1])


def _quote(value: str) -> str:
    return f"'{value}'" if '"' in value else f'"{value}"'


def model_canonical(model: Model) -> str:
    """Calico's canonical form, written from its description (reference §2.1)."""
    kind = model[0]
    if kind == "cmp":
        return f"{model[1]} {model[2]} {_quote(model[3])}"
    if kind == "in":
        members = ", ".join(_quote(v) for v in sorted(set(model[2])))
        return f"{model[1]} {'not in' if model[3] else 'in'} {{{members}}}"
    if kind == "has":
        return f"has({model[1]})"
    if kind in ("all", "global"):
        return f"{kind}()"
    if kind == "not":
        return "!" + model_canonical(model[1])
    joiner = " && " if kind == "and" else " || "
    return "(" + joiner.join(model_canonical(m) for m in model[1]) + ")"


def model_labels(model: Model) -> set[str]:
    if model[0] in ("cmp", "in", "has"):
        return {model[1]}
    if model[0] == "not":
        return model_labels(model[1])
    if model[0] in ("and", "or"):
        return set().union(*(model_labels(m) for m in model[1]))
    return set()


def write(model: Model, draw: st.DrawFn) -> str:
    """Selector text for ``model`` in a randomly chosen valid spelling."""

    def ws(required: bool = False) -> str:
        return draw(st.sampled_from([" ", "  ", "\t", " \t "] if required else ["", " ", "\t"]))

    def quoted(value: str) -> str:
        if '"' in value:
            return f"'{value}'"
        if "'" in value:
            return f'"{value}"'
        return draw(st.sampled_from([f"'{value}'", f'"{value}"']))

    kind = model[0]
    if kind == "cmp":
        _, label, op, value = model
        spelled = {
            "==": ["=="],
            "!=": ["!="],
            "contains": ["contains"],
            "starts with": ["starts with", "startswith", "starts\twith"],
            "ends with": ["ends with", "endswith", "ends  with"],
        }[op]
        operator = draw(st.sampled_from(spelled))
        if operator[0].isalpha():
            return f"{label}{ws(True)}{operator}{ws()}{quoted(value)}"
        return f"{label}{ws()}{operator}{ws()}{quoted(value)}"
    if kind == "in":
        _, label, values, negated = model
        duplicates: list[str] = (
            draw(st.lists(st.sampled_from(values), max_size=2)) if values else []
        )
        members = draw(st.permutations([*values, *duplicates]))
        body = f",{ws()}".join(quoted(v) for v in members)
        if members and draw(st.booleans()):
            body += ","
        operator = draw(st.sampled_from(["not in", "notin", "not  in"])) if negated else "in"
        return f"{label}{ws(True)}{operator}{ws()}{{{ws()}{body}{ws()}}}"
    if kind == "has":
        return f"has({ws()}{model[1]}{ws()})"
    if kind in ("all", "global"):
        return f"{kind}({ws()})"
    if kind == "not":
        inner = write(model[1], draw)
        if model[1][0] in ("and", "or") or draw(st.booleans()):
            inner = f"({ws()}{inner}{ws()})"
        bangs = draw(st.sampled_from(["!", "!!!", "! ", "!! !"]))
        return f"{bangs}{ws()}{inner}"
    joiner = "&&" if kind == "and" else "||"
    parts = []
    for child in model[1]:
        text = write(child, draw)
        # Children that are groups keep their parentheses, or the tree would change.
        if child[0] in ("and", "or") or draw(st.integers(0, 3)) == 0:
            text = f"({ws()}{text}{ws()})"
        parts.append(text)
    return f"{ws()}{joiner}{ws()}".join(parts)


@st.composite
def written_st(draw: st.DrawFn) -> tuple[Model, str]:
    model = draw(model_st)
    text = write(model, draw)
    if draw(st.booleans()):
        text = f"({text})"
    return (
        model,
        f"{draw(st.sampled_from(['', ' ', chr(9)]))}{text}{draw(st.sampled_from(['', ' ']))}",
    )


def calico_unique_id(canonical: str) -> str:
    digest = hashlib.sha224(("s:" + canonical).encode()).digest()
    return "s:" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


@settings(max_examples=400, deadline=None)
@given(written_st())
def test_canonical_form_round_trips(written: tuple[Model, str]) -> None:
    model, text = written
    selector = parse(text)
    expected = model_canonical(model)
    assert selector.canonical == expected
    again = parse(selector.canonical)
    assert again == selector
    assert again.canonical == expected
    assert selector.labels == model_labels(model)


@settings(max_examples=400, deadline=None)
@given(written_st(), st.lists(label_map_st, min_size=1, max_size=8))
def test_evaluation_agrees_with_model(
    written: tuple[Model, str], label_maps: list[dict[str, str]]
) -> None:
    model, text = written
    selector = parse(text)
    closures = build_closures(selector.root)
    for labels in label_maps:
        expected = model_evaluate(model, labels)
        assert selector.evaluate(labels) is expected, (text, labels)
        assert closures(labels) is expected, (text, labels)


@settings(max_examples=100, deadline=None)
@given(written_st(), written_st())
def test_unique_id_is_calicos_hash_and_tells_canonicals_apart(
    first: tuple[Model, str], second: tuple[Model, str]
) -> None:
    one, two = parse(first[1]), parse(second[1])
    assert one.unique_id == calico_unique_id(one.canonical)
    assert one.unique_id == parse(one.canonical).unique_id
    assert (one.unique_id == two.unique_id) == (one.canonical == two.canonical)


@settings(max_examples=200, deadline=None)
@given(written_st(), written_st(), label_map_st)
def test_composition_and_prefixing_preserve_meaning(
    first: tuple[Model, str], second: tuple[Model, str], labels: dict[str, str]
) -> None:
    composed = and_selectors(first[1], second[1])
    expected = model_evaluate(first[0], labels) and model_evaluate(second[0], labels)
    assert composed.evaluate(labels) is expected
    assert composed == parse(f"({first[1]}) && ({second[1]})")
    prefixed = prefix_labels(first[1], "pcns.")
    assert prefixed.evaluate({f"pcns.{k}": v for k, v in labels.items()}) is model_evaluate(
        first[0], labels
    )


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="ab() {}!=&|,'\" \tinothaswlg", max_size=30))
def test_arbitrary_text_parses_or_raises_parse_error(text: str) -> None:
    try:
        selector = parse(text)
    except SelectorParseError as error:
        assert 0 <= error.position <= len(text)
        return
    assume("!!" not in selector.canonical)  # the documented double-negation quirk
    assert parse(selector.canonical) == selector

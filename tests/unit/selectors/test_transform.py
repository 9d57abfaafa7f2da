"""Tests of selector composition and rewriting (calico-reference.md §2.2).

Expected strings marked "Calico" come from Calico's own tests (the PrefixVisitor table in
libcalico-go/lib/selector/parser/parser_test.go, and the namespaceSelector cases of
updateprocessors/rules_test.go), compared after canonicalisation as Felix would see them.
"""

from __future__ import annotations

import pytest

from pycalico.model.selectors import (
    ALL,
    NAMESPACE_LABEL,
    SelectorParseError,
    and_selectors,
    has_label,
    label_equals,
    label_in,
    negate,
    parse,
    prefix_labels,
    replace_all_and_global,
    rule_namespace_selector,
)

PREFIXED = [
    # Calico's PrefixVisitor table.
    ("k == 'v'", 'visited/k == "v"'),
    ("k != 'v'", 'visited/k != "v"'),
    ("k contains 'v'", 'visited/k contains "v"'),
    ("k starts with 'v'", 'visited/k starts with "v"'),
    ("k ends with 'v'", 'visited/k ends with "v"'),
    ("k == 'v' && x == 'y'", '(visited/k == "v" && visited/x == "y")'),
    ("k == 'v' || has(x)", '(visited/k == "v" || has(visited/x))'),
    ("!(k == 'v')", '!visited/k == "v"'),
    ("k in {'v'}", 'visited/k in {"v"}'),
    ("k not in {'v'}", 'visited/k not in {"v"}'),
    (
        "!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
        '!(!((visited/k == "v" && has(visited/t)) || all()) && visited/a in {"b", "c"})',
    ),
]


@pytest.mark.parametrize(("text", "expected"), PREFIXED)
def test_prefix_labels(text: str, expected: str) -> None:
    assert prefix_labels(text, "visited/").canonical == expected
    assert prefix_labels(parse(text), "visited/").canonical == expected


def test_prefix_labels_evaluates_against_prefixed_labels() -> None:
    selector = prefix_labels("team == 'red' && has(tier)", "pcns.")
    assert selector.labels == frozenset({"pcns.team", "pcns.tier"})
    assert selector.evaluate({"pcns.team": "red", "pcns.tier": "1"})
    assert not selector.evaluate({"team": "red", "tier": "1"})


def test_prefix_must_be_label_characters() -> None:
    with pytest.raises(ValueError, match="label prefix 'bad prefix'"):
        prefix_labels("has(a)", "bad prefix")


def test_prefix_that_makes_a_label_too_long_is_refused() -> None:
    with pytest.raises(SelectorParseError, match="longer than 512"):
        prefix_labels("has(" + "a" * 510 + ")", "pcns.")


def test_rule_namespace_selector_matches_calico_rules() -> None:
    # Calico: namespaceSelector "namespace == 'red'" / "all()" / "global()" with selector
    # has(labelN) give "(pcns.namespace == \"red\") && (has(label1))",
    # "(has(projectcalico.org/namespace)) && (has(label2))" and
    # "(!has(projectcalico.org/namespace)) && (has(label3))".
    cases = [
        ("namespace == 'red'", "has(label1)", '(pcns.namespace == "red") && (has(label1))'),
        ("all()", "has(label2)", "(has(projectcalico.org/namespace)) && (has(label2))"),
        ("global()", "has(label3)", "(!has(projectcalico.org/namespace)) && (has(label3))"),
    ]
    for namespace_selector, selector, calico_string in cases:
        composed = and_selectors(rule_namespace_selector(namespace_selector), selector)
        assert composed == parse(calico_string)
        assert composed.unique_id == parse(calico_string).unique_id


def test_replace_all_and_global_semantics() -> None:
    in_namespace = {NAMESPACE_LABEL: "default", "pcns.team": "red"}
    host_endpoint = {"role": "host"}
    everything = replace_all_and_global("all()")
    assert everything.canonical == "has(projectcalico.org/namespace)"
    assert everything.evaluate(in_namespace) and not everything.evaluate(host_endpoint)
    global_only = replace_all_and_global("global()")
    assert global_only.canonical == "!has(projectcalico.org/namespace)"
    assert global_only.evaluate(host_endpoint) and not global_only.evaluate(in_namespace)
    # Calico substitutes strings and re-parses: "!global()" becomes "!!has(...)" = has(...).
    assert replace_all_and_global("!global()").canonical == "has(projectcalico.org/namespace)"
    assert replace_all_and_global("a == 'x' || all()").canonical == (
        '(a == "x" || has(projectcalico.org/namespace))'
    )
    # Only the functions are replaced, never a quoted value that spells one.
    assert replace_all_and_global("a == 'all()'").canonical == 'a == "all()"'


def test_rule_namespace_selector_prefixes_then_replaces() -> None:
    selector = rule_namespace_selector("team == 'red' || global()")
    assert selector.canonical == '(pcns.team == "red" || !has(projectcalico.org/namespace))'


def test_and_selectors_is_calico_string_composition() -> None:
    a, b, c = "x == 'a' && y == 'b'", "has(z)", "w in {'1', '2'}"
    assert and_selectors(a, b) == parse(f"({a}) && ({b})")
    assert and_selectors(a, b).canonical == '((x == "a" && y == "b") && has(z))'
    assert and_selectors(a, b, c) == parse(f"({a}) && ({b}) && ({c})")
    assert and_selectors(a, and_selectors(b, c)) == parse(f"({a}) && (({b}) && ({c}))")
    assert and_selectors(parse(a)) == parse(a)
    assert and_selectors() == ALL
    assert and_selectors("", " ", b) == parse(b)
    # A Selector is never dropped, even all().
    assert and_selectors(ALL, b).canonical == "(all() && has(z))"


def test_and_selectors_evaluates_as_conjunction() -> None:
    composed = and_selectors("has(a)", "b == 'x'")
    assert composed.evaluate({"a": "", "b": "x"})
    assert not composed.evaluate({"a": ""})
    assert not composed.evaluate({"b": "x"})


def test_negate() -> None:
    assert negate("has(a) && has(b)").canonical == "!(has(a) && has(b))"
    assert negate("has(a)").evaluate({})


def test_builders() -> None:
    assert label_equals(NAMESPACE_LABEL, "default").canonical == (
        'projectcalico.org/namespace == "default"'
    )
    assert label_equals("a", 'say "hi"').canonical == "a == 'say \"hi\"'"
    assert label_in("projectcalico.org/serviceaccount", ["sa-2", "sa-1", "sa-2"]).canonical == (
        'projectcalico.org/serviceaccount in {"sa-1", "sa-2"}'
    )
    assert label_in("a", ["x"], negated=True).canonical == 'a not in {"x"}'
    assert has_label("a").canonical == "has(a)"
    for built in (label_equals("a", 'x"y'), label_in("a", ["'", '"']), has_label("a.b/c")):
        assert parse(built.canonical) == built


@pytest.mark.parametrize("label", ["", "bad label", "a=b", "x" * 513, "ünï"])
def test_builders_refuse_invalid_labels(label: str) -> None:
    with pytest.raises(ValueError, match="is not valid"):
        has_label(label)
    with pytest.raises(ValueError, match="is not valid"):
        label_equals(label, "v")


def test_builders_refuse_values_no_selector_can_express() -> None:
    with pytest.raises(ValueError, match="both quote characters"):
        label_equals("a", 'it\'s "x"')
    with pytest.raises(ValueError, match="both quote characters"):
        label_in("a", ["ok", 'it\'s "x"'])

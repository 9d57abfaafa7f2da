"""Example-based tests of the selector grammar, semantics, canonical form and error messages.

The canonical strings and unique ids marked "Calico" are Calico's own expectations
(libcalico-go/lib/selector/parser/parser_test.go), pinned here for compatibility.
"""

from __future__ import annotations

import pickle
from collections import ChainMap

import pytest

from pycalico.model.selectors import (
    ALL,
    MAX_NESTING,
    NO_MATCH,
    Selector,
    SelectorParseError,
    and_selectors,
    normalise,
    parse,
    validate,
)
from pycalico.model.selectors.compiler import build_closures, generate_source
from pycalico.model.selectors.nodes import group_depth

# (selector, label maps that match, label maps that do not)
SEMANTICS: list[tuple[str, list[dict[str, str]], list[dict[str, str]]]] = [
    ('a == "b"', [{"a": "b"}, {"a": "b", "c": "d"}], [{}, {"a": "c"}, {"c": "d"}]),
    ("a == 'b'", [{"a": "b"}], [{"a": "B"}, {}]),
    ('a != "b"', [{}, {"a": "c"}, {"c": "b"}], [{"a": "b"}]),
    ('a in {"x", "y"}', [{"a": "x"}, {"a": "y"}], [{}, {"a": "z"}, {"b": "x"}]),
    ('a in {"\'", \'"\', "c"}', [{"a": "c"}, {"a": '"'}, {"a": "'"}], [{}, {"a": "e"}]),
    ("a in {}", [], [{}, {"a": ""}]),
    ('a not in {"x", "y"}', [{}, {"a": "z"}, {"b": "x"}], [{"a": "x"}, {"a": "y"}]),
    ('a notin {"x"}', [{}, {"a": "z"}], [{"a": "x"}]),
    ("a not in {}", [{}, {"a": "x"}], []),
    ('a contains "a"', [{"a": "a"}, {"a": "bab"}], [{}, {"a": "b"}, {"b": "aaa"}]),
    ('a contains ""', [{"a": ""}, {"a": "x"}], [{}]),
    ('a starts with "a"', [{"a": "a"}, {"a": "abb"}], [{}, {"a": "baa"}, {"b": "aaa"}]),
    ('a ends with "a"', [{"a": "a"}, {"a": "bba"}], [{}, {"a": "aab"}, {"b": "aaa"}]),
    ('a ends with ""', [{"a": "x"}], [{}]),
    ("has(a)", [{"a": ""}, {"a": "b"}], [{}, {"b": "a"}]),
    ("!has(a)", [{}, {"b": "a"}], [{"a": ""}]),
    ("! has(a)", [{}], [{"a": "b"}]),
    ("!!has(a)", [{"a": "b"}], [{}]),
    ("!!!has(a)", [{}], [{"a": "b"}]),
    ("!! ! has(a)", [{}], [{"a": "b"}]),
    ('!a == "b"', [{}, {"a": "c"}], [{"a": "b"}]),
    ('!a in {"a"}', [{"a": "b"}, {}], [{"a": "a"}]),
    ("", [{}, {"a": "b"}], []),
    (" \t ", [{}, {"a": "b"}], []),
    ("all()", [{}, {"a": "b"}], []),
    ("global()", [{}, {"a": "b"}], []),
    ("!all()", [], [{}, {"a": "b"}]),
    ("a == 'a1' && b == 'b1'", [{"a": "a1", "b": "b1"}], [{"a": "a1"}, {"b": "b1"}]),
    ("a == 'a1' || b == 'b1'", [{"a": "a1"}, {"b": "b1"}], [{}, {"a": "x", "b": "y"}]),
    ("a != 'a1' || b != 'b1'", [{}, {"a": "a1"}], [{"a": "a1", "b": "b1"}]),
    ("has(a) && !has(b)", [{"a": "a"}], [{"a": "a", "b": "b"}, {}]),
    ("!(!has(a) || has(b))", [{"a": "a"}], [{"a": "a", "b": "b"}, {}]),
    # && binds tighter than ||.
    ("has(a) || has(b) && has(c)", [{"a": ""}, {"b": "", "c": ""}], [{"b": ""}, {"c": ""}]),
    ("(has(a) || has(b)) && has(c)", [{"a": "", "c": ""}], [{"a": ""}, {"b": ""}]),
]


@pytest.mark.parametrize(("text", "matches", "non_matches"), SEMANTICS)
def test_evaluation(
    text: str, matches: list[dict[str, str]], non_matches: list[dict[str, str]]
) -> None:
    selector = parse(text)
    again = parse(selector.canonical)
    closures = build_closures(selector.root)
    for labels in matches:
        assert selector.evaluate(labels), (text, labels)
        assert again.evaluate(labels), (selector.canonical, labels)
        assert closures(labels), (text, labels)
    for labels in non_matches:
        assert not selector.evaluate(labels), (text, labels)
        assert not again.evaluate(labels), (selector.canonical, labels)
        assert not closures(labels), (text, labels)


def test_evaluate_accepts_any_mapping() -> None:
    selector = parse("role == 'db' && has(pcns.team)")
    profile_labels = {"pcns.team": "red"}
    endpoint_labels = {"role": "db"}
    assert selector.evaluate(ChainMap(endpoint_labels, profile_labels))
    assert not selector.evaluate(ChainMap(endpoint_labels, {}))


# (input, canonical, unique id or "")
CANONICAL = [
    # Calico
    ("", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    (" all() ", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    (" (all() )", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    ("! (has( b)||! has(a ))", "!(has(b) || !has(a))", "s:Iss0uCleLYv1GSv_pNm7hAO58kE9jAx1NKyG3Q"),
    (
        '! (a == "b"&&! c != "d")',
        '!(a == "b" && !c != "d")',
        "s:lh3haoY1ikTRkd4UZu0nWSaIBknYLPJLX16d-w",
    ),
    ('a == "\'"', 'a == "\'"', ""),
    ("a == '\"'", "a == '\"'", ""),
    ("a contains '\"'", "a contains '\"'", ""),
    ('a contains "\'"', 'a contains "\'"', ""),
    ("a startswith '\"'", "a starts with '\"'", ""),
    ('a endswith "\'"', 'a ends with "\'"', ""),
    ("a!='\"'", "a != '\"'", ""),
    ('a in {"d"}', 'a in {"d"}', ""),
    ('a in {"d", "a", "b"}', 'a in {"a", "b", "d"}', ""),
    ('a in {"z", "z", "x", "y", "x", "a"}', 'a in {"a", "x", "y", "z"}', ""),
    (
        "!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
        '!(!((k == "v" && has(t)) || all()) && a in {"b", "c"})',
        "",
    ),
    ("k == 'v' && x == 'y'", '(k == "v" && x == "y")', ""),
    ("!(k == 'v')", '!k == "v"', ""),
    # Ours: spelling variants, grouping, sets.
    ("a  not  in  {'x' , 'y'}", 'a not in {"x", "y"}', ""),
    ('a notin{"x",}', 'a not in {"x"}', ""),
    ("a in {}", "a in {}", ""),
    ("a starts  with 'x'", 'a starts with "x"', ""),
    ("a ends\twith 'x'", 'a ends with "x"', ""),
    ('a contains"x"', 'a contains "x"', ""),
    ("contains contains 'contains'", 'contains contains "contains"', ""),
    ("has(a) && has(b) && has(c)", "(has(a) && has(b) && has(c))", ""),
    ("(has(a) && has(b)) && has(c)", "((has(a) && has(b)) && has(c))", ""),
    ("has(a) || has(b) && has(c)", "(has(a) || (has(b) && has(c)))", ""),
    ("((((has(a)))))", "has(a)", ""),
    ("!!has(a)", "has(a)", ""),
    ("global() || all()", "(global() || all())", ""),
    ("a == 'ünï cødé'", 'a == "ünï cødé"', ""),
    ("k8s-app.io/name_x == 'v'", 'k8s-app.io/name_x == "v"', ""),
    ("has(calico/k8s_NS-.1/role)", "has(calico/k8s_NS-.1/role)", ""),
]


@pytest.mark.parametrize(("text", "canonical", "unique_id"), CANONICAL)
def test_canonical_form_and_unique_id(text: str, canonical: str, unique_id: str) -> None:
    selector = parse(text)
    assert selector.canonical == canonical
    assert str(selector) == canonical
    again = parse(canonical)
    assert again.canonical == canonical
    assert again == selector
    assert again.unique_id == selector.unique_id
    if unique_id:
        assert selector.unique_id == unique_id


def test_unique_id_shape() -> None:
    uid = parse("a == 'b'").unique_id
    assert uid.startswith("s:")
    assert len(uid) == 2 + 38  # 28 bytes of SHA-224, base64url without padding
    assert "=" not in uid and "+" not in uid and "/" not in uid


def test_double_negation_through_parentheses_is_a_calico_quirk() -> None:
    # Calico keeps !(!x) as two NotNodes and prints "!!x"; "!!x" re-parses as x.
    selector = parse("!(!a == 'b')")
    assert selector.canonical == '!!a == "b"'
    assert parse(selector.canonical).canonical == 'a == "b"'
    for labels in ({}, {"a": "b"}, {"a": "c"}):
        assert selector.evaluate(labels) == parse("a == 'b'").evaluate(labels)


def test_labels_names_every_label_read() -> None:
    selector = parse("a == 'x' && (has(b) || !c in {'y'}) && d contains 'q' && all()")
    assert selector.labels == frozenset({"a", "b", "c", "d"})
    assert parse("all()").labels == frozenset()


def test_selector_is_immutable_hashable_and_picklable() -> None:
    selector = parse("a == 'b'")
    with pytest.raises(AttributeError, match="immutable"):
        selector.canonical = "x"
    with pytest.raises(AttributeError, match="immutable"):
        del selector.root
    assert {selector: 1}[parse('a=="b"')] == 1
    assert selector != parse("a == 'c'")
    assert selector != 'a == "b"'
    assert repr(selector) == "Selector('a == \"b\"')"
    restored = pickle.loads(pickle.dumps(parse("!(!a == 'b')")))
    assert restored.canonical == '!!a == "b"'
    assert restored.evaluate({"a": "b"})


def test_parse_is_cached() -> None:
    assert parse("has(cached-label)") is parse("has(cached-label)")


def test_constants() -> None:
    assert parse("all()") == ALL
    assert parse("!all()") == NO_MATCH
    assert not NO_MATCH.evaluate({})


def test_normalise_like_calico() -> None:
    assert normalise("  a=='b'\n") == 'a == "b"'
    assert normalise("") == "all()"
    assert normalise(" not a selector(") == "not a selector("


def test_generated_code_is_a_plain_expression() -> None:
    source = generate_source(parse("a == 'x' && has(b)").root)
    assert source == "lambda labels: (labels.get('a') == 'x' and 'b' in labels)"


def test_label_length_limit() -> None:
    assert parse("x" * 512 + " == 'a'").labels == frozenset({"x" * 512})
    with pytest.raises(SelectorParseError, match="longer than 512 characters"):
        parse("x" * 513 + " == 'a'")
    with pytest.raises(SelectorParseError, match="longer than 512 characters"):
        parse("has(" + "x" * 513 + ")")


def _nested_groups(levels: int) -> str:
    """Text whose tree nests ``levels`` &&/|| groups, two per pair of parentheses."""
    text = "has(z)"
    for level in range(levels // 2):
        text = f"has(x{level}) || has(y{level}) && ({text})"
    return text if levels % 2 == 0 else f"has(w) && ({text})"


def test_nesting_limits() -> None:
    redundant = "(" * 2 * MAX_NESTING + "has(a)" + ")" * 2 * MAX_NESTING
    assert parse(redundant).canonical == "has(a)"
    negated = "!(" * 2 * MAX_NESTING + "has(a)" + ")" * 2 * MAX_NESTING
    assert parse(negated).evaluate({"a": "x"})
    too_many = "(" * (2 * MAX_NESTING + 1) + "has(a)" + ")" * (2 * MAX_NESTING + 1)
    with pytest.raises(SelectorParseError, match="parentheses nest deeper than 128 levels"):
        parse(too_many)
    # The deepest tree accepted has a canonical form that parses again.
    deepest = parse(_nested_groups(MAX_NESTING))
    assert group_depth(deepest.root) == MAX_NESTING
    assert parse(deepest.canonical) == deepest
    assert deepest.evaluate({"x31": ""}) and not deepest.evaluate({"y31": ""})
    with pytest.raises(SelectorParseError, match="groups nest deeper than 64 levels") as caught:
        parse(_nested_groups(MAX_NESTING + 1))
    assert caught.value.position > 0


def test_trees_too_deep_to_compile_fall_back_to_closures() -> None:
    selector = parse("has(a)")
    for index in range(200):
        selector = and_selectors(selector, f"!has(b{index})")
    assert selector.evaluate.__name__ == "conjunction"  # the closure tree, not generated code
    assert selector.evaluate({"a": ""})
    assert not selector.evaluate({"a": "", "b150": ""})
    assert not selector.evaluate({})


# (text, position, message fragment)
ERRORS = [
    ("a == ", 5, "expected a quoted string after '==', found the end of the selector"),
    ("b == b", 5, "expected a quoted string after '==', found label 'b'"),
    ("b contains b", 11, "expected a quoted string after 'contains', found label 'b'"),
    ("b starts with b", 2, "expected an operator"),
    ("'b1' == b", 0, "expected a label, 'has(', 'all()', 'global()', '!' or '(', found string"),
    ("b", 1, "expected an operator (==, !=, in, not in, contains, starts with, ends with)"),
    ("a b", 2, "after label 'a'"),
    ("a inside {}", 2, "expected an operator"),
    ("a containsx 'y'", 2, "expected an operator"),
    ("!", 1, "found the end of the selector"),
    ('foo == "bar" &', 13, "expected '&&'"),
    ('foo == "bar" |', 13, "expected '||'"),
    ("foo = 'bar'", 4, "expected '=='"),
    ("foo != ||", 7, "expected a quoted string after '!=', found '||'"),
    ('foo in {"", ||', 12, "expected a quoted string or '}' in a set, found '||'"),
    ('foo in {"a" "b"}', 12, "expected ',' or '}' after a set member, found string 'b'"),
    ("foo in {,}", 8, "expected a quoted string or '}' in a set, found ','"),
    ('foo in ""', 7, "expected '{' to open a set after 'in', found string ''"),
    ('foo not in "x"', 11, "expected '{' to open a set after 'not in'"),
    ('"FOO', 0, "unterminated string"),
    ("\"FOO'", 0, "unterminated string"),
    ("a == 'FOO", 5, "unterminated string"),
    ("(", 1, "expected a label"),
    ('(a == "foo"', 11, "expected ')' to close the '(' at position 0"),
    (")", 0, "found ')'"),
    ("()", 1, "found ')'"),
    ("has(a))", 6, "(this ')' has no '(')"),
    ("%", 0, "unexpected character '%'"),
    ('a == "b" && %', 12, "unexpected character '%'"),
    ('a == "b" || %', 12, "unexpected character '%'"),
    ("a\n== 'b'", 1, "unexpected character '\\n' (only spaces and tabs may separate tokens)"),
    ("has(foo) &&", 11, "found the end of the selector"),
    ('a == "b" c == "d"', 9, "expected '&&', '||' or the end of the selector, found label 'c'"),
    ("has()", 4, "expected a label name inside 'has('"),
    ("has(a", 5, "expected ')' to close 'has('"),
    ("has (a)", 4, "after label 'has', found '('"),
    ("all(x)", 4, "expected ')' to close 'all('"),
    ("global( ", 8, "expected ')' to close 'global('"),
    ("a == 'b' && all", 15, "expected an operator"),
]


@pytest.mark.parametrize(("text", "position", "fragment"), ERRORS)
def test_errors_name_position_and_problem(text: str, position: int, fragment: str) -> None:
    with pytest.raises(SelectorParseError) as caught:
        parse(text)
    error = caught.value
    assert isinstance(error, ValueError)
    assert fragment in error.reason
    assert error.position == position
    assert error.selector == text
    assert str(error) == f"{error.reason} at position {position} in {text!r}"
    with pytest.raises(SelectorParseError):
        validate(text)


def test_error_message_shortens_a_huge_selector() -> None:
    text = "has(a) && " * 100 + "%"
    with pytest.raises(SelectorParseError) as caught:
        parse(text)
    assert caught.value.selector == text
    assert len(str(caught.value)) < 300


def test_selector_from_a_tree_and_operand_order_matters() -> None:
    selector = Selector(parse("has(a) || has(b)").root)
    assert selector.canonical == "(has(a) || has(b))"
    # As in Calico, operand order is part of the canonical form (and so of the IP-set id).
    assert selector != parse("has(b) || has(a)")


def test_parse_refuses_non_strings() -> None:
    with pytest.raises(TypeError, match="a selector must be a string, not NoneType"):
        parse(None)  # type: ignore[arg-type]

"""Fuzzing the selector parser with arbitrary text (selectors come from every policy, BGPPeer
and IPPool a user writes, and from Kubernetes label selectors).

Properties: ``parse`` either returns a selector or raises ``SelectorParseError`` with a position
inside the text and a reason (never another exception, never a hang on deep nesting); what
parses has a canonical form that parses to itself; evaluation never raises, whatever the labels.
The grammar-aware property tests are in ``tests/unit/selectors``; this file feeds it noise and
near-misses built from the grammar's own tokens.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from pycalico.model.selectors import SelectorParseError, parse

from .budgets import budget

TOKENS = [
    "a",
    "b",
    "x.io/y",
    "==",
    "!=",
    " ",
    "(",
    ")",
    "!",
    "&&",
    "||",
    "'",
    '"',
    "has(",
    "in",
    "not in",
    "{",
    "}",
    ",",
    "all()",
    "global()",
    "contains",
    "starts with",
    "ends with",
    "'v'",
    '"w"',
    "\\",
    "\t",
    "\n",
    "ü",
    "\x00",
]
token_soup = st.lists(st.sampled_from(TOKENS), max_size=25).map("".join)
labels = st.dictionaries(st.sampled_from(["a", "b", "x.io/y"]), st.text(max_size=4), max_size=3)


def _check(text: str, label_map: dict[str, str]) -> None:
    try:
        selector = parse(text)
    except SelectorParseError as error:
        assert error.reason and 0 <= error.position <= len(text), error
        return
    assert parse(selector.canonical).canonical == selector.canonical
    assert isinstance(selector.evaluate(label_map), bool)


@budget(500)
@given(token_soup, labels)
@example("(" * 5000, {})
@example("!" * 5000 + "all()", {})
@example("a == 'x' && " * 2000 + "b == 'y'", {"a": "x", "b": "y"})
@example("has(a\x00)", {})
def test_token_soup_parses_or_names_the_position(text: str, label_map: dict[str, str]) -> None:
    _check(text, label_map)


@budget(300)
@given(st.text(max_size=200), labels)
def test_arbitrary_text_parses_or_names_the_position(text: str, label_map: dict[str, str]) -> None:
    _check(text, label_map)

"""Tokenizer and parser for Calico's selector language (calico-reference.md §2.1).

What this is: text -> syntax tree (``nodes.Node``), accepting exactly what Calico's
``libcalico-go/lib/selector/{tokenizer,parser}`` accept, and ``SelectorParseError`` naming the
position and the problem when the text is not a selector.  What this is not: evaluation,
caching or the public ``Selector`` (see ``selector.py``).

Facts mirrored from Calico (so that a selector Calico accepts parses here to the same tree):

* Whitespace is space and tab only; a newline is an unexpected character.
* Label names are ``[a-zA-Z0-9_./-]{1,512}``; string literals are ``"..."`` or ``'...'`` with
  no escapes.
* After a label only an operator may follow: ``==``, ``!=``, ``contains``, ``starts with``,
  ``ends with``, ``not in``, ``in``.  The words of ``starts with``/``ends with``/``not in`` may
  be written together (``startswith``, ``notin``); a word operator must end at a word boundary.
* ``has(``, ``all(`` and ``global(`` must be written without a space before ``(``.
* A set literal may be empty and may end with a trailing comma: ``{"a",}``.
* ``&&`` binds tighter than ``||``; a run of ``!`` collapses to one or none; parentheses only
  group (they leave no node), so ``(a && b) && c`` is an ``And`` inside an ``And``.
* The empty (or all-blank) selector is ``all()``.

Invariant added here (Calico has no such limits; no real selector comes near them): ``&&``/``||``
groups nest at most ``MAX_NESTING`` deep in the tree (that is, in the canonical form's
parentheses, so the canonical form of anything parsed parses again), and the text's parentheses
at most ``2 * MAX_NESTING`` deep, so that parsing never approaches Python's recursion limit.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum, auto
from typing import Final

from pycalico.model.selectors.nodes import (
    All,
    And,
    Compare,
    CompareOp,
    Global,
    Has,
    Node,
    Not,
    Or,
    group_depth,
    make_in_set,
)

MAX_LABEL_LENGTH: Final = 512
MAX_NESTING: Final = 64
_MAX_PARENTHESES: Final = 2 * MAX_NESTING

LABEL_PATTERN: Final = r"[a-zA-Z0-9_./-]{1,512}"
_LABEL_RE = re.compile(r"[a-zA-Z0-9_./-]+")
_WHITESPACE_RE = re.compile(r"[ \t]*")
# A single-word operator needs a word boundary right after it; a multi-word one needs it after
# the whitespace that follows its last word (Calico trims that whitespace before checking).
_OPERATOR_RE = re.compile(
    r"(?P<contains>contains)(?![a-zA-Z0-9_./-])"
    r"|(?P<starts>starts[ \t]*with)(?![ \t]*[a-zA-Z0-9_./-])"
    r"|(?P<ends>ends[ \t]*with)(?![ \t]*[a-zA-Z0-9_./-])"
    r"|(?P<notin>not[ \t]*in)(?![ \t]*[a-zA-Z0-9_./-])"
    r"|(?P<in>in)(?![a-zA-Z0-9_./-])"
)


class SelectorParseError(ValueError):
    """The text is not a valid selector.

    ``selector`` is the whole text, ``position`` the 0-based character offset of the problem
    and ``reason`` what was wrong there.
    """

    def __init__(self, selector: str, position: int, reason: str) -> None:
        self.selector = selector
        self.position = position
        self.reason = reason
        shown = selector if len(selector) <= 200 else selector[:200] + "..."
        super().__init__(f"{reason} at position {position} in {shown!r}")


class Kind(Enum):
    LABEL = auto()
    STRING = auto()
    LBRACE = auto()
    RBRACE = auto()
    COMMA = auto()
    EQ = auto()
    NE = auto()
    IN = auto()
    NOT_IN = auto()
    CONTAINS = auto()
    STARTS_WITH = auto()
    ENDS_WITH = auto()
    NOT = auto()
    HAS = auto()
    ALL = auto()
    GLOBAL = auto()
    LPAREN = auto()
    RPAREN = auto()
    AND = auto()
    OR = auto()
    EOF = auto()


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    position: int
    value: str = ""


_SINGLE_CHAR: Final = {
    "(": Kind.LPAREN,
    ")": Kind.RPAREN,
    "{": Kind.LBRACE,
    "}": Kind.RBRACE,
    ",": Kind.COMMA,
}
_DOUBLE_CHAR: Final = {"==": Kind.EQ, "!=": Kind.NE, "&&": Kind.AND, "||": Kind.OR}
_WORD_OPERATORS: Final = {
    "contains": Kind.CONTAINS,
    "starts": Kind.STARTS_WITH,
    "ends": Kind.ENDS_WITH,
    "notin": Kind.NOT_IN,
    "in": Kind.IN,
}
_COMPARE_OPS: Final[dict[Kind, CompareOp]] = {
    Kind.EQ: "==",
    Kind.NE: "!=",
    Kind.CONTAINS: "contains",
    Kind.STARTS_WITH: "starts with",
    Kind.ENDS_WITH: "ends with",
}
_SPELLING: Final = {
    Kind.LBRACE: "'{'",
    Kind.RBRACE: "'}'",
    Kind.COMMA: "','",
    Kind.EQ: "'=='",
    Kind.NE: "'!='",
    Kind.IN: "'in'",
    Kind.NOT_IN: "'not in'",
    Kind.CONTAINS: "'contains'",
    Kind.STARTS_WITH: "'starts with'",
    Kind.ENDS_WITH: "'ends with'",
    Kind.NOT: "'!'",
    Kind.ALL: "'all()'",
    Kind.GLOBAL: "'global()'",
    Kind.LPAREN: "'('",
    Kind.RPAREN: "')'",
    Kind.AND: "'&&'",
    Kind.OR: "'||'",
    Kind.EOF: "the end of the selector",
}


def _describe(token: Token) -> str:
    if token.kind is Kind.LABEL:
        return f"label {token.value!r}"
    if token.kind is Kind.STRING:
        return f"string {token.value!r}"
    if token.kind is Kind.HAS:
        return f"'has({token.value})'"
    return _SPELLING[token.kind]


def _skip_whitespace(text: str, position: int) -> int:
    match = _WHITESPACE_RE.match(text, position)
    return match.end() if match else position


def _cut_label(text: str, position: int, what: str) -> tuple[str, int]:
    match = _LABEL_RE.match(text, position)
    if match is None:
        raise SelectorParseError(text, position, f"expected {what}")
    label = match.group()
    if len(label) > MAX_LABEL_LENGTH:
        raise SelectorParseError(
            text, position, f"label name is longer than 512 characters ({len(label)})"
        )
    return label, match.end()


def _unexpected_character(text: str, position: int) -> SelectorParseError:
    char = text[position]
    hint = " (only spaces and tabs may separate tokens)" if char.isspace() else ""
    return SelectorParseError(text, position, f"unexpected character {char!r}{hint}")


def _call(text: str, position: int, name: str) -> int:
    """Position after ``name()`` (``name(`` already matched at ``position``)."""
    after = _skip_whitespace(text, position + len(name) + 1)
    if not text.startswith(")", after):
        raise SelectorParseError(text, after, f"expected ')' to close '{name}('")
    return after + 1


def tokenize(text: str) -> list[Token]:
    """The tokens of ``text``, ending with an EOF token."""
    tokens: list[Token] = []
    position = 0
    length = len(text)
    while True:
        position = _skip_whitespace(text, position)
        if position >= length:
            tokens.append(Token(Kind.EOF, length))
            return tokens
        char = text[position]
        after_label = bool(tokens) and tokens[-1].kind is Kind.LABEL
        if char in _SINGLE_CHAR:
            tokens.append(Token(_SINGLE_CHAR[char], position))
            position += 1
        elif char == '"' or char == "'":
            end = text.find(char, position + 1)
            if end < 0:
                raise SelectorParseError(text, position, "unterminated string")
            tokens.append(Token(Kind.STRING, position, text[position + 1 : end]))
            position = end + 1
        elif char in "=!&|":
            pair = text[position : position + 2]
            if pair in _DOUBLE_CHAR:
                tokens.append(Token(_DOUBLE_CHAR[pair], position))
                position += 2
            elif char == "!":
                tokens.append(Token(Kind.NOT, position))
                position += 1
            else:
                raise SelectorParseError(text, position, f"expected '{char}{char}'")
        elif after_label:
            operator = _OPERATOR_RE.match(text, position)
            if operator is None and not _LABEL_RE.match(text, position):
                raise _unexpected_character(text, position)
            if operator is None:
                raise SelectorParseError(
                    text,
                    position,
                    f"expected an operator (==, !=, in, not in, contains, starts with, ends with)"
                    f" after label {tokens[-1].value!r}",
                )
            tokens.append(Token(_WORD_OPERATORS[operator.lastgroup or ""], position))
            position = operator.end()
        elif text.startswith("has(", position):
            start = _skip_whitespace(text, position + 4)
            label, end = _cut_label(text, start, "a label name inside 'has('")
            end = _skip_whitespace(text, end)
            if not text.startswith(")", end):
                raise SelectorParseError(text, end, "expected ')' to close 'has('")
            tokens.append(Token(Kind.HAS, position, label))
            position = end + 1
        elif text.startswith("all(", position):
            tokens.append(Token(Kind.ALL, position))
            position = _call(text, position, "all")
        elif text.startswith("global(", position):
            tokens.append(Token(Kind.GLOBAL, position))
            position = _call(text, position, "global")
        elif _LABEL_RE.match(text, position):
            label, end = _cut_label(text, position, "a label")
            tokens.append(Token(Kind.LABEL, position, label))
            position = end
        else:
            raise _unexpected_character(text, position)


class _Parser:
    """Recursive descent over the tokens: or-expression of and-expressions of operations."""

    def __init__(self, text: str, tokens: list[Token]) -> None:
        self.text = text
        self.tokens = tokens
        self.index = 0
        # (deepest parenthesis level reached, position of the '(' that first reached it)
        self.deepest = (0, 0)

    def fail(self, token: Token, expected: str) -> SelectorParseError:
        return SelectorParseError(
            self.text, token.position, f"expected {expected}, found {_describe(token)}"
        )

    def next(self) -> Token:
        token = self.tokens[self.index]
        if token.kind is not Kind.EOF:
            self.index += 1
        return token

    def parse(self) -> Node:
        if self.tokens[0].kind is Kind.EOF:
            return All()
        node = self.or_expression(0)
        token = self.tokens[self.index]
        if token.kind is not Kind.EOF:
            expected = "'&&', '||' or the end of the selector"
            if token.kind is Kind.RPAREN:
                expected = "'&&', '||' or the end of the selector (this ')' has no '(')"
            raise self.fail(token, expected)
        # A tree nests at most two groups (an && inside an ||) per level of parentheses plus
        # two outside them, so only deep parentheses make walking the tree worthwhile.
        if 2 * self.deepest[0] + 2 > MAX_NESTING and group_depth(node) > MAX_NESTING:
            raise SelectorParseError(
                self.text,
                self.deepest[1],
                f"&&/|| groups nest deeper than {MAX_NESTING} levels",
            )
        return node

    def or_expression(self, nesting: int) -> Node:
        operands = [self.and_expression(nesting)]
        while self.tokens[self.index].kind is Kind.OR:
            self.index += 1
            operands.append(self.and_expression(nesting))
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def and_expression(self, nesting: int) -> Node:
        operands = [self.operation(nesting)]
        while self.tokens[self.index].kind is Kind.AND:
            self.index += 1
            operands.append(self.operation(nesting))
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def operation(self, nesting: int) -> Node:
        negated = False
        token = self.next()
        while token.kind is Kind.NOT:
            negated = not negated
            token = self.next()
        node: Node
        kind = token.kind
        if kind is Kind.LABEL:
            node = self.label_operation(token)
        elif kind is Kind.HAS:
            node = Has(token.value)
        elif kind is Kind.ALL:
            node = All()
        elif kind is Kind.GLOBAL:
            node = Global()
        elif kind is Kind.LPAREN:
            if nesting >= _MAX_PARENTHESES:
                raise SelectorParseError(
                    self.text,
                    token.position,
                    f"parentheses nest deeper than {_MAX_PARENTHESES} levels",
                )
            if nesting >= self.deepest[0]:
                self.deepest = (nesting + 1, token.position)
            node = self.or_expression(nesting + 1)
            closing = self.next()
            if closing.kind is not Kind.RPAREN:
                raise self.fail(closing, f"')' to close the '(' at position {token.position}")
        else:
            raise self.fail(token, "a label, 'has(', 'all()', 'global()', '!' or '('")
        return Not(node) if negated else node

    def label_operation(self, label: Token) -> Node:
        operator = self.next()
        compare_op = _COMPARE_OPS.get(operator.kind)
        if compare_op is not None:
            value = self.next()
            if value.kind is not Kind.STRING:
                raise self.fail(value, f"a quoted string after '{compare_op}'")
            return Compare(label.value, compare_op, value.value)
        if operator.kind is Kind.IN or operator.kind is Kind.NOT_IN:
            spelled = _SPELLING[operator.kind]
            brace = self.next()
            if brace.kind is not Kind.LBRACE:
                raise self.fail(brace, f"'{{' to open a set after {spelled}")
            values: list[str] = []
            token = self.next()
            while token.kind is Kind.STRING:
                values.append(token.value)
                token = self.next()
                if token.kind is not Kind.COMMA:
                    if token.kind is not Kind.RBRACE:
                        raise self.fail(token, "',' or '}' after a set member")
                    break
                token = self.next()
            else:
                if token.kind is not Kind.RBRACE:
                    raise self.fail(token, "a quoted string or '}' in a set")
            return make_in_set(label.value, values, negated=operator.kind is Kind.NOT_IN)
        raise self.fail(
            operator,
            f"an operator (==, !=, in, not in, contains, starts with, ends with)"
            f" after label {label.value!r}",
        )


def parse_node(text: str) -> Node:
    """The syntax tree of ``text``; raises ``SelectorParseError`` if it is not a selector."""
    if not isinstance(text, str):
        raise TypeError(f"a selector must be a string, not {type(text).__name__}")
    return _Parser(text, tokenize(text)).parse()

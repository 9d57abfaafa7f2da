"""``Selector``: a parsed Calico selector, and ``parse`` with its cache.

What this is: the public value object for a selector (calico-reference.md §2.1): its tree, its
canonical string, its unique id (the IP-set id Felix derives from it), the label names it reads
and a compiled evaluator.  What this is not: composition and rewriting (``transform.py``) or the
grammar (``parser.py``).

Invariants:

* A ``Selector`` is immutable; equality and hashing go by ``canonical``, exactly as Calico
  identifies selectors by ``String()``/``UniqueID()``.
* ``canonical`` is Calico's canonical form.  Re-parsing it gives an equal selector, with one
  quirk inherited from Calico: a ``!`` applied to a parenthesised ``!`` (``!(!a == "b")``)
  prints as ``!!a == "b"``, which re-parses as ``a == "b"`` because a run of ``!`` collapses.
* ``unique_id`` is ``"s:" + base64url-no-pad(SHA-224("s:" + canonical))``, Calico's
  ``hash.MakeUniqueID("s", canonical)``.
* ``evaluate`` is compiled on first use and then is the compiled function itself (no wrapper
  call), so ``selector.evaluate(labels)`` costs what the hand-written lambda costs.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from functools import cached_property, lru_cache
from types import MappingProxyType
from typing import Any, Final, NoReturn

from pycalico.model.selectors.compiler import Evaluator, compile_node
from pycalico.model.selectors.nodes import All, Node, Not, label_names, render
from pycalico.model.selectors.parser import SelectorParseError, parse_node
from pycalico.model.selectors.restrictions import LabelRestriction, label_restrictions

PARSE_CACHE_SIZE: Final = 16384


class Selector:
    """A parsed selector.  Build one with ``parse(text)`` (or ``Selector(node)`` from a tree)."""

    root: Node
    canonical: str

    def __init__(self, root: Node) -> None:
        self.__dict__["root"] = root
        self.__dict__["canonical"] = render(root)

    @cached_property
    def evaluate(self) -> Evaluator:
        """``selector.evaluate(labels) -> bool``: does a label mapping match this selector?"""
        return compile_node(self.root)

    @cached_property
    def unique_id(self) -> str:
        """Calico's unique id of this selector (the id of its IP set)."""
        digest = hashlib.sha224(f"s:{self.canonical}".encode()).digest()
        return "s:" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    @cached_property
    def labels(self) -> frozenset[str]:
        """The label names this selector reads: only a change to one of these can change
        whether a given endpoint matches."""
        return label_names(self.root)

    @cached_property
    def restrictions(self) -> Mapping[str, LabelRestriction]:
        """Per label, what every match demands of it (present, absent, one of some values);
        see ``restrictions.py``.  Sound but incomplete: use it to skip, never to match."""
        return MappingProxyType(dict(label_restrictions(self.root)))

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"Selector is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"Selector is immutable; cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Selector):
            return self.canonical == other.canonical
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.canonical)

    def __str__(self) -> str:
        return self.canonical

    def __repr__(self) -> str:
        return f"Selector({self.canonical!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Selector, (self.root,))


@lru_cache(maxsize=PARSE_CACHE_SIZE)
def parse(text: str) -> Selector:
    """Parse ``text`` (see ``parser.py`` for the accepted grammar).

    Raises ``SelectorParseError`` (a ``ValueError``) naming the position and the problem.
    Results are cached by text: the same selector strings recur across policies and rules.
    """
    return Selector(parse_node(text))


def validate(text: str) -> None:
    """Raise ``SelectorParseError`` if ``text`` is not a selector."""
    parse(text)


def normalise(text: str) -> str:
    """Calico's ``selector.Normalise``: the canonical form of ``text`` with surrounding
    whitespace (newlines too) removed, or ``text`` stripped and unchanged if it does not parse."""
    stripped = text.strip()
    try:
        return parse(stripped).canonical
    except SelectorParseError:
        return stripped


ALL: Final = Selector(All())
"""``all()``: matches every label mapping."""

NO_MATCH: Final = Selector(Not(All()))
"""``!all()``: matches nothing."""

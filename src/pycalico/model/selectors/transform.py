"""Building and rewriting selectors the way Calico's v3 -> Felix translation does (§2.2).

What this is: composition (``and_selectors``, ``negate``), label prefixing (``prefix_labels``,
for the ``pcns.``/``pcsa.`` profile labels), the namespaceSelector rewrite
(``rule_namespace_selector``: prefix with ``pcns.``, ``all()`` -> ``has(projectcalico.org/
namespace)``, ``global()`` -> ``!has(projectcalico.org/namespace)``), and builders that make
selectors from label names and values without quoting them by hand.  What this is not: the
policy translation itself (which clauses to AND for which resource lives with the k8s and
Felix code that calls these).

Invariants:

* Results equal what Calico gets by pasting selector strings together and re-parsing:
  ``and_selectors(a, b)`` is ``parse("(a) && (b)")`` (an ``&&`` group is never flattened into an
  enclosing one, because Calico does not flatten it and the canonical string, hence the IP-set
  id, would differ).  Rewrites that Calico does on the canonical string (prefixing, the
  all()/global() replacement) re-parse their canonical string too, so even the ``!!`` quirk
  (see ``selector.py``) comes out as in Calico.
* Calico replaces ``all()``/``global()`` by plain string substitution, which would also rewrite
  a quoted value such as ``a == "all()"``; here only the functions are replaced.
* Builders refuse what no selector text can express: a label outside ``[a-zA-Z0-9_./-]{1,512}``
  or a value holding both quote characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
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
    make_in_set,
    render,
)
from pycalico.model.selectors.parser import LABEL_PATTERN
from pycalico.model.selectors.selector import ALL, Selector, parse

NAMESPACE_LABEL: Final = "projectcalico.org/namespace"
NAMESPACE_LABEL_PREFIX: Final = "pcns."
SERVICE_ACCOUNT_LABEL_PREFIX: Final = "pcsa."

_LABEL_RE = re.compile(LABEL_PATTERN)
_PREFIX_RE = re.compile(r"[a-zA-Z0-9_./-]*")


def _as_selector(selector: Selector | str) -> Selector:
    return selector if isinstance(selector, Selector) else parse(selector)


def _reparsed(root: Node) -> Selector:
    # Calico hands rewritten selectors on as canonical strings; parsing that string again is
    # what makes the result identical to Calico's in every case.
    return parse(render(root))


def _check_label(label: str) -> None:
    if not _LABEL_RE.fullmatch(label):
        raise ValueError(
            f"label name {label!r} is not valid: it must be 1-512 characters of [a-zA-Z0-9_./-]"
        )


def _check_value(label: str, value: str) -> None:
    if '"' in value and "'" in value:
        raise ValueError(
            f"value {value!r} for label {label!r} holds both quote characters;"
            " a selector cannot express it"
        )


def and_selectors(*selectors: Selector | str) -> Selector:
    """All of ``selectors`` must match: ``(s1) && (s2) && ...``.

    A string is parsed first; a blank string is left out (Calico only ANDs the clauses that are
    set).  No selector left gives ``all()``; a single one is returned as it is.
    """
    parts = [_as_selector(s) for s in selectors if isinstance(s, Selector) or s.strip(" \t") != ""]
    if not parts:
        return ALL
    if len(parts) == 1:
        return parts[0]
    return Selector(And(tuple(part.root for part in parts)))


def negate(selector: Selector | str) -> Selector:
    """``!(selector)``."""
    return Selector(Not(_as_selector(selector).root))


def _rename(node: Node, prefix: str) -> Node:
    match node:
        case Compare(label, op, value):
            return Compare(prefix + label, op, value)
        case InSet(label, values, negated):
            return InSet(prefix + label, values, negated)
        case Has(label):
            return Has(prefix + label)
        case Not(operand):
            return Not(_rename(operand, prefix))
        case And(operands):
            return And(tuple(_rename(o, prefix) for o in operands))
        case Or(operands):
            return Or(tuple(_rename(o, prefix) for o in operands))
    return node


def prefix_labels(selector: Selector | str, prefix: str) -> Selector:
    """Every label name in ``selector`` with ``prefix`` in front (Calico's ``PrefixVisitor``):
    ``prefix_labels("role == 'db'", "pcns.")`` is ``pcns.role == "db"``."""
    if not _PREFIX_RE.fullmatch(prefix):
        raise ValueError(f"label prefix {prefix!r} may only hold the characters [a-zA-Z0-9_./-]")
    return _reparsed(_rename(_as_selector(selector).root, prefix))


def _replace_functions(node: Node) -> Node:
    match node:
        case All():
            return Has(NAMESPACE_LABEL)
        case Global():
            return Not(Has(NAMESPACE_LABEL))
        case Not(operand):
            return Not(_replace_functions(operand))
        case And(operands):
            return And(tuple(_replace_functions(o) for o in operands))
        case Or(operands):
            return Or(tuple(_replace_functions(o) for o in operands))
    return node


def replace_all_and_global(selector: Selector | str) -> Selector:
    """``all()`` -> ``has(projectcalico.org/namespace)`` (every namespaced endpoint) and
    ``global()`` -> ``!has(projectcalico.org/namespace)`` (host endpoints and global network
    sets only): the meaning those functions have inside a rule's namespaceSelector."""
    return _reparsed(_replace_functions(_as_selector(selector).root))


def rule_namespace_selector(namespace_selector: Selector | str) -> Selector:
    """A rule's ``namespaceSelector`` as Felix sees it: labels prefixed ``pcns.`` (they are the
    namespace labels that the ``kns.<ns>`` profile applies), then ``all()``/``global()``
    replaced.  Pass only a namespaceSelector that is set (an empty one means "same namespace",
    which the caller expresses as ``label_equals(NAMESPACE_LABEL, ns)``)."""
    prefixed = _rename(_as_selector(namespace_selector).root, NAMESPACE_LABEL_PREFIX)
    return _reparsed(_replace_functions(prefixed))


def has_label(label: str) -> Selector:
    """``has(label)``."""
    _check_label(label)
    return Selector(Has(label))


def label_equals(label: str, value: str) -> Selector:
    """``label == "value"``."""
    _check_label(label)
    _check_value(label, value)
    return Selector(Compare(label, "==", value))


def label_in(label: str, values: Iterable[str], *, negated: bool = False) -> Selector:
    """``label in {"v1", "v2"}`` (or ``not in`` when ``negated``), members sorted and
    de-duplicated as Calico prints them."""
    _check_label(label)
    members = list(values)
    for value in members:
        _check_value(label, value)
    return Selector(make_in_set(label, members, negated=negated))

"""Calico's selector language: parse, evaluate, canonical form, unique id, composition.

What this is: the public face of the package (calico-reference.md §2.1-2.2).  Import from here:

    from pycalico.model.selectors import parse, Selector, SelectorParseError
    sel = parse("role == 'db' && has(tier)")
    sel.evaluate({"role": "db", "tier": "x"})  # True
    sel.canonical                              # '(role == "db" && has(tier))'
    sel.unique_id                              # 's:...' (Calico's IP-set id for the selector)
    sel.labels                                 # frozenset({'role', 'tier'})
    sel.restrictions["role"]                   # present, one of {'db'}: for label indexes

What this is not: policy translation (which clauses to combine for which resource); that uses
the helpers in ``transform``.  Pure: no I/O.

Modules: ``nodes`` (syntax tree, canonical rendering), ``parser`` (grammar, errors),
``compiler`` (tree -> fast Python function), ``restrictions`` (per-label demands, for
indexing), ``selector`` (``Selector``, cached ``parse``), ``transform`` (and/negate, label
prefixes, namespaceSelector rewrite, builders).
"""

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
)
from pycalico.model.selectors.parser import MAX_LABEL_LENGTH, MAX_NESTING, SelectorParseError
from pycalico.model.selectors.restrictions import LabelRestriction
from pycalico.model.selectors.selector import ALL, NO_MATCH, Selector, normalise, parse, validate
from pycalico.model.selectors.transform import (
    NAMESPACE_LABEL,
    NAMESPACE_LABEL_PREFIX,
    SERVICE_ACCOUNT_LABEL_PREFIX,
    and_selectors,
    has_label,
    label_equals,
    label_in,
    negate,
    prefix_labels,
    replace_all_and_global,
    rule_namespace_selector,
)

__all__ = [
    "ALL",
    "MAX_LABEL_LENGTH",
    "MAX_NESTING",
    "NAMESPACE_LABEL",
    "NAMESPACE_LABEL_PREFIX",
    "NO_MATCH",
    "SERVICE_ACCOUNT_LABEL_PREFIX",
    "All",
    "And",
    "Compare",
    "Global",
    "Has",
    "InSet",
    "LabelRestriction",
    "Node",
    "Not",
    "Or",
    "Selector",
    "SelectorParseError",
    "and_selectors",
    "has_label",
    "label_equals",
    "label_in",
    "negate",
    "normalise",
    "parse",
    "prefix_labels",
    "replace_all_and_global",
    "rule_namespace_selector",
    "validate",
]

"""What Felix sees of v3 resources: endpoint labels, endpoint ids, and composed selectors.

What it is: Calico's v3 → Felix-model translation (reference §2.2), as small functions: the
labels a WorkloadEndpoint, HostEndpoint or network set carries for selector matching, the
profiles it inherits labels from, a policy's effective selector (namespace and service-account
scoping), and a rule's source/destination selector (Go's ``GetEntityRuleSelector``).  What it is
not: the index that matches them (``index.py``) or rule rendering (``rules.py``).

Invariants:

* A WorkloadEndpoint's labels never carry a ``pcns.``/``pcsa.`` label of its own (anti-spoof:
  only profiles may apply those), and always carry ``projectcalico.org/namespace`` and
  ``projectcalico.org/orchestrator`` (plus ``projectcalico.org/serviceaccount`` when it has one),
  overriding whatever the endpoint claims.
* A namespaced NetworkPolicy only ever selects endpoints of its own namespace.
* A rule selector is None exactly when the rule constrains nothing by selector.
"""

from __future__ import annotations

from pycalico.model.endpoints import (
    GlobalNetworkSet,
    HostEndpoint,
    NetworkSet,
    WorkloadEndpoint,
)
from pycalico.model.policy import GlobalNetworkPolicy, NetworkPolicy
from pycalico.model.rules import EntityRule
from pycalico.model.selectors import (
    NAMESPACE_LABEL,
    NAMESPACE_LABEL_PREFIX,
    SERVICE_ACCOUNT_LABEL_PREFIX,
    All,
    And,
    Has,
    Node,
    Not,
    Or,
    Selector,
    and_selectors,
    label_equals,
    label_in,
    parse,
    prefix_labels,
    rule_namespace_selector,
)

ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"
SERVICE_ACCOUNT_LABEL = "projectcalico.org/serviceaccount"
NAMESPACE_PROFILE_PREFIX = "kns."


def workload_endpoint_labels(endpoint: WorkloadEndpoint) -> dict[str, str]:
    labels = {
        key: value
        for key, value in (endpoint.metadata.labels or {}).items()
        if not key.startswith((NAMESPACE_LABEL_PREFIX, SERVICE_ACCOUNT_LABEL_PREFIX))
    }
    if endpoint.metadata.namespace:
        labels[NAMESPACE_LABEL] = endpoint.metadata.namespace
    if endpoint.spec.orchestrator:
        labels[ORCHESTRATOR_LABEL] = endpoint.spec.orchestrator
    if endpoint.spec.service_account_name:
        labels[SERVICE_ACCOUNT_LABEL] = endpoint.spec.service_account_name
    return labels


def host_endpoint_labels(endpoint: HostEndpoint) -> dict[str, str]:
    return dict(endpoint.metadata.labels or {})


def network_set_labels(network_set: NetworkSet | GlobalNetworkSet) -> dict[str, str]:
    labels = dict(network_set.metadata.labels or {})
    if isinstance(network_set, NetworkSet) and network_set.metadata.namespace:
        labels[NAMESPACE_LABEL] = network_set.metadata.namespace
    return labels


def network_set_parents(network_set: NetworkSet | GlobalNetworkSet) -> tuple[str, ...]:
    """A namespaced network set inherits its namespace's ``pcns.`` labels, so that a rule's
    namespaceSelector can select it as it selects that namespace's pods."""
    if isinstance(network_set, NetworkSet) and network_set.metadata.namespace:
        return (NAMESPACE_PROFILE_PREFIX + network_set.metadata.namespace,)
    return ()


def _replace_all(node: Node, replacement: Node) -> Node:
    match node:
        case All():
            return replacement
        case Not(operand):
            return Not(_replace_all(operand, replacement))
        case And(operands):
            return And(tuple(_replace_all(o, replacement) for o in operands))
        case Or(operands):
            return Or(tuple(_replace_all(o, replacement) for o in operands))
    return node


def _scoped(selector: Selector, label: str) -> Selector:
    """Go replaces every ``all()`` of the combined policy selector (the user's part too) by
    ``has(label)`` once a namespace or service-account selector is ANDed in."""
    return Selector(_replace_all(selector.root, Has(label)))


def policy_selector(policy: NetworkPolicy | GlobalNetworkPolicy) -> Selector:
    """The endpoints a policy applies to, as Felix sees it (Go's v3 → v1 policy processors).

    NetworkPolicy: ``(selector) && projectcalico.org/namespace == '<ns>'``, then the
    ``pcsa.``-prefixed serviceAccountSelector ANDed.  GlobalNetworkPolicy: the ``pcns.``-prefixed
    namespaceSelector ANDed, every ``all()`` then meaning "has a namespace"; likewise the
    ``pcsa.``-prefixed serviceAccountSelector, ``all()`` then meaning "has a service account".
    """
    spec = policy.spec
    selector = and_selectors(spec.selector or "")
    if isinstance(policy, NetworkPolicy):
        namespace = label_equals(NAMESPACE_LABEL, policy.metadata.namespace or "default")
        selector = and_selectors(spec.selector or "", namespace)
        if spec.service_account_selector:
            accounts = prefix_labels(spec.service_account_selector, SERVICE_ACCOUNT_LABEL_PREFIX)
            selector = and_selectors(selector, accounts)
        return selector
    if policy.spec.namespace_selector:
        namespaces = prefix_labels(policy.spec.namespace_selector, NAMESPACE_LABEL_PREFIX)
        selector = _scoped(and_selectors(spec.selector or "", namespaces), NAMESPACE_LABEL)
    if spec.service_account_selector:
        accounts = prefix_labels(spec.service_account_selector, SERVICE_ACCOUNT_LABEL_PREFIX)
        selector = _scoped(and_selectors(selector, accounts), SERVICE_ACCOUNT_LABEL)
    return selector


def entity_selector(entity: EntityRule | None, namespace: str | None) -> Selector | None:
    """A rule side's positive selector (Go's ``GetEntityRuleSelector``), None if unconstrained.

    ``namespace`` is the policy's namespace (None for global policies and profiles): without an
    explicit namespaceSelector, a namespaced policy's selectors stay inside its namespace.
    """
    if entity is None:
        return None
    namespace_clause: Selector | None = None
    if entity.namespace_selector:
        namespace_clause = rule_namespace_selector(entity.namespace_selector)
    elif namespace:
        namespace_clause = label_equals(NAMESPACE_LABEL, namespace)
    clauses: list[Selector] = []
    accounts = entity.service_accounts
    if accounts is not None:
        account_clauses: list[Selector] = []
        if accounts.selector:
            account_clauses.append(prefix_labels(accounts.selector, SERVICE_ACCOUNT_LABEL_PREFIX))
        if accounts.names:
            account_clauses.append(label_in(SERVICE_ACCOUNT_LABEL, accounts.names))
        if account_clauses:
            clauses.append(and_selectors(*account_clauses))
    if entity.selector:
        clauses.append(parse(entity.selector))
    selector = and_selectors(*clauses) if clauses else None
    scoped = selector is not None or bool(entity.not_selector) or bool(entity.namespace_selector)
    if namespace_clause is not None and scoped:
        return namespace_clause if selector is None else and_selectors(namespace_clause, selector)
    return selector


def entity_not_selector(entity: EntityRule | None) -> Selector | None:
    """A rule side's notSelector, unscoped (Calico does not namespace it)."""
    if entity is None or not entity.not_selector:
        return None
    return parse(entity.not_selector)

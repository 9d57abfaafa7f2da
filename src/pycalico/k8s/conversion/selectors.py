"""Kubernetes label selectors rendered as Calico selector expressions.

Calico's rendering (kube-controllers and the Kubernetes datastore driver agree on it):

* A pod selector always starts with the orchestrator clause
  ``projectcalico.org/orchestrator == 'k8s'``, so a Kubernetes policy never selects a non-pod
  endpoint; an absent or empty pod selector is that clause alone.
* A namespace selector has no such clause: absent means "the policy's own namespace" (the empty
  string), present but empty (no labels, no expressions) means every namespace (``all()``).
* Terms are joined with `` && ``: first ``matchLabels`` sorted by key as ``k == 'v'``, then the
  ``matchExpressions`` in their given order: ``In`` as ``k in { 'a', 'b' }``, ``NotIn`` as
  ``k not in { ... }``, ``Exists`` as ``has(k)``, ``DoesNotExist`` as ``! has(k)``.  An
  expression with any other operator contributes nothing.

The namespace selector's labels are not prefixed here: Felix applies the ``pcns.`` prefix when it
resolves a rule's namespaceSelector against the namespace Profiles' labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"
ORCHESTRATOR_K8S = "k8s"
ORCHESTRATOR_CLAUSE = f"{ORCHESTRATOR_LABEL} == '{ORCHESTRATOR_K8S}'"
ALL_NAMESPACES = "all()"


def _expression(requirement: Mapping[str, Any]) -> str | None:
    key = str(requirement.get("key", ""))
    operator = requirement.get("operator")
    values = "', '".join(str(value) for value in requirement.get("values") or ())
    if operator == "In":
        return f"{key} in {{ '{values}' }}"
    if operator == "NotIn":
        return f"{key} not in {{ '{values}' }}"
    if operator == "Exists":
        return f"has({key})"
    if operator == "DoesNotExist":
        return f"! has({key})"
    return None  # Calico skips an operator it does not know rather than failing the policy.


def _terms(selector: Mapping[str, Any]) -> list[str]:
    labels: Mapping[str, Any] = selector.get("matchLabels") or {}
    terms = [f"{key} == '{labels[key]}'" for key in sorted(labels)]
    for requirement in selector.get("matchExpressions") or ():
        term = _expression(requirement)
        if term is not None:
            terms.append(term)
    return terms


def pod_selector(selector: Mapping[str, Any] | None) -> str:
    """A pod selector (a policy's ``podSelector`` or a peer's) as a Calico selector."""
    terms = [ORCHESTRATOR_CLAUSE]
    if selector is not None:
        terms += _terms(selector)
    return " && ".join(terms)


def namespace_selector(selector: Mapping[str, Any] | None) -> str:
    """A peer's ``namespaceSelector``: ``""`` when absent, ``all()`` when empty."""
    if selector is None:
        return ""
    terms = _terms(selector)
    if not selector.get("matchLabels") and not selector.get("matchExpressions"):
        return ALL_NAMESPACES
    return " && ".join(terms)

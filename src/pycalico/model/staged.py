"""Staged policy kinds: StagedNetworkPolicy, StagedGlobalNetworkPolicy (Calico policy shape) and
StagedKubernetesNetworkPolicy (Kubernetes NetworkPolicy shape), each plus ``stagedAction``.

What it is: their wire shape, write defaults and Calico's validator checks (libcalico-go
``validateStaged*``), reusing the NetworkPolicy / GlobalNetworkPolicy spec models and checks of
``pycalico.model.policy``.  What it is not: enforcement.  Calico records staged policies but Felix
never programs them (they only feed flow-log "what if" evaluation); pycalico's Felix calculation
graph does not even read their keys.

Invariants:

* ``stagedAction`` is one of ``Set`` (what an omitted one becomes on write), ``Delete``, ``Learn``,
  ``Ignore``.
* ``stagedAction: Delete`` stages the removal of the enforced policy of the same name, so the spec
  carries nothing else: for the Calico shapes only ``tier`` may be set (``types`` is dropped on
  write, as Calico's client does); for the Kubernetes shape nothing at all.  Every other field set
  is reported by name.
* Any other action: the spec is checked exactly as the enforced kind's spec is, and ``tier`` /
  ``types`` are defaulted as for the enforced kind.  Names follow the enforced kind's rules
  (``<tier>.<name>`` allowed for the Calico shapes).
* These classes are deliberately not subclasses of NetworkPolicy / GlobalNetworkPolicy, so no
  ``isinstance`` check meant for enforced policy can pick a staged one up.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Annotated, ClassVar, Literal, Self, TypeVar

from pydantic import BeforeValidator, Field

from pycalico.model.fields import (
    GLOBAL_NETWORK_POLICY_NAME_RE,
    NETWORK_POLICY_NAME_RE,
    label_name_problem,
    label_value_problem,
    network_problem,
    port_name_problem,
    qualified_name_problem,
)
from pycalico.model.policy import (
    DEFAULT_TIER,
    GlobalNetworkPolicySpec,
    NetworkPolicySpec,
    policy_name_issue,
)
from pycalico.model.validation import (
    Checked,
    CheckedResource,
    Issue,
    child_issues,
    join,
    list_issues,
    wire_name,
)

StagedAction = Literal["Set", "Delete", "Learn", "Ignore"]
# Calico's field is a plain string with omitempty: "" is the same as not set (the default, Set).
OptionalStagedAction = Annotated[
    StagedAction | None, BeforeValidator(lambda value: None if value == "" else value)
]
DEFAULT_STAGED_ACTION: StagedAction = "Set"
_DELETE_KEEPS = frozenset({"staged_action", "tier", "types"})
_R = TypeVar("_R", bound=CheckedResource)


def _is_zero(value: object, default: object) -> bool:
    return value is None or value == default or value in ("", [], {})


def _delete_issues(spec: Checked, path: str, keeps: frozenset[str]) -> Iterator[Issue]:
    """Calico: with ``stagedAction: Delete`` every other spec field must be its zero value."""
    for name, info in type(spec).model_fields.items():
        if name in keeps or _is_zero(getattr(spec, name), info.default):
            continue
        yield (
            join(path, info.alias or wire_name(name)),
            "must not be set when stagedAction is Delete"
            + (" (only tier may be)" if "tier" in keeps else ""),
        )


def _tier_issues(tier: str | None, path: str) -> Iterator[Issue]:
    problem = label_name_problem(tier) if tier else None
    if problem:
        yield join(path, "tier"), problem


def _staged_defaults(
    action: StagedAction | None, tier: str | None, enforced: dict[str, object]
) -> dict[str, object]:
    update: dict[str, object] = {}
    if action is None:
        update["staged_action"] = DEFAULT_STAGED_ACTION
    if action == "Delete":
        # Calico's client clears types on a Delete rather than defaulting them.
        update["types"] = None
        if not tier:
            update["tier"] = DEFAULT_TIER
        return update
    return {**enforced, **update}


# --- the Calico-shaped staged kinds -----------------------------------------------------------


class StagedNetworkPolicySpec(NetworkPolicySpec):
    staged_action: OptionalStagedAction = None

    def issues(self, path: str) -> Iterator[Issue]:
        if self.staged_action == "Delete":
            yield from _tier_issues(self.tier, path)
            yield from _delete_issues(self, path, _DELETE_KEEPS)
            return
        yield from super().issues(path)

    def defaults(self) -> dict[str, object]:
        return _staged_defaults(self.staged_action, self.tier, super().defaults())


class StagedGlobalNetworkPolicySpec(GlobalNetworkPolicySpec):
    staged_action: OptionalStagedAction = None

    def issues(self, path: str) -> Iterator[Issue]:
        if self.staged_action == "Delete":
            yield from _tier_issues(self.tier, path)
            yield from _delete_issues(self, path, _DELETE_KEEPS)
            return
        yield from super().issues(path)

    def defaults(self) -> dict[str, object]:
        return _staged_defaults(self.staged_action, self.tier, super().defaults())


def _with_spec_defaults(
    resource: _R, spec: StagedNetworkPolicySpec | StagedGlobalNetworkPolicySpec
) -> _R:
    update = spec.defaults()
    if not update:
        return resource
    return resource.model_copy(update={"spec": spec.model_copy(update=update)})


class StagedNetworkPolicy(CheckedResource):
    KIND: ClassVar[str] = "StagedNetworkPolicy"
    PLURAL: ClassVar[str] = "stagednetworkpolicies"
    NAMESPACED: ClassVar[bool] = True

    kind: str = "StagedNetworkPolicy"
    spec: StagedNetworkPolicySpec = Field(default_factory=StagedNetworkPolicySpec)

    def name_issue(self) -> str | None:
        return policy_name_issue(self.metadata.name, self.spec.tier, NETWORK_POLICY_NAME_RE)

    def spec_issues(self) -> Iterator[Issue]:
        yield from self.spec.issues("spec")

    def with_defaults(self, *, namespace: str = "default") -> Self:
        return _with_spec_defaults(super().with_defaults(namespace=namespace), self.spec)


class StagedGlobalNetworkPolicy(CheckedResource):
    KIND: ClassVar[str] = "StagedGlobalNetworkPolicy"
    PLURAL: ClassVar[str] = "stagedglobalnetworkpolicies"
    NAMESPACED: ClassVar[bool] = False

    kind: str = "StagedGlobalNetworkPolicy"
    spec: StagedGlobalNetworkPolicySpec = Field(default_factory=StagedGlobalNetworkPolicySpec)

    def name_issue(self) -> str | None:
        return policy_name_issue(self.metadata.name, self.spec.tier, GLOBAL_NETWORK_POLICY_NAME_RE)

    def spec_issues(self) -> Iterator[Issue]:
        yield from self.spec.issues("spec")

    def with_defaults(self, *, namespace: str = "default") -> Self:
        return _with_spec_defaults(self, self.spec)


# --- the Kubernetes NetworkPolicy shape (networking.k8s.io/v1, as Calico's API embeds it) -----

_SET_OPERATORS = ("In", "NotIn")


class LabelSelectorRequirement(Checked):
    key: str
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] | None = None

    def issues(self, path: str) -> Iterator[Issue]:
        problem = qualified_name_problem(self.key)
        if problem:
            yield join(path, "key"), problem
        if self.operator in _SET_OPERATORS and not self.values:
            yield join(path, "values"), f"must be given when operator is {self.operator}"
        if self.operator not in _SET_OPERATORS and self.values:
            yield join(path, "values"), f"must be empty when operator is {self.operator}"
        for index, value in enumerate(self.values or ()):
            problem = label_value_problem(value)
            if problem:
                yield f"{join(path, 'values')}[{index}]", problem


class LabelSelector(Checked):
    """A Kubernetes label selector; empty selects everything (in the policy's namespace)."""

    match_labels: dict[str, str] | None = None
    match_expressions: list[LabelSelectorRequirement] | None = None

    def is_empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def issues(self, path: str) -> Iterator[Issue]:
        for key, value in (self.match_labels or {}).items():
            problem = qualified_name_problem(key) or label_value_problem(value)
            if problem:
                yield join(path, "matchLabels"), problem
        yield from list_issues(path, "matchExpressions", self.match_expressions)


class IPBlock(Checked):
    cidr: str
    except_: list[str] | None = Field(default=None, alias="except")

    def issues(self, path: str) -> Iterator[Issue]:
        problem = network_problem(self.cidr) if self.cidr else "is required"
        if problem:
            yield join(path, "cidr"), problem
            return
        outer = ipaddress.ip_network(self.cidr, strict=False)
        for index, text in enumerate(self.except_ or ()):
            where = f"{join(path, 'except')}[{index}]"
            problem = network_problem(text)
            if problem:
                yield where, problem
                continue
            inner = ipaddress.ip_network(text, strict=False)
            if (
                inner.version != outer.version
                or not inner.subnet_of(outer)  # type: ignore[arg-type]
                or inner.prefixlen <= outer.prefixlen
            ):
                yield where, f"{text} must be a strict subset of cidr {self.cidr}"


class NetworkPolicyPeer(Checked):
    # Pointers in Kubernetes' API: a given empty selector ({}: every pod / every namespace) is
    # written out, not dropped, or the peer would read back as matching nothing.
    ALWAYS_EMIT: ClassVar[frozenset[str]] = frozenset({"pod_selector", "namespace_selector"})

    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None

    def issues(self, path: str) -> Iterator[Issue]:
        selectors = self.pod_selector is not None or self.namespace_selector is not None
        if self.ip_block is None and not selectors:
            yield path, "must set podSelector, namespaceSelector or ipBlock"
        if self.ip_block is not None and selectors:
            yield join(path, "ipBlock"), "cannot be combined with podSelector or namespaceSelector"
        yield from child_issues(path, "podSelector", self.pod_selector)
        yield from child_issues(path, "namespaceSelector", self.namespace_selector)
        yield from child_issues(path, "ipBlock", self.ip_block)


class NetworkPolicyPort(Checked):
    protocol: Literal["TCP", "UDP", "SCTP"] | None = None
    port: int | str | None = None
    end_port: int | None = None

    def issues(self, path: str) -> Iterator[Issue]:
        if isinstance(self.port, int) and not 1 <= self.port <= 65535:
            yield join(path, "port"), f"{self.port} is not a valid port: use 1-65535"
        elif isinstance(self.port, str):
            problem = port_name_problem(self.port)
            if problem:
                yield join(path, "port"), problem
        if self.end_port is None:
            return
        if not isinstance(self.port, int):
            yield join(path, "endPort"), "may only be set with a numeric port"
        elif not self.port <= self.end_port <= 65535:
            yield join(path, "endPort"), f"must be between port ({self.port}) and 65535"


class NetworkPolicyIngressRule(Checked):
    ports: list[NetworkPolicyPort] | None = None
    from_: list[NetworkPolicyPeer] | None = Field(default=None, alias="from")

    def issues(self, path: str) -> Iterator[Issue]:
        yield from list_issues(path, "ports", self.ports)
        yield from list_issues(path, "from", self.from_)


class NetworkPolicyEgressRule(Checked):
    ports: list[NetworkPolicyPort] | None = None
    to: list[NetworkPolicyPeer] | None = None

    def issues(self, path: str) -> Iterator[Issue]:
        yield from list_issues(path, "ports", self.ports)
        yield from list_issues(path, "to", self.to)


class StagedKubernetesNetworkPolicySpec(Checked):
    # podSelector has no omitempty in Calico's API: it is always written, ``{}`` when empty.
    ALWAYS_EMIT: ClassVar[frozenset[str]] = frozenset({"pod_selector"})

    staged_action: OptionalStagedAction = None
    pod_selector: LabelSelector = Field(default_factory=LabelSelector)
    ingress: list[NetworkPolicyIngressRule] | None = None
    egress: list[NetworkPolicyEgressRule] | None = None
    policy_types: list[Literal["Ingress", "Egress"]] | None = Field(default=None, max_length=2)

    def issues(self, path: str) -> Iterator[Issue]:
        if self.staged_action == "Delete":
            if not self.pod_selector.is_empty():
                yield join(path, "podSelector"), "must be empty when stagedAction is Delete"
            keeps = frozenset({"staged_action", "pod_selector"})
            yield from _delete_issues(self, path, keeps)
            return
        yield from child_issues(path, "podSelector", self.pod_selector)
        yield from list_issues(path, "ingress", self.ingress)
        yield from list_issues(path, "egress", self.egress)
        if self.policy_types and len(set(self.policy_types)) != len(self.policy_types):
            yield join(path, "policyTypes"), "a type is listed more than once"


class StagedKubernetesNetworkPolicy(CheckedResource):
    KIND: ClassVar[str] = "StagedKubernetesNetworkPolicy"
    PLURAL: ClassVar[str] = "stagedkubernetesnetworkpolicies"
    NAMESPACED: ClassVar[bool] = True

    kind: str = "StagedKubernetesNetworkPolicy"
    spec: StagedKubernetesNetworkPolicySpec = Field(
        default_factory=StagedKubernetesNetworkPolicySpec
    )

    def spec_issues(self) -> Iterator[Issue]:
        yield from self.spec.issues("spec")

    def with_defaults(self, *, namespace: str = "default") -> Self:
        # Calico's client fills nothing else in for this kind (no policyTypes defaulting).
        base = super().with_defaults(namespace=namespace)
        if self.spec.staged_action is not None:
            return base
        spec = self.spec.model_copy(update={"staged_action": DEFAULT_STAGED_ACTION})
        return base.model_copy(update={"spec": spec})

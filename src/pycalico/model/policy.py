"""Policy kinds: NetworkPolicy (namespaced), GlobalNetworkPolicy and Tier.

What it is: their wire shape, the defaults Calico's client fills in on write (tier ``default``,
``types`` from the rules present, the built-in tiers' orders, Tier ``defaultAction: Deny``) and the
checks of Calico's validator.  What it is not: policy evaluation or ordering at run time (Felix).

Invariants:

* ``types`` defaulting follows Calico exactly: no egress rules => [Ingress] (also when there are no
  rules at all); egress rules only => [Egress]; both => [Ingress, Egress].  An explicit ``types``
  is never changed.
* Names: NetworkPolicy allows ``label`` / ``label.label`` / ``knp.default.<subdomain>``;
  GlobalNetworkPolicy ``label`` / ``label.label``; Tier a DNS-1123 label (no dots).
* The built-in tiers have fixed orders: ``kube-admin`` 1000, ``default`` 1,000,000,
  ``kube-baseline`` 10,000,000; any other order for them is refused.  A Tier written without an
  order gets 1,000,000 and without a defaultAction ``Deny`` (Calico's DefaultTierFields).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import ClassVar, Literal, Self

from pydantic import Field

from pycalico.model.fields import (
    GLOBAL_NETWORK_POLICY_NAME_RE,
    NETWORK_POLICY_NAME_RE,
    SUBDOMAIN_MAX,
    Order,
    label_name_problem,
    selector_problem,
)
from pycalico.model.rules import GLOBAL_SELECTOR, Rule
from pycalico.model.validation import Checked, CheckedResource, Issue, join

PolicyType = Literal["Ingress", "Egress"]
MAX_RULES = 1024
DEFAULT_TIER = "default"
DEFAULT_TIER_ORDER = 1_000_000.0
BUILTIN_TIER_ACTIONS: dict[str, str] = {
    "kube-admin": "Pass",
    DEFAULT_TIER: "Deny",
    "kube-baseline": "Pass",
}
BUILTIN_TIER_ORDERS: dict[str, float] = {
    "kube-admin": 1_000.0,
    DEFAULT_TIER: DEFAULT_TIER_ORDER,
    "kube-baseline": 10_000_000.0,
}


def default_policy_types(
    ingress: Sequence[Rule] | None, egress: Sequence[Rule] | None
) -> list[PolicyType]:
    """Calico's ``types`` default for a policy that does not say (reference §2.4)."""
    if not egress:
        return ["Ingress"]
    if not ingress:
        return ["Egress"]
    return ["Ingress", "Egress"]


class NetworkPolicySpec(Checked):
    tier: str | None = None
    order: Order | None = None
    ingress: list[Rule] | None = None
    egress: list[Rule] | None = None
    selector: str | None = None
    types: list[PolicyType] | None = None
    service_account_selector: str | None = None
    performance_hints: list[Literal["AssumeNeededOnEveryNode"]] | None = None

    SELECTOR_FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("selector", "selector"),
        ("service_account_selector", "serviceAccountSelector"),
    )

    def issues(self, path: str) -> Iterator[Issue]:
        if self.tier:
            problem = label_name_problem(self.tier)
            if problem:
                yield join(path, "tier"), problem
        for field, wire in self.SELECTOR_FIELDS:
            value = getattr(self, field)
            if not value:
                continue
            problem = selector_problem(value)
            if problem:
                yield join(path, wire), problem
            if GLOBAL_SELECTOR in value:
                yield join(path, wire), "global() can only be used in a rule's namespaceSelector"
        if self.types and len(set(self.types)) != len(self.types):
            yield join(path, "types"), "a type is listed more than once"
        hints = self.performance_hints or []
        if len(set(hints)) != len(hints):
            yield join(path, "performanceHints"), "a hint is listed more than once"
        for direction in ("ingress", "egress"):
            rules: list[Rule] = getattr(self, direction) or []
            if len(rules) > MAX_RULES:
                yield (
                    join(path, direction),
                    f"has {len(rules)} rules: at most {MAX_RULES} are allowed",
                )
            for index, rule in enumerate(rules):
                rule_path = f"{join(path, direction)}[{index}]"
                yield from rule.issues(rule_path)
                yield from self._direction_issues(direction, rule, rule_path)

    def _direction_issues(self, direction: str, rule: Rule, path: str) -> Iterator[Issue]:
        if direction == "egress":
            if rule.source is not None and rule.source.services is not None:
                yield f"{path}.source.services", "services are not allowed in an egress rule source"
            if rule.http is not None:
                yield f"{path}.http", "an HTTP match is not allowed in an egress rule"
        elif rule.destination is not None and rule.destination.services is not None:
            yield (
                f"{path}.destination.services",
                "services are not allowed in an ingress rule destination",
            )

    def defaults(self) -> dict[str, object]:
        update: dict[str, object] = {}
        if not self.tier:
            update["tier"] = DEFAULT_TIER
        if not self.types:
            update["types"] = default_policy_types(self.ingress, self.egress)
        return update


class GlobalNetworkPolicySpec(NetworkPolicySpec):
    """A NetworkPolicySpec plus the cluster-wide and host-endpoint options."""

    do_not_track: bool = False
    pre_dnat: bool = Field(default=False, alias="preDNAT")
    apply_on_forward: bool = False
    namespace_selector: str | None = None

    SELECTOR_FIELDS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("selector", "selector"),
        ("service_account_selector", "serviceAccountSelector"),
        ("namespace_selector", "namespaceSelector"),
    )

    def issues(self, path: str) -> Iterator[Issue]:
        yield from super().issues(path)
        if self.do_not_track and self.pre_dnat:
            yield join(path, "preDNAT"), "preDNAT and doNotTrack cannot both be true"
        if self.pre_dnat and self.egress:
            yield join(path, "egress"), "a preDNAT policy cannot have egress rules"
        if self.pre_dnat and self.types and "Egress" in self.types:
            yield join(path, "types"), "a preDNAT policy cannot have the Egress type"
        if (self.do_not_track or self.pre_dnat) and not self.apply_on_forward:
            yield (
                join(path, "applyOnForward"),
                "must be true when preDNAT or doNotTrack is true",
            )
        for direction, side in (("egress", "destination"), ("ingress", "source")):
            for index, rule in enumerate(getattr(self, direction) or ()):
                entity = getattr(rule, side)
                services = None if entity is None else entity.services
                if services is not None and not services.namespace:
                    yield (
                        f"{join(path, direction)}[{index}].{side}.services.namespace",
                        "a GlobalNetworkPolicy service match must name a namespace",
                    )


def _tier_name_issue(tier: str, name: str) -> str | None:
    # A policy in a non-default tier may be named "<tier>.<name>" (Calico's historical form);
    # a dotted name that starts with some other tier would be read back in the wrong tier.
    if tier == DEFAULT_TIER or "." not in name or name.startswith(("knp.", "ossg.")):
        return None
    prefix, _, rest = name.partition(".")
    if prefix != tier:
        return f"a dotted policy name must start with its tier: use '{tier}.{rest}'"
    return None


def policy_name_issue(name: str, tier: str | None, pattern: re.Pattern[str]) -> str | None:
    if not name:
        return "is required"
    if len(name) > SUBDOMAIN_MAX:
        return f"is too long by {len(name) - SUBDOMAIN_MAX} characters"
    if not pattern.match(name):
        return (
            f"{name!r} is not a valid policy name: use lower case letters, digits and '-' "
            "(optionally '<tier>.<name>')"
        )
    return _tier_name_issue(tier or DEFAULT_TIER, name)


class NetworkPolicy(CheckedResource):
    KIND: ClassVar[str] = "NetworkPolicy"
    PLURAL: ClassVar[str] = "networkpolicies"
    NAMESPACED: ClassVar[bool] = True

    kind: str = "NetworkPolicy"
    spec: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec)

    def name_issue(self) -> str | None:
        return policy_name_issue(self.metadata.name, self.spec.tier, NETWORK_POLICY_NAME_RE)

    def spec_issues(self) -> Iterator[Issue]:
        yield from self.spec.issues("spec")

    def with_defaults(self, *, namespace: str = "default") -> Self:
        base = super().with_defaults(namespace=namespace)
        update = self.spec.defaults()
        if not update:
            return base
        return base.model_copy(update={"spec": self.spec.model_copy(update=update)})


class GlobalNetworkPolicy(CheckedResource):
    KIND: ClassVar[str] = "GlobalNetworkPolicy"
    PLURAL: ClassVar[str] = "globalnetworkpolicies"
    NAMESPACED: ClassVar[bool] = False

    kind: str = "GlobalNetworkPolicy"
    spec: GlobalNetworkPolicySpec = Field(default_factory=GlobalNetworkPolicySpec)

    def name_issue(self) -> str | None:
        return policy_name_issue(self.metadata.name, self.spec.tier, GLOBAL_NETWORK_POLICY_NAME_RE)

    def spec_issues(self) -> Iterator[Issue]:
        yield from self.spec.issues("spec")

    def with_defaults(self, *, namespace: str = "default") -> Self:
        update = self.spec.defaults()
        if not update:
            return self
        return self.model_copy(update={"spec": self.spec.model_copy(update=update)})


class TierSpec(Checked):
    order: Order | None = None
    default_action: Literal["Deny", "Pass"] | None = None


class Tier(CheckedResource):
    KIND: ClassVar[str] = "Tier"
    PLURAL: ClassVar[str] = "tiers"
    NAMESPACED: ClassVar[bool] = False

    kind: str = "Tier"
    spec: TierSpec = Field(default_factory=TierSpec)

    def name_issue(self) -> str | None:
        return label_name_problem(self.metadata.name)

    def spec_issues(self) -> Iterator[Issue]:
        fixed = BUILTIN_TIER_ORDERS.get(self.metadata.name)
        if fixed is not None and self.spec.order != fixed:
            yield "spec.order", f"the {self.metadata.name} tier's order must be {fixed:.0f}"
        action = BUILTIN_TIER_ACTIONS.get(self.metadata.name)
        if action is not None and self.spec.default_action != action:
            yield (
                "spec.defaultAction",
                f"the {self.metadata.name} tier's default action must be {action}",
            )

    def with_defaults(self, *, namespace: str = "default") -> Self:
        # Calico's client (DefaultTierFields): an unset order becomes the default tier's
        # 1,000,000 for every tier, so that tiers added after "default" can sort after it.
        update: dict[str, object] = {}
        if self.spec.default_action is None:
            update["default_action"] = "Deny"
        if self.spec.order is None:
            update["order"] = DEFAULT_TIER_ORDER
        if not update:
            return self
        return self.model_copy(update={"spec": self.spec.model_copy(update=update)})

"""The policy sorter/resolver: which policies apply to an endpoint, in Calico's evaluation order.

What it is: Go Felix's ``PolicySorter`` + ``PolicyResolver`` as pure functions.  Given the
policies whose selectors match one endpoint, it groups them by tier, orders tiers by tier order
(unset last, ties by name) and policies by policy order (unset = +infinity) then Calico's
"name/namespace/kind" string, and splits them by direction according to ``types``.  For host
endpoints it also splits the untracked (doNotTrack), pre-DNAT and forward (applyOnForward)
groups.  What it is not: which policies match (``index.py``) or rule content (``rules.py``).

Invariants:

* A tier appears in a ``TierInfo`` list only if it has at least one policy for ingress or egress
  there; within a ``TierInfo`` a direction's tuple lists only policies whose types include it
  (an empty tuple: the dataplane skips that tier for that direction, no end-of-tier drop).
* A policy whose stored ``types`` is empty applies to both directions (Felix's back-compat).
* A tier missing from the datastore is skipped with its policies, as Go's policy resolver skips
  tiers that are not valid; the built-in tiers always exist, falling back to their fixed orders
  and actions (``default`` Deny, ``kube-admin`` and ``kube-baseline`` Pass).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pycalico.felix.messages import PolicyID, TierInfo
from pycalico.model.policy import (
    BUILTIN_TIER_ORDERS,
    DEFAULT_TIER,
    GlobalNetworkPolicy,
    NetworkPolicy,
    Tier,
)

DefaultAction = Literal["deny", "pass"]
_BUILTIN_ACTIONS: dict[str, DefaultAction] = {
    "kube-admin": "pass",
    DEFAULT_TIER: "deny",
    "kube-baseline": "pass",
}


@dataclass(frozen=True, slots=True)
class TierSettings:
    name: str
    order: float | None
    default_action: DefaultAction

    @property
    def sort_key(self) -> tuple[bool, float, str]:
        return (self.order is None, self.order or 0.0, self.name)


def tier_settings(name: str, tier: Tier | None) -> TierSettings | None:
    """A tier's ordering and default action; None for a tier that does not exist (Felix skips
    its policies).  The built-in tiers exist implicitly, with their fixed orders and actions,
    since calico-node creates them at start-up anyway."""
    if tier is None:
        if name not in BUILTIN_TIER_ORDERS:
            return None
        return TierSettings(name, BUILTIN_TIER_ORDERS[name], _BUILTIN_ACTIONS[name])
    order = tier.spec.order if tier.spec.order is not None else BUILTIN_TIER_ORDERS.get(name)
    action: DefaultAction = "pass" if tier.spec.default_action == "Pass" else "deny"
    return TierSettings(name, order, action)


@dataclass(frozen=True, slots=True)
class PolicyInfo:
    """What ordering and direction-splitting need to know about one policy."""

    id: PolicyID
    order: float
    sort_name: str  # Calico's tie-break: "name/namespace/kind"
    ingress: bool
    egress: bool
    do_not_track: bool = False
    pre_dnat: bool = False
    apply_on_forward: bool = False

    @property
    def sort_key(self) -> tuple[float, str]:
        return (self.order, self.sort_name)


def policy_id(policy: NetworkPolicy | GlobalNetworkPolicy) -> PolicyID:
    tier = policy.spec.tier or DEFAULT_TIER
    if isinstance(policy, NetworkPolicy):
        namespace = policy.metadata.namespace or "default"
        return PolicyID(tier, f"{namespace}/{policy.metadata.name}", "NetworkPolicy")
    return PolicyID(tier, policy.metadata.name, "GlobalNetworkPolicy")


def policy_info(policy: NetworkPolicy | GlobalNetworkPolicy) -> PolicyInfo:
    spec = policy.spec
    types = set(spec.types or ("Ingress", "Egress"))
    namespace = policy.metadata.namespace if isinstance(policy, NetworkPolicy) else ""
    # Go marks every namespaced NetworkPolicy applyOnForward.
    do_not_track = pre_dnat = False
    apply_on_forward = isinstance(policy, NetworkPolicy)
    if isinstance(policy, GlobalNetworkPolicy):
        do_not_track = policy.spec.do_not_track
        pre_dnat = policy.spec.pre_dnat
        apply_on_forward = policy.spec.apply_on_forward
    return PolicyInfo(
        id=policy_id(policy),
        order=spec.order if spec.order is not None else math.inf,
        sort_name=f"{policy.metadata.name}/{namespace or ''}/{policy.kind or type(policy).KIND}",
        ingress="Ingress" in types,
        egress="Egress" in types,
        do_not_track=do_not_track,
        pre_dnat=pre_dnat,
        apply_on_forward=apply_on_forward,
    )


def _tier_infos(
    policies: Iterable[PolicyInfo],
    tiers: dict[str, TierSettings],
    *,
    egress_allowed: bool = True,
) -> tuple[TierInfo, ...]:
    by_tier: dict[str, list[PolicyInfo]] = {}
    for info in policies:
        by_tier.setdefault(info.id.tier, []).append(info)
    settings = [tiers.get(name) or tier_settings(name, None) for name in by_tier]
    out: list[TierInfo] = []
    for tier in sorted((t for t in settings if t is not None), key=lambda t: t.sort_key):
        ordered = sorted(by_tier[tier.name], key=lambda p: p.sort_key)
        ingress = tuple(p.id for p in ordered if p.ingress)
        egress = tuple(p.id for p in ordered if p.egress) if egress_allowed else ()
        if ingress or egress:
            out.append(TierInfo(tier.name, tier.default_action, ingress, egress))
    return tuple(out)


def workload_tiers(
    policies: Iterable[PolicyInfo], tiers: dict[str, TierSettings]
) -> tuple[TierInfo, ...]:
    """A workload's tiers: every matching policy except the host-only doNotTrack/preDNAT ones."""
    return _tier_infos((p for p in policies if not (p.do_not_track or p.pre_dnat)), tiers)


@dataclass(frozen=True, slots=True)
class HostTiers:
    normal: tuple[TierInfo, ...]
    untracked: tuple[TierInfo, ...]
    pre_dnat: tuple[TierInfo, ...]
    forward: tuple[TierInfo, ...]


def host_tiers(policies: Iterable[PolicyInfo], tiers: dict[str, TierSettings]) -> HostTiers:
    infos = list(policies)
    normal = [p for p in infos if not (p.do_not_track or p.pre_dnat)]
    return HostTiers(
        normal=_tier_infos(normal, tiers),
        untracked=_tier_infos((p for p in infos if p.do_not_track), tiers),
        pre_dnat=_tier_infos(
            (p for p in infos if p.pre_dnat and not p.do_not_track), tiers, egress_allowed=False
        ),
        forward=_tier_infos((p for p in normal if p.apply_on_forward), tiers),
    )

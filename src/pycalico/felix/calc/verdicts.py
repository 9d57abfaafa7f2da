"""What Felix's rules do with one packet: the dataplane contract of the messages, executable.

What it is: a pure evaluator of the messages the calculation graph sends (``ResolvedRule``,
``TierInfo``, profile ids, IP-set members) for one new flow's first packet, giving the verdict
of an endpoint's ingress or egress and every step on the way (which tier, which policy, which
rule, pass, end of tier, profiles).  It follows the semantics ``felix.rules`` renders into
nftables: ``rules.policy.render_rule`` (one rule) and ``rules.endpoints.tier_rules`` /
``_profiles`` (an endpoint chain); ``tests/unit/felix/calc/test_explain_rules.py`` checks
that, for generated rules and packets, this agrees with the rendered nft rule text.  What it
is not: which policies apply to an endpoint (the graph: ``explain.py`` asks it) or conntrack
(established flows are accepted before policy; this answers for a new flow).

Semantics (those of the rendered chains):

* A rule matches when every constraint holds: lists of nets and ports are ORed, IP-set ids
  ANDed, ``not_*`` fields match when the packet is in none; numeric ports OR named ports on one
  side; an ICMP type/code or a port constraint needs a packet that has one.
* In a tier, policies run in order; a Log rule records and continues; the first Allow accepts
  the direction, Deny drops, Pass skips the tier's remaining policies and its end-of-tier drop.
  A tier with no policy for the direction is skipped; one nothing allowed or passed drops,
  unless its default action is Pass.  Then profiles, in order (first Allow accepts; Deny
  drops); nothing allowed: "Drop if no profiles matched".

Invariant: pure functions of their arguments; the trace's verdict is "allow" or "deny".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from pycalico.felix.messages import PolicyID, PortRange, ProfileID, ResolvedRule, TierInfo

Verdict = Literal["allow", "deny"]
# "none": an untracked or pre-DNAT stage that decided nothing (the packet goes on).
StageVerdict = Literal["allow", "deny", "none"]
SetMembers = Mapping[str, frozenset[str]]

PROTOCOL_NUMBERS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58, "sctp": 132, "udplite": 136}
PROTOCOL_NAMES = {number: name for name, number in PROTOCOL_NUMBERS.items()}
_PORTED = frozenset({6, 17, 132, 136})


def protocol_number(protocol: str | int) -> int:
    if isinstance(protocol, int):
        return protocol
    lowered = protocol.lower()
    if lowered in PROTOCOL_NUMBERS:
        return PROTOCOL_NUMBERS[lowered]
    if lowered.isdigit():
        return int(lowered)
    raise ValueError(f"protocol: unknown protocol {protocol!r}")


@dataclass(frozen=True, slots=True)
class Packet:
    """The first packet of a flow: addresses, protocol, ports (TCP/UDP/SCTP) or ICMP type."""

    source: str
    destination: str
    protocol: str = "tcp"
    source_port: int | None = None
    destination_port: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None

    @property
    def family(self) -> int:
        return ipaddress.ip_address(self.destination).version

    @property
    def number(self) -> int:
        return protocol_number(self.protocol)

    @property
    def has_ports(self) -> bool:
        return self.number in _PORTED

    @property
    def is_icmp(self) -> bool:
        return self.number == (58 if self.family == 6 else 1)


@lru_cache(maxsize=1 << 14)
def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text, strict=False)


def in_nets(address: str, nets: Sequence[str]) -> bool:
    ip = ipaddress.ip_address(address)
    return any(ip.version == net.version and ip in net for net in map(_network, nets))


def in_set(members: SetMembers, set_id: str, address: str) -> bool:
    """Is ``address`` in the selector set ``set_id`` (members: addresses and CIDRs)?"""
    found = members.get(set_id, frozenset())
    return address in found or in_nets(address, [m for m in found if "/" in m])


def _in_named_set(
    members: SetMembers, set_id: str, address: str, packet: Packet, port: int
) -> bool:
    name = PROTOCOL_NAMES.get(packet.number, str(packet.number))
    return f"{address},{name}:{port}" in members.get(set_id, frozenset())


def _in_ranges(port: int, ranges: Sequence[PortRange]) -> bool:
    return any(r.first <= port <= r.last for r in ranges)


def _family_nets(nets: Sequence[str], family: int) -> list[str]:
    return [n for n in nets if _network(n).version == family]


def _side_mismatch(rule: ResolvedRule, packet: Packet, sets: SetMembers, source: bool) -> str:
    """The first constraint of one side the packet fails ("" when it passes them all)."""
    side = "source" if source else "destination"
    address = packet.source if source else packet.destination
    port = packet.source_port if source else packet.destination_port
    nets: tuple[str, ...] = getattr(rule, f"{side}_nets")
    if nets and not in_nets(address, _family_nets(nets, packet.family)):
        return f"{side} nets"
    if in_nets(address, getattr(rule, f"not_{side}_nets")):
        return f"{side} notNets"
    if not all(in_set(sets, s, address) for s in getattr(rule, f"{side}_ip_set_ids")):
        return f"{side} selector"
    if any(in_set(sets, s, address) for s in getattr(rule, f"not_{side}_ip_set_ids")):
        return f"{side} notSelector"
    ports: tuple[PortRange, ...] = getattr(rule, f"{side}_ports")
    named: tuple[str, ...] = getattr(rule, f"{side}_named_port_ip_set_ids")
    if ports or named:
        if port is None or not packet.has_ports:
            return f"{side} ports (the packet has none)"
        if not (
            _in_ranges(port, ports)
            or any(_in_named_set(sets, s, address, packet, port) for s in named)
        ):
            return f"{side} ports"
    not_ports: tuple[PortRange, ...] = getattr(rule, f"not_{side}_ports")
    not_named: tuple[str, ...] = getattr(rule, f"not_{side}_named_port_ip_set_ids")
    if not_ports or not_named:
        if port is None or not packet.has_ports:
            return f"{side} notPorts (the packet has none)"
        if _in_ranges(port, not_ports) or any(
            _in_named_set(sets, s, address, packet, port) for s in not_named
        ):
            return f"{side} notPorts"
    return ""


def _icmp_mismatch(rule: ResolvedRule, packet: Packet) -> str:
    if rule.icmp_type is not None:
        if not packet.is_icmp or packet.icmp_type != rule.icmp_type:
            return "icmp type"
        if rule.icmp_code is not None and packet.icmp_code != rule.icmp_code:
            return "icmp code"
    if rule.not_icmp_type is not None:
        if not packet.is_icmp:
            return "notICMP (the packet is not ICMP)"
        if rule.not_icmp_code is None and packet.icmp_type == rule.not_icmp_type:
            return "notICMP type"
        if (packet.icmp_type, packet.icmp_code) == (rule.not_icmp_type, rule.not_icmp_code):
            return "notICMP type and code"
    return ""


def rule_mismatch(rule: ResolvedRule, packet: Packet, sets: SetMembers) -> str:
    """Why ``rule`` does not match ``packet`` (the first failing field), "" when it matches."""
    if rule.ip_version is not None and rule.ip_version != packet.family:
        return "ipVersion"
    if rule.protocol is not None and protocol_number(rule.protocol) != packet.number:
        return "protocol"
    number = None if rule.protocol is None else protocol_number(rule.protocol)
    if number in (1, 58) and (number == 58) != (packet.family == 6):
        return "protocol (ICMP of the other IP version)"
    if rule.not_protocol is not None and protocol_number(rule.not_protocol) == packet.number:
        return "notProtocol"
    return (
        _icmp_mismatch(rule, packet)
        or _side_mismatch(rule, packet, sets, source=True)
        or _side_mismatch(rule, packet, sets, source=False)
    )


def rule_matches(rule: ResolvedRule, packet: Packet, sets: SetMembers) -> bool:
    return not rule_mismatch(rule, packet, sets)


# --- an endpoint's direction ----------------------------------------------------------------

Outcome = Literal["allow", "deny", "pass", "no-match", "skipped"]


@dataclass(frozen=True, slots=True)
class RuleCheck:
    index: int
    action: str
    mismatch: str  # "" = matched


@dataclass(frozen=True, slots=True)
class OwnerStep:
    """One policy's or profile's rules against the packet."""

    owner: PolicyID | ProfileID
    outcome: Outcome
    rule_index: int | None  # the rule that decided (allow/deny/pass)
    checks: tuple[RuleCheck, ...] = ()
    logged: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class TierStep:
    name: str
    default_action: str
    policies: tuple[OwnerStep, ...]
    # "end-of-tier-next": nothing decided in an untracked/pre-DNAT tier (no end-of-tier drop)
    outcome: Literal[
        "allow", "deny", "pass", "end-of-tier-deny", "end-of-tier-pass", "end-of-tier-next"
    ]


@dataclass(frozen=True, slots=True)
class DirectionTrace:
    """One endpoint's ingress or egress for one packet, step by step."""

    ingress: bool
    tiers: tuple[TierStep, ...]
    profiles: tuple[OwnerStep, ...]
    verdict: StageVerdict
    reason: str
    pre_policy: tuple[str, ...] = field(default=())


def run_rules(
    owner: PolicyID | ProfileID, rules: Sequence[ResolvedRule], packet: Packet, sets: SetMembers
) -> OwnerStep:
    """First match wins; Log rules record and continue."""
    checks: list[RuleCheck] = []
    logged: list[int] = []
    for index, rule in enumerate(rules):
        mismatch = rule_mismatch(rule, packet, sets)
        checks.append(RuleCheck(index, rule.action, mismatch))
        if mismatch:
            continue
        if rule.action == "log":
            logged.append(index)
            continue
        outcome: Outcome = rule.action
        return OwnerStep(owner, outcome, index, tuple(checks), tuple(logged))
    return OwnerStep(owner, "no-match", None, tuple(checks), tuple(logged))


def _run_tier(
    tier: TierInfo,
    ingress: bool,
    policy_rules: Callable[[PolicyID], Sequence[ResolvedRule]],
    packet: Packet,
    sets: SetMembers,
    end_of_tier: bool = True,
) -> TierStep | None:
    policies = tier.ingress_policies if ingress else tier.egress_policies
    if not policies:
        return None
    steps: list[OwnerStep] = []
    decided: OwnerStep | None = None
    for policy in policies:
        if decided is not None:
            steps.append(OwnerStep(policy, "skipped", None))
            continue
        step = run_rules(policy, policy_rules(policy), packet, sets)
        steps.append(step)
        if step.outcome in ("allow", "deny", "pass"):
            decided = step
    if decided is not None:
        outcome = decided.outcome
        assert outcome in ("allow", "deny", "pass")
        return TierStep(tier.name, tier.default_action, tuple(steps), outcome)
    if not end_of_tier:
        return TierStep(tier.name, tier.default_action, tuple(steps), "end-of-tier-next")
    if tier.default_action == "pass":
        return TierStep(tier.name, tier.default_action, tuple(steps), "end-of-tier-pass")
    return TierStep(tier.name, tier.default_action, tuple(steps), "end-of-tier-deny")


def evaluate_direction(
    *,
    ingress: bool,
    tiers: Sequence[TierInfo],
    profile_ids: Sequence[ProfileID],
    policy_rules: Callable[[PolicyID], Sequence[ResolvedRule]],
    profile_rules: Callable[[ProfileID], Sequence[ResolvedRule]],
    packet: Packet,
    sets: SetMembers,
    pre_policy_drop: str = "",
    end_of_tier: bool = True,
    after: Literal["profiles", "none", "allow"] = "profiles",
) -> DirectionTrace:
    """An endpoint chain (``cali-tw-*`` for ingress, ``cali-fw-*`` for egress) for ``packet``.

    ``pre_policy_drop``: why the chain drops the packet before any policy ("" if it does not:
    admin down, anti-spoofing, VXLAN/IPIP from a workload).  The host endpoint chains'
    variants (``rules.endpoints.host_endpoint_chains``, ``rules.prefilter``): untracked and
    pre-DNAT chains have no end-of-tier drop and no profiles (``end_of_tier=False``,
    ``after="none"``: nothing decided is verdict "none"); the applyOnForward chains have the
    end-of-tier drop but no profiles, and accept what every tier passed (``after="allow"``).
    """
    if pre_policy_drop:
        return DirectionTrace(ingress, (), (), "deny", pre_policy_drop, (pre_policy_drop,))
    steps: list[TierStep] = []
    for tier in tiers:
        step = _run_tier(tier, ingress, policy_rules, packet, sets, end_of_tier)
        if step is None:
            continue
        steps.append(step)
        if step.outcome == "allow":
            return DirectionTrace(ingress, tuple(steps), (), "allow", _decided(step))
        if step.outcome in ("deny", "end-of-tier-deny"):
            return DirectionTrace(ingress, tuple(steps), (), "deny", _decided(step))
    if after == "none":
        return DirectionTrace(ingress, tuple(steps), (), "none", "no policy of the stage decided")
    if after == "allow":
        reason = "every tier passed it" if steps else "no policy for this direction"
        return DirectionTrace(ingress, tuple(steps), (), "allow", reason)
    profiles: list[OwnerStep] = []
    for profile in profile_ids:
        step_p = run_rules(profile, profile_rules(profile), packet, sets)
        profiles.append(step_p)
        if step_p.outcome in ("allow", "deny"):
            reason = f"profile {profile.name} rule {step_p.rule_index} ({step_p.outcome})"
            return DirectionTrace(ingress, tuple(steps), tuple(profiles), step_p.outcome, reason)
    reason = "no profile allowed it (Drop if no profiles matched)"
    return DirectionTrace(ingress, tuple(steps), tuple(profiles), "deny", reason)


def _decided(step: TierStep) -> str:
    if step.outcome.startswith("end-of-tier"):
        return f"end of tier {step.name}: no policy allowed or passed it"
    last = next(p for p in step.policies if p.outcome == step.outcome)
    return f"tier {step.name}, policy {_owner_name(last.owner)} rule {last.rule_index} ({step.outcome})"


def _owner_name(owner: PolicyID | ProfileID) -> str:
    return owner.name

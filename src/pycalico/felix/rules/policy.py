"""Render resolved policy/profile rules into nft rule text (pure).

What it is: ``ResolvedRule`` → nft rule bodies, and the per-policy / per-profile chains built
from them.  What it is not: endpoint chains or dispatch (``rules.endpoints``).

Semantics (Calico's, reference §2.4 and §3.2):

* Allow sets the accept mark and returns; Pass sets the pass mark and returns; Deny drops (or
  rejects); Log logs and continues.
* One ``ResolvedRule`` may become several nft rules: one per IP family it can match (the table is
  ``inet`` and sets are typed), and one per alternative where Calico ORs different match kinds
  (numeric ports OR named ports).  All variants carry the same action, so first-match semantics
  are preserved.
* Within a rule, lists of nets and ports are ORed; IP-set ids are ANDed; ``not_*`` fields
  match when the packet is in none of them.  Anonymous sets hold single values only — prefixes
  and ranges become separate alternatives (OR) or separate negations (AND); see ``any_of``.
* A rule whose positive nets are all of the other family never matches in this family and
  renders to nothing for it (as Calico omits it from that family's chain).  When a rule renders
  differently per family, every variant is pinned to its family with ``meta nfproto`` (the
  table is ``inet``: a variant with no address match would otherwise see both families).
"""

from __future__ import annotations

import ipaddress
import itertools
from collections.abc import Iterable, Sequence

from pycalico.felix.messages import PolicyID, PortRange, ProfileID, ResolvedRule
from pycalico.felix.rules import flows, names
from pycalico.felix.rules.model import Chain, RenderConfig

_FAMILY_KEYWORD = {4: "ip", 6: "ip6"}
_NAMED_PROTOCOLS = {
    "tcp": "tcp",
    "udp": "udp",
    "sctp": "sctp",
    "udplite": "udplite",
    "icmp": "icmp",
    "icmpv6": "icmpv6",
}
_PROTOCOL_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132, "udplite": 136, "icmp": 1, "icmpv6": 58}


def _protocol_token(protocol: str | int) -> str:
    if isinstance(protocol, int):
        return str(protocol)
    lowered = protocol.lower()
    if lowered in _NAMED_PROTOCOLS:
        return _NAMED_PROTOCOLS[lowered]
    if lowered.isdigit():
        return lowered
    raise ValueError(f"rule protocol: unknown protocol {protocol!r}")


def _protocol_number(protocol: str | int | None) -> int | None:
    if protocol is None:
        return None
    if isinstance(protocol, int):
        return protocol
    lowered = protocol.lower()
    return _PROTOCOL_NUMBERS.get(lowered, int(lowered) if lowered.isdigit() else None)


def _family_of(net: str) -> int:
    return 6 if ":" in net else 4


def nets_for_family(nets: Iterable[str], family: int) -> list[str]:
    """The nets of ``family``, collapsed (nft refuses overlapping intervals) and rendered."""
    parsed = [ipaddress.ip_network(net, strict=False) for net in nets if _family_of(net) == family]
    collapsed = ipaddress.collapse_addresses(parsed)  # type: ignore[type-var]
    return [_render_net(net) for net in collapsed]


def _render_net(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return str(net)


def _anonymous_set(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else "{ " + ", ".join(items) + " }"


def _is_interval(item: str) -> bool:
    return "/" in item or "-" in item


def any_of(expression: str, items: Sequence[str]) -> list[str]:
    """OR over ``items`` as alternatives (one nft rule each where needed).

    Never an anonymous *interval* set: while any interval set in the table holds elements, nft
    (1.0.6) reads all their elements from the kernel before every transaction that touches a
    set element — one per endpoint would make every IP-set change cost O(endpoints).  Single
    values go in one anonymous hash set; prefixes and ranges become one alternative each (the
    items are disjoint, so a packet still matches at most one alternative).
    """
    plain = [item for item in items if not _is_interval(item)]
    ranged = [item for item in items if _is_interval(item)]
    alternatives = [f"{expression} {item}" for item in ranged]
    if plain:
        alternatives.insert(0, f"{expression} {_anonymous_set(plain)}")
    return alternatives


def none_of(expression: str, items: Sequence[str]) -> str:
    """AND of negations, again without anonymous interval sets (see ``any_of``)."""
    plain = [item for item in items if not _is_interval(item)]
    parts = [f"{expression} != {item}" for item in items if _is_interval(item)]
    if plain:
        parts.append(f"{expression} != {_anonymous_set(plain)}")
    return " ".join(parts)


def _port_items(ports: Sequence[PortRange]) -> list[str]:
    return [str(p.first) if p.first == p.last else f"{p.first}-{p.last}" for p in ports]


def _port_alternatives(
    direction: str,
    family: int,
    ports: Sequence[PortRange],
    named_sets: Sequence[str],
) -> list[str]:
    """Calico ORs numeric ports with named ports: one alternative per kind."""
    addr = f"{_FAMILY_KEYWORD[family]} {direction}addr"
    alternatives: list[str] = []
    if ports:
        alternatives += any_of(f"th {direction}port", _port_items(ports))
    for set_id in named_sets:
        alternatives.append(
            f"{addr} . meta l4proto . th {direction}port @{names.ip_set_name(set_id, family)}"
        )
    return alternatives or [""]


def _action(rule: ResolvedRule, config: RenderConfig) -> str:
    if rule.action == "allow":
        return f"meta mark set meta mark | {names.MARK_ACCEPT:#x} return"
    if rule.action == "pass":
        return f"meta mark set meta mark | {names.MARK_PASS:#x} return"
    if rule.action == "deny":
        return "reject" if config.deny_action == "Reject" else "drop"
    if rule.action == "log":
        prefix = (rule.log_prefix or config.log_prefix)[:120].replace('"', "'")
        return f'log prefix "{prefix}: "'
    raise ValueError(f"rule action: unknown action {rule.action!r}")


def render_rule(rule: ResolvedRule, family: int, config: RenderConfig) -> list[str]:
    """The nft rule bodies for ``rule`` in ``family`` (maybe none)."""
    if rule.ip_version is not None and rule.ip_version != family:
        return []
    fam = _FAMILY_KEYWORD[family]
    matches: list[str] = []
    net_alternatives: list[list[str]] = []
    number = _protocol_number(rule.protocol)
    if (number == 1 and family == 6) or (number == 58 and family == 4):
        return []  # ICMP is v4-only, ICMPv6 v6-only
    if rule.protocol is not None:
        matches.append(f"meta l4proto {_protocol_token(rule.protocol)}")
    if rule.not_protocol is not None:
        matches.append(f"meta l4proto != {_protocol_token(rule.not_protocol)}")
    icmp = "icmpv6" if family == 6 else "icmp"
    if rule.icmp_type is not None:
        matches.append(f"{icmp} type {rule.icmp_type}")
        if rule.icmp_code is not None:
            matches.append(f"{icmp} code {rule.icmp_code}")
    if rule.not_icmp_type is not None:
        if rule.not_icmp_code is not None:
            matches.append(
                # nft wants a set on the right of a concatenation, even for one value.
                f"{icmp} type . {icmp} code != {{ {rule.not_icmp_type} . {rule.not_icmp_code} }}"
            )
        else:
            matches.append(f"{icmp} type != {rule.not_icmp_type}")
    for direction, nets, not_nets, set_ids, not_set_ids in (
        ("s", rule.source_nets, rule.not_source_nets, rule.source_ip_set_ids,
         rule.not_source_ip_set_ids),
        ("d", rule.destination_nets, rule.not_destination_nets, rule.destination_ip_set_ids,
         rule.not_destination_ip_set_ids),
    ):  # fmt: skip
        addr = f"{fam} {direction}addr"
        if nets:
            mine = nets_for_family(nets, family)
            if not mine:
                return []
            net_alternatives.append(any_of(addr, mine))
        not_mine = nets_for_family(not_nets, family)
        if not_mine:
            matches.append(none_of(addr, not_mine))
        for set_id in set_ids:
            matches.append(f"{addr} @{names.ip_set_name(set_id, family)}")
        for set_id in not_set_ids:
            matches.append(f"{addr} != @{names.ip_set_name(set_id, family)}")
    for direction, not_ports, not_named in (
        ("s", rule.not_source_ports, rule.not_source_named_port_ip_set_ids),
        ("d", rule.not_destination_ports, rule.not_destination_named_port_ip_set_ids),
    ):
        if not_ports:
            matches.append(none_of(f"th {direction}port", _port_items(not_ports)))
        for set_id in not_named:
            matches.append(
                f"{fam} {direction}addr . meta l4proto . th {direction}port != "
                f"@{names.ip_set_name(set_id, family)}"
            )
    source_alternatives = _port_alternatives(
        "s", family, rule.source_ports, rule.source_named_port_ip_set_ids
    )
    destination_alternatives = _port_alternatives(
        "d", family, rule.destination_ports, rule.destination_named_port_ip_set_ids
    )
    action = _action(rule, config)
    if config.rule_counters:
        action = f"counter {action}"
    comment = f' comment "cali:{rule.rule_id[:40]}"' if rule.rule_id else ""
    log = deny_log(flows.log_prefix_for_rule(rule.rule_id), config) if rule.action == "deny" else ""
    bodies: list[str] = []
    for choice in itertools.product(
        *net_alternatives, source_alternatives, destination_alternatives
    ):
        if log:  # its own rule: over the rate limit only the log is skipped, never the deny
            bodies.append(" ".join(p for p in [*matches, *choice, log] if p))
        parts = [*matches, *choice, action]
        bodies.append(" ".join(p for p in parts if p) + comment)
    return bodies


def deny_log(prefix: str, config: RenderConfig) -> str:
    """The rate-limited NFLOG statement of a deny path ("" when deny logging is off)."""
    if not config.deny_log_group:
        return ""
    prefix = prefix.replace('"', "'")
    return f'limit rate {config.deny_log_rate} log prefix "{prefix}" group {config.deny_log_group}'


def render_rules(rules: Sequence[ResolvedRule], config: RenderConfig) -> tuple[str, ...]:
    """Every rule in order; both families' variants of one rule sit together."""
    families = (4, 6) if config.ipv6_support else (4,)
    out: list[str] = []
    for rule in rules:
        variants = [render_rule(rule, family, config) for family in families]
        if len(variants) == 2 and variants[0] == variants[1]:
            # Nothing family-specific: one rule serves both families.
            out.extend(variants[0])
            continue
        # The families differ (a v4-only net, ip_version...): pin each variant to its family,
        # or a v6 variant whose only constraint was a v4 net would match every v4 packet.
        for family, bodies in zip(families, variants, strict=True):
            out.extend(f"meta nfproto ipv{family} {body}" for body in bodies)
    return tuple(out)


def policy_chains(
    policy_id: PolicyID,
    inbound: Sequence[ResolvedRule],
    outbound: Sequence[ResolvedRule],
    config: RenderConfig,
) -> tuple[Chain, Chain]:
    """(``cali-pi-*``, ``cali-po-*``) for one policy."""
    return (
        Chain(names.policy_chain(policy_id, inbound=True), render_rules(inbound, config)),
        Chain(names.policy_chain(policy_id, inbound=False), render_rules(outbound, config)),
    )


def profile_chains(
    profile_id: ProfileID,
    inbound: Sequence[ResolvedRule],
    outbound: Sequence[ResolvedRule],
    config: RenderConfig,
) -> tuple[Chain, Chain]:
    """(``cali-pri-*``, ``cali-pro-*``) for one profile."""
    return (
        Chain(names.profile_chain(profile_id, inbound=True), render_rules(inbound, config)),
        Chain(names.profile_chain(profile_id, inbound=False), render_rules(outbound, config)),
    )

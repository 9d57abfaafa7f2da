"""Render endpoints, dispatch and the base chains into nft chains (pure).

What it is: the chains that decide *which* policy applies to a packet: base chains hooked into
forward/input/output, dispatch chains that look the interface up in a verdict map (O(1) however
many endpoints), and per-endpoint chains that run tiers, then profiles, then drop.  What it is
not: policy rule rendering (``rules.policy``) or anything that knows what is programmed.

Packet walk (forward): ``filter-FORWARD`` clears Calico's mark bits; a packet from a workload
interface jumps to ``cali-from-wl-dispatch`` whose verdict map ``goto``s the endpoint's
``cali-fw-*`` chain (egress policy); unknown workload interfaces hit the drop after the map (fail
closed).  The same for ``cali-to-wl-dispatch``/``cali-tw-*`` (ingress policy).  Endpoint chains
end in ``drop`` or ``return`` with the accept mark; ``filter-FORWARD`` accepts marked packets.
Input: workload→host goes through egress policy then ``DefaultEndpointToHostAction``; other
interfaces go through host-endpoint dispatch (failsafe ports first).  Output: host→local
workload is always allowed (as in Calico, so kubelet probes work); host→elsewhere goes through
host-endpoint egress dispatch.

Invariants:

* Endpoint chains start with: admin-down drop, conntrack established/related accept, invalid
  drop, clear accept/pass marks.  Policies therefore see only new flows.
* A tier with no policy for the direction is skipped; a tier whose policies neither allow nor
  pass ends in a drop unless its default action is Pass; after the tiers come the profiles;
  nothing allowed ⇒ "Drop if no profiles matched".
* Workload egress drops foreign source addresses, IPIP, VXLAN and IPv6 router advertisements.
* A packet that untracked or pre-DNAT policy (``rules.prefilter``) accepted carries the accept
  bit into the filter chains; only while such policy exists do they look at it (input and
  output accept it, forward skips the ingress host endpoint's forward policy), so a foreign
  mark can never let a packet through when the raw/mangle chains that clear marks are absent.
* With ``flowtable_offload`` the forward base chain offloads established TCP/UDP flows to the
  ``cali-ft`` flowtable before dispatch; only new flows reach policy (as without offload, since
  the endpoint chains accept established packets first).  Caveat: an offloaded flow of an
  endpoint set admin-down keeps flowing until its conntrack entry ends.
"""

from __future__ import annotations

from collections.abc import Sequence

from pycalico.felix.messages import (
    HostEndpointID,
    HostEndpointUpdate,
    ProfileID,
    TierInfo,
    WorkloadEndpointUpdate,
)
from pycalico.felix.rules import flows, names
from pycalico.felix.rules.model import (
    NO_PREFILTER,
    Chain,
    FailsafePort,
    FlowtableDef,
    PrefilterUse,
    RenderConfig,
    SetDef,
)
from pycalico.felix.rules.policy import deny_log, nets_for_family, none_of

_MASK32 = 0xFFFFFFFF
CLEAR_ALL = f"meta mark set meta mark & {(~names.ALL_MARKS) & _MASK32:#x}"
CLEAR_ACCEPT_PASS = (
    f"meta mark set meta mark & {(~(names.MARK_ACCEPT | names.MARK_PASS)) & _MASK32:#x}"
)
_CLEAR_PASS = f"meta mark set meta mark & {(~names.MARK_PASS) & _MASK32:#x}"
_RETURN_IF_ACCEPTED = f"meta mark & {names.MARK_ACCEPT:#x} == {names.MARK_ACCEPT:#x} return"
ACCEPT_IF_ACCEPTED = f"meta mark & {names.MARK_ACCEPT:#x} == {names.MARK_ACCEPT:#x} accept"
# Calico maps Allow in an untracked policy to "NOTRACK and allow".
_NOTRACK_RETURN_IF_ACCEPTED = (
    f"meta mark & {names.MARK_ACCEPT:#x} == {names.MARK_ACCEPT:#x} notrack return"
)
# The raw and mangle chains communicate "already accepted" through the accept bit, so the
# filter chains must keep it when clearing (Calico's filter FORWARD does the same).
CLEAR_ALL_BUT_ACCEPT = (
    f"meta mark set meta mark & {(~(names.ALL_MARKS & ~names.MARK_ACCEPT)) & _MASK32:#x}"
)
ACCEPT_CLEAR = f"meta mark & {names.MARK_ACCEPT:#x} == 0x0"
_PASS_CLEAR = f"meta mark & {names.MARK_PASS:#x} == 0x0"
# A link-local source is how IPv6 neighbour discovery talks to the host's fake gateway.
_IPV6_LINK_LOCAL = "fe80::/10"


def quote(text: str) -> str:
    return '"' + text.replace('"', "'") + '"'


def conntrack_rules(config: RenderConfig) -> list[str]:
    rules = ["ct state established,related accept"]
    if not config.disable_conntrack_invalid_check:
        rules.append("ct state invalid drop")
    return rules


def tier_rules(
    tiers: Sequence[TierInfo],
    ingress: bool,
    *,
    untracked: bool = False,
    end_of_tier: bool = True,
    config: RenderConfig | None = None,
) -> list[str]:
    """Jump to each tier's policies in order.

    ``untracked``: an accepted packet is also exempted from conntrack (doNotTrack policy, raw
    hooks only).  ``end_of_tier``: drop what no policy of a tier allowed or passed; untracked and
    pre-DNAT chains have no such drop, because the normal policy still follows for them.
    """
    rules: list[str] = []
    for tier in tiers:
        policies = tier.ingress_policies if ingress else tier.egress_policies
        if not policies:
            continue
        rules.append(f"{_CLEAR_PASS} comment {quote('Start of tier ' + tier.name)}")
        for policy_id in policies:
            chain = names.policy_chain(policy_id, inbound=ingress)
            rules.append(f"{_PASS_CLEAR} jump {chain}")
            rules.append(_NOTRACK_RETURN_IF_ACCEPTED if untracked else _RETURN_IF_ACCEPTED)
        if end_of_tier and tier.default_action != "pass":
            log = deny_log(flows.log_prefix_for_tier(tier.name, ingress), config) if config else ""
            if log:  # flow logs (docs/flows.md): the end-of-tier drop is a deny path too
                rules.append(f"{_PASS_CLEAR} {log}")
            rules.append(
                f"{_PASS_CLEAR} drop comment "
                f"{quote('End of tier ' + tier.name + '. Drop if no policies passed packet')}"
            )
    return rules


def _profiles(
    profile_ids: Sequence[ProfileID], inbound: bool, config: RenderConfig | None = None
) -> list[str]:
    rules: list[str] = []
    for profile_id in profile_ids:
        rules.append(f"jump {names.profile_chain(profile_id, inbound=inbound)}")
        rules.append(_RETURN_IF_ACCEPTED)
    log = deny_log(flows.log_prefix_for_profiles(inbound), config) if config else ""
    if log:
        rules.append(log)
    rules.append(f"drop comment {quote('Drop if no profiles matched')}")
    return rules


def _anti_spoofing(endpoint: WorkloadEndpointUpdate, config: RenderConfig) -> list[str]:
    rules: list[str] = []
    allowed = (*endpoint.ipv4_nets, *endpoint.ipv6_nets, *endpoint.allow_spoofed_source_prefixes)
    v4 = nets_for_family(allowed, 4)
    if v4:
        rules.append(f"{none_of('ip saddr', v4)} drop")
    else:
        rules.append("meta nfproto ipv4 drop")
    if config.ipv6_support:
        v6 = nets_for_family((*allowed, _IPV6_LINK_LOCAL), 6)
        rules.append(f"{none_of('ip6 saddr', v6)} drop")
    else:
        rules.append("meta nfproto ipv6 drop")
    if not config.allow_ipip_packets_from_workloads:
        rules.append('meta l4proto 4 drop comment "Drop IPIP packets from workloads"')
    if not config.allow_vxlan_packets_from_workloads:
        rules.append(
            f'udp dport {config.vxlan_port} drop comment "Drop VXLAN packets from workloads"'
        )
    rules.append("icmpv6 type nd-router-advert drop")
    return rules


def workload_chains(endpoint: WorkloadEndpointUpdate, config: RenderConfig) -> tuple[Chain, Chain]:
    """(``cali-tw-<iface>`` ingress, ``cali-fw-<iface>`` egress) for one workload endpoint."""
    head = [] if endpoint.admin_up else ['drop comment "Endpoint admin disabled"']
    to_rules = [*head, *conntrack_rules(config), CLEAR_ACCEPT_PASS]
    to_rules += tier_rules(endpoint.tiers, ingress=True, config=config)
    to_rules += _profiles(endpoint.profile_ids, inbound=True, config=config)
    from_rules = [*head, *conntrack_rules(config), CLEAR_ACCEPT_PASS]
    from_rules += _anti_spoofing(endpoint, config)
    from_rules += tier_rules(endpoint.tiers, ingress=False, config=config)
    from_rules += _profiles(endpoint.profile_ids, inbound=False, config=config)
    iface = endpoint.interface_name
    return (
        Chain(names.to_workload_chain(iface), tuple(to_rules)),
        Chain(names.from_workload_chain(iface), tuple(from_rules)),
    )


def failsafe_rules(
    ports: Sequence[FailsafePort], inbound: bool, *, replies: bool = False
) -> list[str]:
    """Accept the failsafe ports (the remote side restricted to ``port.net`` if set).

    ``replies``: match the other direction of a failsafe connection instead (source port), for
    the raw hooks, which see packets before conntrack can say a packet is a reply.
    """
    rules: list[str] = []
    port_field = "sport" if replies else "dport"
    for port in ports:
        net = ""
        if port.net:
            family = "ip6" if ":" in port.net else "ip"
            net = f"{family} {'saddr' if inbound else 'daddr'} {port.net} "
        rules.append(f'{net}{port.protocol} {port_field} {port.port} accept comment "Failsafe"')
    return rules


def host_endpoint_chains(
    endpoint: HostEndpointUpdate, config: RenderConfig
) -> tuple[Chain, Chain, Chain, Chain]:
    """(from-host-endpoint, to-host-endpoint, from-hep-forward, to-hep-forward) chains.

    Host endpoints are default-deny apart from the failsafe ports; forward chains are
    default-allow unless a policy applies on forward (Calico's applyOnForward semantics).
    """
    from_name, to_name, from_fwd, to_fwd = names.host_endpoint_chains(endpoint.id)
    common = [*conntrack_rules(config), CLEAR_ACCEPT_PASS]
    from_rules = [*common, *failsafe_rules(config.failsafe_inbound, inbound=True)]
    from_rules += tier_rules(endpoint.tiers, ingress=True, config=config)
    from_rules += _profiles(endpoint.profile_ids, inbound=True, config=config)
    to_rules = [*common, *failsafe_rules(config.failsafe_outbound, inbound=False)]
    to_rules += tier_rules(endpoint.tiers, ingress=False, config=config)
    to_rules += _profiles(endpoint.profile_ids, inbound=False, config=config)
    from_fwd_rules = [CLEAR_ACCEPT_PASS, *tier_rules(endpoint.forward_tiers, ingress=True)]
    to_fwd_rules = [CLEAR_ACCEPT_PASS, *tier_rules(endpoint.forward_tiers, ingress=False)]
    if len(from_fwd_rules) > 1:
        from_fwd_rules.append(f"meta mark set meta mark | {names.MARK_ACCEPT:#x}")
    if len(to_fwd_rules) > 1:
        to_fwd_rules.append(f"meta mark set meta mark | {names.MARK_ACCEPT:#x}")
    return (
        Chain(from_name, tuple(from_rules)),
        Chain(to_name, tuple(to_rules)),
        Chain(from_fwd, tuple(from_fwd_rules)),
        Chain(to_fwd, tuple(to_fwd_rules)),
    )


def dispatch_maps() -> tuple[SetDef, ...]:
    return tuple(
        SetDef(name, "ifname : verdict", kind="map")
        for name in (
            names.MAP_FROM_WL,
            names.MAP_TO_WL,
            names.MAP_FROM_HEP,
            names.MAP_TO_HEP,
            names.MAP_FROM_HEP_FORWARD,
            names.MAP_TO_HEP_FORWARD,
        )
    )


# Established means the flow's first packet already passed policy (a dropped packet never
# confirms its conntrack entry), so offloading it changes nothing Calico promises: established
# flows keep flowing after a policy change anyway.  The endpoint chains accept established
# packets themselves, so the offload must come before the dispatch, not after it.
OFFLOAD_RULE = (
    f"meta l4proto {{ tcp, udp }} ct state established flow add @{names.FLOWTABLE} "
    'comment "Flowtable offload of established flows"'
)


def flowtable() -> FlowtableDef:
    """The flowtable ``OFFLOAD_RULE`` feeds (devices: the workload interfaces, set by Felix)."""
    return FlowtableDef(names.FLOWTABLE)


def _prefix_rules(config: RenderConfig, direction: str, statement: str) -> list[str]:
    return [f'{direction}name "{prefix}*" {statement}' for prefix in config.interface_prefixes]


def not_workload(config: RenderConfig, direction: str) -> str:
    return " ".join(f'{direction}name != "{prefix}*"' for prefix in config.interface_prefixes)


def _forward_chain(config: RenderConfig, prefilter: PrefilterUse) -> Chain:
    rules = [CLEAR_ALL_BUT_ACCEPT if prefilter.ingress else CLEAR_ALL]
    if config.flowtable_offload:
        rules.append(OFFLOAD_RULE)
    not_accepted = f"{ACCEPT_CLEAR} " if prefilter.ingress else ""
    rules.append(
        f"{not_accepted}{not_workload(config, 'iif')} jump {names.CHAIN_FROM_HEP_FORWARD_DISPATCH}"
    )
    rules += _prefix_rules(config, "iif", f"jump {names.CHAIN_FROM_WL_DISPATCH}")
    rules += _prefix_rules(config, "oif", f"jump {names.CHAIN_TO_WL_DISPATCH}")
    rules.append(f"{not_workload(config, 'oif')} jump {names.CHAIN_TO_HEP_FORWARD_DISPATCH}")
    rules.append(ACCEPT_IF_ACCEPTED)
    return Chain(
        names.CHAIN_FORWARD,
        tuple(rules),
        "type filter hook forward priority filter; policy accept;",
    )


def _input_chain(config: RenderConfig, prefilter: PrefilterUse) -> Chain:
    rules = []
    if prefilter.ingress:
        rules.append(
            f"{not_workload(config, 'iif')} {ACCEPT_IF_ACCEPTED} "
            'comment "Accepted by untracked or pre-DNAT policy"'
        )
    rules.append(CLEAR_ALL)
    rules += _prefix_rules(config, "iif", f"goto {names.CHAIN_WL_TO_HOST}")
    rules.append(f'iifname != "lo" jump {names.CHAIN_FROM_HEP_DISPATCH}')
    rules.append(ACCEPT_IF_ACCEPTED)
    return Chain(
        names.CHAIN_INPUT, tuple(rules), "type filter hook input priority filter; policy accept;"
    )


def _output_chain(config: RenderConfig, prefilter: PrefilterUse) -> Chain:
    rules = []
    if prefilter.raw_output:
        rules.append(f'{ACCEPT_IF_ACCEPTED} comment "Accepted by untracked policy"')
    rules.append(CLEAR_ALL)
    rules += _prefix_rules(config, "oif", 'accept comment "Host to local workload"')
    rules.append(f'oifname != "lo" jump {names.CHAIN_TO_HEP_DISPATCH}')
    rules.append(ACCEPT_IF_ACCEPTED)
    return Chain(
        names.CHAIN_OUTPUT, tuple(rules), "type filter hook output priority filter; policy accept;"
    )


def _workload_chains(config: RenderConfig) -> tuple[Chain, ...]:
    """The workload dispatch chains (fail closed on unknown interfaces) and
    ``cali-wl-to-host``."""
    action = {"Drop": "drop", "Accept": "accept", "Return": "return"}[
        config.default_endpoint_to_host_action
    ]
    wl_to_host = (
        # Neighbour discovery and router solicitation must reach the fake gateway.
        "icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept",
        f"jump {names.CHAIN_FROM_WL_DISPATCH}",
        f'{action} comment "Configured DefaultEndpointToHostAction"',
    )
    return (
        Chain(
            names.CHAIN_FROM_WL_DISPATCH,
            (f"iifname vmap @{names.MAP_FROM_WL}", 'drop comment "Unknown interface"'),
        ),
        Chain(
            names.CHAIN_TO_WL_DISPATCH,
            (f"oifname vmap @{names.MAP_TO_WL}", 'drop comment "Unknown interface"'),
        ),
        Chain(names.CHAIN_WL_TO_HOST, wl_to_host),
    )


def _host_endpoint_dispatch(wildcard_host_endpoint: str) -> tuple[Chain, ...]:
    chains: list[Chain] = []
    for chain_name, map_name, direction, index in (
        (names.CHAIN_FROM_HEP_DISPATCH, names.MAP_FROM_HEP, "iif", 0),
        (names.CHAIN_TO_HEP_DISPATCH, names.MAP_TO_HEP, "oif", 1),
        (names.CHAIN_FROM_HEP_FORWARD_DISPATCH, names.MAP_FROM_HEP_FORWARD, "iif", 2),
        (names.CHAIN_TO_HEP_FORWARD_DISPATCH, names.MAP_TO_HEP_FORWARD, "oif", 3),
    ):
        rules = [f"{direction}name vmap @{map_name}"]
        if wildcard_host_endpoint:
            target = names.host_endpoint_chains(HostEndpointID(wildcard_host_endpoint))[index]
            rules.append(f"goto {target}")
        chains.append(Chain(chain_name, tuple(rules)))
    return tuple(chains)


def static_chains(
    config: RenderConfig,
    wildcard_host_endpoint: str = "",
    prefilter: PrefilterUse = NO_PREFILTER,
) -> tuple[Chain, ...]:
    """Base chains, dispatch chains and ``cali-wl-to-host``.

    ``wildcard_host_endpoint``: the name of the ``interfaceName: "*"`` host endpoint, if any;
    its chains catch host interfaces that have no endpoint of their own.  ``prefilter``: which
    raw/mangle hooks are in use (``rules.prefilter``); a packet they accepted carries the accept
    bit, and is accepted here too (input, output) or skips the ingress host endpoint's forward
    policy (forward), as in Calico.  With none in use the chains are exactly as before.
    """
    return (
        _forward_chain(config, prefilter),
        _input_chain(config, prefilter),
        _output_chain(config, prefilter),
        *_workload_chains(config),
        *_host_endpoint_dispatch(wildcard_host_endpoint),
    )

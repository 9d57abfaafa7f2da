"""Untracked (doNotTrack) and pre-DNAT host endpoint policy: the raw and mangle chains (pure).

What it is: Calico's two kinds of host endpoint policy that run before the filter table.

* Untracked policy runs in ``raw-PREROUTING`` (ingress, priority raw: before conntrack) and
  ``raw-OUTPUT`` (egress).  Allow sets the accept bit and ``notrack``s the packet; the filter
  chains accept a packet that carries the accept bit (``rules.endpoints.static_chains``).
  Deny drops.  No verdict: the packet goes on to conntrack and the normal policy.
* Pre-DNAT policy (ingress only) runs in ``mangle-PREROUTING`` (priority mangle: after
  conntrack, before DNAT), so it sees the destination the client used.  Allow sets the accept
  bit, which makes filter input accept the packet and filter forward skip the ingress host
  endpoint's forward policy; Deny drops; no verdict: normal processing.

What it is not: the normal host endpoint chains (``rules.endpoints``) or policy rule rendering:
the ``cali-pi-*``/``cali-po-*`` chains are the same ones the filter chains jump to (Calico
renders one copy per iptables table; one nft table needs only one).

Invariants:

* Neither kind has an end-of-tier drop or profiles: what no untracked/pre-DNAT policy decides
  is left to the normal policy.  Failsafe ports are accepted first; in raw, also the replies of
  failsafe connections (source port), which conntrack cannot yet recognise there, so that half
  of a failsafe connection never ends up untracked.
* A base chain (and its dispatch chain) exists only while some host endpoint needs it
  (``PrefilterUse``), so an unused feature costs nothing per packet.  The verdict maps always
  exist; every named host endpoint has an entry in each (its chain, or ``return`` when it has no
  such policy), so the wildcard host endpoint's chain only catches interfaces without their own
  host endpoint.
* Workload interfaces and ``lo`` never reach the dispatch chains (as in the filter chains).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from pycalico.felix.messages import HostEndpointUpdate, TierInfo
from pycalico.felix.rules import names
from pycalico.felix.rules.endpoints import (
    ACCEPT_IF_ACCEPTED,
    CLEAR_ACCEPT_PASS,
    CLEAR_ALL,
    conntrack_rules,
    failsafe_rules,
    not_workload,
    tier_rules,
)
from pycalico.felix.rules.model import Chain, FailsafePort, PrefilterUse, RenderConfig, SetDef

MAPS = (names.MAP_RAW_FROM_HEP, names.MAP_RAW_TO_HEP, names.MAP_MANGLE_FROM_HEP)

_RAW_PREROUTING_HOOK = "type filter hook prerouting priority raw; policy accept;"
_RAW_OUTPUT_HOOK = "type filter hook output priority raw; policy accept;"
_MANGLE_PREROUTING_HOOK = "type filter hook prerouting priority mangle; policy accept;"


def _failsafe(ports: Sequence[FailsafePort], inbound: bool, *, replies: bool = False) -> list[str]:
    """The failsafe ports as one set lookup (plus one rule per port restricted to a net).

    Before conntrack every packet of the interface, established or not, walks this chain, so
    the ports are one ``protocol . port`` lookup rather than a rule each.
    """
    plain = sorted({f"{port.protocol} . {port.port}" for port in ports if not port.net})
    rules: list[str] = []
    if plain:
        field = "sport" if replies else "dport"
        rules.append(
            f'meta l4proto . th {field} {{ {", ".join(plain)} }} accept comment "Failsafe"'
        )
    rules += failsafe_rules([p for p in ports if p.net], inbound, replies=replies)
    return rules


def _has(tiers: Iterable[TierInfo], ingress: bool) -> bool:
    return any(tier.ingress_policies if ingress else tier.egress_policies for tier in tiers)


@dataclass(frozen=True, slots=True)
class PrefilterChains:
    """One host endpoint's raw/mangle chains; None where it has no such policy."""

    raw_from: Chain | None
    raw_to: Chain | None
    mangle_from: Chain | None

    def by_map(self) -> Iterator[tuple[str, Chain | None]]:
        """(verdict map, chain) in ``MAPS`` order."""
        yield names.MAP_RAW_FROM_HEP, self.raw_from
        yield names.MAP_RAW_TO_HEP, self.raw_to
        yield names.MAP_MANGLE_FROM_HEP, self.mangle_from


def host_endpoint_chains(endpoint: HostEndpointUpdate, config: RenderConfig) -> PrefilterChains:
    """The raw from/to and mangle from chains of one host endpoint."""
    raw_from_name, raw_to_name = names.host_endpoint_untracked_chains(endpoint.id)
    raw_from = raw_to = mangle_from = None
    untracked = endpoint.untracked_tiers
    if _has(untracked, ingress=True):
        rules = [
            *_failsafe(config.failsafe_inbound, inbound=True),
            *_failsafe(config.failsafe_outbound, inbound=True, replies=True),
            CLEAR_ACCEPT_PASS,
            *tier_rules(untracked, ingress=True, untracked=True, end_of_tier=False),
        ]
        raw_from = Chain(raw_from_name, tuple(rules))
    if _has(untracked, ingress=False):
        rules = [
            *_failsafe(config.failsafe_outbound, inbound=False),
            *_failsafe(config.failsafe_inbound, inbound=False, replies=True),
            CLEAR_ACCEPT_PASS,
            *tier_rules(untracked, ingress=False, untracked=True, end_of_tier=False),
        ]
        raw_to = Chain(raw_to_name, tuple(rules))
    if _has(endpoint.pre_dnat_tiers, ingress=True):
        rules = [
            *conntrack_rules(config),
            *_failsafe(config.failsafe_inbound, inbound=True),
            CLEAR_ACCEPT_PASS,
            *tier_rules(endpoint.pre_dnat_tiers, ingress=True, end_of_tier=False),
        ]
        mangle_from = Chain(names.host_endpoint_pre_dnat_chain(endpoint.id), tuple(rules))
    return PrefilterChains(raw_from, raw_to, mangle_from)


def chain_names(endpoint: HostEndpointUpdate) -> tuple[str, str, str]:
    """Every raw/mangle chain name the endpoint may have (for removal)."""
    raw_from, raw_to = names.host_endpoint_untracked_chains(endpoint.id)
    return raw_from, raw_to, names.host_endpoint_pre_dnat_chain(endpoint.id)


def map_verdict(chain: Chain | None) -> str:
    """A named host endpoint's dispatch entry: its chain, or back to the base chain."""
    return f"goto {chain.name}" if chain is not None else "return"


def use(endpoints: Iterable[HostEndpointUpdate]) -> PrefilterUse:
    """Which raw/mangle hooks the given host endpoints need."""
    raw_in = raw_out = mangle_in = False
    for endpoint in endpoints:
        raw_in = raw_in or _has(endpoint.untracked_tiers, ingress=True)
        raw_out = raw_out or _has(endpoint.untracked_tiers, ingress=False)
        mangle_in = mangle_in or _has(endpoint.pre_dnat_tiers, ingress=True)
    return PrefilterUse(raw_in, raw_out, mangle_in)


def maps() -> tuple[SetDef, ...]:
    return tuple(SetDef(name, "ifname : verdict", kind="map") for name in MAPS)


def _dispatch(name: str, map_name: str, direction: str, fallback: Chain | None) -> Chain:
    rules = [f"{direction}name vmap @{map_name}"]
    if fallback is not None:
        rules.append(f"goto {fallback.name}")
    return Chain(name, tuple(rules))


def _not_local(config: RenderConfig, direction: str) -> str:
    return f'{not_workload(config, direction)} {direction}name != "lo"'


def static_chains(
    config: RenderConfig, prefilter: PrefilterUse, wildcard: HostEndpointUpdate | None = None
) -> tuple[Chain, ...]:
    """The base and dispatch chains ``prefilter`` asks for (none when nothing is in use).

    ``wildcard``: the ``interfaceName: "*"`` host endpoint, if any; its chains catch host
    interfaces that have no host endpoint of their own.
    """
    fallback = (
        host_endpoint_chains(wildcard, config)
        if wildcard is not None
        else PrefilterChains(None, None, None)
    )
    chains: list[Chain] = []
    if prefilter.raw_prerouting:
        chains += [
            Chain(
                names.CHAIN_RAW_PREROUTING,
                (
                    CLEAR_ALL,
                    f"{_not_local(config, 'iif')} jump {names.CHAIN_RAW_FROM_HEP_DISPATCH}",
                    f'{ACCEPT_IF_ACCEPTED} comment "Untracked policy accepted packet"',
                ),
                _RAW_PREROUTING_HOOK,
            ),
            _dispatch(
                names.CHAIN_RAW_FROM_HEP_DISPATCH,
                names.MAP_RAW_FROM_HEP,
                "iif",
                fallback.raw_from,
            ),
        ]
    if prefilter.raw_output:
        chains += [
            Chain(
                names.CHAIN_RAW_OUTPUT,
                (
                    CLEAR_ALL,
                    f"{_not_local(config, 'oif')} jump {names.CHAIN_RAW_TO_HEP_DISPATCH}",
                    f'{ACCEPT_IF_ACCEPTED} comment "Untracked policy accepted packet"',
                ),
                _RAW_OUTPUT_HOOK,
            ),
            _dispatch(
                names.CHAIN_RAW_TO_HEP_DISPATCH, names.MAP_RAW_TO_HEP, "oif", fallback.raw_to
            ),
        ]
    if prefilter.mangle_prerouting:
        # With raw-PREROUTING in place the marks were cleared there, and the accept bit means
        # "untracked policy allowed it"; without it, clear them here first, so that no foreign
        # mark reaches the filter chains looking like our accept bit.
        if prefilter.raw_prerouting:
            head = ("ct state established,related accept", ACCEPT_IF_ACCEPTED)
        else:
            head = (CLEAR_ALL, "ct state established,related accept")
        chains += [
            Chain(
                names.CHAIN_MANGLE_PREROUTING,
                (
                    *head,
                    f"{_not_local(config, 'iif')} jump {names.CHAIN_MANGLE_FROM_HEP_DISPATCH}",
                    f'{ACCEPT_IF_ACCEPTED} comment "Pre-DNAT policy accepted packet"',
                ),
                _MANGLE_PREROUTING_HOOK,
            ),
            _dispatch(
                names.CHAIN_MANGLE_FROM_HEP_DISPATCH,
                names.MAP_MANGLE_FROM_HEP,
                "iif",
                fallback.mangle_from,
            ),
        ]
    return tuple(chains)


ALL_STATIC_CHAINS = frozenset(
    {
        names.CHAIN_RAW_PREROUTING,
        names.CHAIN_RAW_FROM_HEP_DISPATCH,
        names.CHAIN_RAW_OUTPUT,
        names.CHAIN_RAW_TO_HEP_DISPATCH,
        names.CHAIN_MANGLE_PREROUTING,
        names.CHAIN_MANGLE_FROM_HEP_DISPATCH,
    }
)

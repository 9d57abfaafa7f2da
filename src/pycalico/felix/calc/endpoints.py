"""Endpoint and network-set translation: ids, IP-set contributions, and endpoint messages.

What it is: how a WorkloadEndpoint, HostEndpoint, NetworkSet or GlobalNetworkSet becomes Felix's
view of it: its id (``WorkloadEndpointID`` is orchestrator, ``<namespace>/<pod>``, endpoint), what
it adds to IP sets (addresses, CIDRs, named ports), and the ``*EndpointUpdate`` message once its
tiers are known.  What it is not: which policies apply (``policies.py``) or label semantics
(``labels.py``).

Invariants: an IP-set member is a bare address for a single-address network (``10.0.0.1``, not
``10.0.0.1/32``) and a normalised CIDR otherwise, so an endpoint and a network set that name the
same address produce the same member; endpoint nets are normalised ``/32``/``/128`` networks.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache

from pycalico.felix.calc.ipsets import Contribution
from pycalico.felix.calc.policies import HostTiers
from pycalico.felix.messages import (
    HostEndpointID,
    HostEndpointUpdate,
    ProfileID,
    TierInfo,
    WorkloadEndpointID,
    WorkloadEndpointUpdate,
)
from pycalico.model.endpoints import GlobalNetworkSet, HostEndpoint, NetworkSet, WorkloadEndpoint

DEFAULT_ALLOW_PROFILE = "projectcalico-default-allow"


@dataclass(frozen=True, slots=True)
class _Net:
    version: int
    network: str  # normalised CIDR, "10.0.0.1/32"
    address: str  # its network address, "10.0.0.1"
    member: str  # the IP-set member form: bare address for a single address, else the CIDR


@lru_cache(maxsize=1 << 16)
def _parse_net(text: str) -> _Net | None:
    # Cached: an endpoint's addresses are re-read on every update of it (a label change too).
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None
    address = str(network.network_address)
    single = network.prefixlen == network.max_prefixlen
    return _Net(network.version, str(network), address, address if single else str(network))


def ip_set_member(net: str) -> str:
    parsed = _parse_net(net)
    if parsed is None:
        raise ValueError(f"{net!r} is not an IP address or network")
    return parsed.member


def _networks(texts: list[str] | None) -> list[_Net]:
    # Stored values were validated on write; an unparseable one is skipped rather than failing
    # the whole graph.
    return [parsed for text in texts or () if (parsed := _parse_net(text)) is not None]


def workload_endpoint_id(endpoint: WorkloadEndpoint) -> WorkloadEndpointID:
    spec = endpoint.spec
    namespace = endpoint.metadata.namespace or "default"
    workload = spec.pod or spec.workload or spec.container_id or endpoint.metadata.name
    return WorkloadEndpointID(
        orchestrator=spec.orchestrator or "k8s",
        workload=f"{namespace}/{workload}",
        endpoint=spec.endpoint or "eth0",
    )


def workload_profiles(endpoint: WorkloadEndpoint) -> tuple[str, ...]:
    return tuple(dict.fromkeys(endpoint.spec.profiles or ()))


def host_profiles(endpoint: HostEndpoint) -> tuple[str, ...]:
    return tuple(dict.fromkeys(endpoint.spec.profiles or ()))


def workload_contribution(endpoint: WorkloadEndpoint) -> Contribution:
    addresses = frozenset(n.address for n in _networks(endpoint.spec.ip_networks))
    ports = tuple(
        (str(p.protocol).lower(), p.name, p.port) for p in endpoint.spec.ports or () if p.name
    )
    return Contribution(addresses, ports)


def host_contribution(endpoint: HostEndpoint) -> Contribution:
    addresses = frozenset(n.address for n in _networks(endpoint.spec.expected_i_ps))
    ports = tuple((str(p.protocol).lower(), p.name, p.port) for p in endpoint.spec.ports or ())
    return Contribution(addresses, ports)


def network_set_contribution(network_set: NetworkSet | GlobalNetworkSet) -> Contribution:
    return Contribution(frozenset(n.member for n in _networks(network_set.spec.nets)))


def workload_endpoint_update(
    endpoint: WorkloadEndpoint, tiers: tuple[TierInfo, ...]
) -> WorkloadEndpointUpdate:
    spec = endpoint.spec
    networks = _networks(spec.ip_networks)
    return WorkloadEndpointUpdate(
        id=workload_endpoint_id(endpoint),
        interface_name=spec.interface_name or "",
        mac=spec.mac or "",
        ipv4_nets=tuple(n.network for n in networks if n.version == 4),
        ipv6_nets=tuple(n.network for n in networks if n.version == 6),
        profile_ids=tuple(ProfileID(name) for name in workload_profiles(endpoint)),
        tiers=tiers,
        allow_spoofed_source_prefixes=tuple(spec.allow_spoofed_source_prefixes or ()),
    )


def host_endpoint_update(endpoint: HostEndpoint, tiers: HostTiers) -> HostEndpointUpdate:
    spec = endpoint.spec
    addresses = _networks(spec.expected_i_ps)
    return HostEndpointUpdate(
        id=HostEndpointID(endpoint.metadata.name),
        interface_name=spec.interface_name or "",
        expected_ipv4_addrs=tuple(a.address for a in addresses if a.version == 4),
        expected_ipv6_addrs=tuple(a.address for a in addresses if a.version == 6),
        profile_ids=tuple(ProfileID(name) for name in host_profiles(endpoint)),
        tiers=tiers.normal,
        untracked_tiers=tiers.untracked,
        pre_dnat_tiers=tiers.pre_dnat,
        forward_tiers=tiers.forward,
    )

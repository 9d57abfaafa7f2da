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


def ip_set_member(net: str) -> str:
    network = ipaddress.ip_network(net, strict=False)
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def _networks(texts: list[str] | None) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    out = []
    for text in texts or ():
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            continue  # stored values were validated on write; skip rather than fail the graph
    return out


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
    addresses = frozenset(str(n.network_address) for n in _networks(endpoint.spec.ip_networks))
    ports = tuple(
        (str(p.protocol).lower(), p.name, p.port) for p in endpoint.spec.ports or () if p.name
    )
    return Contribution(addresses, ports)


def host_contribution(endpoint: HostEndpoint) -> Contribution:
    addresses = frozenset(str(n.network_address) for n in _networks(endpoint.spec.expected_i_ps))
    ports = tuple((str(p.protocol).lower(), p.name, p.port) for p in endpoint.spec.ports or ())
    return Contribution(addresses, ports)


def network_set_contribution(network_set: NetworkSet | GlobalNetworkSet) -> Contribution:
    return Contribution(frozenset(ip_set_member(str(n)) for n in _networks(network_set.spec.nets)))


def workload_endpoint_update(
    endpoint: WorkloadEndpoint, tiers: tuple[TierInfo, ...]
) -> WorkloadEndpointUpdate:
    spec = endpoint.spec
    networks = _networks(spec.ip_networks)
    return WorkloadEndpointUpdate(
        id=workload_endpoint_id(endpoint),
        interface_name=spec.interface_name or "",
        mac=spec.mac or "",
        ipv4_nets=tuple(str(n) for n in networks if n.version == 4),
        ipv6_nets=tuple(str(n) for n in networks if n.version == 6),
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
        expected_ipv4_addrs=tuple(str(a.network_address) for a in addresses if a.version == 4),
        expected_ipv6_addrs=tuple(str(a.network_address) for a in addresses if a.version == 6),
        profile_ids=tuple(ProfileID(name) for name in host_profiles(endpoint)),
        tiers=tiers.normal,
        untracked_tiers=tiers.untracked,
        pre_dnat_tiers=tiers.pre_dnat,
        forward_tiers=tiers.forward,
    )

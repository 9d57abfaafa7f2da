"""Which BGPPeer resources make one node peer, and with what (Calico's peering computation).

PURE: resources in, ``Peering`` values out.  What it is not: the BIRD protocol each peering
becomes (``processor`` decides names, passive side, filters), nor the node-to-node mesh.

Calico's rules, kept (reference §4, confd's peering cache):

* Three passes over the BGPPeers (by name): first the global ones (neither ``node`` nor
  ``nodeSelector``), which make ``Global`` peerings; then the node-specific ones, which make
  ``Node`` peerings on the nodes they select unless a global peering to the same address and
  port exists; then the reverse peerings.  A peering key (kind, address, port) already emitted
  wins over a later one.
* A BGPPeer's remote side is ``localWorkloadSelector`` (the workloads that announced it:
  passive, ``Local_Workload``), else ``peerSelector`` (every selected node, both families, with
  that node's AS, listen port and route-reflector cluster ID; ``localASNumber`` is not applied),
  else ``peerIP`` (``ip`` or ``ip:port``).  A ``peerIP`` without a port that is a Calico node's
  address (with the BGPPeer's AS, or the global AS when it has none) gets that node's listen
  port; a ``peerIP`` that is any Calico node's address marks the peering ``calico_node`` and,
  without ``asNumber``, takes that node's AS (one that is no node's is left out with a note:
  BIRD refuses a session without a remote AS).
* Reverse peering (``reversePeering`` not ``Manual``; not for workload peers): the nodes the
  remote side selects (``peerSelector``, or the nodes holding ``peerIP`` with the matching AS
  and port, that IP's family only) peer back with the nodes the BGPPeer applies to (all nodes
  for a global BGPPeer), as node-specific peerings.

Invariants: deterministic; never raises on bad data (skips it with a note); the self-peering
(remote address = this node's) is left to the caller, as Calico skips it when rendering.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pycalico.model.bgp import BGPPeer, SecretKeyRef
from pycalico.model.fields import parse_go_duration, split_ip_port
from pycalico.model.node import Node

PeeringKind = Literal["Global", "Node"]


@dataclass(frozen=True)
class WorkloadPeer:
    """A local workload that asked (through its endpoint status) to peer via a BGPPeer."""

    bgp_peer: str  # the BGPPeer's name
    ipv4: str | None = None
    ipv6: str | None = None


@dataclass(frozen=True)
class PeerData:
    """One peering's remote side and options, as Calico computes it cluster-wide."""

    address: str
    port: int | None
    as_number: int
    resource: str
    local_as: int | None = None
    source_address: str = "UseNodeIP"
    ttl_security: int | None = None
    filters: tuple[str, ...] = ()
    password: SecretKeyRef | None = None
    restart_time: int | None = None
    keepalive_time: int | None = None
    next_hop_mode: str | None = None
    keep_next_hop: bool = False
    calico_node: bool = False
    rr_cluster_id: str | None = None
    allow_local_as: int | None = None
    reachable_by: str | None = None
    passive: bool = False
    local_workload: bool = False


@dataclass(frozen=True)
class Peering:
    kind: PeeringKind
    data: PeerData


@dataclass(frozen=True)
class Cluster:
    """What the computation needs to know about the cluster."""

    me: str
    nodes: Mapping[str, Node]
    global_as: int
    global_listen_port: int | None
    node_listen_ports: Mapping[str, int]
    matches: Callable[[str, Node, BGPPeer], bool]  # selector, node, BGPPeer (for notes)
    workload_peers: Sequence[WorkloadPeer] = ()


def whole_seconds(duration: str | None) -> int | None:
    """A Go duration in whole seconds, halves rounded up (Go's ``math.Round``), or None."""
    if not duration:
        return None
    return (parse_go_duration(duration) + 500_000_000) // 1_000_000_000


def _addresses(node: Node) -> dict[int, str]:
    bgp = node.spec.bgp
    found: dict[int, str] = {}
    for text in (bgp.ipv4_address, bgp.ipv6_address) if bgp else ():
        if not text:
            continue
        try:
            interface = ipaddress.ip_interface(text)
        except ValueError:
            continue
        found.setdefault(interface.version, str(interface.ip))
    return found


class _Computation:
    def __init__(self, cluster: Cluster, notes: list[str]) -> None:
        self.cluster = cluster
        self.notes = notes
        self.emitted: dict[tuple[PeeringKind, str, int | None], Peering] = {}

    # -- helpers --

    def node_as(self, name: str) -> int:
        bgp = self.cluster.nodes[name].spec.bgp
        return bgp.as_number if bgp is not None and bgp.as_number else self.cluster.global_as

    def node_port(self, name: str) -> int | None:
        return self.cluster.node_listen_ports.get(name) or self.cluster.global_listen_port

    def selected(self, selector: str, resource: BGPPeer) -> list[str]:
        nodes = self.cluster.nodes
        return [n for n in sorted(nodes) if self.cluster.matches(selector, nodes[n], resource)]

    def local_nodes(self, resource: BGPPeer) -> list[str]:
        spec = resource.spec
        if spec.node_selector:
            return self.selected(spec.node_selector, resource)
        return [spec.node] if spec.node else []

    def nodes_with(self, address: str, as_number: int | None, port: int | None) -> list[str]:
        wanted_as = as_number or self.cluster.global_as
        found = []
        for name in sorted(self.cluster.nodes):
            if address not in _addresses(self.cluster.nodes[name]).values():
                continue
            if self.node_as(name) != wanted_as:
                continue
            if port:
                own = self.cluster.node_listen_ports.get(name)
                # Calico's check, kept as it is: a node's own port is compared first, then the
                # global one.
                if own is not None and port != own:
                    continue
                if self.cluster.global_listen_port and self.cluster.global_listen_port != port:
                    continue
            found.append(name)
        return found

    def common(self, resource: BGPPeer) -> dict[str, object]:
        spec = resource.spec
        return {
            "resource": resource.name,
            "password": spec.password.secret_key_ref if spec.password else None,
            "source_address": spec.source_address or "UseNodeIP",
            "restart_time": whole_seconds(spec.max_restart_time),
            "keepalive_time": whole_seconds(spec.keepalive_time),
            "next_hop_mode": spec.next_hop_mode,
            "keep_next_hop": spec.next_hop_mode is None and spec.keep_original_next_hop,
            "filters": tuple(spec.filters or ()),
            "ttl_security": spec.ttl_security or None,
            "reachable_by": spec.reachable_by or None,
        }

    # -- remote sides --

    def node_peers(self, name: str, versions: tuple[int, ...], resource: BGPPeer) -> list[PeerData]:
        node = self.cluster.nodes[name]
        addresses = _addresses(node)
        cluster_id = node.spec.bgp.route_reflector_cluster_id if node.spec.bgp else None
        return [
            PeerData(
                address=addresses[version],
                port=self.node_port(name),
                as_number=self.node_as(name),
                rr_cluster_id=cluster_id or None,
                **self.common(resource),  # type: ignore[arg-type]
            )
            for version in versions
            if version in addresses
        ]

    def ip_peer(self, resource: BGPPeer) -> list[PeerData]:
        spec = resource.spec
        split = split_ip_port(spec.peer_ip or "")
        if split is None:
            self.notes.append(f"BGPPeer {resource.name}: bad peerIP {spec.peer_ip!r}")
            return []
        address, port = split
        if spec.reachable_by:
            try:
                if ipaddress.ip_address(spec.reachable_by).version != (
                    ipaddress.ip_address(address).version
                ):
                    self.notes.append(f"BGPPeer {resource.name}: reachableBy family mismatch")
                    return []
            except ValueError:
                self.notes.append(f"BGPPeer {resource.name}: bad reachableBy")
                return []
        if not port:
            holders = self.nodes_with(address, spec.as_number, None)
            port = self.node_port(holders[0]) if holders else None
        owners = [
            n
            for n in sorted(self.cluster.nodes)
            if address in _addresses(self.cluster.nodes[n]).values()
        ]
        as_number = spec.as_number or (self.node_as(owners[0]) if owners else 0)
        if not as_number:
            # BIRD refuses a session without a remote AS: leave it out rather than break the file.
            self.notes.append(f"BGPPeer {resource.name}: no asNumber and {address} is no node's")
            return []
        return [
            PeerData(
                address=address,
                port=port,
                as_number=as_number,
                local_as=spec.local_as_number,
                calico_node=bool(owners),
                allow_local_as=spec.num_allowed_local_as_numbers or None,
                **self.common(resource),  # type: ignore[arg-type]
            )
        ]

    def workload_peers(self, resource: BGPPeer) -> list[PeerData]:
        found = []
        for workload in self.cluster.workload_peers:
            if workload.bgp_peer != resource.name:
                continue
            for address in (workload.ipv4, workload.ipv6):
                if address:
                    found.append(
                        PeerData(
                            address=address,
                            port=None,
                            as_number=resource.spec.as_number or 0,
                            resource=resource.name,
                            local_as=resource.spec.local_as_number,
                            source_address="None",
                            filters=tuple(resource.spec.filters or ()),
                            passive=True,
                            local_workload=True,
                        )
                    )
        return found

    def remote(self, resource: BGPPeer) -> list[PeerData]:
        spec = resource.spec
        if spec.local_workload_selector:
            return self.workload_peers(resource)
        if spec.peer_selector:
            return [
                data
                for name in self.selected(spec.peer_selector, resource)
                for data in self.node_peers(name, (4, 6), resource)
            ]
        if spec.peer_ip:
            return self.ip_peer(resource)
        return []

    # -- emission --

    def emit(self, kind: PeeringKind, data: PeerData) -> None:
        key = (kind, data.address, data.port)
        if key in self.emitted:
            return
        if kind == "Node" and ("Global", data.address, data.port) in self.emitted:
            return
        self.emitted[key] = Peering(kind, data)

    def forward(self, resources: Sequence[BGPPeer]) -> None:
        for global_pass in (True, False):
            for resource in resources:
                spec = resource.spec
                if global_pass != (not spec.node and not spec.node_selector):
                    continue
                if not global_pass and self.cluster.me not in self.local_nodes(resource):
                    continue
                for data in self.remote(resource):
                    self.emit("Global" if global_pass else "Node", data)

    def reverse(self, resources: Sequence[BGPPeer]) -> None:
        for resource in resources:
            spec = resource.spec
            if spec.reverse_peering == "Manual" or spec.local_workload_selector:
                continue
            if spec.peer_selector:
                holders = self.selected(spec.peer_selector, resource)
                versions: tuple[int, ...] = (4, 6)
            elif spec.peer_ip and (split := split_ip_port(spec.peer_ip)) is not None:
                holders = self.nodes_with(split[0], spec.as_number, split[1])
                versions = (ipaddress.ip_address(split[0]).version,)
            else:
                continue
            if self.cluster.me not in holders:
                continue
            if spec.node_selector or spec.node:
                others = self.local_nodes(resource)
            else:
                others = sorted(self.cluster.nodes)
            for name in others:
                if name in self.cluster.nodes:
                    for data in self.node_peers(name, versions, resource):
                        self.emit("Node", data)


def peerings(cluster: Cluster, resources: Sequence[BGPPeer], notes: list[str]) -> list[Peering]:
    """Every peering of node ``cluster.me`` (both families), in emission order."""
    computation = _Computation(cluster, notes)
    ordered = sorted(resources, key=lambda r: r.name)
    computation.forward(ordered)
    computation.reverse(ordered)
    return list(computation.emitted.values())

"""The VXLAN resolver: Nodes, IP pools and block affinities in; VTEPs and remote-block routes out.

What it is: Go Felix's ``VXLANResolver`` together with the part of its L3 route resolver that
concerns overlay routes, for one host.  From every Node's addresses, VXLAN tunnel addresses and
MACs it derives the VTEPs (one per node and IP family that has both a tunnel address and a
node address; the MAC is the Node's, else ``lib.vxlan.vtep_mac``); from the confirmed block
affinities of other nodes inside pools whose ``vxlanMode`` is not ``Never`` it derives routes:
``Always`` → through the VXLAN device to the owner's tunnel address; ``CrossSubnet`` → the same
when the owner's address is outside this node's subnet, else straight to the owner's address
(no encapsulation).  This node's own blocks in those pools get a blackhole route, as Calico's
Felix programs them when it owns the cluster routes.  A route needs the route's owner VTEP (encapsulated) or address (direct),
and this node's own VTEP of that family for encapsulation (no device, no overlay route).
What it is not: I/O, or the routes to local workloads (the route manager).

Invariants: ``flush`` returns the difference between what it last returned and what the
current inputs give — updates for new or changed VTEPs and routes, removes for those gone — so
the messages sent so far always describe exactly what a fresh resolver computes from the same
inputs (tested as a property).  Pending affinities (``pending``, ``pendingDeletion``) route
nowhere, as in Calico.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pycalico.felix.messages import (
    IPVersion,
    Message,
    RemoteBlockRouteRemove,
    RemoteBlockRouteUpdate,
    VTEPRemove,
    VTEPUpdate,
)
from pycalico.lib.vxlan import vtep_mac
from pycalico.model.node import Node

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
_ROUTED_STATES = ("", "confirmed")


@dataclass(frozen=True, slots=True)
class NodeAddresses:
    """What the resolver reads from one Node."""

    ipv4: Interface | None = None  # the node's address with its subnet (spec.bgp.ipv4Address)
    ipv6: Interface | None = None
    tunnel4: str = ""
    mac4: str = ""
    tunnel6: str = ""
    mac6: str = ""

    def address(self, version: int) -> Interface | None:
        return self.ipv4 if version == 4 else self.ipv6


def _interface(text: str | None) -> Interface | None:
    if not text:
        return None
    try:
        return ipaddress.ip_interface(text)
    except ValueError:
        return None


def node_addresses(node: Node) -> NodeAddresses:
    spec = node.spec
    bgp = spec.bgp
    return NodeAddresses(
        ipv4=_interface(bgp.ipv4_address if bgp else None),
        ipv6=_interface(bgp.ipv6_address if bgp else None),
        tunnel4=spec.ipv4_vxlan_tunnel_addr or "",
        mac4=spec.vxlan_tunnel_mac_addr or "",
        tunnel6=spec.ipv6_vxlan_tunnel_addr or "",
        mac6=spec.vxlan_tunnel_mac_addr_v6 or "",
    )


class VXLANResolver:
    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self._nodes: dict[str, NodeAddresses] = {}
        self._pools: dict[str, tuple[Network, str]] = {}  # pool id -> (cidr, vxlanMode)
        self._blocks: dict[str, str] = {}  # block CIDR -> owning host (routable affinities)
        self._sent_vteps: dict[tuple[str, int], VTEPUpdate] = {}
        self._sent_routes: dict[str, RemoteBlockRouteUpdate] = {}
        self.dirty = False

    # --- input --------------------------------------------------------------------------------

    def on_node(self, name: str, node: Node | None) -> None:
        addresses = node_addresses(node) if node is not None else None
        if self._nodes.get(name) == addresses:
            return
        if addresses is None:
            del self._nodes[name]
        else:
            self._nodes[name] = addresses
        self.dirty = True

    def on_pool(self, pool_id: str, cidr: str | None, vxlan_mode: str = "Never") -> None:
        """``cidr`` None: the pool is gone (or disabled pools still route: Calico keeps routing
        existing blocks of a disabled pool)."""
        if cidr is None:
            if self._pools.pop(pool_id, None) is not None:
                self.dirty = True
            return
        entry = (ipaddress.ip_network(cidr, strict=False), vxlan_mode)
        if self._pools.get(pool_id) != entry:
            self._pools[pool_id] = entry
            self.dirty = True

    def on_affinity(self, host: str, cidr: str, state: str | None) -> None:
        """A block affinity of ``host``; ``state`` None: deleted."""
        routed = state is not None and state in _ROUTED_STATES
        if routed:
            if self._blocks.get(cidr) != host:
                self._blocks[cidr] = host
                self.dirty = True
        elif self._blocks.get(cidr) == host:
            del self._blocks[cidr]
            self.dirty = True

    # --- computation ----------------------------------------------------------------------------

    def vteps(self) -> dict[tuple[str, int], VTEPUpdate]:
        out: dict[tuple[str, int], VTEPUpdate] = {}
        for name, node in self._nodes.items():
            for version, tunnel, mac in (
                (4, node.tunnel4, node.mac4),
                (6, node.tunnel6, node.mac6),
            ):
                parent = node.address(version)
                if not tunnel or parent is None:
                    continue
                ip_version: IPVersion = 4 if version == 4 else 6
                out[(name, version)] = VTEPUpdate(
                    name, ip_version, tunnel, mac or vtep_mac(name, version), str(parent.ip)
                )
        return out

    def _pool_mode(self, block: Network) -> str:
        for network, mode in self._pools.values():
            if network.version == block.version and block.subnet_of(network):  # type: ignore[arg-type]
                return mode
        return "Never"

    def routes(self, vteps: dict[tuple[str, int], VTEPUpdate]) -> dict[str, RemoteBlockRouteUpdate]:
        out: dict[str, RemoteBlockRouteUpdate] = {}
        me = self._nodes.get(self.hostname)
        for cidr, host in self._blocks.items():
            block = ipaddress.ip_network(cidr, strict=False)
            mode = self._pool_mode(block)
            if mode == "Never":
                continue
            version = block.version
            ip_version: IPVersion = 4 if version == 4 else 6
            if host == self.hostname:
                if block.prefixlen != block.max_prefixlen:
                    out[cidr] = RemoteBlockRouteUpdate(cidr, host, ip_version, False, "", True)
                continue
            remote = self._nodes.get(host)
            remote_address = remote.address(version) if remote else None
            mine = me.address(version) if me else None
            same_subnet = (
                remote_address is not None
                and mine is not None
                and remote_address.ip in mine.network
            )
            if mode == "CrossSubnet" and same_subnet:
                assert remote_address is not None
                out[cidr] = RemoteBlockRouteUpdate(
                    cidr, host, ip_version, False, str(remote_address.ip)
                )
                continue
            vtep = vteps.get((host, version))
            if vtep is None or (self.hostname, version) not in vteps:
                continue
            out[cidr] = RemoteBlockRouteUpdate(cidr, host, ip_version, True, vtep.tunnel_address)
        return out

    # --- output -------------------------------------------------------------------------------

    def flush(self) -> list[Message]:
        """VTEP updates, route updates, route removes, VTEP removes (a route never refers to a
        VTEP the dataplane has not been sent)."""
        if not self.dirty:
            return []
        self.dirty = False
        vteps = self.vteps()
        routes = self.routes(vteps)
        out: list[Message] = []
        for key, vtep in sorted(vteps.items()):
            if self._sent_vteps.get(key) != vtep:
                out.append(vtep)
        for destination, route in sorted(routes.items()):
            if self._sent_routes.get(destination) != route:
                out.append(route)
        for destination in sorted(self._sent_routes.keys() - routes.keys()):
            out.append(RemoteBlockRouteRemove(destination))
        for node, version in sorted(self._sent_vteps.keys() - vteps.keys()):
            out.append(VTEPRemove(node, 4 if version == 4 else 6))
        self._sent_vteps = vteps
        self._sent_routes = routes
        return out

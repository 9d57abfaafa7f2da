"""confd's BGP processor: the cluster's BGP view, as seen from one node, turned into a typed
``BirdConfig`` (reference §4).

What it is: Calico's confd semantics as pure functions.  Given the Nodes, BGPConfigurations,
BGPPeers, IPPools and this node's block affinities (``BgpInputs``), ``build`` decides every BIRD
protocol, filter line and static route.  What it is not: the text (``render`` prints a
``BirdConfig`` and decides nothing), the datastore watch or BIRD itself (``confd``, ``bird``).

Semantics kept from Calico:

* AS: node ``spec.bgp.asNumber`` > BGPConfiguration ``default`` ``asNumber`` > 64512.
* Mesh (``nodeToNodeMeshEnabled``, default true): one ``Mesh_<ip>`` peer per other node with an
  address of the family, unless this node or the other one is a route reflector
  (``routeReflectorClusterID``).  ``passive on`` when the peer's address is the greater *string*
  (so exactly one side of each pair connects).  Restart time ``nodeMeshMaxRestartTime`` or 120 s.
* BGPPeers: neither ``node`` nor ``nodeSelector`` ⇒ ``Global_<ip>``; otherwise ``Node_<ip>`` on the
  nodes they select.  ``peerSelector`` peers with the selected nodes (their address and AS), and
  (``reversePeering`` Auto) the selected nodes peer back.  A global peering wins over an identical
  node-specific one; a node never peers with itself.
* On a route reflector, an iBGP peer whose cluster ID differs gets ``rr client`` and the
  reflector's cluster ID.
* Export: the blackhole route of each confirmed (or legacy state-less) affine block, nothing
  more specific inside it; anything else inside an exportable pool (borrowed /32s); nothing from
  pools with ``disableBGPExport``; Felix's tunnel routes never to iBGP peers.
* Kernel: routes inside VXLAN and IPIP pools are Felix's to program (v3.33 defaults), so BIRD
  does not install them; everything else BGP learns is installed.
* Logging from ``logSeverityScreen`` (node's BGPConfiguration wins over ``default``).
* BGPFilters: a BGPPeer's ``filters`` become calls, in order, to the filters' BIRD functions
  at the head of its import and export filters (``filters``); mesh peers have none.

BIRD 2 rather than Calico's BIRD 1.6: one daemon carries both families (``ipv4``/``ipv6``
channels), so peers of both families live in one configuration; a peer on this node's own
subnet is ``direct`` (BIRD 2's gateway-direct session), any other is ``multihop`` with recursive
next hops, as in Calico.

The output types live in ``config`` (re-exported here).

Invariants: ``build`` is deterministic (peers sorted by family, kind, address), never raises on
odd data (it skips what it cannot use and says why in ``BirdConfig.notes``), and never emits two
protocols with the same name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pycalico.bgp.config import (
    BirdConfig,
    BirdFilterFunction,
    BirdPeer,
    BlockRoute,
    DebugLevel,
    FamilyConfig,
    PeerKind,
    PoolRoute,
    StaticVia,
    bird_safe,
    hash_router_id,
    peer_name,
)
from pycalico.bgp.filters import filter_functions, missing_filters, peer_calls
from pycalico.model.bgp import BGPConfiguration, BGPPeer, SecretKeyRef
from pycalico.model.bgpfilter import BGPFilter
from pycalico.model.fields import parse_go_duration, split_ip_port
from pycalico.model.ipam import IPPool
from pycalico.model.node import Node
from pycalico.model.selectors import SelectorParseError, parse

DEFAULT_AS = 64512
DEFAULT_MESH_RESTART_TIME = 120
GLOBAL_CONFIG = "default"
CONFIRMED = "confirmed"


# --- inputs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BgpInputs:
    """Everything confd knows, decoded.  ``affinities`` maps this node's affine block CIDRs to
    their state ("" for the legacy state-less value); ``passwords`` holds the secrets that
    ``password_refs`` asked for, resolved (missing ones are simply absent)."""

    node_name: str
    nodes: Mapping[str, Node] = field(default_factory=dict)
    configs: Mapping[str, BGPConfiguration] = field(default_factory=dict)
    peers: Sequence[BGPPeer] = ()
    pools: Sequence[IPPool] = ()
    affinities: Mapping[str, str] = field(default_factory=dict)
    passwords: Mapping[tuple[str | None, str], str] = field(default_factory=dict)
    router_id: str | None = None  # CALICO_ROUTER_ID: an IPv4 address, or "hash"
    filters: Mapping[str, BGPFilter] = field(default_factory=dict)  # BGPFilters by name


def _seconds(duration: str | None) -> int | None:
    if not duration:
        return None
    return max(0, parse_go_duration(duration) // 1_000_000_000)


def _node_address(node: Node, version: int) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    bgp = node.spec.bgp
    text = None if bgp is None else (bgp.ipv4_address if version == 4 else bgp.ipv6_address)
    if not text:
        raise LookupError
    interface = ipaddress.ip_interface(text)
    if interface.version != version:
        raise LookupError
    return interface


def node_address(node: Node, version: int) -> str | None:
    """The node's BGP address of a family (no prefix), or None."""
    try:
        return str(_node_address(node, version).ip)
    except (LookupError, ValueError):
        return None


def _node_network(node: Node, version: int) -> str | None:
    try:
        return str(_node_address(node, version).network)
    except (LookupError, ValueError):
        return None


def _cluster_id(node: Node | None) -> str | None:
    if node is None or node.spec.bgp is None:
        return None
    return node.spec.bgp.route_reflector_cluster_id or None


def _labels(node: Node) -> dict[str, str]:
    return dict(node.metadata.labels or {})


def password_refs(
    configs: Mapping[str, BGPConfiguration], peers: Sequence[BGPPeer]
) -> list[SecretKeyRef]:
    """The secrets a build may need, so the caller can resolve them before calling ``build``."""
    refs: list[SecretKeyRef] = []
    default = configs.get(GLOBAL_CONFIG)
    if (
        default
        and default.spec.node_mesh_password
        and default.spec.node_mesh_password.secret_key_ref
    ):
        refs.append(default.spec.node_mesh_password.secret_key_ref)
    for peer in peers:
        if peer.spec.password and peer.spec.password.secret_key_ref:
            refs.append(peer.spec.password.secret_key_ref)
    return refs


def _debug_levels(severity: str | None) -> tuple[DebugLevel, DebugLevel]:
    level = (severity or "Info").lower()
    if level in ("debug", "trace"):
        return "all", "all"
    if level == "info":
        return "states", "states"
    return "none", "none"


@dataclass(frozen=True)
class _Target:
    address: str
    port: int | None
    as_number: int
    node: Node | None  # the Calico node peered with, if it is one
    kind: PeerKind


# --- the build ----------------------------------------------------------------------------------


class _Builder:
    def __init__(self, inputs: BgpInputs) -> None:
        self.inputs = inputs
        self.notes: list[str] = []
        self.me = inputs.nodes.get(inputs.node_name)
        default = inputs.configs.get(GLOBAL_CONFIG)
        self.global_spec = default.spec if default else None
        own = inputs.configs.get(f"node.{inputs.node_name}")
        self.node_spec = own.spec if own else None
        self.global_as = (
            self.global_spec.as_number
            if self.global_spec and self.global_spec.as_number
            else DEFAULT_AS
        )
        self.my_cluster_id = _cluster_id(self.me)

    def as_of(self, node: Node | None) -> int:
        if node is not None and node.spec.bgp is not None and node.spec.bgp.as_number:
            return node.spec.bgp.as_number
        return self.global_as

    def listen_port_of(self, node_name: str) -> int | None:
        own = self.inputs.configs.get(f"node.{node_name}")
        if own and own.spec.listen_port:
            return own.spec.listen_port
        if self.global_spec and self.global_spec.listen_port:
            return self.global_spec.listen_port
        return None

    def password(self, ref: SecretKeyRef | None, where: str) -> str | None:
        if ref is None:
            return None
        value = self.inputs.passwords.get((ref.name, ref.key))
        if value is None:
            self.notes.append(
                f"{where}: secret {ref.name}/{ref.key} not found; peering without a password"
            )
        elif not bird_safe(value):
            self.notes.append(
                f"{where}: secret {ref.name}/{ref.key} holds a double quote or a line break, "
                "which BIRD cannot read; peering without a password"
            )
            return None
        return value

    # -- mesh --

    def mesh_enabled(self) -> bool:
        spec = self.global_spec
        return not (spec is not None and spec.node_to_node_mesh_enabled is False)

    def mesh_peers(self, version: int, my_address: str) -> list[BirdPeer]:
        if self.my_cluster_id or not self.mesh_enabled():
            return []
        spec = self.global_spec
        restart = _seconds(spec.node_mesh_max_restart_time if spec else None)
        ref = spec.node_mesh_password.secret_key_ref if spec and spec.node_mesh_password else None
        password = self.password(ref, "nodeMeshPassword")
        peers = []
        for name in sorted(self.inputs.nodes):
            node = self.inputs.nodes[name]
            address = node_address(node, version)
            if address is None or address == my_address or name == self.inputs.node_name:
                continue
            if _cluster_id(node):
                continue
            port = self.listen_port_of(name)
            peers.append(
                self.peer(
                    "Mesh",
                    version,
                    address,
                    self.as_of(node),
                    port=port,
                    source_address=my_address,
                    passive=address > my_address,
                    restart_time=restart if restart is not None else DEFAULT_MESH_RESTART_TIME,
                    password=password,
                    comment=f"For peer /host/{name}/ip_addr_v{version}",
                )
            )
        return peers

    def peer(
        self,
        kind: PeerKind,
        version: int,
        address: str,
        as_number: int,
        *,
        port: int | None = None,
        node_peer: Node | None = None,
        **options: object,
    ) -> BirdPeer:
        my_as = self.as_of(self.me)
        local_as = options.get("local_as")
        internal = as_number == (local_as if isinstance(local_as, int) else my_as)
        rr_client = False
        rr_cluster_id = None
        if internal and self.my_cluster_id and _cluster_id(node_peer) != self.my_cluster_id:
            rr_client, rr_cluster_id = True, self.my_cluster_id
        ttl = options.pop("ttl_security", None)
        multihop: int | None = None
        direct = self.on_my_subnet(version, address)
        if isinstance(ttl, int) and ttl > 0:
            direct, multihop = False, ttl
        return BirdPeer(
            # Calico names mesh peers by address alone, even on another listen port.
            name=peer_name(kind, address, None if kind == "Mesh" else port),
            version=version,
            address=address,
            as_number=as_number,
            kind=kind,
            port=port,
            direct=direct,
            multihop=multihop,
            ttl_security=multihop is not None,
            rr_client=rr_client,
            rr_cluster_id=rr_cluster_id,
            internal=internal,
            **options,  # type: ignore[arg-type]
        )

    def on_my_subnet(self, version: int, address: str) -> bool:
        if self.me is None:
            return False
        network = _node_network(self.me, version)
        if network is None:
            return False
        try:
            return ipaddress.ip_address(address) in ipaddress.ip_network(network)
        except ValueError:
            return False

    # -- BGPPeer resources --

    def selects_me(self, peer: BGPPeer) -> bool:
        spec = peer.spec
        if spec.node:
            return spec.node == self.inputs.node_name
        if spec.node_selector:
            return self.matches(spec.node_selector, self.me, peer)
        return True

    def matches(self, selector: str, node: Node | None, peer: BGPPeer) -> bool:
        if node is None:
            return False
        try:
            return bool(parse(selector).evaluate(_labels(node)))
        except SelectorParseError as error:
            self.notes.append(f"BGPPeer {peer.name}: bad selector {selector!r}: {error}")
            return False

    def applies_to(self, peer: BGPPeer, name: str, node: Node) -> bool:
        """Does ``peer`` apply to node ``name`` (its ``node`` / ``nodeSelector`` / global)?"""
        spec = peer.spec
        if spec.node:
            return spec.node == name
        if spec.node_selector:
            return self.matches(spec.node_selector, node, peer)
        return True

    def targets(self, resource: BGPPeer, version: int) -> list[_Target]:
        """Where one BGPPeer makes this node peer, for one family."""
        spec = resource.spec
        kind: PeerKind = "Node" if spec.node or spec.node_selector else "Global"
        if spec.peer_ip:
            split = split_ip_port(spec.peer_ip)
            if split is None:
                self.notes.append(f"BGPPeer {resource.name}: bad peerIP {spec.peer_ip!r}")
                return []
            address, port = split
            if not (self.selects_me(resource) and spec.as_number):
                return []
            if ipaddress.ip_address(address).version != version:
                return []
            return [_Target(address, port, spec.as_number, None, kind)]
        if not spec.peer_selector:
            return []
        found = []
        mine = self.selects_me(resource)
        # Reverse peering: a node the peerSelector selects peers back with the nodes the
        # BGPPeer applies to.
        reverse = spec.reverse_peering != "Manual" and self.matches(
            spec.peer_selector, self.me, resource
        )
        for name in sorted(self.inputs.nodes):
            node = self.inputs.nodes[name]
            node_ip = node_address(node, version)
            if name == self.inputs.node_name or node_ip is None:
                continue
            forward = mine and self.matches(spec.peer_selector, node, resource)
            backward = reverse and self.applies_to(resource, name, node)
            if forward or backward:
                listen_port = self.listen_port_of(name)
                found.append(_Target(node_ip, listen_port, self.as_of(node), node, "Node"))
        return found

    def resource_peers(
        self, version: int, my_address: str, functions: tuple[BirdFilterFunction, ...]
    ) -> list[BirdPeer]:
        found: dict[tuple[str, int | None], BirdPeer] = {}
        for resource in sorted(self.inputs.peers, key=lambda p: p.name):
            spec = resource.spec
            targets = self.targets(resource, version)
            for missing in missing_filters(spec.filters, self.inputs.filters) if targets else ():
                self.notes.append(f"BGPPeer {resource.name}: no BGPFilter {missing!r}")
            for target in targets:
                key = (target.address, target.port)
                if target.address == my_address:
                    continue
                existing = found.get(key)
                # A global peering wins over an identical node-specific one.
                if existing is not None and (existing.kind == "Global" or target.kind != "Global"):
                    continue
                ref = spec.password.secret_key_ref if spec.password else None
                next_hop: Literal["self", "keep"] | None = None
                if spec.next_hop_mode == "Self":
                    next_hop = "self"
                elif spec.next_hop_mode == "Keep" or spec.keep_original_next_hop:
                    next_hop = "keep"
                found[key] = self.peer(
                    target.kind,
                    version,
                    target.address,
                    target.as_number,
                    port=target.port,
                    node_peer=target.node,
                    local_as=spec.local_as_number,
                    source_address=my_address if spec.source_address != "None" else None,
                    passive=target.node is not None and target.address > my_address,
                    restart_time=_seconds(spec.max_restart_time),
                    keepalive_time=_seconds(spec.keepalive_time),
                    password=self.password(ref, f"BGPPeer {resource.name}"),
                    next_hop=next_hop,
                    allow_local_as=spec.num_allowed_local_as_numbers or None,
                    ttl_security=spec.ttl_security,
                    comment=f"For BGPPeer {resource.name}",
                    import_calls=peer_calls(spec.filters, functions, "import"),
                    export_calls=peer_calls(spec.filters, functions, "export"),
                )
        return list(found.values())

    # -- routes --

    def blocks(self, version: int) -> tuple[BlockRoute, ...]:
        routes = []
        for cidr, state in self.inputs.affinities.items():
            try:
                network = ipaddress.ip_network(cidr)
            except ValueError:
                self.notes.append(f"affinity: bad block CIDR {cidr!r}")
                continue
            if network.version != version:
                continue
            routes.append(
                BlockRoute(
                    cidr=str(network),
                    state=state,
                    blackhole=network.prefixlen != network.max_prefixlen,
                    aggregate=state in ("", CONFIRMED),
                )
            )
        return tuple(sorted(routes, key=lambda r: ipaddress.ip_network(r.cidr)))

    def pools(self, version: int) -> tuple[PoolRoute, ...]:
        routes = []
        for pool in self.inputs.pools:
            try:
                network = ipaddress.ip_network(pool.spec.cidr)
            except ValueError:
                continue
            if network.version != version:
                continue
            encapsulation = ""
            if pool.spec.vxlan_mode not in (None, "Never"):
                encapsulation = "vxlan"
            elif pool.spec.ipip_mode not in (None, "Never"):
                encapsulation = "ipip"
            routes.append(
                PoolRoute(
                    cidr=str(network),
                    export=not pool.spec.disable_bgp_export,
                    kernel=not encapsulation,
                    encapsulation=encapsulation,
                )
            )
        return tuple(sorted(routes, key=lambda r: ipaddress.ip_network(r.cidr)))

    def statics(self, version: int) -> tuple[StaticVia, ...]:
        routes = []
        for resource in self.inputs.peers:
            spec = resource.spec
            if not (spec.peer_ip and spec.reachable_by and self.selects_me(resource)):
                continue
            split = split_ip_port(spec.peer_ip)
            if split is None or ipaddress.ip_address(split[0]).version != version:
                continue
            prefix = 32 if version == 4 else 128
            routes.append(StaticVia(f"{split[0]}/{prefix}", spec.reachable_by))
        return tuple(sorted(set(routes), key=lambda r: r.cidr))

    def family(self, version: int) -> FamilyConfig:
        address = node_address(self.me, version) if self.me is not None else None
        if address is None:
            return FamilyConfig(version=version, node_address=None, node_network=None)
        assert self.me is not None
        functions, notes = filter_functions(self.inputs.filters, version)
        self.notes.extend(notes)
        peers = self.mesh_peers(version, address) + self.resource_peers(version, address, functions)
        unique: dict[str, BirdPeer] = {}
        for peer in peers:
            unique.setdefault(peer.name, peer)
        order = {"Mesh": 0, "Global": 1, "Node": 2}
        ordered = sorted(
            unique.values(),
            key=lambda p: (order[p.kind], ipaddress.ip_address(p.address), p.port or 0),
        )
        return FamilyConfig(
            version=version,
            node_address=address,
            node_network=_node_network(self.me, version),
            blocks=self.blocks(version),
            pools=self.pools(version),
            statics=self.statics(version),
            peers=tuple(ordered),
            filter_functions=functions,
        )

    def router_id(self, ipv4: FamilyConfig) -> str:
        override = self.inputs.router_id
        if override == "hash":
            return hash_router_id(self.inputs.node_name)
        if override:
            return override
        if ipv4.node_address:
            return ipv4.node_address
        return hash_router_id(self.inputs.node_name)

    def build(self) -> BirdConfig:
        if self.me is None:
            self.notes.append(f"node {self.inputs.node_name!r} is not registered yet")
        ipv4 = self.family(4)
        ipv6 = self.family(6)
        severity = (self.node_spec.log_severity_screen if self.node_spec else None) or (
            self.global_spec.log_severity_screen if self.global_spec else None
        )
        protocol_debug, peer_debug = _debug_levels(severity)
        bind_mode = (self.node_spec.bind_mode if self.node_spec else None) or (
            self.global_spec.bind_mode if self.global_spec else None
        )
        ignored = tuple(
            name
            for name in (self.global_spec.ignored_interfaces if self.global_spec else None) or ()
            if bird_safe(name)
        )
        return BirdConfig(
            node_name=self.inputs.node_name,
            router_id=self.router_id(ipv4),
            as_number=self.as_of(self.me),
            mesh_enabled=self.mesh_enabled(),
            rr_cluster_id=self.my_cluster_id,
            listen_port=self.listen_port_of(self.inputs.node_name),
            bind_address=ipv4.node_address if bind_mode == "NodeIP" else None,
            protocol_debug=protocol_debug,
            peer_debug=peer_debug,
            ignored_interfaces=ignored,
            ipv4=ipv4,
            ipv6=ipv6,
            notes=tuple(dict.fromkeys(self.notes)),
        )


def build(inputs: BgpInputs) -> BirdConfig:
    """The BIRD configuration for ``inputs.node_name`` (see the module docstring)."""
    return _Builder(inputs).build()


__all__ = [
    "BgpInputs",
    "BirdConfig",
    "BirdPeer",
    "BlockRoute",
    "FamilyConfig",
    "PoolRoute",
    "StaticVia",
    "bird_safe",
    "build",
    "hash_router_id",
    "node_address",
    "password_refs",
    "peer_name",
]

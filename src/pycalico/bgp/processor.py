"""confd's BGP processor: the cluster's BGP view, as seen from one node, turned into a typed
``BirdConfig`` (reference §4).

What it is: Calico's confd semantics as pure functions.  Given the Nodes, BGPConfigurations,
BGPPeers, IPPools, BGPFilters and this node's block affinities (``BgpInputs``), ``build``
decides every BIRD protocol, filter line and static route.  What it is not: the text (``render``
prints a ``BirdConfig`` and decides nothing), which BGPPeers make this node peer
(``peerings``), the datastore watch or BIRD itself (``confd``, ``bird``).

Semantics kept from Calico (its confd golden files are the reference; docs/bgp.md maps its
BIRD 1.6 files to our one BIRD 2 file):

* AS: node ``spec.bgp.asNumber`` > BGPConfiguration ``default`` ``asNumber`` > 64512.
* Mesh (``nodeToNodeMeshEnabled``, default true): one ``Mesh_<ip>`` peer per other node with an
  address of the family, unless this node or the other one is a route reflector
  (``routeReflectorClusterID``); the other node's AS (this node's when it has none), its listen
  port, ``passive on`` when its address is the greater *string* (so one side connects),
  ``graceful restart time`` only when ``nodeMeshMaxRestartTime`` is set.
* BGPPeer peerings (``peerings``) become ``Global_<ip>``/``Node_<ip>``/``Local_Workload_<ip>``
  protocols (``_port_<n>`` when a port is known).  ``passive on`` for workload peers, and for a
  global peering whose address is a Calico node's and the greater string.  ``next hop keep``
  from ``keepOriginalNextHop`` only towards another AS; ``rr client`` when this node is a route
  reflector and an iBGP peer is not in its cluster.
* Every peer is ``multihop`` with recursive next hops (``ttl security on; multihop <n>`` with
  ``ttlSecurity``), as Calico renders it, even on the node's own subnet.
* Route priority: a peer's import gives BIRD preference 200 to routes whose local preference
  says a priority better than the normal one (``ipv4NormalRoutePriority`` /
  ``ipv6NormalRoutePriority``, default 1024); its export maps kernel metric and local preference
  into each other (preference = 2147483647 - metric); the kernel filter sets the metric of BGP
  routes from their local preference.
* Export: confirmed (or state-less) affine blocks whole, nothing beneath them except routes of
  better-than-normal priority; pending affinities are ignored altogether (no blackhole either);
  pools with ``disableBGPExport`` rejected first; ``prefixAdvertisements`` communities added;
  Felix's interfaces (``*.cali``, ``*.calico``, and ``tunl0`` unless BIRD programs IPIP pools)
  never towards iBGP peers; eBPF ``bpf*.cali`` routes never towards anyone.
* Kernel (``programClusterRoutes``, default ``EnabledNoEncapOnly``): BIRD programs the routes
  of the pools it is responsible for; VXLAN pools and pools it is not responsible for are
  Felix's.  IPv4 pool statements need this node's subnet, IPv6 ones are rejections only.
  IPIP pools that BIRD should program (``Enabled``, ``EnabledIPIPOnly``) need Calico's patched
  BIRD 1.6 (``krt_tunnel``); BIRD 2 cannot, so they are left to Felix with a note.
* Logging from ``logSeverityScreen`` (node's BGPConfiguration wins over ``default``): Debug is
  ``debug all``; Info (the default) ``debug { states }`` on device and direct and
  ``debug { states, routes, filters, events }`` on peers; anything else nothing.
* BGPFilters: see ``filters``; mesh peers have none.  Service advertisement: see ``services``.

Invariants: ``build`` is deterministic (peers sorted by name), never raises on odd data (it
skips what it cannot use and says why in ``BirdConfig.notes``), and never emits two protocols
with the same name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pycalico.bgp.config import (
    BIRD_INT_MAX,
    DEFAULT_ROUTE_PRIORITY,
    BirdConfig,
    BirdFilterFunction,
    BirdPeer,
    BlockRoute,
    CommunityRule,
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
from pycalico.bgp.peerings import (
    Cluster,
    PeerData,
    Peering,
    WorkloadPeer,
    peerings,
    whole_seconds,
)
from pycalico.bgp.services import node_statics
from pycalico.model.bgp import BGPConfiguration, BGPConfigurationSpec, BGPPeer, SecretKeyRef
from pycalico.model.bgpfilter import BGPFilter
from pycalico.model.ipam import IPPool
from pycalico.model.node import Node
from pycalico.model.selectors import SelectorParseError, parse

DEFAULT_AS = 64512
GLOBAL_CONFIG = "default"
CONFIRMED = "confirmed"
IPIP_NOTE = (
    "programClusterRoutes asks BIRD to program IPIP pool {cidr}, which needs Calico's BIRD 1.6 "
    "(krt_tunnel); BIRD 2 leaves it to Felix"
)
# programClusterRoutes: (BIRD programs IPIP pools, BIRD programs unencapsulated pools)
_CLUSTER_ROUTE_POLICY = {
    "Disabled": (False, False),
    "Enabled": (True, True),
    "EnabledIPIPOnly": (True, False),
    "EnabledNoEncapOnly": (False, True),
}


# --- inputs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BgpInputs:
    """Everything confd knows, decoded.  ``affinities`` maps this node's affine block CIDRs to
    their state ("" for the legacy state-less value); ``passwords`` holds the secrets that
    ``password_refs`` asked for, resolved (missing ones are simply absent);
    ``workload_peers`` are the local workloads that asked to peer (``localWorkloadSelector``)."""

    node_name: str
    nodes: Mapping[str, Node] = field(default_factory=dict)
    configs: Mapping[str, BGPConfiguration] = field(default_factory=dict)
    peers: Sequence[BGPPeer] = ()
    pools: Sequence[IPPool] = ()
    affinities: Mapping[str, str] = field(default_factory=dict)
    passwords: Mapping[tuple[str | None, str], str] = field(default_factory=dict)
    router_id: str | None = None  # CALICO_ROUTER_ID: an IPv4 address, or "hash"
    filters: Mapping[str, BGPFilter] = field(default_factory=dict)  # BGPFilters by name
    workload_peers: Sequence[WorkloadPeer] = ()
    service_routes: frozenset[str] = frozenset()  # Services' /32s (``services``)


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


def _wireguard_address(node: Node, version: int) -> str | None:
    wireguard = node.spec.wireguard
    if wireguard is None:
        return None
    if version == 4:
        return wireguard.interface_ipv4_address or None
    return wireguard.interface_ipv6_address or None


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
    """(device and direct, BGP peers) from logSeverityScreen, as Calico maps it."""
    level = (severity or "Info").lower()
    if level == "debug":
        return "all", "all"
    if level == "info":
        return "states", "full"
    return "none", "none"


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
        self.my_as = self.as_of(self.me)
        self.my_cluster_id = _cluster_id(self.me)
        self.peerings = peerings(self.cluster(), inputs.peers, self.notes)

    def cluster(self) -> Cluster:
        ports = {}
        for name, config in self.inputs.configs.items():
            if name.startswith("node.") and config.spec.listen_port:
                ports[name.removeprefix("node.")] = config.spec.listen_port
        return Cluster(
            me=self.inputs.node_name,
            nodes=self.inputs.nodes,
            global_as=self.global_as,
            global_listen_port=self.global_spec.listen_port if self.global_spec else None,
            node_listen_ports=ports,
            matches=self.matches,
            workload_peers=self.inputs.workload_peers,
        )

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

    def matches(self, selector: str, node: Node, peer: BGPPeer) -> bool:
        try:
            return bool(parse(selector).evaluate(dict(node.metadata.labels or {})))
        except SelectorParseError as error:
            self.notes.append(f"BGPPeer {peer.name}: bad selector {selector!r}: {error}")
            return False

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

    def normal_priority(self, version: int) -> int:
        spec = self.global_spec
        if spec is None:
            return DEFAULT_ROUTE_PRIORITY
        value = spec.ipv4_normal_route_priority if version == 4 else spec.ipv6_normal_route_priority
        return DEFAULT_ROUTE_PRIORITY if value is None else value

    # -- mesh --

    def mesh_enabled(self) -> bool:
        spec = self.global_spec
        return not (spec is not None and spec.node_to_node_mesh_enabled is False)

    def mesh_peers(self, version: int, my_address: str) -> list[BirdPeer]:
        if self.my_cluster_id or not self.mesh_enabled():
            return []
        spec = self.global_spec
        restart = spec.node_mesh_max_restart_time if spec else None
        ref = spec.node_mesh_password.secret_key_ref if spec and spec.node_mesh_password else None
        password = self.password(ref, "nodeMeshPassword")
        peers = []
        for name in sorted(self.inputs.nodes):
            node = self.inputs.nodes[name]
            address = node_address(node, version)
            if address is None or address == my_address or _cluster_id(node):
                continue
            bgp = node.spec.bgp
            as_number = bgp.as_number if bgp is not None and bgp.as_number else self.my_as
            peers.append(
                BirdPeer(
                    # Calico names mesh peers by address alone, even on another listen port.
                    name=peer_name("Mesh", address),
                    version=version,
                    address=address,
                    as_number=as_number,
                    kind="Mesh",
                    port=self.listen_port_of(name),
                    source_address=my_address,
                    passive=address > my_address,
                    restart_time=whole_seconds(restart),
                    password=password,
                    internal=as_number == self.my_as,
                    comment=f"For peer /host/{name}/ip_addr_v{version}",
                )
            )
        return peers

    # -- BGPPeer peerings --

    def resource_peer(
        self,
        peering: Peering,
        version: int,
        my_address: str,
        functions: tuple[BirdFilterFunction, ...],
    ) -> BirdPeer:
        data = peering.data
        kind: PeerKind = "Local_Workload" if data.local_workload else peering.kind
        effective_as = data.local_as or self.my_as
        same_as = data.as_number == effective_as
        passive = data.passive
        if kind in ("Global", "Local_Workload") and data.calico_node and data.address > my_address:
            passive = True
        rr_client = bool(
            same_as and self.my_cluster_id and data.rr_cluster_id != self.my_cluster_id
        )
        next_hop: Literal["self", "keep"] | None = None
        if data.next_hop_mode == "Self":
            next_hop = "self"
        elif data.next_hop_mode == "Keep" or (data.keep_next_hop and not same_as):
            next_hop = "keep"
        return BirdPeer(
            name=peer_name(kind, data.address, data.port),
            version=version,
            address=data.address,
            as_number=data.as_number,
            kind=kind,
            port=data.port,
            local_as=data.local_as,
            source_address=my_address if data.source_address == "UseNodeIP" else None,
            passive=passive,
            ttl_security=data.ttl_security,
            restart_time=data.restart_time,
            keepalive_time=data.keepalive_time,
            rr_client=rr_client,
            rr_cluster_id=self.my_cluster_id if rr_client else None,
            password=self.password(data.password, f"BGPPeer {data.resource}"),
            next_hop=next_hop,
            allow_local_as=data.allow_local_as,
            internal=same_as,
            comment=f"For BGPPeer {data.resource}",
            import_calls=peer_calls(data.filters, functions, "import", same_as),
            export_calls=peer_calls(data.filters, functions, "export", same_as),
        )

    def resource_peers(
        self, version: int, my_address: str, functions: tuple[BirdFilterFunction, ...]
    ) -> list[BirdPeer]:
        found = []
        for peering in self.family_peerings(version):
            data = peering.data
            for missing in missing_filters(data.filters, self.inputs.filters):
                self.notes.append(f"BGPPeer {data.resource}: no BGPFilter {missing!r}")
            if data.address == my_address:
                continue
            found.append(self.resource_peer(peering, version, my_address, functions))
        return found

    def family_peerings(self, version: int) -> list[Peering]:
        return [p for p in self.peerings if ipaddress.ip_address(p.data.address).version == version]

    # -- routes --

    def blocks(self, version: int) -> tuple[BlockRoute, ...]:
        routes = []
        for cidr, state in self.inputs.affinities.items():
            try:
                network = ipaddress.ip_network(cidr)
            except ValueError:
                self.notes.append(f"affinity: bad block CIDR {cidr!r}")
                continue
            # Calico acts on confirmed affinities only (a state-less one is a legacy confirmed
            # one); a pending block may still go to another node.
            if network.version != version or state not in ("", CONFIRMED):
                continue
            routes.append(
                BlockRoute(
                    cidr=str(network),
                    state=state,
                    blackhole=network.prefixlen != network.max_prefixlen,
                )
            )
        # Calico lists blocks in the order of their datastore keys ("10.0.0.0-26").
        return tuple(sorted(routes, key=lambda r: r.cidr.replace("/", "-")))

    def pools(self, version: int, local_subnet: str | None) -> tuple[PoolRoute, ...]:
        policy = (self.global_spec.program_cluster_routes if self.global_spec else None) or ""
        bird_ipip, bird_plain = _CLUSTER_ROUTE_POLICY.get(policy, (False, True))
        routes = []
        for pool in self.inputs.pools:
            try:
                network = ipaddress.ip_network(pool.spec.cidr)
            except ValueError:
                continue
            if network.version != version:
                continue
            vxlan = pool.spec.vxlan_mode in ("Always", "CrossSubnet")
            ipip = not vxlan and pool.spec.ipip_mode in ("Always", "CrossSubnet")
            if vxlan:
                kernel, reason = "reject", "VXLAN routes are handled by Felix."
            elif ipip and bird_ipip:
                self.notes.append(IPIP_NOTE.format(cidr=network))
                kernel, reason = "reject", "IPIP routes are handled by Felix (BIRD 2)."
            elif not ipip and bird_plain:
                kernel, reason = "accept", ""
            else:
                kernel, reason = "reject", "Cluster routes are handled by Felix."
            # IPv6 statements are rejections only; IPv4 ones need this node's subnet.
            if (version == 6 and kernel == "accept") or (version == 4 and local_subnet is None):
                kernel = None  # type: ignore[assignment]
            routes.append(
                PoolRoute(
                    cidr=str(network),
                    export=not pool.spec.disable_bgp_export,
                    kernel=kernel,  # type: ignore[arg-type]
                    reason=reason,
                )
            )
        return tuple(sorted(routes, key=lambda r: r.cidr))

    def tunnel_interfaces(self) -> tuple[str, ...]:
        policy = (self.global_spec.program_cluster_routes if self.global_spec else None) or ""
        bird_ipip, _ = _CLUSTER_ROUTE_POLICY.get(policy, (False, True))
        return ("*.cali", "*.calico") if bird_ipip else ("*.cali", "*.calico", "tunl0")

    def statics(self, version: int) -> tuple[StaticVia, ...]:
        prefix = 32 if version == 4 else 128
        routes = {
            StaticVia(f"{p.data.address}/{prefix}", p.data.reachable_by)
            for p in self.family_peerings(version)
            if p.data.reachable_by
        }
        return tuple(sorted(routes, key=lambda r: r.cidr))

    def communities(self, version: int) -> tuple[CommunityRule, ...]:
        spec: BGPConfigurationSpec | None = None
        for candidate in (self.node_spec, self.global_spec):
            if candidate is not None and candidate.prefix_advertisements is not None:
                spec = candidate
                break
        if spec is None:
            return ()
        named = {c.name: c.value for c in spec.communities or ()}
        rules = []
        for advertisement in spec.prefix_advertisements or ():
            if (":" in advertisement.cidr) != (version == 6):
                continue
            values = {named.get(c, c) for c in advertisement.communities}
            valid = sorted(v for v in values if _is_community(v))
            if valid:
                rules.append(CommunityRule(advertisement.cidr, tuple(valid)))
        return tuple(rules)

    def wireguard_next_hops(self, version: int) -> tuple[str, ...]:
        if self.me is None or _wireguard_address(self.me, version) is None:
            return ()
        hops = []
        for name, node in self.inputs.nodes.items():
            address = node_address(node, version)
            if name != self.inputs.node_name and address and _wireguard_address(node, version):
                hops.append(address)
        return tuple(sorted(hops))

    def family(self, version: int) -> FamilyConfig:
        address = node_address(self.me, version) if self.me is not None else None
        network = _node_network(self.me, version) if self.me is not None else None
        functions, notes = filter_functions(self.inputs.filters, version)
        self.notes.extend(notes)
        peers: list[BirdPeer] = []
        if address is not None:
            peers = self.mesh_peers(version, address) + self.resource_peers(
                version, address, functions
            )
        unique: dict[str, BirdPeer] = {}
        for peer in peers:
            unique.setdefault(peer.name, peer)
        bind_mode = self.global_spec.bind_mode if self.global_spec else None
        service_routes, service_rejects = node_statics(
            self.global_spec, self.me, self.inputs.service_routes, version
        )
        return FamilyConfig(
            version=version,
            node_address=address,
            node_network=network,
            blocks=self.blocks(version),
            pools=self.pools(version, network),
            statics=self.statics(version),
            peers=tuple(sorted(unique.values(), key=lambda p: p.name)),
            filter_functions=functions,
            normal_priority=self.normal_priority(version),
            communities=self.communities(version),
            tunnel_interfaces=self.tunnel_interfaces(),
            wireguard_next_hops=self.wireguard_next_hops(version),
            bind_address=address if bind_mode == "NodeIP" else None,
            service_routes=service_routes,
            service_rejects=service_rejects,
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
        ignored = tuple(
            name
            for name in (self.global_spec.ignored_interfaces if self.global_spec else None) or ()
            if bird_safe(name)
        )
        return BirdConfig(
            node_name=self.inputs.node_name,
            router_id=self.router_id(ipv4),
            as_number=self.my_as,
            mesh_enabled=self.mesh_enabled(),
            rr_cluster_id=self.my_cluster_id,
            listen_port=self.listen_port_of(self.inputs.node_name),
            protocol_debug=protocol_debug,
            peer_debug=peer_debug,
            ignored_interfaces=ignored,
            ipv4=ipv4,
            ipv6=ipv6,
            notes=tuple(dict.fromkeys(self.notes)),
        )


def _is_community(value: str) -> bool:
    parts = value.split(":")
    return len(parts) in (2, 3) and all(part.isdigit() for part in parts)


def build(inputs: BgpInputs) -> BirdConfig:
    """The BIRD configuration for ``inputs.node_name`` (see the module docstring)."""
    return _Builder(inputs).build()


__all__ = [
    "BIRD_INT_MAX",
    "BgpInputs",
    "BirdConfig",
    "BirdPeer",
    "BlockRoute",
    "FamilyConfig",
    "PeerData",
    "PoolRoute",
    "StaticVia",
    "WorkloadPeer",
    "bird_safe",
    "build",
    "hash_router_id",
    "node_address",
    "password_refs",
    "peer_name",
]

"""``BirdConfig``: the typed BIRD configuration of one node, as the processor decides it and
the templates print it, plus the naming and quoting rules both sides share.

PURE: frozen dataclasses and string helpers.  What it is not: the decisions (``processor``) or
the text (``render``).  Invariants: every value is immutable; a ``BirdConfig`` holds only
strings BIRD can read (passwords and interface names went through ``bird_safe``).
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from typing import Literal

PeerKind = Literal["Mesh", "Global", "Node", "Local_Workload"]
# Protocols (device, direct): "all" at Debug, "states" at Info, nothing otherwise.  BGP peers
# say more at Info: "full" is states, routes, filters and events.
DebugLevel = Literal["all", "states", "full", "none"]
BIRD_INT_MAX = 2147483647  # Calico maps a route priority p to BGP local preference MAX - p
OVERRIDE_PREFERENCE = 200  # BIRD preference of a route whose priority beats the normal one
DEFAULT_ROUTE_PRIORITY = 1024


@dataclass(frozen=True)
class BirdFilterFunction:
    """A BGPFilter's BIRD function for one family and direction; ``lines`` are its rule
    statements, in order (``pycalico.bgp.filters`` writes them)."""

    filter_name: str
    version: int
    direction: str
    name: str
    lines: tuple[str, ...]
    takes_peer_type: bool = False  # has peerType rules: called with (is_same_as)


@dataclass(frozen=True)
class BirdPeer:
    name: str
    version: int
    address: str
    as_number: int
    kind: PeerKind
    port: int | None = None
    local_as: int | None = None
    source_address: str | None = None
    passive: bool = False
    ttl_security: int | None = None  # hop count: "ttl security on; multihop N", else off
    restart_time: int | None = None
    keepalive_time: int | None = None
    rr_client: bool = False
    rr_cluster_id: str | None = None
    password: str | None = None
    next_hop: Literal["self", "keep"] | None = None
    allow_local_as: int | None = None
    internal: bool = True  # the peer's AS is this node's (its local AS override if set)
    comment: str = ""
    # BGPFilter function calls (BGPPeer ``filters``, in order), see ``pycalico.bgp.filters``.
    import_calls: tuple[str, ...] = ()
    export_calls: tuple[str, ...] = ()


@dataclass(frozen=True)
class BlockRoute:
    """A confirmed (or legacy state-less) affine block: exported whole, with nothing beneath
    it except routes of a better-than-normal priority."""

    cidr: str
    state: str
    blackhole: bool  # a /32 (or /128) block gets no blackhole, as in Calico


@dataclass(frozen=True)
class PoolRoute:
    """What one IP pool contributes to the export filter and the kernel filter."""

    cidr: str
    export: bool  # False: disableBGPExport, rejected before anything else
    kernel: Literal["accept", "reject"] | None  # None: no kernel statement for this family
    reason: str  # why the kernel filter rejects (Felix programs the routes)


@dataclass(frozen=True)
class CommunityRule:
    """prefixAdvertisements: communities added to exported routes inside ``cidr``."""

    cidr: str
    communities: tuple[str, ...]  # "a:b" standard, "a:b:c" large


@dataclass(frozen=True)
class StaticVia:
    cidr: str
    gateway: str


@dataclass(frozen=True)
class FamilyConfig:
    version: int
    node_address: str | None
    node_network: str | None
    blocks: tuple[BlockRoute, ...] = ()
    pools: tuple[PoolRoute, ...] = ()
    statics: tuple[StaticVia, ...] = ()
    peers: tuple[BirdPeer, ...] = ()
    filter_functions: tuple[BirdFilterFunction, ...] = ()
    normal_priority: int = DEFAULT_ROUTE_PRIORITY
    communities: tuple[CommunityRule, ...] = ()
    tunnel_interfaces: tuple[str, ...] = ("*.cali", "*.calico", "tunl0")  # never to iBGP
    wireguard_next_hops: tuple[str, ...] = ()  # peers' routes Felix's WireGuard carries
    bind_address: str | None = None  # bindMode NodeIP
    # Service advertisement (``pycalico.bgp.services``): blackhole static routes announced
    # (the BGPConfiguration's service CIDRs and Services' /32s), and CIDRs kept out of the kernel.
    service_routes: tuple[str, ...] = ()
    service_rejects: tuple[str, ...] = ()

    @property
    def enabled(self) -> bool:
        return self.node_address is not None


@dataclass(frozen=True)
class BirdConfig:
    node_name: str
    router_id: str
    as_number: int
    mesh_enabled: bool
    rr_cluster_id: str | None
    listen_port: int | None
    protocol_debug: DebugLevel
    peer_debug: DebugLevel
    ignored_interfaces: tuple[str, ...]
    ipv4: FamilyConfig
    ipv6: FamilyConfig
    notes: tuple[str, ...] = ()

    @property
    def families(self) -> tuple[FamilyConfig, FamilyConfig]:
        return (self.ipv4, self.ipv6)

    @property
    def peers(self) -> tuple[BirdPeer, ...]:
        return self.ipv4.peers + self.ipv6.peers


# --- helpers ------------------------------------------------------------------------------------


def peer_name(kind: PeerKind, address: str, port: int | None = None) -> str:
    """``Mesh_10_0_0_2``, ``Global_fd00__1``, ``Node_10_0_0_9_port_1790`` (Calico's names)."""
    text = f"{kind}_{address.replace('.', '_').replace(':', '_')}"
    return f"{text}_port_{port}" if port else text


def bird_safe(text: str) -> bool:
    """Can ``text`` go inside a BIRD double-quoted string (which has no escapes)?"""
    return not any(character in text for character in '"\n\r')


def hash_router_id(node_name: str) -> str:
    """A stable IPv4-formatted router id from a node name (CALICO_ROUTER_ID=hash, and for
    IPv6-only nodes, which have no IPv4 address to use)."""
    digest = hashlib.sha256(node_name.encode()).digest()
    return str(ipaddress.IPv4Address(digest[:4]))

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

PeerKind = Literal["Mesh", "Global", "Node"]
DebugLevel = Literal["all", "states", "none"]


@dataclass(frozen=True)
class BirdFilterFunction:
    """A BGPFilter's BIRD function for one family and direction; ``lines`` are its rule
    statements, in order (``pycalico.bgp.filters`` writes them)."""

    filter_name: str
    version: int
    direction: str
    name: str
    lines: tuple[str, ...]


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
    direct: bool = True
    multihop: int | None = None  # with ttl security; None and not direct = plain multihop
    ttl_security: bool = False
    restart_time: int | None = None
    keepalive_time: int | None = None
    rr_client: bool = False
    rr_cluster_id: str | None = None
    password: str | None = None
    next_hop: Literal["self", "keep"] | None = None
    allow_local_as: int | None = None
    internal: bool = True
    comment: str = ""
    # BGPFilter function calls (BGPPeer ``filters``, in order) made before Calico's own logic.
    import_calls: tuple[str, ...] = ()
    export_calls: tuple[str, ...] = ()


@dataclass(frozen=True)
class BlockRoute:
    cidr: str
    state: str
    blackhole: bool  # a /32 (or /128) block gets no blackhole, as in Calico
    aggregate: bool  # confirmed or legacy: export the block, nothing beneath it


@dataclass(frozen=True)
class PoolRoute:
    cidr: str
    export: bool
    kernel: bool  # BIRD installs routes inside it (no encapsulation)
    encapsulation: str  # "" / "ipip" / "vxlan": why BIRD leaves it to Felix


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
    bind_address: str | None
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

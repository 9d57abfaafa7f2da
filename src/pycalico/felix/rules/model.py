"""What the renderer produces: nft chains, sets and verdict maps as plain data.

What it is: the unit of change between rendering and the nft driver.  A ``Chain`` is the whole
content of one chain (the driver rewrites a chain with ``flush chain`` + ``add rule``); a
``SetDef`` declares a set or verdict map whose elements the driver manages separately as deltas.
What it is not: nft script text for a whole transaction (``rules.script`` writes that).

Invariants: frozen and comparable, so "did this chain change?" is ``old != new``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True, slots=True)
class Chain:
    name: str
    rules: tuple[str, ...]
    # Base chains only: the nft chain spec, e.g. "type filter hook forward priority filter;
    # policy accept;".  Empty for regular chains.
    hook: str = ""


@dataclass(frozen=True, slots=True)
class SetDef:
    """A named set (``kind="set"``) or verdict map (``kind="map"``); ``type`` is nft's syntax."""

    name: str
    type: str  # "ipv4_addr", "ipv4_addr . inet_proto . inet_service", "ifname : verdict"
    flags: tuple[str, ...] = ()
    kind: Literal["set", "map"] = "set"


@dataclass(frozen=True, slots=True)
class FlowtableDef:
    """A flowtable (software fast path for established forwarded flows); devices are separate.

    The device list is state the driver manages as deltas (it follows the workload interfaces),
    so it is not part of the definition: a changed definition means re-creating the table.
    """

    name: str
    hook: str = "ingress"
    priority: str = "filter"


@dataclass(frozen=True, slots=True)
class FailsafePort:
    protocol: Literal["tcp", "udp", "sctp"]
    port: int
    net: str = ""  # optional CIDR restricting the remote side


# Calico's default failsafe ports (reference §3.2).
DEFAULT_FAILSAFE_INBOUND: tuple[FailsafePort, ...] = (
    FailsafePort("tcp", 22),
    FailsafePort("udp", 68),
    FailsafePort("tcp", 179),
    FailsafePort("tcp", 2379),
    FailsafePort("tcp", 2380),
    FailsafePort("tcp", 5473),
    FailsafePort("tcp", 6443),
    FailsafePort("tcp", 6666),
    FailsafePort("tcp", 6667),
)
DEFAULT_FAILSAFE_OUTBOUND: tuple[FailsafePort, ...] = (
    FailsafePort("udp", 53),
    FailsafePort("udp", 67),
    FailsafePort("tcp", 179),
    FailsafePort("tcp", 2379),
    FailsafePort("tcp", 2380),
    FailsafePort("tcp", 5473),
    FailsafePort("tcp", 6443),
    FailsafePort("tcp", 6666),
    FailsafePort("tcp", 6667),
)


@dataclass(frozen=True, slots=True)
class RenderConfig:
    """The Felix configuration fields that change rendered rules."""

    interface_prefixes: tuple[str, ...] = ("cali",)
    default_endpoint_to_host_action: Literal["Drop", "Accept", "Return"] = "Drop"
    disable_conntrack_invalid_check: bool = False
    deny_action: Literal["Drop", "Reject"] = "Drop"
    log_prefix: str = "calico-packet"
    allow_vxlan_packets_from_workloads: bool = False
    allow_ipip_packets_from_workloads: bool = False
    vxlan_port: int = 4789
    ipv6_support: bool = True
    failsafe_inbound: tuple[FailsafePort, ...] = DEFAULT_FAILSAFE_INBOUND
    failsafe_outbound: tuple[FailsafePort, ...] = DEFAULT_FAILSAFE_OUTBOUND
    # NFTablesFlowTableOffload: established TCP/UDP flows forwarded between workload interfaces
    # take the flowtable fast path (new flows still go through policy).
    flowtable_offload: bool = False
    # Flow logs and counters (docs/flows.md): a ``counter`` on every policy/profile rule, and
    # an NFLOG ``log group`` (rate-limited) before every deny path; 0 = no deny logging.
    rule_counters: bool = False
    deny_log_group: int = 0
    deny_log_rate: str = "100/second"
    # FelixConfiguration natOutgoingAddress: SNAT to this address instead of masquerading.
    nat_outgoing_address: str = ""
    extra: tuple[tuple[str, str], ...] = field(default=())


@dataclass(frozen=True, slots=True)
class PrefilterUse:
    """Which pre-conntrack / pre-DNAT hooks some host endpoint needs right now.

    ``raw_prerouting``: some host endpoint has untracked (doNotTrack) ingress policy;
    ``raw_output``: untracked egress policy; ``mangle_prerouting``: pre-DNAT policy.  A hook
    nobody needs gets no base chain at all, so unused features cost nothing per packet.
    """

    raw_prerouting: bool = False
    raw_output: bool = False
    mangle_prerouting: bool = False

    @property
    def ingress(self) -> bool:
        """Ingress packets may arrive in the filter table already accepted (accept mark set)."""
        return self.raw_prerouting or self.mangle_prerouting


NO_PREFILTER = PrefilterUse()

"""The messages the calculation graph sends to the dataplane: Felix's internal contract.

What it is: immutable descriptions of *desired* dataplane state, already resolved — rules carry
IP-set ids instead of selectors, endpoints carry their ordered tiers and policy ids, names are
final.  It is the Python counterpart of Go Felix's ``proto`` messages.  What it is not: kernel
syntax (the rule renderer turns these into nftables) or datastore resources (``pycalico.model``).

Invariants:

* Pure data: frozen dataclasses of tuples/frozensets/str/int, hashable and comparable, so a
  manager can skip work when an update equals what it already has.
* The event sequencer guarantees order: an IP set is sent before any policy that references it,
  a policy/profile before any endpoint that references it; removals go in the reverse order.
* ``*Update`` carries the whole desired object (idempotent); ``*Remove`` only its id.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

Action = Literal["allow", "deny", "pass", "log"]
IPVersion = Literal[4, 6]


class IPSetType(Enum):
    IP = "ip"  # workload / host endpoint addresses (hash:ip)
    NET = "net"  # CIDRs from network sets (hash:net)
    IP_AND_PORT = "ip,port"  # named ports: members are "addr,proto:port"


# --- identities -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class PolicyID:
    tier: str
    name: str  # Calico's name; namespaced policies are "<namespace>/<name>"
    kind: str = "GlobalNetworkPolicy"  # or NetworkPolicy (namespaced)


@dataclass(frozen=True, slots=True, order=True)
class ProfileID:
    name: str


@dataclass(frozen=True, slots=True, order=True)
class WorkloadEndpointID:
    orchestrator: str
    workload: str  # "<namespace>/<pod>" for k8s
    endpoint: str  # e.g. "eth0"


@dataclass(frozen=True, slots=True, order=True)
class HostEndpointID:
    name: str


# --- rules ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PortRange:
    first: int
    last: int  # == first for a single port


@dataclass(frozen=True, slots=True)
class ResolvedRule:
    """One rule with every selector replaced by IP-set ids (members come via IPSet messages).

    Within one list the semantics are AND; ``not_*`` fields match when the packet is NOT in the
    set/net/port.  An empty tuple means "no constraint".

    Ports are the exception (Calico's semantics): on one side, the port matches if it is in one
    of ``*_ports`` OR ``(address, port)`` is in one of ``*_named_port_ip_set_ids``; negated, the
    packet must match none of them.  Selector sets (type NET) hold bare addresses and CIDRs of
    both families (split by family when programming); named-port sets (type IP_AND_PORT) hold
    ``"<address>,<protocol>:<port>"``.  A named-port set only contains endpoints of the side's
    selector, so a side with only named ports carries no separate selector set.
    """

    action: Action
    ip_version: IPVersion | None = None
    protocol: str | int | None = None  # "tcp"/"udp"/"icmp"/"icmpv6"/"sctp"/"udplite" or number
    not_protocol: str | int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    not_icmp_type: int | None = None
    not_icmp_code: int | None = None
    source_nets: tuple[str, ...] = ()
    not_source_nets: tuple[str, ...] = ()
    source_ip_set_ids: tuple[str, ...] = ()
    not_source_ip_set_ids: tuple[str, ...] = ()
    source_ports: tuple[PortRange, ...] = ()
    not_source_ports: tuple[PortRange, ...] = ()
    source_named_port_ip_set_ids: tuple[str, ...] = ()
    not_source_named_port_ip_set_ids: tuple[str, ...] = ()
    destination_nets: tuple[str, ...] = ()
    not_destination_nets: tuple[str, ...] = ()
    destination_ip_set_ids: tuple[str, ...] = ()
    not_destination_ip_set_ids: tuple[str, ...] = ()
    destination_ports: tuple[PortRange, ...] = ()
    not_destination_ports: tuple[PortRange, ...] = ()
    destination_named_port_ip_set_ids: tuple[str, ...] = ()
    not_destination_named_port_ip_set_ids: tuple[str, ...] = ()
    log_prefix: str = ""
    rule_id: str = ""  # stable hash of the rule, used in comments/counters


# --- messages -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConfigUpdate:
    values: tuple[tuple[str, str], ...]  # effective Felix config, sorted by name


@dataclass(frozen=True, slots=True)
class DatastoreNotReady:
    """ClusterInformation ``default`` says ``datastoreReady: false`` (the datastore is locked).

    Go Felix's ``calc.DatastoreNotReady``: the sequencer sends it first in its flush, and it is
    for the daemon, never the dataplane — Felix stops forwarding messages and exits for a
    restart (the restarted Felix waits until the flag is true again before it syncs).
    """


@dataclass(frozen=True, slots=True)
class InSync:
    """The initial datastore snapshot is fully processed; the dataplane may now change the kernel."""


@dataclass(frozen=True, slots=True)
class IPSetUpdate:
    id: str  # selector unique id "s:..." or named-port id "n:..."
    type: IPSetType
    members: frozenset[str]


@dataclass(frozen=True, slots=True)
class IPSetDeltaUpdate:
    id: str
    added: frozenset[str]
    removed: frozenset[str]


@dataclass(frozen=True, slots=True)
class IPSetRemove:
    id: str


@dataclass(frozen=True, slots=True)
class ActivePolicyUpdate:
    id: PolicyID
    inbound_rules: tuple[ResolvedRule, ...]
    outbound_rules: tuple[ResolvedRule, ...]


@dataclass(frozen=True, slots=True)
class ActivePolicyRemove:
    id: PolicyID


@dataclass(frozen=True, slots=True)
class ActiveProfileUpdate:
    id: ProfileID
    inbound_rules: tuple[ResolvedRule, ...]
    outbound_rules: tuple[ResolvedRule, ...]


@dataclass(frozen=True, slots=True)
class ActiveProfileRemove:
    id: ProfileID


@dataclass(frozen=True, slots=True)
class TierInfo:
    """The policies of one tier that apply to an endpoint, in evaluation order."""

    name: str
    default_action: Literal["deny", "pass"]
    ingress_policies: tuple[PolicyID, ...]
    egress_policies: tuple[PolicyID, ...]


@dataclass(frozen=True, slots=True)
class WorkloadEndpointUpdate:
    id: WorkloadEndpointID
    interface_name: str  # host side, e.g. cali1234567890a
    mac: str
    ipv4_nets: tuple[str, ...]  # "/32" networks
    ipv6_nets: tuple[str, ...]  # "/128" networks
    profile_ids: tuple[ProfileID, ...]
    tiers: tuple[TierInfo, ...]
    allow_spoofed_source_prefixes: tuple[str, ...] = ()
    admin_up: bool = True


@dataclass(frozen=True, slots=True)
class WorkloadEndpointRemove:
    id: WorkloadEndpointID


@dataclass(frozen=True, slots=True)
class HostEndpointUpdate:
    id: HostEndpointID
    interface_name: str  # "*" = all host interfaces
    expected_ipv4_addrs: tuple[str, ...]
    expected_ipv6_addrs: tuple[str, ...]
    profile_ids: tuple[ProfileID, ...]
    tiers: tuple[TierInfo, ...]
    untracked_tiers: tuple[TierInfo, ...] = ()
    pre_dnat_tiers: tuple[TierInfo, ...] = ()
    forward_tiers: tuple[TierInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class HostEndpointRemove:
    id: HostEndpointID


@dataclass(frozen=True, slots=True)
class IPPoolUpdate:
    """An IP pool, for NAT outgoing and the all-pools sets (Go Felix's ``IPAMPoolUpdate``)."""

    id: str  # the pool's CIDR (pools never overlap, and the CIDR is immutable)
    cidr: str
    masquerade: bool  # natOutgoing
    ipip_mode: Literal["Never", "Always", "CrossSubnet"] = "Never"
    vxlan_mode: Literal["Never", "Always", "CrossSubnet"] = "Never"
    disabled: bool = False
    disable_bgp_export: bool = False
    # allowedUses is exactly [LoadBalancer]: not a workload or tunnel pool (NAT treats its
    # addresses as outside the cluster, as Calico's masquerade manager does).
    load_balancer_only: bool = False


@dataclass(frozen=True, slots=True)
class IPPoolRemove:
    id: str


@dataclass(frozen=True, slots=True)
class VTEPUpdate:
    """A node's VXLAN tunnel endpoint of one IP family (Go Felix's ``VXLANTunnelEndpointUpdate``):
    its tunnel address on the VXLAN device, the device's MAC and the node's own (parent)
    address the encapsulated packets go to."""

    node: str
    version: IPVersion
    tunnel_address: str  # bare address, e.g. "10.65.0.0"
    mac: str
    parent_address: str  # bare address of the node, e.g. "10.99.0.1"


@dataclass(frozen=True, slots=True)
class VTEPRemove:
    node: str
    version: IPVersion


@dataclass(frozen=True, slots=True)
class RemoteBlockRouteUpdate:
    """A route to another node's address block: through the VXLAN device to its VTEP
    (``encapsulated``), or straight to the node's address (CrossSubnet, same subnet); for a
    block of this node's own, a ``blackhole`` (its addresses without a workload go nowhere)."""

    destination: str  # the block's CIDR
    node: str
    version: IPVersion
    encapsulated: bool
    gateway: str  # the remote tunnel address (encapsulated) or the node's address
    blackhole: bool = False


@dataclass(frozen=True, slots=True)
class RemoteBlockRouteRemove:
    destination: str


Message = (
    ConfigUpdate
    | InSync
    | DatastoreNotReady
    | IPSetUpdate
    | IPSetDeltaUpdate
    | IPSetRemove
    | ActivePolicyUpdate
    | ActivePolicyRemove
    | ActiveProfileUpdate
    | ActiveProfileRemove
    | WorkloadEndpointUpdate
    | WorkloadEndpointRemove
    | HostEndpointUpdate
    | HostEndpointRemove
    | IPPoolUpdate
    | IPPoolRemove
    | VTEPUpdate
    | VTEPRemove
    | RemoteBlockRouteUpdate
    | RemoteBlockRouteRemove
)

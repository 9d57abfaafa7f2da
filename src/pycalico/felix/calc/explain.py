"""``calicoctl explain``'s answer: why Felix allows or drops a flow, from Felix's own graph.

What it is: for a packet from one end to another (``explain_cluster`` resolves them), each
enforcing side — the source's egress on its node, the host endpoints the packet leaves and
enters nodes by, the destination's ingress on its node — is computed by a ``CalcGraph`` for
that node fed with the endpoint, the tiers, profiles and policies, and the endpoints and
network sets that hold the packet's addresses (the only members the packet's IP-set lookups
can see).  The flushed messages are exactly what that node's dataplane is sent;
``verdicts.evaluate_direction`` runs a workload's chain, ``explain_host.host_walk`` a host
endpoint's stages (untracked, pre-DNAT, normal or applyOnForward), with the node's Felix
settings.  The trace is decorated with why each policy applies (its effective selector against
the endpoint's labels) and, for a converted Kubernetes policy (``knp.default.<name>``), the
Kubernetes NetworkPolicy it came from.  What it is not: I/O (the caller lists the resources:
``Cluster``), conntrack (this is a new flow's first packet) or routing (which host endpoint a
packet crosses is decided from the ends: ``Cluster.path_host_endpoint``).

Invariants: ``explain`` is a pure function of (cluster, ends, packet); the verdict is "allow"
exactly when every enforcing side allows; an address no endpoint or node holds is external
(not policed on its side).
"""

from __future__ import annotations

import gc
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pycalico.datastore.updates import ResourceKey
from pycalico.felix.calc.endpoints import workload_endpoint_id

# Cluster, End, ExplainError and resolve_end are explain's public names too (callers, the CLI).
from pycalico.felix.calc.explain_cluster import NODE_PREFIX as NODE_PREFIX
from pycalico.felix.calc.explain_cluster import Cluster as Cluster
from pycalico.felix.calc.explain_cluster import End as End
from pycalico.felix.calc.explain_cluster import ExplainError as ExplainError
from pycalico.felix.calc.explain_cluster import PolicyEntry, endpoint_name
from pycalico.felix.calc.explain_cluster import resolve_end as resolve_end
from pycalico.felix.calc.explain_host import (
    NodeSettings,
    Stage,
    Walk,
    host_walk,
    workload_to_host,
)
from pycalico.felix.calc.graph import CalcGraph
from pycalico.felix.calc.policies import policy_id
from pycalico.felix.calc.verdicts import (
    DirectionTrace,
    OwnerStep,
    Packet,
    evaluate_direction,
    in_nets,
)
from pycalico.felix.messages import (
    ActivePolicyUpdate,
    ActiveProfileUpdate,
    HostEndpointID,
    HostEndpointUpdate,
    IPSetDeltaUpdate,
    IPSetRemove,
    IPSetUpdate,
    Message,
    PolicyID,
    ProfileID,
    ResolvedRule,
    TierInfo,
    WorkloadEndpointUpdate,
)
from pycalico.k8s.conversion.network_policy import kubernetes_name as converted_from
from pycalico.model.endpoints import HostEndpoint, WorkloadEndpoint

# --- one enforcing side -----------------------------------------------------------------------


@dataclass
class _DataplaneView:
    """What a dataplane would hold after the graph's messages (the fields explain needs)."""

    policies: dict[PolicyID, ActivePolicyUpdate] = field(default_factory=dict)
    profiles: dict[ProfileID, ActiveProfileUpdate] = field(default_factory=dict)
    sets: dict[str, frozenset[str]] = field(default_factory=dict)
    endpoints: dict[Any, WorkloadEndpointUpdate] = field(default_factory=dict)
    hosts: dict[HostEndpointID, HostEndpointUpdate] = field(default_factory=dict)

    def apply(self, messages: Iterable[Message]) -> None:
        for message in messages:
            match message:
                case ActivePolicyUpdate():
                    self.policies[message.id] = message
                case ActiveProfileUpdate():
                    self.profiles[message.id] = message
                case IPSetUpdate():
                    self.sets[message.id] = message.members
                case IPSetDeltaUpdate():
                    current = self.sets.get(message.id, frozenset())
                    self.sets[message.id] = (current - message.removed) | message.added
                case IPSetRemove():
                    self.sets.pop(message.id, None)
                case WorkloadEndpointUpdate():
                    self.endpoints[message.id] = message
                case HostEndpointUpdate():
                    self.hosts[message.id] = message

    def policy_rules(self, ingress: bool) -> Any:
        def rules(policy: PolicyID) -> tuple[ResolvedRule, ...]:
            update = self.policies.get(policy)
            if update is None:
                return ()
            return update.inbound_rules if ingress else update.outbound_rules

        return rules

    def profile_rules(self, ingress: bool) -> Any:
        def rules(profile: ProfileID) -> tuple[ResolvedRule, ...]:
            update = self.profiles.get(profile)
            if update is None:
                return ()
            return update.inbound_rules if ingress else update.outbound_rules

        return rules


@dataclass(frozen=True)
class PolicyReason:
    """Why a policy applies to the endpoint: its effective selector and the labels it read."""

    selector: str
    labels: dict[str, str]
    kubernetes: str = ""  # "NetworkPolicy <ns>/<name>" for a knp.default. policy


SideKind = Literal["workload", "host", "forward", "workload-to-host", "host-to-workload"]


@dataclass(frozen=True)
class SideTrace:
    """One enforcing side.  ``trace`` decided it; for a host endpoint (and the other walks
    ``explain_host`` knows) ``stages`` lists every chain the packet met, ``trace`` being the
    last one's; a workload's side has no stages (its one chain is ``trace``)."""

    endpoint: str
    node: str
    labels: dict[str, str]
    trace: DirectionTrace
    reasons: dict[PolicyID, PolicyReason]
    kind: SideKind = "workload"
    stages: tuple[Stage, ...] = ()


def _graph_for(
    cluster: Cluster, endpoint: WorkloadEndpoint | HostEndpoint, packet: Packet
) -> tuple[CalcGraph, list[PolicyEntry]]:
    graph = CalcGraph(endpoint.spec.node or "")
    for tier in cluster.tiers:
        graph.on_resource(tier)
    for profile in cluster.profiles:
        graph.on_resource(profile)
    seen: set[ResourceKey] = set()
    for address in (packet.source, packet.destination):
        for item in (*cluster.holders(address), *cluster.network_sets_holding(address)):
            key = ResourceKey.of(item)
            if key not in seen:
                seen.add(key)
                graph.on_resource(item)
    key = ResourceKey.of(endpoint)
    if key not in seen:
        graph.on_resource(endpoint)
    # Only the policies whose selector (``policy_selector``, the very one the graph's index
    # matches) selects the endpoint can be in its tiers: the others would be inactive here.
    labels = graph.rules.local_index.labels(key) or {}
    namespace = endpoint.metadata.namespace if isinstance(endpoint, WorkloadEndpoint) else None
    selecting = cluster.policies_selecting(namespace, dict(labels))
    for policy, _ in selecting:
        graph.on_resource(policy)
    graph.on_in_sync()
    return graph, selecting


def kubernetes_name(policy: PolicyID) -> str:
    """The Kubernetes object a Calico policy was converted from ("" for a Calico one): the
    NetworkPolicy converter's own name mapping (``knp.default.<name>``)."""
    namespace, _, name = policy.name.partition("/")
    original = converted_from(name) if policy.kind == "NetworkPolicy" else None
    return f"NetworkPolicy {namespace}/{original}" if original else ""


def _pre_policy_drop(
    update: WorkloadEndpointUpdate, packet: Packet, ingress: bool, config: NodeSettings
) -> str:
    """``rules.endpoints.workload_chains``' drops before policy, with the node's settings."""
    if not update.admin_up:
        return "endpoint admin disabled"
    if ingress:
        return ""
    if packet.number == 4 and not config.allow_ipip_packets_from_workloads:
        return "IPIP packets from workloads are dropped"
    vxlan = config.vxlan_port
    if (
        packet.number == 17
        and packet.destination_port == vxlan
        and not config.allow_vxlan_packets_from_workloads
    ):
        return f"VXLAN packets (udp {vxlan}, vxlanPort) from workloads are dropped"
    nets = (*update.ipv4_nets, *update.ipv6_nets, *update.allow_spoofed_source_prefixes)
    if not in_nets(packet.source, nets):
        return f"source {packet.source} is not the endpoint's address (anti-spoofing)"
    return ""


def explain_side(
    cluster: Cluster, endpoint: WorkloadEndpoint, packet: Packet, *, ingress: bool
) -> SideTrace:
    """The endpoint's ingress (or egress) for ``packet``, as its node's Felix computes it."""
    graph, selecting = _graph_for(cluster, endpoint, packet)
    view = _DataplaneView()
    view.apply(graph.flush())
    update = view.endpoints[workload_endpoint_id(endpoint)]
    labels = dict(graph.rules.local_index.labels(ResourceKey.of(endpoint)) or {})
    trace = evaluate_direction(
        ingress=ingress,
        tiers=update.tiers,
        profile_ids=update.profile_ids,
        policy_rules=view.policy_rules(ingress),
        profile_rules=view.profile_rules(ingress),
        packet=packet,
        sets=view.sets,
        pre_policy_drop=_pre_policy_drop(
            update, packet, ingress, cluster.config_for(endpoint.spec.node or "")
        ),
    )
    reasons = _reasons(selecting, update.tiers, labels)
    return SideTrace(endpoint_name(endpoint), endpoint.spec.node or "", labels, trace, reasons)


def _reasons(
    selecting: list[PolicyEntry], tiers: Iterable[TierInfo], labels: dict[str, str]
) -> dict[PolicyID, PolicyReason]:
    applying = {p for tier in tiers for p in (*tier.ingress_policies, *tier.egress_policies)}
    reasons: dict[PolicyID, PolicyReason] = {}
    for policy, selector in selecting:
        pid = policy_id(policy)
        if pid in applying:
            read = {k: labels[k] for k in sorted(selector.labels) if k in labels}
            reasons[pid] = PolicyReason(selector.canonical, read, kubernetes_name(pid))
    return reasons


def explain_host_side(
    cluster: Cluster, endpoint: HostEndpoint, packet: Packet, walk: Walk
) -> SideTrace:
    """The host endpoint's chains on ``walk`` for ``packet``, as its node's Felix renders them
    (``explain_host``): untracked, pre-DNAT, then normal or applyOnForward policy."""
    graph, selecting = _graph_for(cluster, endpoint, packet)
    view = _DataplaneView()
    view.apply(graph.flush())
    node = endpoint.spec.node or ""
    update = view.hosts[HostEndpointID(endpoint.metadata.name)]
    labels = dict(graph.rules.local_index.labels(ResourceKey.of(endpoint)) or {})
    stages = host_walk(
        walk,
        update,
        view.policy_rules,
        view.profile_rules,
        packet,
        view.sets,
        cluster.config_for(node),
    )
    tiers = (*update.untracked_tiers, *update.pre_dnat_tiers, *update.tiers)
    kind: SideKind = "forward" if walk.startswith("forward") else "host"
    return SideTrace(
        endpoint_name(endpoint),
        node,
        labels,
        stages[-1].trace,
        _reasons(selecting, tiers, labels),
        kind,
        stages,
    )


@dataclass(frozen=True)
class Explanation:
    """The enforcing sides in the packet's order: the source's egress, the host endpoint it
    leaves the source's node by (``forward_out``), the one it enters the destination's node by
    (``forward_in``), the destination's ingress; None where there is none."""

    source: End
    destination: End
    packet: Packet
    egress: SideTrace | None
    ingress: SideTrace | None
    forward_out: SideTrace | None = None
    forward_in: SideTrace | None = None
    notes: tuple[str, ...] = ()

    @property
    def sides(self) -> list[SideTrace]:
        order = (self.egress, self.forward_out, self.forward_in, self.ingress)
        return [s for s in order if s is not None]

    @property
    def verdict(self) -> str:
        return "allow" if all(s.trace.verdict == "allow" for s in self.sides) else "deny"


def make_packet(source: str, destination: str, protocol: str, port: int | None) -> Packet:
    lowered = protocol.lower()
    if lowered in ("icmp", "icmpv6"):
        icmp = "icmpv6" if ipaddress.ip_address(destination).version == 6 else "icmp"
        echo = 128 if icmp == "icmpv6" else 8
        return Packet(source, destination, icmp, icmp_type=echo, icmp_code=0)
    if lowered not in ("tcp", "udp", "sctp"):
        raise ExplainError(f"protocol: {protocol!r} is not one of TCP, UDP, ICMP, SCTP")
    return Packet(source, destination, lowered, 40000, port if port is not None else 80)


def explain(
    cluster: Cluster, source: str, destination: str, protocol: str = "TCP", port: int | None = None
) -> Explanation:
    """Why a ``protocol``/``port`` flow from ``source`` to ``destination`` is allowed or not.

    The cyclic garbage collector is paused meanwhile, as ``CalcGraph.on_updates`` pauses it:
    the first call indexes the whole cluster, allocating much and freeing no cycles.
    """
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        return _explain(cluster, source, destination, protocol, port)
    finally:
        if paused:
            gc.enable()


def _explain(
    cluster: Cluster, source: str, destination: str, protocol: str, port: int | None
) -> Explanation:
    dst = resolve_end(cluster, destination)
    family = ipaddress.ip_address(dst.address).version
    src = resolve_end(cluster, source, family)
    if ipaddress.ip_address(src.address).version != family:
        raise ExplainError(f"{source!r} and {destination!r} have no address of one IP version")
    packet = make_packet(src.address, dst.address, protocol, port)
    return _sides(cluster, src, dst, packet)


def _sides(cluster: Cluster, src: End, dst: End, packet: Packet) -> Explanation:
    """Which chains the packet meets, by what its ends are (the base chains' dispatch in
    ``rules.endpoints``): a workload's own chains; a host endpoint's input/output; a workload
    to its own host through ``cali-wl-to-host``; host to a local workload accepted in output;
    and, for a packet entering or leaving a node from or to outside the cluster's workloads,
    the node's host endpoint's forward chains."""
    notes: list[str] = [end.note for end in (src, dst) if end.note]
    same_node = src.node is not None and src.node == dst.node
    egress = ingress = forward_out = forward_in = None
    if same_node and src.is_host and not dst.is_workload:
        notes.append("both ends are the same node: local traffic (lo) is not policed")
        return Explanation(src, dst, packet, None, None, notes=tuple(notes))
    if isinstance(src.endpoint, WorkloadEndpoint):
        egress = explain_side(cluster, src.endpoint, packet, ingress=False)
    elif isinstance(src.endpoint, HostEndpoint) and not same_node:
        egress = explain_host_side(cluster, src.endpoint, packet, "output")
    if isinstance(dst.endpoint, WorkloadEndpoint):
        if same_node and src.is_host:
            reason = "Felix's output chain accepts host-to-local-workload traffic before policy"
            trace = DirectionTrace(True, (), (), "allow", reason)
            stage = Stage("local", trace)
            name = endpoint_name(dst.endpoint)
            ingress = SideTrace(name, src.node or "", {}, trace, {}, "host-to-workload", (stage,))
        else:
            ingress = explain_side(cluster, dst.endpoint, packet, ingress=True)
    elif same_node and egress is not None and dst.is_host:
        stage = workload_to_host(egress.trace, cluster.config_for(dst.node or ""))
        name = endpoint_name(dst.endpoint) if dst.endpoint else f"{NODE_PREFIX}{dst.host_node}"
        ingress = SideTrace(name, dst.node or "", {}, stage.trace, {}, "workload-to-host", (stage,))
    elif isinstance(dst.endpoint, HostEndpoint):
        ingress = explain_host_side(cluster, dst.endpoint, packet, "input")
    if src.is_workload and not dst.is_workload and not same_node:
        hep, note = cluster.path_host_endpoint(src.node or "")
        if hep is not None:
            forward_out = explain_host_side(cluster, hep, packet, "forward-out")
        notes += [note] if note else []
    if dst.is_workload and not src.is_workload and not same_node:
        hep, note = cluster.path_host_endpoint(dst.node or "")
        if hep is not None:
            forward_in = explain_host_side(cluster, hep, packet, "forward-in")
        notes += [note] if note else []
    return Explanation(src, dst, packet, egress, ingress, forward_out, forward_in, tuple(notes))


def owner_name(owner: PolicyID | ProfileID) -> str:
    if isinstance(owner, ProfileID):
        return f"Profile {owner.name}"
    return f"{owner.kind} {owner.name}"


def step_dict(step: OwnerStep) -> dict[str, Any]:
    return {
        "name": owner_name(step.owner),
        "outcome": step.outcome,
        "rule": step.rule_index,
        "logged": list(step.logged),
        "rules": [
            {"index": c.index, "action": c.action, "matched": not c.mismatch,
             **({"mismatch": c.mismatch} if c.mismatch else {})}
            for c in step.checks
        ],
    }  # fmt: skip

"""``calicoctl explain``'s answer: why Felix allows or drops a flow, from Felix's own graph.

What it is: for a packet from one endpoint (or external address) to another, each enforcing
side — the source's egress on its node, the destination's ingress on its node — is computed by
a ``CalcGraph`` for that node fed with the endpoint, the tiers, profiles and policies, and the
endpoints and network sets that hold the packet's addresses (the only members the packet's
IP-set lookups can see).  The flushed messages are exactly what that node's dataplane is sent;
``verdicts.evaluate_direction`` runs them as the rendered chains do.  The trace is decorated
with why each policy applies (its effective selector against the endpoint's labels) and, for
a converted Kubernetes policy (``knp.default.<name>``), the Kubernetes NetworkPolicy it came
from.  What it is not: I/O (the caller lists the resources: ``Cluster``) or conntrack (this is
a new flow's first packet).

Invariants: ``explain`` is a pure function of (cluster, ends, packet); the verdict is "allow"
exactly when every enforcing side allows; an address no endpoint holds is external (not
policed on its side).
"""

from __future__ import annotations

import gc
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pycalico.datastore.updates import ResourceKey
from pycalico.felix.calc.endpoints import workload_endpoint_id
from pycalico.felix.calc.explain_host import (
    NodeSettings,
    Stage,
    Walk,
    host_walk,
    workload_to_host,
)
from pycalico.felix.calc.graph import CalcGraph
from pycalico.felix.calc.index import SelectorIndex
from pycalico.felix.calc.labels import policy_selector
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
from pycalico.model.endpoints import (
    GlobalNetworkSet,
    HostEndpoint,
    NetworkSet,
    Profile,
    WorkloadEndpoint,
)
from pycalico.model.policy import GlobalNetworkPolicy, NetworkPolicy, Tier
from pycalico.model.selectors import Selector

HOST_ENDPOINT_PREFIX = "hostendpoint/"

_PROBE = "explained endpoint"
_Entry = tuple[NetworkPolicy | GlobalNetworkPolicy, Selector]


def _ignore(selector: int, item: str) -> None:
    """The index's match callbacks: explain only asks ``selectors_matching``."""


class ExplainError(ValueError):
    """An end that names nothing (no such pod, endpoint or address)."""


@dataclass
class Cluster:
    """The resources explain reads (what Felix's syncer would deliver)."""

    workload_endpoints: Sequence[WorkloadEndpoint] = ()
    policies: Sequence[NetworkPolicy | GlobalNetworkPolicy] = ()
    profiles: Sequence[Profile] = ()
    tiers: Sequence[Tier] = ()
    network_sets: Sequence[NetworkSet | GlobalNetworkSet] = ()
    host_endpoints: Sequence[HostEndpoint] = ()
    # Each node's Felix settings (``RenderConfig``) from FelixConfiguration (``node.<name>``
    # over ``default``, merged and parsed by Felix's own config code: ``ctl.explain``); nodes
    # not listed use ``default_config``.  Required: explain has no defaults of its own.
    default_config: NodeSettings = field(kw_only=True)
    render_configs: Mapping[str, NodeSettings] = field(default_factory=dict, kw_only=True)
    _by_address: dict[str, list[WorkloadEndpoint | HostEndpoint]] | None = field(
        default=None, repr=False
    )
    _indexes: dict[str | None, tuple[list[_Entry], SelectorIndex[int, str]]] = field(
        default_factory=dict, repr=False
    )

    def config_for(self, node: str) -> NodeSettings:
        return self.render_configs.get(node, self.default_config)

    def path_host_endpoint(self, node: str) -> tuple[HostEndpoint | None, str]:
        """The host endpoint a packet forwarded to or from outside the node crosses, and a
        note when that is not known: the node's wildcard (``interfaceName: "*"``) one, or its
        only one (explain does not know the node's routes, so which interface of several)."""
        on_node = [h for h in self.host_endpoints if h.spec.node == node]
        wildcard = [h for h in on_node if h.spec.interface_name == "*"]
        if len(on_node) == 1 or (wildcard and len(on_node) == len(wildcard)):
            return on_node[0], ""
        if not on_node:
            return None, ""
        names = ", ".join(sorted(h.metadata.name for h in on_node))
        note = (
            f"node {node} has several host endpoints ({names}): which one the packet crosses "
            "depends on the node's routes, so their forward (applyOnForward, pre-DNAT, "
            "untracked) policy is not explained"
        )
        return None, note

    def holders(self, address: str) -> list[WorkloadEndpoint | HostEndpoint]:
        """The endpoints holding ``address`` (an endpoint's own /32 or /128, or expected IP)."""
        if self._by_address is None:
            index: dict[str, list[WorkloadEndpoint | HostEndpoint]] = {}
            for wep in self.workload_endpoints:
                for net in wep.spec.ip_networks or ():
                    index.setdefault(net.split("/", 1)[0], []).append(wep)
            for hep in self.host_endpoints:
                for ip in hep.spec.expected_i_ps or ():
                    index.setdefault(ip, []).append(hep)
            self._by_address = index
        return self._by_address.get(str(ipaddress.ip_address(address)), [])

    def _policy_index(self, namespace: str | None) -> tuple[list[_Entry], SelectorIndex[int, str]]:
        """The GlobalNetworkPolicies (``namespace`` None) or one namespace's NetworkPolicies
        (a NetworkPolicy selects only endpoints of its namespace) with their effective
        selectors (``policy_selector``, the ones the graph's index matches), in the graph's
        own ``SelectorIndex``; built once per cluster.  A policy whose selector does not parse
        is left out, as the graph treats it as deleted."""
        cached = self._indexes.get(namespace)
        if cached is not None:
            return cached
        entries: list[_Entry] = []
        for policy in self.policies:
            if isinstance(policy, NetworkPolicy):
                if (policy.metadata.namespace or "default") != namespace:
                    continue
            elif namespace is not None:
                continue
            try:
                entries.append((policy, policy_selector(policy)))
            except ValueError:
                continue
        index: SelectorIndex[int, str] = SelectorIndex(_ignore, _ignore)
        for number, (_, selector) in enumerate(entries):
            index.update_selector(number, selector)
        self._indexes[namespace] = (entries, index)
        return entries, index

    def policies_selecting(self, namespace: str | None, labels: dict[str, str]) -> list[_Entry]:
        """The policies whose selector matches an endpoint of ``namespace`` with ``labels``
        (the index evaluates only the selectors one of the labels could satisfy)."""
        found: list[_Entry] = []
        for scope in (None, namespace) if namespace else (None,):
            entries, index = self._policy_index(scope)
            index.update_item(_PROBE, labels)
            try:
                numbers = index.selectors_matching(_PROBE)
            finally:
                index.delete_item(_PROBE)
            found += [entries[number] for number in sorted(numbers)]
        return found

    def network_sets_holding(self, address: str) -> list[NetworkSet | GlobalNetworkSet]:
        return [s for s in self.network_sets if in_nets(address, s.spec.nets or ())]


@dataclass(frozen=True)
class End:
    """One end of the flow: a workload endpoint, a host endpoint, or an external address."""

    address: str
    endpoint: WorkloadEndpoint | HostEndpoint | None = None

    @property
    def label(self) -> str:
        if self.endpoint is None:
            return f"{self.address} (no endpoint: external)"
        return f"{endpoint_name(self.endpoint)} ({self.address})"

    @property
    def node(self) -> str | None:
        return None if self.endpoint is None else self.endpoint.spec.node or ""

    @property
    def is_workload(self) -> bool:
        return isinstance(self.endpoint, WorkloadEndpoint)


def endpoint_name(endpoint: WorkloadEndpoint | HostEndpoint) -> str:
    meta = endpoint.metadata
    if isinstance(endpoint, HostEndpoint):
        return f"{HOST_ENDPOINT_PREFIX}{meta.name}"
    return f"{meta.namespace}/{endpoint.spec.pod or meta.name}"


def _addresses(endpoint: WorkloadEndpoint | HostEndpoint) -> list[str]:
    if isinstance(endpoint, HostEndpoint):
        return [str(ipaddress.ip_address(ip)) for ip in endpoint.spec.expected_i_ps or ()]
    return [net.split("/", 1)[0] for net in endpoint.spec.ip_networks or ()]


def _named_end(text: str, endpoint: WorkloadEndpoint | HostEndpoint, family: int | None) -> End:
    addresses = _addresses(endpoint)
    if not addresses:
        what = "no expectedIPs" if isinstance(endpoint, HostEndpoint) else "no addresses yet"
        raise ExplainError(f"{text!r}: the endpoint has {what}")
    same = [a for a in addresses if ipaddress.ip_address(a).version == family]
    return End((same or addresses)[0], endpoint)


def resolve_end(cluster: Cluster, text: str, family: int | None = None) -> End:
    """``<namespace>/<pod>``, ``<namespace>/<workloadendpoint name>``,
    ``hostendpoint/<name>`` or an IP address (a workload's, else a host endpoint's expected
    IP, else external)."""
    try:
        address = str(ipaddress.ip_address(text))
    except ValueError:
        address = ""
    if address:
        holders = cluster.holders(address)
        for holder in holders:
            if isinstance(holder, WorkloadEndpoint):
                return End(address, holder)
        return End(address, holders[0]) if holders else End(address)
    if text.startswith(HOST_ENDPOINT_PREFIX):
        name = text[len(HOST_ENDPOINT_PREFIX) :]
        for hep in cluster.host_endpoints:
            if hep.metadata.name == name:
                return _named_end(text, hep, family)
        raise ExplainError(f"{text!r}: no HostEndpoint of that name")
    namespace, slash, name = text.partition("/")
    if not slash or not namespace or not name:
        raise ExplainError(
            f"{text!r}: expected <namespace>/<pod>, a WorkloadEndpoint, hostendpoint/<name> or an IP"
        )
    for wep in cluster.workload_endpoints:
        if wep.metadata.namespace == namespace and name in (wep.spec.pod, wep.metadata.name):
            return _named_end(text, wep, family)
    raise ExplainError(f"{text!r}: no pod or WorkloadEndpoint of that name in namespace")


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
) -> tuple[CalcGraph, list[_Entry]]:
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
    selecting: list[_Entry], tiers: Iterable[TierInfo], labels: dict[str, str]
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
    notes: list[str] = []
    same_node = src.node is not None and src.node == dst.node
    egress = ingress = forward_out = forward_in = None
    if isinstance(src.endpoint, WorkloadEndpoint):
        egress = explain_side(cluster, src.endpoint, packet, ingress=False)
    elif isinstance(src.endpoint, HostEndpoint):
        if same_node and not dst.is_workload:
            notes.append("both ends are on one node: local traffic (lo) is not policed")
            return Explanation(src, dst, packet, None, None, notes=tuple(notes))
        if not (same_node and dst.is_workload):
            egress = explain_host_side(cluster, src.endpoint, packet, "output")
    if isinstance(dst.endpoint, WorkloadEndpoint):
        if same_node and isinstance(src.endpoint, HostEndpoint):
            reason = "Felix's output chain accepts host-to-local-workload traffic before policy"
            trace = DirectionTrace(True, (), (), "allow", reason)
            stage = Stage("local", trace)
            name = endpoint_name(dst.endpoint)
            ingress = SideTrace(name, src.node or "", {}, trace, {}, "host-to-workload", (stage,))
        else:
            ingress = explain_side(cluster, dst.endpoint, packet, ingress=True)
    elif isinstance(dst.endpoint, HostEndpoint):
        if same_node and egress is not None and src.is_workload:
            stage = workload_to_host(egress.trace, cluster.config_for(dst.node or ""))
            ingress = SideTrace(
                endpoint_name(dst.endpoint), dst.node or "", {}, stage.trace, {},
                "workload-to-host", (stage,),
            )  # fmt: skip
        else:
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

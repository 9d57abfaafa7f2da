"""``calicoctl explain``'s world: the resources it reads (``Cluster``) and the flow's ends.

What it is: what Felix's syncer would deliver for the question (endpoints, policies, profiles,
tiers, network sets, nodes, each node's Felix settings), indexed for explain's look-ups — the
endpoints and network sets holding an address, a node's own addresses, the policies whose
effective selector (the graph's own ``SelectorIndex`` and ``policy_selector``) selects an
endpoint, the host endpoint a forwarded packet crosses — and the resolution of ``--from`` /
``--to`` into an ``End``.  What it is not: the computation (``explain``) or I/O.

Invariants: pure; an address resolves to the workload endpoint holding it, else the host
endpoint listing it in ``expectedIPs``, else the node it belongs to (no endpoint), else it is
external; the indexes are built once per ``Cluster``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pycalico.felix.calc.explain_host import NodeSettings
from pycalico.felix.calc.index import SelectorIndex
from pycalico.felix.calc.labels import policy_selector
from pycalico.felix.calc.verdicts import in_nets
from pycalico.model.endpoints import (
    GlobalNetworkSet,
    HostEndpoint,
    NetworkSet,
    Profile,
    WorkloadEndpoint,
)
from pycalico.model.node import Node
from pycalico.model.policy import GlobalNetworkPolicy, NetworkPolicy, Tier
from pycalico.model.selectors import Selector

HOST_ENDPOINT_PREFIX = "hostendpoint/"
NODE_PREFIX = "node/"

_PROBE = "explained endpoint"
PolicyEntry = tuple[NetworkPolicy | GlobalNetworkPolicy, Selector]


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
    # The nodes, for their own addresses (a pod to its own host is DefaultEndpointToHostAction,
    # whether or not a host endpoint holds the address).
    nodes: Sequence[Node] = ()
    # Each node's Felix settings (``RenderConfig``) from FelixConfiguration (``node.<name>``
    # over ``default``, merged and parsed by Felix's own config code: ``ctl.explain``); nodes
    # not listed use ``default_config``.  Required: explain has no defaults of its own.
    default_config: NodeSettings = field(kw_only=True)
    render_configs: Mapping[str, NodeSettings] = field(default_factory=dict, kw_only=True)
    _by_address: dict[str, list[WorkloadEndpoint | HostEndpoint]] | None = field(
        default=None, repr=False
    )
    _node_by_address: dict[str, tuple[str, str]] | None = field(default=None, repr=False)
    _indexes: dict[str | None, tuple[list[PolicyEntry], SelectorIndex[int, str]]] = field(
        default_factory=dict, repr=False
    )

    def config_for(self, node: str) -> NodeSettings:
        return self.render_configs.get(node, self.default_config)

    def path_host_endpoint(self, node: str) -> tuple[HostEndpoint | None, str]:
        """The host endpoint a packet forwarded to or from outside the node crosses, and a
        note when that is not known: the node's wildcard (``interfaceName: "*"``) one, or its
        only one (explain does not know the node's routes, so which interface of several)."""
        on_node = [h for h in self.host_endpoints if h.spec.node == node and enforced(h)]
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

    def node_holding(self, address: str) -> tuple[str, str]:
        """(node, interface) whose own address ``address`` is (BGP, tunnel, listed address,
        or an interface's, which names the interface), or ("", "")."""
        if self._node_by_address is None:
            index: dict[str, tuple[str, str]] = {}
            for node in self.nodes:
                name = node.metadata.name or ""
                for interface in node.spec.interfaces or ():
                    for text in interface.addresses or ():
                        if (ip := _ip(text)) is not None:
                            index.setdefault(ip, (name, interface.name or ""))
                for ip in node_addresses(node):
                    index.setdefault(ip, (name, ""))
            self._node_by_address = index
        return self._node_by_address.get(str(ipaddress.ip_address(address)), ("", ""))

    def interface_host_endpoint(self, node: str, interface: str) -> HostEndpoint | None:
        """The host endpoint Felix applies to ``interface`` of ``node``: the one naming it,
        else the node's wildcard one (an unknown interface: the wildcard one)."""
        on_node = [h for h in self.host_endpoints if h.spec.node == node]
        if interface:
            for hep in on_node:
                if hep.spec.interface_name == interface:
                    return hep
        return next((h for h in on_node if h.spec.interface_name == "*"), None)

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

    def _policy_index(
        self, namespace: str | None
    ) -> tuple[list[PolicyEntry], SelectorIndex[int, str]]:
        """The GlobalNetworkPolicies (``namespace`` None) or one namespace's NetworkPolicies
        (a NetworkPolicy selects only endpoints of its namespace) with their effective
        selectors (``policy_selector``, the ones the graph's index matches), in the graph's
        own ``SelectorIndex``; built once per cluster.  A policy whose selector does not parse
        is left out, as the graph treats it as deleted."""
        cached = self._indexes.get(namespace)
        if cached is not None:
            return cached
        entries: list[PolicyEntry] = []
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

    def policies_selecting(
        self, namespace: str | None, labels: dict[str, str]
    ) -> list[PolicyEntry]:
        """The policies whose selector matches an endpoint of ``namespace`` with ``labels``
        (the index evaluates only the selectors one of the labels could satisfy)."""
        found: list[PolicyEntry] = []
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


def node_addresses(node: Node) -> list[str]:
    """A node's own addresses, as its Node resource lists them (BGP first)."""
    spec = node.spec
    bgp = spec.bgp
    texts = [
        *((bgp.ipv4_address, bgp.ipv6_address, bgp.ipv4_ipip_tunnel_addr) if bgp else ()),
        spec.ipv4_vxlan_tunnel_addr,
        spec.ipv6_vxlan_tunnel_addr,
        *(a.address for a in spec.addresses or ()),
    ]
    out: list[str] = []
    for text in texts:
        address = _ip(text) if text else None
        if address is not None and address not in out:
            out.append(address)
    return out


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_interface(text).ip)
    except ValueError:
        return None  # a Node's addresses were validated on write; a name is not an address


def enforced(endpoint: HostEndpoint) -> bool:
    """Does this Felix enforce the host endpoint?  Its dataplane binds host endpoints to
    interfaces by ``interfaceName`` (a name or ``*``) only: one with expectedIPs alone is
    not bound to any interface (Calico's Felix would look the addresses up)."""
    return bool(endpoint.spec.interface_name)


@dataclass(frozen=True)
class End:
    """One end of the flow: a workload endpoint, a host endpoint, a node's own address with no
    host endpoint (``host_node``), or an external address."""

    address: str
    endpoint: WorkloadEndpoint | HostEndpoint | None = None
    host_node: str = ""
    note: str = ""  # how the end was resolved, when that is worth saying

    @property
    def label(self) -> str:
        if self.endpoint is None:
            if self.host_node:
                return f"{self.address} (node {self.host_node}, no host endpoint)"
            return f"{self.address} (no endpoint: external)"
        return f"{endpoint_name(self.endpoint)} ({self.address})"

    @property
    def node(self) -> str | None:
        if self.endpoint is None:
            return self.host_node or None
        return self.endpoint.spec.node or ""

    @property
    def is_workload(self) -> bool:
        return isinstance(self.endpoint, WorkloadEndpoint)

    @property
    def is_host(self) -> bool:
        """A host endpoint, or a node's own address without one."""
        return isinstance(self.endpoint, HostEndpoint) or bool(self.host_node)


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
    address = (same or addresses)[0]
    if isinstance(endpoint, HostEndpoint) and not enforced(endpoint):
        return End(address, host_node=endpoint.spec.node or "", note=_unbound(endpoint))
    return End(address, endpoint)


def _unbound(endpoint: HostEndpoint) -> str:
    return (
        f"HostEndpoint {endpoint.metadata.name} has no interfaceName: Felix here binds host "
        "endpoints to interfaces by name only, so it enforces nothing for it"
    )


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
        heps = [h for h in holders if isinstance(h, HostEndpoint)]
        for hep in heps:
            if enforced(hep):
                return End(address, hep)
        owner, interface = cluster.node_holding(address)
        owner = owner or (heps[0].spec.node or "" if heps else "")
        note = _unbound(heps[0]) if heps else ""
        if owner:
            covering = cluster.interface_host_endpoint(owner, interface)
            if covering is not None:
                where = f"interface {interface}" if interface else "an interface"
                name = covering.metadata.name
                note = f"{address} is node {owner}'s, on {where}: host endpoint {name}"
                return End(address, covering, note=note)
        return End(address, host_node=owner, note=note)
    if text.startswith(NODE_PREFIX):
        name = text[len(NODE_PREFIX) :]
        for node in cluster.nodes:
            if node.metadata.name == name:
                addresses = node_addresses(node)
                if not addresses:
                    raise ExplainError(f"{text!r}: the Node lists no address")
                same = [a for a in addresses if ipaddress.ip_address(a).version == family]
                return resolve_end(cluster, (same or addresses)[0], family)
        raise ExplainError(f"{text!r}: no Node of that name")
    if text.startswith(HOST_ENDPOINT_PREFIX):
        name = text[len(HOST_ENDPOINT_PREFIX) :]
        for hep in cluster.host_endpoints:
            if hep.metadata.name == name:
                return _named_end(text, hep, family)
        raise ExplainError(f"{text!r}: no HostEndpoint of that name")
    namespace, slash, name = text.partition("/")
    if not slash or not namespace or not name:
        raise ExplainError(
            f"{text!r}: expected <namespace>/<pod>, a WorkloadEndpoint, hostendpoint/<name>, "
            "node/<name> or an IP"
        )
    for wep in cluster.workload_endpoints:
        if wep.metadata.namespace == namespace and name in (wep.spec.pod, wep.metadata.name):
            return _named_end(text, wep, family)
    raise ExplainError(f"{text!r}: no pod or WorkloadEndpoint of that name in namespace")

"""Cluster and node kinds: Node, ClusterInformation, FelixConfiguration,
KubeControllersConfiguration.

What it is: their wire shape and checks.  What it is not: node registration (``pycalico.node``)
or how Felix merges its configuration sources (``pycalico.felix``).

Invariants:

* FelixConfiguration has about 200 fields in Calico.  The ones in reference §3.7 are typed and
  checked here; any other ``spec`` field is kept as written (``extra="allow"``), so a Calico user's
  manifest loads, round-trips and reaches Felix unchanged.
* ClusterInformation and KubeControllersConfiguration are singletons named ``default``.
* Calico applies none of these kinds' documented defaults on write (Felix, confd and
  kube-controllers apply them on read), so neither does ``with_defaults``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from pycalico.model.bgp import LogSeverity
from pycalico.model.fields import (
    ASNumber,
    Duration,
    Port,
    PortNumber,
    cidr_problem,
    ip_problem,
    mac_problem,
    name_problem,
    network_problem,
    selector_problem,
)
from pycalico.model.meta import CalicoModel
from pycalico.model.validation import Checked, CheckedResource, Issue


def _singleton_name_issue(kind: str, name: str) -> str | None:
    return None if name == "default" else f"a {kind} must be named 'default'"


# --- Node -------------------------------------------------------------------------------------


class NodeBGPSpec(Checked):
    as_number: ASNumber | None = None
    ipv4_address: str | None = Field(default=None, alias="ipv4Address")
    ipv6_address: str | None = Field(default=None, alias="ipv6Address")
    ipv4_ipip_tunnel_addr: str | None = Field(default=None, alias="ipv4IPIPTunnelAddr")
    route_reflector_cluster_id: str | None = Field(default=None, alias="routeReflectorClusterID")

    def issues(self, path: str) -> Iterator[Issue]:
        if not any(getattr(self, field) is not None for field in type(self).model_fields):
            yield path, "must not be empty: leave bgp out instead"
        checks = (
            ("ipv4_address", "ipv4Address", cidr_problem, 4),
            ("ipv6_address", "ipv6Address", cidr_problem, 6),
            ("ipv4_ipip_tunnel_addr", "ipv4IPIPTunnelAddr", ip_problem, 4),
            ("route_reflector_cluster_id", "routeReflectorClusterID", ip_problem, 4),
        )
        for field, wire, check, version in checks:
            value = getattr(self, field)
            if value:
                problem = check(value, version)
                if problem:
                    yield f"{path}.{wire}", problem


class OrchRef(Checked):
    node_name: str | None = None
    orchestrator: str


class NodeAddress(Checked):
    address: str
    type: Literal["CalicoNodeIP", "InternalIP", "ExternalIP"] | None = None

    def issues(self, path: str) -> Iterator[Issue]:
        problem = cidr_problem(self.address)
        if problem:
            yield f"{path}.address", problem


class NodeWireguardSpec(Checked):
    interface_ipv4_address: str | None = Field(default=None, alias="interfaceIPv4Address")
    interface_ipv6_address: str | None = Field(default=None, alias="interfaceIPv6Address")


class NodeInterface(Checked):
    name: str | None = None
    addresses: list[str] | None = None


class NodeSpec(Checked):
    bgp: NodeBGPSpec | None = None
    ipv4_vxlan_tunnel_addr: str | None = Field(default=None, alias="ipv4VXLANTunnelAddr")
    vxlan_tunnel_mac_addr: str | None = Field(default=None, alias="vxlanTunnelMACAddr")
    ipv6_vxlan_tunnel_addr: str | None = Field(default=None, alias="ipv6VXLANTunnelAddr")
    vxlan_tunnel_mac_addr_v6: str | None = Field(default=None, alias="vxlanTunnelMACAddrV6")
    orch_refs: list[OrchRef] | None = None
    wireguard: NodeWireguardSpec | None = None
    addresses: list[NodeAddress] | None = None
    interfaces: list[NodeInterface] | None = None

    def issues(self, path: str) -> Iterator[Issue]:
        if self.bgp is not None:
            yield from self.bgp.issues(f"{path}.bgp")
        for field, wire, version in (
            ("ipv4_vxlan_tunnel_addr", "ipv4VXLANTunnelAddr", 4),
            ("ipv6_vxlan_tunnel_addr", "ipv6VXLANTunnelAddr", 6),
        ):
            value = getattr(self, field)
            if value:
                problem = ip_problem(value, version)
                if problem:
                    yield f"{path}.{wire}", problem
        for field, wire in (
            ("vxlan_tunnel_mac_addr", "vxlanTunnelMACAddr"),
            ("vxlan_tunnel_mac_addr_v6", "vxlanTunnelMACAddrV6"),
        ):
            value = getattr(self, field)
            if value:
                problem = mac_problem(value)
                if problem:
                    yield f"{path}.{wire}", problem
        for index, address in enumerate(self.addresses or []):
            yield from address.issues(f"{path}.addresses[{index}]")
        if self.wireguard is not None:
            for field, wire, version in (
                ("interface_ipv4_address", "interfaceIPv4Address", 4),
                ("interface_ipv6_address", "interfaceIPv6Address", 6),
            ):
                value = getattr(self.wireguard, field)
                if value:
                    problem = ip_problem(value, version)
                    if problem:
                        yield f"{path}.wireguard.{wire}", problem


class NodeStatus(Checked):
    wireguard_public_key: str | None = None
    wireguard_public_key_v6: str | None = Field(default=None, alias="wireguardPublicKeyV6")
    pod_cidrs: list[str] | None = Field(default=None, alias="podCIDRs")


class Node(CheckedResource):
    KIND: ClassVar[str] = "Node"
    PLURAL: ClassVar[str] = "nodes"
    NAMESPACED: ClassVar[bool] = False

    kind: str = "Node"
    spec: NodeSpec = Field(default_factory=NodeSpec)
    status: NodeStatus | None = None

    def spec_issues(self) -> Iterator[Issue]:
        yield from self.spec.issues("spec")


# --- ClusterInformation -----------------------------------------------------------------------


class ClusterInformationSpec(Checked):
    cluster_guid: str | None = Field(default=None, alias="clusterGUID")
    cluster_type: str | None = None
    calico_version: str | None = None
    datastore_ready: bool | None = None
    variant: str | None = None


class ClusterInformation(CheckedResource):
    KIND: ClassVar[str] = "ClusterInformation"
    PLURAL: ClassVar[str] = "clusterinformations"
    NAMESPACED: ClassVar[bool] = False

    kind: str = "ClusterInformation"
    spec: ClusterInformationSpec = Field(default_factory=ClusterInformationSpec)

    def name_issue(self) -> str | None:
        return _singleton_name_issue(self.KIND, self.metadata.name)


# --- FelixConfiguration -----------------------------------------------------------------------


class ProtoPort(Checked):
    protocol: Literal["TCP", "UDP", "SCTP"]
    port: int = Field(ge=0, le=65535)
    net: str | None = None

    def issues(self, path: str) -> Iterator[Issue]:
        if self.net:
            problem = cidr_problem(self.net)
            if problem:
                yield f"{path}.net", problem


class FelixConfigurationSpec(Checked):
    """The §3.7 fields, typed; every other Felix field is accepted and kept as written."""

    model_config = ConfigDict(extra="allow")

    ipv6_support: bool | None = Field(default=None, alias="ipv6Support")
    route_refresh_interval: Duration | None = None
    iptables_refresh_interval: Duration | None = None
    ipsets_refresh_interval: Duration | None = None
    max_ipset_size: int | None = Field(default=None, ge=0)
    iptables_backend: Literal["Legacy", "NFT", "Auto"] | None = None
    interface_prefix: str | None = None
    chain_insert_mode: str | None = None
    default_endpoint_to_host_action: Literal["Drop", "Accept", "Return"] | None = None
    iptables_filter_allow_action: Literal["Accept", "Return"] | None = None
    iptables_filter_deny_action: Literal["Drop", "Reject"] | None = None
    log_prefix: str | None = None
    log_file_path: str | None = None
    log_severity_file: LogSeverity | None = None
    log_severity_screen: LogSeverity | None = None
    log_severity_sys: LogSeverity | None = None
    ipip_enabled: bool | None = Field(default=None, alias="ipipEnabled")
    ipip_mtu: int | None = Field(default=None, alias="ipipMTU", ge=0)
    vxlan_enabled: bool | None = None
    vxlan_mtu: int | None = Field(default=None, alias="vxlanMTU", ge=0)
    vxlan_mtu_v6: int | None = Field(default=None, alias="vxlanMTUV6", ge=0)
    vxlan_port: PortNumber | None = None
    vxlan_vni: int | None = Field(default=None, alias="vxlanVNI", ge=0, le=2**24 - 1)
    reporting_interval: Duration | None = None
    reporting_ttl: Duration | None = Field(default=None, alias="reportingTTL")
    endpoint_reporting_enabled: bool | None = None
    iptables_mark_mask: int | None = Field(default=None, ge=0, le=0xFFFFFFFF)
    disable_conntrack_invalid_check: bool | None = None
    health_enabled: bool | None = None
    health_host: str | None = None
    health_port: PortNumber | None = None
    prometheus_metrics_enabled: bool | None = None
    prometheus_metrics_port: PortNumber | None = None
    failsafe_inbound_host_ports: list[ProtoPort] | None = None
    failsafe_outbound_host_ports: list[ProtoPort] | None = None
    kube_node_port_ranges: list[Port] | None = None
    nat_port_range: Port | None = Field(default=None, alias="natPortRange")
    nat_outgoing_address: str | None = None
    usage_reporting_enabled: bool | None = None
    bpf_enabled: bool | None = None
    route_source: Literal["WorkloadIPs", "CalicoIPAM"] | None = None
    service_loop_prevention: Literal["Drop", "Reject", "Disabled"] | None = None
    wireguard_enabled: bool | None = None
    nftables_mode: Literal["Enabled", "Disabled", "Auto"] | None = Field(
        default=None, alias="nftablesMode"
    )
    program_cluster_routes: str | None = None
    remove_external_routes: bool | None = None
    device_route_protocol: int | None = Field(default=None, ge=0, le=255)
    device_route_source_address: str | None = None
    external_nodes_cidr_list: list[str] | None = Field(default=None, alias="externalNodesCIDRList")

    def issues(self, path: str) -> Iterator[Issue]:
        for field in ("failsafeInboundHostPorts", "failsafeOutboundHostPorts"):
            attribute = (
                "failsafe_inbound_host_ports"
                if "Inbound" in field
                else "failsafe_outbound_host_ports"
            )
            for index, item in enumerate(getattr(self, attribute) or []):
                yield from item.issues(f"{path}.{field}[{index}]")
        ranges = self.kube_node_port_ranges or []
        if len(ranges) > 7:
            yield f"{path}.kubeNodePortRanges", "at most 7 ranges are allowed"
        for index, value in enumerate(ranges):
            if isinstance(value, str) and ":" not in value:
                yield (
                    f"{path}.kubeNodePortRanges[{index}]",
                    "must be a number or a range, not a port name",
                )
        if isinstance(self.nat_port_range, str) and ":" not in self.nat_port_range:
            yield f"{path}.natPortRange", "must be a number or a range, not a port name"
        for field, wire in (
            ("nat_outgoing_address", "natOutgoingAddress"),
            ("device_route_source_address", "deviceRouteSourceAddress"),
        ):
            value = getattr(self, field)
            if value:
                problem = ip_problem(value, 4)
                if problem:
                    yield f"{path}.{wire}", problem
        for index, cidr in enumerate(self.external_nodes_cidr_list or []):
            problem = cidr_problem(cidr, 4)
            if problem:
                yield f"{path}.externalNodesCIDRList[{index}]", problem

    @property
    def extra_fields(self) -> dict[str, Any]:
        """Fields this model does not type, as written (wire names)."""
        return dict(self.model_extra or {})


class FelixConfiguration(CheckedResource):
    """FelixConfiguration ``default`` (global) or ``node.<nodename>`` (one node)."""

    KIND: ClassVar[str] = "FelixConfiguration"
    PLURAL: ClassVar[str] = "felixconfigurations"
    NAMESPACED: ClassVar[bool] = False

    kind: str = "FelixConfiguration"
    spec: FelixConfigurationSpec = Field(default_factory=FelixConfigurationSpec)

    def spec_issues(self) -> Iterator[Issue]:
        yield from self.spec.issues("spec")


# --- KubeControllersConfiguration -------------------------------------------------------------

ControllerMode = Literal["Enabled", "Disabled"]


class ReconcilerConfig(Checked):
    reconciler_period: Duration | None = None


class HostEndpointTemplate(Checked):
    generate_name: str | None = None
    interface_cidrs: list[str] | None = Field(default=None, alias="interfaceCIDRs")
    interface_pattern: str | None = None
    labels: dict[str, str] | None = None
    node_selector: str | None = None

    def issues(self, path: str) -> Iterator[Issue]:
        if self.generate_name:
            problem = name_problem(self.generate_name)
            if problem:
                yield f"{path}.generateName", problem
        for index, cidr in enumerate(self.interface_cidrs or []):
            problem = cidr_problem(cidr)
            if problem:
                yield f"{path}.interfaceCIDRs[{index}]", problem
        if self.node_selector:
            problem = selector_problem(self.node_selector)
            if problem:
                yield f"{path}.nodeSelector", problem


class AutoHostEndpointConfig(Checked):
    auto_create: ControllerMode | None = None
    create_default_host_endpoint: ControllerMode | None = None
    templates: list[HostEndpointTemplate] | None = None


class NodeControllerConfig(Checked):
    reconciler_period: Duration | None = None
    sync_labels: ControllerMode | None = None
    host_endpoint: AutoHostEndpointConfig | None = None
    leak_grace_period: Duration | None = None


class LoadBalancerControllerConfig(Checked):
    assign_i_ps: Literal["AllServices", "RequestedServicesOnly"] | None = Field(
        default=None, alias="assignIPs"
    )


class MigrationControllerConfig(Checked):
    enabled: ControllerMode | None = None


class ControllersConfig(Checked):
    node: NodeControllerConfig | None = None
    policy: ReconcilerConfig | None = None
    workload_endpoint: ReconcilerConfig | None = None
    service_account: ReconcilerConfig | None = None
    namespace: ReconcilerConfig | None = None
    load_balancer: LoadBalancerControllerConfig | None = None
    policy_migration: MigrationControllerConfig | None = None


class KubeControllersConfigurationSpec(Checked):
    ALWAYS_EMIT: ClassVar[frozenset[str]] = frozenset({"controllers"})

    log_severity_screen: (
        Literal["None", "Debug", "Info", "Warning", "Error", "Fatal", "Panic"] | None
    ) = None
    health_checks: ControllerMode | None = None
    etcd_v3_compaction_period: Duration | None = Field(default=None, alias="etcdV3CompactionPeriod")
    prometheus_metrics_port: int | None = Field(default=None, ge=0, le=65535)
    controllers: ControllersConfig = Field(default_factory=ControllersConfig)
    debug_profile_port: int | None = Field(default=None, ge=0, le=65535)

    def issues(self, path: str) -> Iterator[Issue]:
        node = self.controllers.node
        if node is not None and node.host_endpoint is not None:
            for index, template in enumerate(node.host_endpoint.templates or []):
                yield from template.issues(
                    f"{path}.controllers.node.hostEndpoint.templates[{index}]"
                )


class KubeControllersConfiguration(CheckedResource):
    KIND: ClassVar[str] = "KubeControllersConfiguration"
    PLURAL: ClassVar[str] = "kubecontrollersconfigurations"
    NAMESPACED: ClassVar[bool] = False

    kind: str = "KubeControllersConfiguration"
    spec: KubeControllersConfigurationSpec = Field(default_factory=KubeControllersConfigurationSpec)
    status: dict[str, Any] | None = None

    def name_issue(self) -> str | None:
        return _singleton_name_issue(self.KIND, self.metadata.name)

    def spec_issues(self) -> Iterator[Issue]:
        yield from self.spec.issues("spec")


__all__ = [
    "CalicoModel",
    "ClusterInformation",
    "FelixConfiguration",
    "KubeControllersConfiguration",
    "Node",
    "network_problem",
]

"""Cluster and node kinds: Node, ClusterInformation, FelixConfiguration,
KubeControllersConfiguration.

What it is: their wire shape and checks.  What it is not: node registration (``pycalico.node``)
or how Felix merges its configuration sources (``pycalico.felix``).

Invariants:

* FelixConfiguration has about 200 fields in Calico.  The ones in reference §3.7 and those the
  nftables dataplane reads are typed and checked here; any other ``spec`` field is kept as written
  (``extra="allow"``), so a Calico user's manifest loads, round-trips and reaches Felix unchanged.
* ClusterInformation and KubeControllersConfiguration are singletons named ``default``.
* Calico applies none of these kinds' documented defaults on write (Felix, confd and
  kube-controllers apply them on read), so neither does ``with_defaults``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from pycalico.model.bgp import LogSeverity
from pycalico.model.felix_checks import felix_field_issues
from pycalico.model.fields import (
    ASNumber,
    Duration,
    Port,
    PortNumber,
    any_case,
    cidr_problem,
    interface_problem,
    ip_problem,
    mac_problem,
    name_problem,
    qualified_name_problem,
    selector_problem,
)
from pycalico.model.validation import Checked, CheckedResource, Issue, list_issues


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
    # Calico's ``orchestrator`` has no omitempty: "" is printed, so a stored "" reads back.
    ALWAYS_EMIT: ClassVar[frozenset[str]] = frozenset({"orchestrator"})

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

    @property
    def datastore_locked(self) -> bool:
        """Whether the datastore is locked for maintenance (``calicoctl datastore migrate
        lock``): Calico's one rule, used by the CNI plugin, Felix and ``calicoctl ipam``.  Only
        an explicit ``datastoreReady: false`` locks; unset means ready, as does having no
        ClusterInformation at all (callers treat a missing one as unlocked)."""
        return self.spec.datastore_ready is False

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


class HealthTimeoutOverride(Checked):
    name: str
    timeout: Duration

    def issues(self, path: str) -> Iterator[Issue]:
        if not _HEALTH_NAME_RE.match(self.name):
            yield f"{path}.name", "may only hold letters, digits, '_', '-' and spaces"
        if self.timeout.startswith("-"):
            yield f"{path}.timeout", "must not be negative"


_HEALTH_NAME_RE = re.compile(r"^[a-zA-Z0-9_ -]+$")


class RouteTableRange(Checked):
    min: int
    max: int


AcceptReturn = Annotated[Literal["Accept", "Return"], any_case("Accept", "Return")]
DropReject = Annotated[Literal["Drop", "Reject"], any_case("Drop", "Reject")]
EnabledDisabled = Literal["Enabled", "Disabled"]


class FelixConfigurationSpec(Checked):
    """Felix's configuration, in Calico's field order.

    The fields of reference §3.7 and those the nftables dataplane reads are typed and checked;
    Felix has about 200 more (BPF, flow logs, Windows, ...), which are accepted and kept exactly as
    written (``extra="allow"``, wire names in ``extra_fields``) so a Calico user's manifest loads,
    round-trips and reaches Felix unchanged.  ``bpfLogLevel`` is printed even when empty, because
    Calico's field has no ``omitempty``.
    """

    model_config = ConfigDict(extra="allow")
    ALWAYS_EMIT: ClassVar[frozenset[str]] = frozenset({"bpf_log_level"})

    use_internal_dataplane_driver: bool | None = None
    dataplane_driver: str | None = None
    ipv6_support: bool | None = Field(default=None, alias="ipv6Support")
    route_refresh_interval: Duration | None = None
    interface_refresh_interval: Duration | None = None
    iptables_refresh_interval: Duration | None = None
    iptables_post_write_check_interval: Duration | None = None
    iptables_lock_file_path: str | None = None
    feature_detect_override: str | None = None
    feature_gates: str | None = None
    ipsets_refresh_interval: Duration | None = None
    max_ipset_size: int | None = Field(default=None, ge=0)
    iptables_backend: (
        Annotated[Literal["Legacy", "NFT", "Auto"], any_case("Legacy", "NFT", "Auto")] | None
    ) = None
    netlink_timeout: Duration | None = None
    metadata_addr: str | None = None
    metadata_port: int | None = None
    openstack_region: str | None = None
    interface_prefix: str | None = None
    interface_exclude: str | None = None
    chain_insert_mode: str | None = None
    default_endpoint_to_host_action: (
        Annotated[Literal["Drop", "Accept", "Return"], any_case("Drop", "Accept", "Return")] | None
    ) = None
    iptables_filter_allow_action: AcceptReturn | None = None
    iptables_mangle_allow_action: AcceptReturn | None = None
    iptables_filter_deny_action: DropReject | None = None
    log_prefix: str | None = None
    log_file_path: str | None = None
    log_severity_file: LogSeverity | None = None
    log_severity_screen: LogSeverity | None = None
    log_severity_sys: LogSeverity | None = None
    log_debug_filename_regex: str | None = None
    ipip_enabled: bool | None = Field(default=None, alias="ipipEnabled")
    ipip_mtu: int | None = Field(default=None, alias="ipipMTU", ge=0)
    vxlan_enabled: bool | None = None
    vxlan_mtu: int | None = Field(default=None, alias="vxlanMTU", ge=0)
    vxlan_mtu_v6: int | None = Field(default=None, alias="vxlanMTUV6", ge=0)
    vxlan_port: PortNumber | None = None
    vxlan_vni: int | None = Field(default=None, alias="vxlanVNI", ge=0, le=2**24 - 1)
    allow_vxlan_packets_from_workloads: bool | None = Field(
        default=None, alias="allowVXLANPacketsFromWorkloads"
    )
    allow_ipip_packets_from_workloads: bool | None = Field(
        default=None, alias="allowIPIPPacketsFromWorkloads"
    )
    reporting_interval: Duration | None = None
    reporting_ttl: Duration | None = Field(default=None, alias="reportingTTL")
    endpoint_reporting_enabled: bool | None = None
    endpoint_reporting_delay: Duration | None = None
    endpoint_status_path_prefix: str | None = None
    iptables_mark_mask: int | None = Field(default=None, ge=0, le=0xFFFFFFFF)
    disable_conntrack_invalid_check: bool | None = None
    health_enabled: bool | None = None
    health_host: str | None = None
    health_port: PortNumber | None = None
    health_timeout_overrides: list[HealthTimeoutOverride] | None = None
    prometheus_metrics_enabled: bool | None = None
    prometheus_metrics_host: str | None = None
    prometheus_metrics_port: PortNumber | None = None
    prometheus_go_metrics_enabled: bool | None = None
    prometheus_process_metrics_enabled: bool | None = None
    failsafe_inbound_host_ports: list[ProtoPort] | None = None
    failsafe_outbound_host_ports: list[ProtoPort] | None = None
    kube_node_port_ranges: list[Port] | None = None
    usage_reporting_enabled: bool | None = None
    usage_reporting_initial_delay: Duration | None = None
    usage_reporting_interval: Duration | None = None
    nat_port_range: Port | None = Field(default=None, alias="natPortRange")
    nat_outgoing_address: str | None = None
    nat_outgoing_exclusions: Literal["IPPoolsOnly", "IPPoolsAndHostIPs"] | None = None
    device_route_source_address: str | None = None
    device_route_source_address_ipv6: str | None = Field(
        default=None, alias="deviceRouteSourceAddressIPv6"
    )
    device_route_protocol: int | None = Field(default=None, ge=0, le=255)
    remove_external_routes: bool | None = None
    program_cluster_routes: str | None = None
    ip_forwarding: EnabledDisabled | None = Field(default=None, alias="ipForwarding")
    # Calico's JSON name for ExternalNodesCIDRList is "externalNodesList".
    external_nodes_cidr_list: list[str] | None = Field(default=None, alias="externalNodesList")
    nftables_mode: Literal["Enabled", "Disabled", "Auto"] | None = Field(
        default=None, alias="nftablesMode"
    )
    nftables_flow_table_offload: Literal["Enabled", "Disabled"] | None = Field(
        default=None, alias="nftablesFlowTableOffload"
    )
    nftables_refresh_interval: Duration | None = Field(
        default=None, alias="nftablesRefreshInterval"
    )
    nftables_filter_allow_action: AcceptReturn | None = Field(
        default=None, alias="nftablesFilterAllowAction"
    )
    nftables_mangle_allow_action: AcceptReturn | None = Field(
        default=None, alias="nftablesMangleAllowAction"
    )
    nftables_filter_deny_action: DropReject | None = Field(
        default=None, alias="nftablesFilterDenyAction"
    )
    nftables_mark_mask: int | None = Field(
        default=None, alias="nftablesMarkMask", ge=0, le=0xFFFFFFFF
    )
    bpf_enabled: bool | None = None
    bpf_log_level: Annotated[
        Literal["", "Off", "Info", "Debug"], any_case("Off", "Info", "Debug")
    ] = ""
    route_source: (
        Annotated[Literal["WorkloadIPs", "CalicoIPAM"], any_case("WorkloadIPs", "CalicoIPAM")]
        | None
    ) = None
    route_table_ranges: list[RouteTableRange] | None = None
    route_table_range: RouteTableRange | None = None
    route_sync_disabled: bool | None = None
    wireguard_enabled: bool | None = None
    wireguard_enabled_v6: bool | None = Field(default=None, alias="wireguardEnabledV6")
    wireguard_listening_port: PortNumber | None = None
    wireguard_interface_name: str | None = None
    wireguard_mtu: int | None = Field(default=None, alias="wireguardMTU", ge=0)
    service_loop_prevention: (
        Annotated[Literal["Drop", "Reject", "Disabled"], any_case("Drop", "Reject", "Disabled")]
        | None
    ) = None
    workload_source_spoofing: (
        Annotated[Literal["Disabled", "Any"], any_case("Disabled", "Any")] | None
    ) = None
    mtu_iface_pattern: str | None = Field(default=None, alias="mtuIfacePattern")
    floating_i_ps: EnabledDisabled | None = Field(default=None, alias="floatingIPs")
    require_mtu_file: bool | None = Field(default=None, alias="requireMTUFile")

    def issues(self, path: str) -> Iterator[Issue]:
        for field, attribute in (
            ("failsafeInboundHostPorts", "failsafe_inbound_host_ports"),
            ("failsafeOutboundHostPorts", "failsafe_outbound_host_ports"),
        ):
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
        for field, wire, version in (
            ("nat_outgoing_address", "natOutgoingAddress", 4),
            ("device_route_source_address", "deviceRouteSourceAddress", 4),
            ("device_route_source_address_ipv6", "deviceRouteSourceAddressIPv6", 6),
        ):
            value = getattr(self, field)
            if value:
                problem = ip_problem(value, version)
                if problem:
                    yield f"{path}.{wire}", problem
        for index, cidr in enumerate(self.external_nodes_cidr_list or []):
            problem = cidr_problem(cidr, 4)
            if problem:
                yield f"{path}.externalNodesList[{index}]", problem
        if self.route_table_range is not None:
            if self.route_table_ranges is not None:
                yield f"{path}.routeTableRange", "cannot be set together with routeTableRanges"
            low, high = self.route_table_range.min, self.route_table_range.max
            if not 1 <= low <= high <= 250:
                yield f"{path}.routeTableRange", "must be a range of table indices within 1-250"
        tables = sum(r.max - r.min + 1 for r in self.route_table_ranges or [])
        if tables > _MAX_DESIGNATED_TABLES:
            yield (
                f"{path}.routeTableRanges",
                f"targets {tables} tables: at most {_MAX_DESIGNATED_TABLES} are allowed",
            )
        for index, table_range in enumerate(self.route_table_ranges or []):
            if not 1 <= table_range.min <= table_range.max <= 0xFFFFFFFF:
                yield (
                    f"{path}.routeTableRanges[{index}]",
                    "min must be at least 1 and no greater than max",
                )
        for field, wire in (
            ("health_host", "healthHost"),
            ("prometheus_metrics_host", "prometheusMetricsHost"),
        ):
            value = getattr(self, field)
            if value and not _HOST_RE.match(value):
                yield f"{path}.{wire}", f"{value!r} is not an address or host name"
        if self.wireguard_interface_name:
            problem = interface_problem(self.wireguard_interface_name)
            if problem:
                yield f"{path}.wireguardInterfaceName", problem
        yield from list_issues(path, "healthTimeoutOverrides", self.health_timeout_overrides)
        yield from felix_field_issues(self.model_dump(by_alias=True, exclude_none=True), path)

    @property
    def extra_fields(self) -> dict[str, Any]:
        """Fields this model does not type, as written (wire names)."""
        return dict(self.model_extra or {})


_HOST_RE = re.compile(r"^[a-zA-Z0-9:._+-]{1,64}$")
_MAX_DESIGNATED_TABLES = 0xFFFF  # Calico caps the tables routeTableRanges may designate


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
    annotations: dict[str, str] | None = None
    node_selector: str | None = None

    def issues(self, path: str) -> Iterator[Issue]:
        for key in self.annotations or {}:
            problem = qualified_name_problem(key.lower())
            if problem:
                yield f"{path}.annotations", problem
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

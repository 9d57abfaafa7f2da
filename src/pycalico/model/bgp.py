"""BGP kinds: BGPConfiguration (``default`` = global, ``node.<name>`` = per node) and BGPPeer.

What it is: their wire shape and the checks of Calico's validator.  What it is not: how confd turns
them into BIRD configuration (``pycalico.bgp``); their run-time defaults (AS 64512, mesh on, port
179, restart time 120s) are applied by the reader, not stored, exactly as Calico does.

Invariants:

* AS numbers are stored as 32-bit integers (AS-dot input "1.10" is accepted and converted).
* A BGPPeer names its peer by ``peerIP`` or by ``peerSelector`` (the AS comes from the selected
  nodes, so ``asNumber`` must be empty), or peers with local workloads by
  ``localWorkloadSelector`` (``asNumber`` required); ``node`` and ``nodeSelector`` are exclusive
  (neither = a global peer for every node).  As in Calico 3.32, ``asNumber`` is not required
  with ``peerIP`` (a peer that is a Calico node has that node's AS) and a peer naming neither
  is accepted.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from pycalico.model.fields import (
    ASNumber,
    Duration,
    PortNumber,
    any_case,
    ip_problem,
    name_problem,
    network_problem,
    selector_problem,
    split_ip_port,
)
from pycalico.model.validation import Checked, CheckedResource, Issue, child_issues

LogSeverity = Annotated[
    Literal["Trace", "Debug", "Info", "Warning", "Error", "Fatal"],
    any_case("Trace", "Debug", "Info", "Warning", "Error", "Fatal"),
]
_IGNORED_INTERFACE_RE = re.compile("^[a-zA-Z0-9_.*-]{1,15}$")


class SecretKeyRef(Checked):
    """A key of a Kubernetes Secret in calico-node's namespace (k8s SecretKeySelector)."""

    name: str | None = None
    key: str
    optional: bool | None = None


class BGPPassword(Checked):
    secret_key_ref: SecretKeyRef | None = None


class ServiceIPBlock(Checked):
    cidr: str | None = None

    def issues(self, path: str) -> Iterator[Issue]:
        if self.cidr:
            problem = network_problem(self.cidr)
            if problem:
                yield f"{path}.cidr", problem


class Community(Checked):
    name: str
    value: str


class PrefixAdvertisement(Checked):
    cidr: str
    communities: list[str]


def community_value_problem(value: str) -> str | None:
    """``aa:nn`` (16-bit parts, standard) or ``aa:nn:mm`` (32-bit parts, large)."""
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(part.isdigit() for part in parts):
        return f"{value!r} is not a community value ('aa:nn' or 'aa:nn:mm')"
    limit = 0xFFFF if len(parts) == 2 else 0xFFFFFFFF
    if any(int(part) > limit for part in parts):
        return f"community {value!r} has a part above {limit}"
    return None


class BGPConfigurationSpec(Checked):
    log_severity_screen: LogSeverity | None = None
    node_to_node_mesh_enabled: bool | None = None
    as_number: ASNumber | None = None
    service_load_balancer_ips: list[ServiceIPBlock] | None = Field(
        default=None, alias="serviceLoadBalancerIPs"
    )
    service_external_ips: list[ServiceIPBlock] | None = Field(
        default=None, alias="serviceExternalIPs"
    )
    service_cluster_ips: list[ServiceIPBlock] | None = Field(
        default=None, alias="serviceClusterIPs"
    )
    communities: list[Community] | None = None
    prefix_advertisements: list[PrefixAdvertisement] | None = None
    listen_port: PortNumber | None = None
    node_mesh_password: BGPPassword | None = None
    node_mesh_max_restart_time: Duration | None = None
    bind_mode: Literal["None", "NodeIP"] | None = None
    ignored_interfaces: list[str] | None = None
    program_cluster_routes: str | None = None
    ipv4_normal_route_priority: int | None = Field(default=None, alias="ipv4NormalRoutePriority")
    ipv6_normal_route_priority: int | None = Field(default=None, alias="ipv6NormalRoutePriority")
    local_workload_peering_ipv4: str | None = Field(default=None, alias="localWorkloadPeeringIPV4")
    local_workload_peering_ipv6: str | None = Field(default=None, alias="localWorkloadPeeringIPV6")

    def issues(self, path: str) -> Iterator[Issue]:
        for wire, value, version in (
            ("localWorkloadPeeringIPV4", self.local_workload_peering_ipv4, 4),
            ("localWorkloadPeeringIPV6", self.local_workload_peering_ipv6, 6),
        ):
            problem = ip_problem(value, version) if value else None
            if problem:
                yield f"{path}.{wire}", problem
        for field in ("serviceLoadBalancerIPs", "serviceExternalIPs", "serviceClusterIPs"):
            blocks = getattr(self, _BLOCK_FIELDS[field]) or []
            for index, block in enumerate(blocks):
                yield from block.issues(f"{path}.{field}[{index}]")
        defined = {community.name: community.value for community in self.communities or []}
        for index, community in enumerate(self.communities or []):
            where = f"{path}.communities[{index}]"
            problem = name_problem(community.name)
            if problem:
                yield f"{where}.name", problem
            problem = community_value_problem(community.value)
            if problem:
                yield f"{where}.value", problem
        if self.communities and not self.prefix_advertisements:
            yield (
                f"{path}.communities",
                "communities are defined but no prefixAdvertisement uses them",
            )
        for index, advert in enumerate(self.prefix_advertisements or []):
            where = f"{path}.prefixAdvertisements[{index}]"
            problem = network_problem(advert.cidr)
            if problem:
                yield f"{where}.cidr", problem
            for position, value in enumerate(advert.communities):
                if value not in defined and community_value_problem(value) is not None:
                    yield (
                        f"{where}.communities[{position}]",
                        f"{value!r} is neither a defined community name nor a community value",
                    )
        mesh_off = self.node_to_node_mesh_enabled is False
        if mesh_off and self.node_mesh_password is not None:
            yield f"{path}.nodeMeshPassword", "cannot be set when nodeToNodeMeshEnabled is false"
        if mesh_off and self.node_mesh_max_restart_time is not None:
            yield (
                f"{path}.nodeMeshMaxRestartTime",
                "cannot be set when nodeToNodeMeshEnabled is false",
            )
        for index, interface in enumerate(self.ignored_interfaces or []):
            if interface == "*" or not _IGNORED_INTERFACE_RE.match(interface):
                yield (
                    f"{path}.ignoredInterfaces[{index}]",
                    f"{interface!r} is not an interface name or pattern (1-15 of letters, "
                    "digits, '_', '.', '-', '*'; not '*' alone)",
                )


_BLOCK_FIELDS = {
    "serviceLoadBalancerIPs": "service_load_balancer_ips",
    "serviceExternalIPs": "service_external_ips",
    "serviceClusterIPs": "service_cluster_ips",
}


class BGPConfiguration(CheckedResource):
    KIND: ClassVar[str] = "BGPConfiguration"
    PLURAL: ClassVar[str] = "bgpconfigurations"
    NAMESPACED: ClassVar[bool] = False

    kind: str = "BGPConfiguration"
    spec: BGPConfigurationSpec = Field(default_factory=BGPConfigurationSpec)

    def spec_issues(self) -> Iterator[Issue]:
        yield from self.spec.issues("spec")
        if self.metadata.name != "default":
            for field, wire in (
                ("node_mesh_password", "nodeMeshPassword"),
                ("node_mesh_max_restart_time", "nodeMeshMaxRestartTime"),
            ):
                if getattr(self.spec, field) is not None:
                    yield f"spec.{wire}", "can only be set on the 'default' BGPConfiguration"


class BGPPeerSpec(Checked):
    node: str | None = None
    node_selector: str | None = None
    peer_ip: str | None = Field(default=None, alias="peerIP")
    as_number: ASNumber | None = None
    peer_selector: str | None = None
    keep_original_next_hop: bool = False
    next_hop_mode: Literal["Auto", "Self", "Keep"] | None = None
    password: BGPPassword | None = None
    source_address: Literal["UseNodeIP", "None"] | None = None
    failure_detection_mode: str | None = None
    restart_mode: str | None = None
    max_restart_time: Duration | None = None
    bird_gateway_mode: str | None = Field(default=None, alias="birdGatewayMode")
    num_allowed_local_as_numbers: int | None = Field(
        default=None, alias="numAllowedLocalASNumbers", ge=0
    )
    ttl_security: int | None = Field(default=None, ge=0, le=255)
    reachable_by: str | None = None
    filters: list[str] | None = None
    local_workload_selector: str | None = None
    local_as_number: ASNumber | None = Field(default=None, alias="localASNumber")
    keepalive_time: Duration | None = None
    reverse_peering: Literal["Auto", "Manual"] | None = None

    def issues(self, path: str) -> Iterator[Issue]:
        yield from child_issues(path, "password", self.password)
        if self.node:
            problem = name_problem(self.node)
            if problem:
                yield f"{path}.node", problem
        for field, wire in (
            ("node_selector", "nodeSelector"),
            ("peer_selector", "peerSelector"),
            ("local_workload_selector", "localWorkloadSelector"),
        ):
            value = getattr(self, field)
            if value:
                problem = selector_problem(value)
                if problem:
                    yield f"{path}.{wire}", problem
        if self.node and self.node_selector:
            yield f"{path}.node", "node and nodeSelector cannot both be set"
        peer = split_ip_port(self.peer_ip) if self.peer_ip else None
        if self.peer_ip and peer is None:
            yield (
                f"{path}.peerIP",
                f"{self.peer_ip!r} is not an IP address, '<IPv4>:<port>' or '[<IPv6>]:<port>'",
            )
        if self.peer_ip and self.peer_selector:
            yield f"{path}.peerIP", "peerIP and peerSelector cannot both be set"
        if self.as_number and self.peer_selector:
            yield (
                f"{path}.asNumber",
                "must not be set with peerSelector (the AS comes from the nodes)",
            )
        if self.local_workload_selector:
            if not self.as_number:
                yield f"{path}.asNumber", "is required with localWorkloadSelector"
            if self.peer_ip:
                yield f"{path}.peerIP", "must be empty with localWorkloadSelector"
            if self.peer_selector:
                yield f"{path}.peerSelector", "must be empty with localWorkloadSelector"
        if self.reachable_by:
            problem = ip_problem(self.reachable_by)
            if problem:
                yield f"{path}.reachableBy", problem
            elif not self.peer_ip:
                yield f"{path}.reachableBy", "needs peerIP"
            elif peer is not None and ip_problem(peer[0], _version(self.reachable_by)):
                yield f"{path}.reachableBy", "must be the same IP family as peerIP"
        if self.keep_original_next_hop and self.next_hop_mode is not None:
            yield (
                f"{path}.keepOriginalNextHop",
                "is deprecated and cannot be true when nextHopMode is set",
            )
        for index, name in enumerate(self.filters or []):
            problem = name_problem(name)
            if problem:
                yield f"{path}.filters[{index}]", problem


def _version(address: str) -> int:
    return 6 if ":" in address else 4


class BGPPeer(CheckedResource):
    KIND: ClassVar[str] = "BGPPeer"
    PLURAL: ClassVar[str] = "bgppeers"
    NAMESPACED: ClassVar[bool] = False

    kind: str = "BGPPeer"
    spec: BGPPeerSpec = Field(default_factory=BGPPeerSpec)

    def spec_issues(self) -> Iterator[Issue]:
        yield from self.spec.issues("spec")

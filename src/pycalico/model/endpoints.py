"""Endpoint and set kinds: WorkloadEndpoint (namespaced), HostEndpoint, NetworkSet (namespaced),
GlobalNetworkSet, and Profile.

What it is: their wire shape, Calico's WorkloadEndpoint naming rule and the checks of Calico's
validator.  What it is not: creating endpoints (CNI) or programming them (Felix).

Invariants:

* A WorkloadEndpoint's name is derived from its spec: ``<node>-<orchestrator>-<workload>-<endpoint>``
  with every ``-`` inside a part doubled (``k8s`` uses the pod name, ``cni`` the container ID,
  ``libnetwork`` the orchestrator again).  A given name must match the spec; a missing one is
  filled in.
* ``ipNetworks`` hold single addresses only (/32 or /128); a NAT's internal IP is one of them.
* Calico sets the labels ``projectcalico.org/namespace`` and ``projectcalico.org/orchestrator`` of
  a WorkloadEndpoint on every write (overriding the user's); ``with_defaults`` does the same.
* Every name part is required (the node always; then the orchestrator's own parts).
* Named ports need a protocol with ports (TCP, UDP, SCTP).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Self

from pydantic import Field

from pycalico.model.fields import (
    CONTAINER_ID_RE,
    Protocol,
    cidr_problem,
    interface_problem,
    ip_problem,
    label_value_problem,
    mac_problem,
    name_problem,
    network_of,
    network_problem,
    parse_cidr_or_ip,
    port_name_problem,
    protocol_supports_ports,
    qualified_name_problem,
)
from pycalico.model.rules import Rule
from pycalico.model.validation import Checked, CheckedResource, Issue, list_issues

LABEL_NAMESPACE = "projectcalico.org/namespace"
LABEL_ORCHESTRATOR = "projectcalico.org/orchestrator"
_PORT_PROTOCOL = "protocol must be TCP, UDP or SCTP for a port"


def workload_endpoint_name(node: str, orchestrator: str, workload: str, endpoint: str) -> str:
    """Calico's WorkloadEndpoint name: the four parts joined by '-', each part's '-' doubled
    (``workload`` is the pod for ``k8s``, the container ID for ``cni``)."""
    return "-".join(part.replace("-", "--") for part in (node, orchestrator, workload, endpoint))


def workload_endpoint_name_prefix(node: str, orchestrator: str, workload: str) -> str:
    """The name prefix shared by every endpoint (interface) of one workload, ending in '-'."""
    return "-".join(part.replace("-", "--") for part in (node, orchestrator, workload)) + "-"


# --- shared endpoint parts --------------------------------------------------------------------


class EndpointPort(Checked):
    """A named port on a HostEndpoint."""

    name: str
    protocol: Protocol
    port: int = Field(ge=1, le=65535)

    def issues(self, path: str) -> Iterator[Issue]:
        problem = port_name_problem(self.name)
        if problem:
            yield f"{path}.name", problem
        if not protocol_supports_ports(self.protocol):
            yield f"{path}.protocol", _PORT_PROTOCOL


class WorkloadEndpointPort(Checked):
    """A named or host-mapped port of a workload."""

    name: str = ""
    protocol: Protocol
    port: int = Field(ge=1, le=65535)
    host_port: int = Field(default=0, ge=0, le=65535)
    host_ip: str = Field(default="", alias="hostIP")

    def issues(self, path: str) -> Iterator[Issue]:
        if self.name:
            problem = port_name_problem(self.name)
            if problem:
                yield f"{path}.name", problem
        elif not self.host_port:
            yield f"{path}.name", "is required when no hostPort is given"
        if not protocol_supports_ports(self.protocol):
            yield f"{path}.protocol", _PORT_PROTOCOL
        if self.host_ip:
            problem = network_problem(self.host_ip)
            if problem:
                yield f"{path}.hostIP", problem


class IPNAT(Checked):
    internal_ip: str = Field(alias="internalIP")
    external_ip: str = Field(alias="externalIP")

    def issues(self, path: str) -> Iterator[Issue]:
        internal = ip_problem(self.internal_ip)
        external = ip_problem(self.external_ip)
        if internal:
            yield f"{path}.internalIP", internal
        if external:
            yield f"{path}.externalIP", external
        if not internal and not external and (":" in self.internal_ip) != (":" in self.external_ip):
            yield f"{path}.externalIP", "internalIP and externalIP must be the same IP family"


class QoSControls(Checked):
    ingress_bandwidth: int | None = None
    ingress_burst: int | None = None
    ingress_peakrate: int | None = None
    ingress_minburst: int | None = None
    egress_bandwidth: int | None = None
    egress_burst: int | None = None
    egress_peakrate: int | None = None
    egress_minburst: int | None = None
    ingress_packet_rate: int | None = None
    ingress_packet_burst: int | None = None
    egress_packet_rate: int | None = None
    egress_packet_burst: int | None = None
    ingress_max_connections: int | None = None
    egress_max_connections: int | None = None
    dscp: int | str | None = Field(default=None, alias="dscp")


def _profile_issues(path: str, profiles: list[str] | None) -> Iterator[Issue]:
    for index, profile in enumerate(profiles or []):
        problem = name_problem(profile)
        if problem:
            yield f"{path}[{index}]", problem


# --- WorkloadEndpoint -------------------------------------------------------------------------


class WorkloadEndpointSpec(Checked):
    orchestrator: str | None = None
    workload: str | None = None
    node: str | None = None
    container_id: str | None = Field(default=None, alias="containerID")
    pod: str | None = None
    endpoint: str | None = None
    service_account_name: str | None = None
    ip_networks: list[str] | None = Field(default=None, alias="ipNetworks")
    ip_nats: list[IPNAT] | None = Field(default=None, alias="ipNATs")
    ipv4_gateway: str | None = Field(default=None, alias="ipv4Gateway")
    ipv6_gateway: str | None = Field(default=None, alias="ipv6Gateway")
    profiles: list[str] | None = None
    interface_name: str | None = None
    mac: str | None = None
    ports: list[WorkloadEndpointPort] | None = None
    allow_spoofed_source_prefixes: list[str] | None = None
    qos_controls: QoSControls | None = Field(default=None, alias="qosControls")

    def name_segments(self) -> list[tuple[str, str]]:
        """The (wire field, value) pairs Calico builds the name from, by orchestrator."""
        orchestrator = self.orchestrator or ""
        workload_field = {"k8s": "pod", "cni": "containerID", "libnetwork": "orchestrator"}.get(
            orchestrator, "workload"
        )
        workload = {
            "pod": self.pod,
            "containerID": self.container_id,
            "orchestrator": self.orchestrator,
            "workload": self.workload,
        }[workload_field]
        return [
            ("node", self.node or ""),
            ("orchestrator", orchestrator),
            (workload_field, workload or ""),
            ("endpoint", self.endpoint or ""),
        ]

    def derived_name(self) -> str | None:
        """The name Calico derives from this spec, or None if a part is missing or malformed."""
        parts = [value for _, value in self.name_segments()]
        if not all(parts) or any(p.startswith("-") or p.endswith("-") for p in parts):
            return None
        return workload_endpoint_name(*parts)

    def name_segment_issues(self, path: str) -> Iterator[Issue]:
        for field, value in self.name_segments():
            if not value:
                yield f"{path}.{field}", "is required: it is part of the WorkloadEndpoint's name"
            elif value.startswith("-") or value.endswith("-"):
                yield f"{path}.{field}", "must not begin or end with '-'"

    def issues(self, path: str) -> Iterator[Issue]:
        for field, wire in (
            ("orchestrator", "orchestrator"),
            ("workload", "workload"),
            ("node", "node"),
            ("pod", "pod"),
            ("endpoint", "endpoint"),
            ("service_account_name", "serviceAccountName"),
        ):
            value = getattr(self, field)
            if value:
                problem = name_problem(value)
                if problem:
                    yield f"{path}.{wire}", problem
        if self.container_id and not CONTAINER_ID_RE.match(self.container_id):
            yield f"{path}.containerID", f"{self.container_id!r} is not a valid container ID"
        networks = []
        for index, text in enumerate(self.ip_networks or []):
            problem = network_problem(text)
            parsed = parse_cidr_or_ip(text)
            if problem:
                yield f"{path}.ipNetworks[{index}]", problem
            elif parsed is not None:
                if parsed.network.num_addresses != 1:
                    yield (
                        f"{path}.ipNetworks[{index}]",
                        f"{text} holds more than one address: only /32 and /128 are allowed",
                    )
                networks.append(parsed.network)
        for index, nat in enumerate(self.ip_nats or []):
            where = f"{path}.ipNATs[{index}]"
            yield from nat.issues(where)
            inside = network_of(nat.internal_ip)
            if inside is not None and not any(inside.network_address in n for n in networks):
                yield (
                    f"{where}.internalIP",
                    f"{nat.internal_ip} is not one of the endpoint's ipNetworks",
                )
        for field, wire, version in (
            ("ipv4_gateway", "ipv4Gateway", 4),
            ("ipv6_gateway", "ipv6Gateway", 6),
        ):
            value = getattr(self, field)
            if value:
                problem = ip_problem(value, version)
                if problem:
                    yield f"{path}.{wire}", problem
        yield from _profile_issues(f"{path}.profiles", self.profiles)
        if not self.interface_name:
            yield f"{path}.interfaceName", "is required"
        else:
            problem = interface_problem(self.interface_name)
            if problem:
                yield f"{path}.interfaceName", problem
        if self.mac:
            problem = mac_problem(self.mac)
            if problem:
                yield f"{path}.mac", problem
        yield from list_issues(path, "ports", self.ports)
        for index, prefix in enumerate(self.allow_spoofed_source_prefixes or []):
            problem = cidr_problem(prefix)
            if problem:
                yield f"{path}.allowSpoofedSourcePrefixes[{index}]", problem


class WorkloadEndpoint(CheckedResource):
    KIND: ClassVar[str] = "WorkloadEndpoint"
    PLURAL: ClassVar[str] = "workloadendpoints"
    NAMESPACED: ClassVar[bool] = True

    kind: str = "WorkloadEndpoint"
    spec: WorkloadEndpointSpec = Field(default_factory=WorkloadEndpointSpec)

    def name_issue(self) -> str | None:
        problem = name_problem(self.metadata.name)
        if problem:
            return problem
        derived = self.spec.derived_name()
        if derived is not None and derived != self.metadata.name:
            return (
                f"{self.metadata.name!r} does not match the name derived from the spec "
                f"(node, orchestrator, workload, endpoint): use {derived!r}"
            )
        return None

    def spec_issues(self) -> Iterator[Issue]:
        yield from self.spec.name_segment_issues("spec")
        yield from self.spec.issues("spec")

    def with_defaults(self, *, namespace: str = "default") -> Self:
        base = super().with_defaults(namespace=namespace)
        metadata = base.metadata
        changes: dict[str, object] = {}
        if not metadata.name:
            derived = self.spec.derived_name()
            if derived is not None:
                changes["name"] = derived
        # Calico sets (and overrides) these two labels on every write: they are not the user's.
        labels = dict(metadata.labels or {})
        labels[LABEL_NAMESPACE] = metadata.namespace or ""
        labels[LABEL_ORCHESTRATOR] = self.spec.orchestrator or ""
        if labels != (metadata.labels or {}):
            changes["labels"] = labels
        if not changes:
            return base
        return base.model_copy(update={"metadata": metadata.model_copy(update=changes)})


# --- HostEndpoint -----------------------------------------------------------------------------


class HostEndpointSpec(Checked):
    node: str | None = None
    interface_name: str | None = None
    expected_i_ps: list[str] | None = Field(default=None, alias="expectedIPs")
    profiles: list[str] | None = None
    ports: list[EndpointPort] | None = None

    def issues(self, path: str) -> Iterator[Issue]:
        if not self.node:
            yield f"{path}.node", "is required"
        else:
            problem = name_problem(self.node)
            if problem:
                yield f"{path}.node", problem
        if not self.interface_name and not self.expected_i_ps:
            yield f"{path}.interfaceName", "set interfaceName, expectedIPs, or both"
        if self.interface_name:
            problem = interface_problem(self.interface_name, allow_wildcard=True)
            if problem:
                yield f"{path}.interfaceName", problem
        for index, address in enumerate(self.expected_i_ps or []):
            problem = ip_problem(address)
            if problem:
                yield f"{path}.expectedIPs[{index}]", problem
        yield from _profile_issues(f"{path}.profiles", self.profiles)
        yield from list_issues(path, "ports", self.ports)


class HostEndpoint(CheckedResource):
    KIND: ClassVar[str] = "HostEndpoint"
    PLURAL: ClassVar[str] = "hostendpoints"
    NAMESPACED: ClassVar[bool] = False

    kind: str = "HostEndpoint"
    spec: HostEndpointSpec = Field(default_factory=HostEndpointSpec)

    def spec_issues(self) -> Iterator[Issue]:
        yield from self.spec.issues("spec")


# --- network sets -----------------------------------------------------------------------------


class NetworkSetSpec(Checked):
    nets: list[str] | None = None

    def issues(self, path: str) -> Iterator[Issue]:
        for index, net in enumerate(self.nets or []):
            problem = cidr_problem(net)
            if problem:
                yield f"{path}.nets[{index}]", problem


class _NetworkSetBase(CheckedResource):
    spec: NetworkSetSpec = Field(default_factory=NetworkSetSpec)

    def spec_issues(self) -> Iterator[Issue]:
        if LABEL_NAMESPACE in (self.metadata.labels or {}):
            yield "metadata.labels", f"{LABEL_NAMESPACE} is reserved and cannot be set"
        yield from self.spec.issues("spec")


class NetworkSet(_NetworkSetBase):
    KIND: ClassVar[str] = "NetworkSet"
    PLURAL: ClassVar[str] = "networksets"
    NAMESPACED: ClassVar[bool] = True

    kind: str = "NetworkSet"


class GlobalNetworkSet(_NetworkSetBase):
    KIND: ClassVar[str] = "GlobalNetworkSet"
    PLURAL: ClassVar[str] = "globalnetworksets"
    NAMESPACED: ClassVar[bool] = False

    kind: str = "GlobalNetworkSet"


# --- Profile ----------------------------------------------------------------------------------


class ProfileSpec(Checked):
    ingress: list[Rule] | None = None
    egress: list[Rule] | None = None
    labels_to_apply: dict[str, str] | None = None

    def issues(self, path: str) -> Iterator[Issue]:
        yield from list_issues(path, "ingress", self.ingress)
        yield from list_issues(path, "egress", self.egress)
        for key, value in (self.labels_to_apply or {}).items():
            problem = qualified_name_problem(key) or label_value_problem(value)
            if problem:
                yield f"{path}.labelsToApply", problem


class Profile(CheckedResource):
    KIND: ClassVar[str] = "Profile"
    PLURAL: ClassVar[str] = "profiles"
    NAMESPACED: ClassVar[bool] = False

    kind: str = "Profile"
    spec: ProfileSpec = Field(default_factory=ProfileSpec)

    def spec_issues(self) -> Iterator[Issue]:
        yield from self.spec.issues("spec")

"""What a Kubernetes pod asks of the ``calico`` plugin: the pure decisions of Kubernetes mode.

What it is: ``pod_settings(conf, pod, namespace)`` reads a Pod and its Namespace (wire-form dicts,
as the API server sends them) into ``PodSettings``: the WorkloadEndpoint's labels, profiles,
service account and named ports, and what the ``cni.projectcalico.org/*`` annotations ask of
IPAM.  ``ipam_config`` and ``ipam_requests`` turn those into the IPAM plugin's configuration
and calls; ``ip_nats`` maps floating IPs onto the pod's addresses; ``feedback_patch`` and
``release_patch`` are the patches that tell Kubernetes the pod's addresses.

What it is not: any I/O (``pycalico.cni.kubernetes`` reads and patches the pod).

Calico's facts followed here (``cni-plugin/pkg/k8s/k8s.go``, libcalico-go's pod conversion):

* Labels: the pod's labels plus ``projectcalico.org/namespace``, ``projectcalico.org/orchestrator:
  k8s`` and, for a service account shorter than 63 characters, ``projectcalico.org/serviceaccount``.
  Profiles ``kns.<namespace>`` and, with a service account, ``ksa.<namespace>.<account>``.
* Ports: every container's and init container's port with a container port and a name or a host
  port; protocol TCP (also when unset), UDP or SCTP, other protocols skipped.
* ``ipv4pools``, ``ipv6pools`` and ``ipFamilies``: the pod's annotation, else the namespace's,
  else the configuration; honoured only with ``calico-ipam``.  ``ipAddrs``, ``ipAddrsNoIpam``
  and ``floatingIPs`` are read from the pod only.
* ``ipAddrs`` and ``ipAddrsNoIpam``: a JSON list with at most one IPv4 and one IPv6 address, not
  both annotations at once, only with ``calico-ipam``; ``ipAddrsNoIpam`` needs
  ``feature_control.ip_addrs_no_ipam`` and ``floatingIPs`` ``feature_control.floating_ips``.
* Feedback: ``cni.projectcalico.org/podIP`` (first address), ``podIPs`` (all, comma-separated)
  and ``containerID``, patched with the pod's UID as precondition; at DEL ``podIP``/``podIPs``
  are emptied and ``containerID`` kept.

Invariants: every problem with an annotation raises ``CniError`` naming the annotation and the
pod, before anything is allocated; a function's result depends on its arguments only.
"""

from __future__ import annotations

import copy
import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pycalico.cni.config import CALICO_IPAM, NetConf
from pycalico.cni.spec import CniError
from pycalico.k8s.conversion.objects import ConversionError, annotations_of, spec_of
from pycalico.k8s.conversion.pods import workload_endpoint_data
from pycalico.model.endpoints import IPNAT, WorkloadEndpointPort

PREFIX = "cni.projectcalico.org/"
IP_ADDRS = PREFIX + "ipAddrs"
IP_ADDRS_NO_IPAM = PREFIX + "ipAddrsNoIpam"
IPV4_POOLS = PREFIX + "ipv4pools"
IPV6_POOLS = PREFIX + "ipv6pools"
IP_FAMILIES = PREFIX + "ipFamilies"
FLOATING_IPS = PREFIX + "floatingIPs"
POD_IP = PREFIX + "podIP"
POD_IPS = PREFIX + "podIPs"
CONTAINER_ID = PREFIX + "containerID"
PORT_PROTOCOLS = {"": "TCP", "TCP": "TCP", "UDP": "UDP", "SCTP": "SCTP"}

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class PodSettings:
    """What the endpoint and IPAM get from one pod (``None``: the configuration decides)."""

    namespace: str
    pod: str
    uid: str
    labels: Mapping[str, str]
    profiles: tuple[str, ...]
    service_account: str
    ports: tuple[WorkloadEndpointPort, ...] = ()
    ipv4_pools: tuple[str, ...] | None = None
    ipv6_pools: tuple[str, ...] | None = None
    assign_ipv4: bool | None = None
    assign_ipv6: bool | None = None
    ip_addrs: tuple[Address, ...] = ()
    ip_addrs_no_ipam: tuple[Address, ...] = ()
    floating_ips: tuple[Address, ...] = ()


def _problem(settings_of: str, annotation: str, problem: str) -> CniError:
    return CniError(f"{settings_of}: annotation {annotation}: {problem}")


def _json_strings(where: str, annotation: str, text: str) -> list[str]:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise _problem(where, annotation, f"{text!r} is not JSON ({error})") from None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _problem(where, annotation, f"{text!r} is not a JSON list of strings")
    return value


def _addresses(where: str, annotation: str, text: str, *, one_per_family: bool) -> list[Address]:
    out: list[Address] = []
    for item in _json_strings(where, annotation, text):
        try:
            out.append(ipaddress.ip_address(item.strip()))
        except ValueError:
            raise _problem(where, annotation, f"{item!r} is not an IP address") from None
    if one_per_family:
        if not out:
            raise _problem(where, annotation, "is set but lists no address")
        for version in (4, 6):
            if sum(1 for a in out if a.version == version) > 1:
                raise _problem(where, annotation, f"more than one IPv{version} address")
    return out


def ports_of(pod: Mapping[str, Any]) -> tuple[WorkloadEndpointPort, ...]:
    """Calico's named (and host) ports of the pod's containers, then its init containers."""
    spec = spec_of(pod)
    ports: list[WorkloadEndpointPort] = []
    for group in ("containers", "initContainers"):
        for container in spec.get(group) or []:
            for port in container.get("ports") or []:
                number = int(port.get("containerPort") or 0)
                host_port = int(port.get("hostPort") or 0)
                name = str(port.get("name") or "")
                protocol = PORT_PROTOCOLS.get(str(port.get("protocol") or "").upper())
                if not number or not (name or host_port) or protocol is None:
                    continue
                ports.append(
                    WorkloadEndpointPort(
                        name=name,
                        protocol=protocol,
                        port=number,
                        host_port=host_port,
                        host_ip=str(port.get("hostIP") or ""),
                    )
                )
    return tuple(ports)


def _annotation(
    pod_annotations: Mapping[str, str], namespace_annotations: Mapping[str, str], key: str
) -> str:
    """Calico's precedence for the pool annotations: the pod's, else the namespace's."""
    return pod_annotations.get(key) or namespace_annotations.get(key) or ""


def _families(where: str, text: str) -> tuple[bool, bool]:
    families = _json_strings(where, IP_FAMILIES, text)
    unknown = [family for family in families if family not in ("IPv4", "IPv6")]
    if unknown:
        raise _problem(where, IP_FAMILIES, f"{unknown[0]!r} is not IPv4 or IPv6")
    return "IPv4" in families, "IPv6" in families


def _ipam_choices(
    conf: NetConf, where: str, pod_ann: Mapping[str, str], ns_ann: Mapping[str, str]
) -> dict[str, Any]:
    """The pool, family and fixed-address choices, validated (Calico's rules, module doc)."""
    out: dict[str, Any] = {}
    calico_ipam = conf.ipam.type == CALICO_IPAM
    if calico_ipam:
        for key, field_name in ((IPV4_POOLS, "ipv4_pools"), (IPV6_POOLS, "ipv6_pools")):
            text = _annotation(pod_ann, ns_ann, key)
            if text:
                out[field_name] = tuple(_json_strings(where, key, text))
        families = _annotation(pod_ann, ns_ann, IP_FAMILIES)
        if families:
            out["assign_ipv4"], out["assign_ipv6"] = _families(where, families)
    fixed, no_ipam = pod_ann.get(IP_ADDRS, ""), pod_ann.get(IP_ADDRS_NO_IPAM, "")
    if fixed and no_ipam:
        raise _problem(where, IP_ADDRS, f"cannot be used together with {IP_ADDRS_NO_IPAM}")
    if no_ipam:
        if not calico_ipam:
            raise _problem(where, IP_ADDRS_NO_IPAM, f"needs ipam.type {CALICO_IPAM}")
        if not conf.ip_addrs_no_ipam:
            raise _problem(
                where, IP_ADDRS_NO_IPAM, "feature_control.ip_addrs_no_ipam is not enabled"
            )
        out["ip_addrs_no_ipam"] = tuple(
            _addresses(where, IP_ADDRS_NO_IPAM, no_ipam, one_per_family=True)
        )
    if fixed:
        if not calico_ipam:
            raise _problem(where, IP_ADDRS, f"needs ipam.type {CALICO_IPAM}")
        out["ip_addrs"] = tuple(_addresses(where, IP_ADDRS, fixed, one_per_family=True))
    floating = pod_ann.get(FLOATING_IPS, "")
    if floating:
        if not conf.floating_ips:
            raise _problem(where, FLOATING_IPS, "feature_control.floating_ips is not enabled")
        out["floating_ips"] = tuple(_addresses(where, FLOATING_IPS, floating, one_per_family=False))
    return out


def pod_settings(
    conf: NetConf, pod: Mapping[str, Any], namespace: Mapping[str, Any]
) -> PodSettings:
    """The endpoint's and IPAM's settings for ``pod`` in ``namespace``; ``CniError`` naming the
    annotation (or field) for anything that is not valid."""
    metadata = pod.get("metadata") or {}
    where = f"pod {metadata.get('namespace', '')}/{metadata.get('name', '')}"
    try:
        data = workload_endpoint_data(pod)
        pod_annotations = annotations_of(pod)
        namespace_annotations = annotations_of(namespace)
        ports = ports_of(pod)
    except (ConversionError, ValueError, TypeError) as error:
        raise CniError(f"{where}: {error}") from None
    profiles = [f"kns.{data.namespace}"]
    if data.service_account:
        profiles.append(f"ksa.{data.namespace}.{data.service_account}")
    return PodSettings(
        namespace=data.namespace,
        pod=data.pod,
        uid=str(metadata.get("uid") or ""),
        labels=dict(data.labels),
        profiles=tuple(profiles),
        service_account=data.service_account,
        ports=ports,
        **_ipam_choices(conf, where, pod_annotations, namespace_annotations),
    )


def identity_only(pod: Mapping[str, Any]) -> PodSettings:
    """Just who the pod is (for the feedback patch): what Kubernetes mode uses of a pod when the
    policy type is not ``k8s`` (Calico then ignores the pod's labels and annotations)."""
    metadata = pod.get("metadata") or {}
    return PodSettings(
        namespace=str(metadata.get("namespace") or ""),
        pod=str(metadata.get("name") or ""),
        uid=str(metadata.get("uid") or ""),
        labels={},
        profiles=(),
        service_account="",
    )


def ipam_config(config: Mapping[str, Any], settings: PodSettings) -> dict[str, Any]:
    """The network configuration handed to IPAM: ``config`` with the pod's pools and families."""
    out = copy.deepcopy(dict(config))
    ipam = dict(out.get("ipam") or {})
    if settings.ipv4_pools is not None:
        ipam["ipv4_pools"] = list(settings.ipv4_pools)
    if settings.ipv6_pools is not None:
        ipam["ipv6_pools"] = list(settings.ipv6_pools)
    if settings.assign_ipv4 is not None:
        ipam["assign_ipv4"] = "true" if settings.assign_ipv4 else "false"
    if settings.assign_ipv6 is not None:
        ipam["assign_ipv6"] = "true" if settings.assign_ipv6 else "false"
    out["ipam"] = ipam
    return out


def ipam_requests(args: Mapping[str, str], settings: PodSettings) -> list[dict[str, str]]:
    """The ``CNI_ARGS`` of each IPAM ADD: one per ``ipAddrs`` address (``IP=<address>``, as
    Calico calls the IPAM plugin), else one with the call's own arguments."""
    if not settings.ip_addrs:
        return [dict(args)]
    return [{**args, "IP": str(address)} for address in settings.ip_addrs]


def ip_nats(settings: PodSettings, addresses: Sequence[str]) -> list[IPNAT]:
    """Each floating IP mapped to the pod's address of its family; ``CniError`` if the pod has
    no address of that family."""
    by_family = {
        ipaddress.ip_interface(a).version: str(ipaddress.ip_interface(a).ip) for a in addresses
    }
    nats: list[IPNAT] = []
    for external in settings.floating_ips:
        internal = by_family.get(external.version)
        if internal is None:
            raise CniError(
                f"pod {settings.namespace}/{settings.pod}: annotation {FLOATING_IPS}: "
                f"{external} has no IPv{external.version} pod address to map to"
            )
        nats.append(IPNAT(internal_ip=internal, external_ip=str(external)))
    return nats


def feedback_patch(uid: str, addresses: Sequence[str], container_id: str) -> dict[str, Any]:
    """The strategic-merge patch of the pod (status subresource, as Calico) after ADD; the UID
    makes the API server refuse it for another pod of the same name."""
    annotations = {
        POD_IP: addresses[0] if addresses else "",
        POD_IPS: ",".join(addresses),
        CONTAINER_ID: container_id,
    }
    metadata: dict[str, Any] = {"annotations": annotations}
    if uid:
        metadata["uid"] = uid
    return {"metadata": metadata}


def release_patch(container_id: str) -> list[dict[str, Any]]:
    """The JSON patch of the pod at DEL: empty ``podIP``/``podIPs`` (Calico's signal that the
    address is gone), only while ``containerID`` still names this container (a newer sandbox
    of the pod keeps its addresses); the API server applies all of it or nothing."""

    def path(key: str) -> str:
        return "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")

    return [
        {"op": "test", "path": path(CONTAINER_ID), "value": container_id},
        {"op": "add", "path": path(POD_IP), "value": ""},
        {"op": "add", "path": path(POD_IPS), "value": ""},
    ]

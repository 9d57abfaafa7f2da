"""Who a CNI call is for, and what Calico names and writes for it: pure logic of the plugin.

What it is: ``identify`` reads the workload's identity from the call (Calico's rules, reference
§6.3 steps 2, 4 and 7): a Kubernetes pod when ``CNI_ARGS`` has ``K8S_POD_NAMESPACE`` and
``K8S_POD_NAME``, otherwise a plain container (orchestrator ``cni``, namespace ``default``,
workload = the container ID).  It derives the WorkloadEndpoint name, the host veth name
(``cali`` + 11 hex of SHA-1 of ``<namespace>.<pod>``, or of the container ID's first 11
characters for a plain container), and the IPAM handle ``<network>.<containerID>``.
``workload_endpoint`` builds the endpoint to write, ``result_for`` the CNI result to print.

What it is not: I/O of any kind (``pycalico.cni.handler`` calls the datastore and the kernel).
In Kubernetes mode the pod's own labels, profiles and ports come from ``pod_request``.

Labels without a Kubernetes API: the endpoint gets Calico's own two labels
(``projectcalico.org/namespace``, ``projectcalico.org/orchestrator``) plus any labels the runtime
passes in the CNI conventions' ``args.cni.labels``; ``pcns.``/``pcsa.`` labels are dropped (they
are Calico's, anti-spoofing).  Profiles: with ``policy.type`` ``k8s`` Calico's namespace profile
``kns.<namespace>`` (and ``ksa.<namespace>.<sa>`` when the label
``projectcalico.org/serviceaccount`` is given); otherwise the network name, as Calico does for
non-Kubernetes workloads.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pycalico.cni.config import NetConf
from pycalico.cni.pod_request import PodSettings, ip_nats
from pycalico.cni.spec import (
    ERR_INVALID_NETWORK_CONFIG,
    CniError,
    Interface,
    IPConfig,
    Result,
    Route,
)
from pycalico.model.endpoints import (
    LABEL_NAMESPACE,
    LABEL_ORCHESTRATOR,
    WorkloadEndpoint,
    WorkloadEndpointSpec,
    workload_endpoint_name,
)
from pycalico.model.meta import ObjectMeta

ORCHESTRATOR_K8S = "k8s"
ORCHESTRATOR_CNI = "cni"
DEFAULT_NAMESPACE = "default"
DEFAULT_INTERFACE_PREFIX = "cali"
LABEL_SERVICE_ACCOUNT = "projectcalico.org/serviceaccount"
RESERVED_LABEL_PREFIXES = ("pcns.", "pcsa.")
IPV4_GATEWAY = "169.254.1.1"
IPV6_GATEWAY = "fe80::ecee:eeff:feee:eeee"
HOST_MAC = "ee:ee:ee:ee:ee:ee"

Address = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True, slots=True)
class Workload:
    node: str
    orchestrator: str
    namespace: str
    pod: str
    container_id: str
    endpoint: str
    name: str
    host_ifname: str
    handle_id: str

    @property
    def workload_id(self) -> str:
        return self.pod if self.orchestrator == ORCHESTRATOR_K8S else self.container_id


def host_veth_name(
    orchestrator: str, namespace: str, pod: str, container_id: str, prefix: str = ""
) -> str:
    """Calico's host-side name: the prefix (first of ``FELIX_INTERFACEPREFIX``, else ``cali``)
    and 11 hex characters, 15 characters in all (the kernel's limit)."""
    head = (prefix.split(",")[0].strip() if prefix else "") or DEFAULT_INTERFACE_PREFIX
    if orchestrator == ORCHESTRATOR_K8S:
        digest = hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()
        return (head + digest[:11])[:15]
    return (head + container_id[:11])[:15]


def identify(
    node: str,
    network: str,
    container_id: str,
    ifname: str,
    cni_args: Mapping[str, str],
    interface_prefix: str = "",
) -> Workload:
    namespace = cni_args.get("K8S_POD_NAMESPACE", "")
    pod = cni_args.get("K8S_POD_NAME", "")
    if namespace and pod:
        orchestrator = ORCHESTRATOR_K8S
        workload = pod
    else:
        orchestrator, namespace, pod, workload = (
            ORCHESTRATOR_CNI,
            DEFAULT_NAMESPACE,
            "",
            container_id,
        )
    return Workload(
        node=node,
        orchestrator=orchestrator,
        namespace=namespace,
        pod=pod,
        container_id=container_id,
        endpoint=ifname,
        name=workload_endpoint_name(node, orchestrator, workload, ifname),
        host_ifname=host_veth_name(orchestrator, namespace, pod, container_id, interface_prefix),
        handle_id=f"{network}.{container_id}",
    )


def host_addresses(ips: Sequence[IPConfig]) -> list[Address]:
    """The IPAM result's addresses as single-host prefixes, the way the pod gets them."""
    out: list[Address] = []
    for ip in ips:
        interface = ipaddress.ip_interface(ip.address)
        out.append(ipaddress.ip_interface(f"{interface.ip}/{interface.max_prefixlen}"))
    return out


def endpoint_labels(conf: NetConf, workload: Workload) -> dict[str, str]:
    labels = {
        key: value
        for key, value in conf.cni_labels().items()
        if not key.startswith(RESERVED_LABEL_PREFIXES)
    }
    labels[LABEL_NAMESPACE] = workload.namespace
    labels[LABEL_ORCHESTRATOR] = workload.orchestrator
    return labels


def endpoint_profiles(conf: NetConf, workload: Workload, labels: Mapping[str, str]) -> list[str]:
    if conf.policy.type == "k8s":
        profiles = [f"kns.{workload.namespace}"]
        account = labels.get(LABEL_SERVICE_ACCOUNT)
        if account:
            profiles.append(f"ksa.{workload.namespace}.{account}")
        return profiles
    if conf.policy.type not in ("", "none"):
        raise CniError(
            f"policy.type: {conf.policy.type!r} is not supported (use 'k8s' or leave it out)",
            code=ERR_INVALID_NETWORK_CONFIG,
        )
    return [conf.name]


def workload_endpoint(
    conf: NetConf,
    workload: Workload,
    addresses: Sequence[Address],
    container_mac: str,
    pod: PodSettings | None = None,
) -> WorkloadEndpoint:
    """The endpoint to write; ``pod`` (Kubernetes mode with ``policy.type: k8s``) supplies
    the labels, profiles, service account, named ports and floating IPs."""
    ip_networks = [str(a) for a in addresses]
    if pod is not None and pod.profiles:
        labels = dict(pod.labels)
        profiles = list(pod.profiles)
        account = pod.service_account or None
        ports = list(pod.ports) or None
        nats = ip_nats(pod, ip_networks) or None
    else:
        labels = endpoint_labels(conf, workload)
        profiles = endpoint_profiles(conf, workload, labels)
        account, ports, nats = labels.get(LABEL_SERVICE_ACCOUNT), None, None
    spec = WorkloadEndpointSpec(
        orchestrator=workload.orchestrator,
        workload=workload.workload_id if workload.orchestrator != ORCHESTRATOR_K8S else None,
        node=workload.node,
        container_id=workload.container_id,
        pod=workload.pod or None,
        endpoint=workload.endpoint,
        service_account_name=account,
        ip_networks=ip_networks,
        ip_nats=nats,
        profiles=profiles,
        interface_name=workload.host_ifname,
        mac=container_mac or None,
        ports=ports,
    )
    metadata = ObjectMeta(name=workload.name, namespace=workload.namespace, labels=labels)
    return WorkloadEndpoint(metadata=metadata, spec=spec)


def result_for(
    workload: Workload,
    netns: str,
    addresses: Sequence[Address],
    container_mac: str,
    dns: Mapping[str, object] | None = None,
) -> Result:
    """The result of ADD: the host veth (index 0), the pod interface (index 1) that holds
    every address, and a default route per family through Calico's gateway."""
    interfaces = [
        Interface(workload.host_ifname, HOST_MAC),
        Interface(workload.endpoint, container_mac, netns),
    ]
    ips = [IPConfig(str(a), interface=1) for a in addresses]
    routes = []
    if any(a.version == 4 for a in addresses):
        routes.append(Route("0.0.0.0/0", IPV4_GATEWAY))
    if any(a.version == 6 for a in addresses):
        routes.append(Route("::/0", IPV6_GATEWAY))
    return Result(ips=ips, routes=routes, interfaces=interfaces, dns=dict(dns or {}))


def addresses_of(endpoint: WorkloadEndpoint) -> list[Address]:
    return [ipaddress.ip_interface(text) for text in endpoint.spec.ip_networks or []]


def valid_attachments(config: Mapping[str, object]) -> set[tuple[str, str]]:
    """GC's ``cni.dev/valid-attachments``: the (containerID, ifname) pairs still in use."""
    raw = config.get("cni.dev/valid-attachments")
    if raw is None:
        return set()
    if not isinstance(raw, list):
        raise CniError(
            "cni.dev/valid-attachments: expected a list", code=ERR_INVALID_NETWORK_CONFIG
        )
    out = set()
    for index, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("containerID"), str):
            raise CniError(
                f"cni.dev/valid-attachments[{index}]: expected {{containerID, ifname}}",
                code=ERR_INVALID_NETWORK_CONFIG,
            )
        out.add((item["containerID"], str(item.get("ifname") or "")))
    return out

"""The lab's persistent state: what ``calico-lab up`` built, so later commands (and ``down``
after a crash) can find every namespace, process and file.

What it is: frozen dataclasses for the lab, its nodes and pods, their naming rules, and the
JSON file (``<state dir>/state.json``) they are kept in.  What it is not: anything that creates
or removes kernel objects or processes (``pycalico.lab.cluster`` does that).

Invariants:

* Every network namespace the lab creates is named ``<prefix>-…`` (``lab_namespaces`` finds
  them all, so ``down`` works even when ``state.json`` was never written).
* Every file the lab creates is under the state directory.
* ``save`` replaces ``state.json`` atomically (write to a temporary file, then rename), so a
  command killed mid-write never leaves a half file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

DEFAULT_STATE_DIR = "/var/run/calico-lab"
DEFAULT_PREFIX = "clab"
STATE_FILE = "state.json"
FABRIC_SUBNET = "10.99.0"  # the nodes' /24 on the fabric bridge (only inside lab namespaces)
FABRIC_SUBNET6 = "fd00:99::"
GATEWAY_HOST = 254  # the bridge's own address, the nodes' default gateway
# The "outside" host: a machine beyond the cluster (not a node, not a pod, in no pool), behind the
# fabric router, for outgoing NAT.  TEST-NET-3, so it never collides with a real network.
OUTSIDE_SUBNET = "203.0.113"
OUTSIDE_ADDRESS = f"{OUTSIDE_SUBNET}.1"
ETCD_HOST_BASE = 250  # etcd member i is at .250 - i
KUBE_HOST = 240  # the Kubernetes API server (``up --kubernetes``)
IPV4_POOL = "10.65.0.0/16"
IPV6_POOL = "fd00:65::/48"
NETWORK_NAME = "k8s-pod-network"
RR_CLUSTER_ID = "244.0.0.1"


@dataclass(frozen=True)
class NodeState:
    name: str
    namespace: str
    address: str  # IPv4, no prefix length
    address6: str
    directory: str
    route_reflector: bool = False


@dataclass(frozen=True)
class PodState:
    name: str
    node: str
    namespace: str  # the pod's (Kubernetes-style) namespace, not a netns
    netns: str
    container_id: str
    labels: dict[str, str] = field(default_factory=dict)
    ipv4: str = ""
    ipv6: str = ""
    interface: str = ""  # host side, cali…
    workload_endpoint: str = ""
    uid: str = ""  # the Kubernetes Pod's uid (Kubernetes mode); "" for a `pod add` pod in etcd mode


@dataclass(frozen=True)
class KubeState:
    """The Kubernetes control plane of ``up --kubernetes``: kube-apiserver in its own namespace
    on the fabric, reached from the machine through a relayed loopback port."""

    namespace: str
    address: str  # on the fabric; the nodes (and the CNI plugin) reach the API server here
    port: int
    host_port: int  # the relay's loopback port on the machine
    directory: str  # credentials, certificates, kubeconfigs, logs

    @property
    def kubeconfig(self) -> str:
        """For clients on the machine (kubectl, the pod runner): through the relay."""
        return os.path.join(self.directory, "kubeconfig")

    @property
    def node_kubeconfig(self) -> str:
        """For clients inside a node namespace (the CNI plugin): over the fabric."""
        return os.path.join(self.directory, "node-kubeconfig")


@dataclass(frozen=True)
class EtcdMemberState:
    name: str
    namespace: str
    address: str
    host_port: int  # the host-side relay's loopback port for this member


@dataclass(frozen=True)
class LabState:
    prefix: str
    state_dir: str
    ipv6: bool
    etcd: tuple[EtcdMemberState, ...]
    nodes: tuple[NodeState, ...] = ()
    pods: tuple[PodState, ...] = ()
    # "" (BGP, the default), "vxlan" or "vxlan-crosssubnet" (CALICO_NETWORKING_BACKEND=vxlan).
    encapsulation: str = ""
    subnets: int = 1  # fabric subnets, joined by the fabric namespace as a router
    kube: KubeState | None = None
    etcd_quota_bytes: int = 0  # etcd's --quota-backend-bytes; 0: etcd's default (2 GiB)

    @property
    def fabric_namespace(self) -> str:
        return f"{self.prefix}-fabric"

    @property
    def outside_namespace(self) -> str:
        """The outside host's namespace (``OUTSIDE_ADDRESS``, routed through the fabric)."""
        return f"{self.prefix}-outside"

    @property
    def node_endpoints(self) -> str:
        """``ETCD_ENDPOINTS`` as seen from inside a node namespace (over the fabric)."""
        return ",".join(f"http://{member.address}:2379" for member in self.etcd)

    @property
    def host_endpoints(self) -> str:
        """``ETCD_ENDPOINTS`` as seen from the machine itself (through the loopback relay)."""
        return ",".join(f"http://127.0.0.1:{member.host_port}" for member in self.etcd)

    def node(self, name: str) -> NodeState:
        for node in self.nodes:
            if node.name == name:
                return node
        known = ", ".join(node.name for node in self.nodes) or "none"
        raise KeyError(f"node: no node named {name!r} in the lab (nodes: {known})")

    def pod(self, name: str) -> PodState:
        for pod in self.pods:
            if pod.name == name:
                return pod
        known = ", ".join(pod.name for pod in self.pods) or "none"
        raise KeyError(f"pod: no pod named {name!r} in the lab (pods: {known})")

    def with_pod(self, pod: PodState) -> LabState:
        others = tuple(existing for existing in self.pods if existing.name != pod.name)
        return replace(self, pods=(*others, pod))

    def without_pod(self, name: str) -> LabState:
        return replace(self, pods=tuple(pod for pod in self.pods if pod.name != name))


def subnet_prefix(subnet: int) -> str:
    """The first three octets of fabric subnet ``subnet`` (0: ``FABRIC_SUBNET``)."""
    return f"10.99.{subnet}"


def subnet_prefix6(subnet: int) -> str:
    """The IPv6 /64 of fabric subnet ``subnet``, up to the host part (0: ``FABRIC_SUBNET6``)."""
    return FABRIC_SUBNET6 if subnet == 0 else f"fd00:99:0:{subnet:x}::"


def subnet_of(index: int, nodes: int, subnets: int) -> int:
    """Node ``index`` (1-based) of ``nodes``: the first half in subnet 0, the rest in 1, ..."""
    return (index - 1) * subnets // nodes


def node_name(index: int) -> str:
    return f"node{index}"


def node_namespace(prefix: str, name: str) -> str:
    return f"{prefix}-{name}"


def pod_netns(prefix: str, pod: str) -> str:
    return f"{prefix}-pod-{pod}"


def control_namespace(prefix: str) -> str:
    return f"{prefix}-control"


def etcd_namespace(prefix: str, index: int) -> str:
    return f"{prefix}-etcd{index}"


def check_pod_name(name: str) -> None:
    """A pod name must be a DNS label, as in Kubernetes (it also becomes part of a netns name)."""
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-")
    if not name or len(name) > 40 or not set(name) <= allowed or name[0] == "-" or name[-1] == "-":
        raise ValueError(
            f"pod name {name!r}: use 1-40 lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )


def check_namespace_name(name: str) -> None:
    """A Kubernetes namespace name is a DNS label (1-63 characters); checked before the lab
    writes the namespace's Profile, so a bad one is blamed on ``--namespace``."""
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-")
    if not name or len(name) > 63 or not set(name) <= allowed or name[0] == "-" or name[-1] == "-":
        raise ValueError(
            f"--namespace {name!r}: a Kubernetes namespace name is 1-63 lower-case letters, "
            "digits and '-', starting and ending with a letter or digit"
        )


def parse_labels(text: str) -> dict[str, str]:
    """``k=v,k2=v2`` -> a dict; an empty text is no labels."""
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"labels: {item!r} is not key=value")
        labels[key] = value
    return labels


def state_path(state_dir: str) -> Path:
    return Path(state_dir) / STATE_FILE


def load(state_dir: str) -> LabState | None:
    path = state_path(state_dir)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return LabState(
        prefix=raw["prefix"],
        state_dir=raw["state_dir"],
        ipv6=raw["ipv6"],
        etcd=tuple(EtcdMemberState(**member) for member in raw["etcd"]),
        nodes=tuple(NodeState(**node) for node in raw["nodes"]),
        pods=tuple(PodState(**pod) for pod in raw["pods"]),
        encapsulation=raw.get("encapsulation", ""),
        subnets=raw.get("subnets", 1),
        kube=KubeState(**raw["kube"]) if raw.get("kube") else None,
        etcd_quota_bytes=raw.get("etcd_quota_bytes", 0),
    )


def save(state: LabState) -> None:
    path = state_path(state.state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(asdict(state), indent=2, sort_keys=True))
    os.replace(temporary, path)


@contextlib.contextmanager
def locked(state_dir: str) -> Iterator[None]:
    """Serialise read-modify-write of ``state.json`` between concurrent lab commands."""
    os.makedirs(state_dir, exist_ok=True)
    descriptor = os.open(os.path.join(state_dir, "state.lock"), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)

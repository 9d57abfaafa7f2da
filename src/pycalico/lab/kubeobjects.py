"""The Kubernetes objects the lab's pod runner writes, as a kubelet and a scheduler would: Node
objects and their Ready heartbeat, a Pod's binding, a Pod's status once its network is up, and
the Pod that ``calico-lab pod add`` creates.

What it is: pure functions from the lab's state and API objects in wire form (camelCase dicts,
as ``KubeClient.to_wire`` gives them) to request bodies.  What it is not: a client (the runner,
``pycalico.lab.kubelet``, sends them) or a scheduler with any policy beyond "fewest pods".

Invariants: timestamps are RFC 3339 UTC with whole seconds (the API's ``metav1.Time``); a
status patch names only the fields a kubelet owns (``phase``, IPs, conditions, container
statuses), merged by the API's strategic-merge rules (conditions by ``type``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from pycalico.lab.state import NodeState, PodState

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
CONTAINER_RUNTIME = "pycalico-lab"
KUBELET_VERSION = "v1.37.2"


def timestamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def node_manifest(node: NodeState) -> dict[str, Any]:
    """The Kubernetes Node a kubelet registers for a lab node."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": {
                "kubernetes.io/hostname": node.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
            },
        },
        "spec": {},
    }


def node_status_patch(node: NodeState, now: datetime, since: datetime) -> dict[str, Any]:
    """The kubelet's heartbeat: Ready (since ``since``) and the node's addresses."""
    addresses = [{"type": "InternalIP", "address": node.address}]
    if node.address6:
        addresses.append({"type": "InternalIP", "address": node.address6})
    addresses.append({"type": "Hostname", "address": node.name})
    return {
        "status": {
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "calico-lab pod runner is posting ready status",
                    "lastHeartbeatTime": timestamp(now),
                    "lastTransitionTime": timestamp(since),
                }
            ],
            "addresses": addresses,
            "nodeInfo": {
                "kubeletVersion": KUBELET_VERSION,
                "containerRuntimeVersion": f"{CONTAINER_RUNTIME}://1",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }
    }


def binding(name: str, namespace: str, node: str) -> dict[str, Any]:
    """The body of ``POST .../pods/<name>/binding``, as the scheduler sends it."""
    return {
        "apiVersion": "v1",
        "kind": "Binding",
        "metadata": {"name": name, "namespace": namespace},
        "target": {"apiVersion": "v1", "kind": "Node", "name": node},
    }


def least_loaded(nodes: Iterable[str], bound: Iterable[str]) -> str:
    """The node with the fewest pods (``bound``: the node of each pod); ties go to the first."""
    names = list(nodes)
    if not names:
        raise ValueError("nodes: there is no node to bind a pod to")
    counts = dict.fromkeys(names, 0)
    for node in bound:
        if node in counts:
            counts[node] += 1
    return min(names, key=lambda name: counts[name])


def pod_key(pod: Mapping[str, Any]) -> tuple[str, str]:
    meta = pod["metadata"]
    return str(meta.get("namespace", "default")), str(meta["name"])


def pod_node(pod: Mapping[str, Any]) -> str:
    return str((pod.get("spec") or {}).get("nodeName") or "")


def deleting(pod: Mapping[str, Any]) -> bool:
    return bool(pod["metadata"].get("deletionTimestamp"))


def finished(pod: Mapping[str, Any]) -> bool:
    return str((pod.get("status") or {}).get("phase", "")) in ("Succeeded", "Failed")


def labels(pod: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in (pod["metadata"].get("labels") or {}).items()}


def pod_status_patch(
    pod: Mapping[str, Any], networked: PodState, node: NodeState, now: datetime
) -> dict[str, Any]:
    """The status a kubelet writes once the pod's sandbox is up: Running, Ready, its IPs."""
    ips = [address for address in (networked.ipv4, networked.ipv6) if address]
    host_ips = [address for address in (node.address, node.address6) if address]
    when = timestamp(now)
    conditions = [
        {"type": kind, "status": "True", "lastProbeTime": None, "lastTransitionTime": when}
        for kind in ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady")
    ]
    containers = [
        {
            "name": str(container["name"]),
            "image": str(container.get("image", PAUSE_IMAGE)),
            "imageID": "",
            "containerID": f"{CONTAINER_RUNTIME}://{networked.container_id}",
            "ready": True,
            "started": True,
            "restartCount": 0,
            "state": {"running": {"startedAt": when}},
        }
        for container in (pod.get("spec") or {}).get("containers") or []
    ]
    return {
        "status": {
            "phase": "Running",
            "hostIP": host_ips[0],
            "hostIPs": [{"ip": address} for address in host_ips],
            "podIP": ips[0] if ips else None,
            "podIPs": [{"ip": address} for address in ips],
            "startTime": when,
            "conditions": conditions,
            "containerStatuses": containers,
        }
    }


def pod_failed_patch(message: str, now: datetime) -> dict[str, Any]:
    """A sandbox that could not be networked (the runner retries): not ready, and why."""
    return {
        "status": {
            "conditions": [
                {
                    "type": "PodReadyToStartContainers",
                    "status": "False",
                    "reason": "NetworkSetupFailed",
                    "message": message[:1000],
                    "lastProbeTime": None,
                    "lastTransitionTime": timestamp(now),
                }
            ]
        }
    }


def pod_manifest(
    name: str, namespace: str, node: str, pod_labels: Mapping[str, str]
) -> dict[str, Any]:
    """The Pod ``calico-lab pod add`` creates: one pause container, bound to ``node`` (``""``:
    left to the runner's scheduler)."""
    spec: dict[str, Any] = {
        "containers": [{"name": "pause", "image": PAUSE_IMAGE}],
        "terminationGracePeriodSeconds": 0,
    }
    if node:
        spec["nodeName"] = node
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(pod_labels)},
        "spec": spec,
    }

"""The lab's datastore writes: IP pools, BGP topology, namespace profiles, and the pod labels a
Kubernetes pod would carry.

What it is: the part of the lab that stands in for Kubernetes and kube-controllers.  With no
Kubernetes API, the lab does what kube-controllers would do for namespaces (a Profile
``kns.<ns>``: allow-all both ways, ``labelsToApply`` ``pcns.projectcalico.org/name=<ns>``) and
for pods (their labels, ``projectcalico.org/namespace`` and ``projectcalico.org/orchestrator``
on the WorkloadEndpoint the CNI plugin wrote, and the ``kns.<ns>`` profile).  Everything goes
through ``ResourceStore`` over the lab's host relay.  What it is not: the CNI plugin (the lab
runs the real ``calico`` executable for that) or calicoctl.

Invariants: every write is an idempotent apply; a WorkloadEndpoint keeps everything the CNI
plugin wrote except labels and profiles.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from pycalico.datastore.etcd import EtcdKVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.model.codec import decode_resource, encode_resource

T = TypeVar("T")

NAMESPACE_LABEL = "projectcalico.org/namespace"
ORCHESTRATOR_LABEL = "projectcalico.org/orchestrator"


def call(endpoints: str, work: Callable[[ResourceStore], Awaitable[T]]) -> T:
    async def main() -> T:
        kv = EtcdKVStore(endpoints.split(","), timeout=10.0, retry_timeout=20.0)
        try:
            return await work(ResourceStore(kv))
        finally:
            await kv.close()

    return asyncio.run(main())


async def apply_all(store: ResourceStore, manifests: Sequence[Mapping[str, Any]]) -> None:
    for manifest in manifests:
        await store.apply(decode_resource(dict(manifest)))


def profile_name(namespace: str) -> str:
    return f"kns.{namespace}"


def namespace_profile(namespace: str) -> dict[str, Any]:
    """The Profile kube-controllers' namespace controller writes for a namespace."""
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Profile",
        "metadata": {"name": profile_name(namespace)},
        "spec": {
            "ingress": [{"action": "Allow"}],
            "egress": [{"action": "Allow"}],
            "labelsToApply": {"pcns.projectcalico.org/name": namespace},
        },
    }


def pool_manifest(name: str, cidr: str, block_size: int) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": {
            "cidr": cidr,
            "blockSize": block_size,
            "ipipMode": "Never",
            "vxlanMode": "Never",
            "natOutgoing": False,
            "nodeSelector": "all()",
        },
    }


def topology_manifests(
    route_reflectors: Sequence[tuple[str, str]], rr_cluster_id: str
) -> list[dict[str, Any]]:
    """Route reflectors ``(node name, IPv4)``: their Node resources (label
    ``route-reflector=true`` and a cluster ID), the mesh off, and every node peering with them.
    With none, the default full mesh needs no resources."""
    if not route_reflectors:
        return []
    manifests: list[dict[str, Any]] = [
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "BGPConfiguration",
            "metadata": {"name": "default"},
            "spec": {"nodeToNodeMeshEnabled": False, "asNumber": 64512},
        },
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "BGPPeer",
            "metadata": {"name": "peer-with-route-reflectors"},
            "spec": {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"},
        },
    ]
    for name, address in route_reflectors:
        manifests.append(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "Node",
                "metadata": {"name": name, "labels": {"route-reflector": "true"}},
                "spec": {
                    "bgp": {
                        "ipv4Address": f"{address}/24",
                        "routeReflectorClusterID": rr_cluster_id,
                    }
                },
            }
        )
    return manifests


async def label_workload_endpoint(
    store: ResourceStore,
    name: str,
    namespace: str,
    labels: Mapping[str, str],
) -> dict[str, Any]:
    """Give the CNI plugin's WorkloadEndpoint the pod's labels and namespace profile, as the
    Kubernetes path of Calico's plugin (and kube-controllers) would; returns it as a manifest."""
    current = encode_resource(await store.get("WorkloadEndpoint", name, namespace))
    metadata = current.setdefault("metadata", {})
    merged = dict(metadata.get("labels") or {})
    merged.update(labels)
    merged[NAMESPACE_LABEL] = namespace
    merged[ORCHESTRATOR_LABEL] = "k8s"
    metadata["labels"] = merged
    spec = current.setdefault("spec", {})
    spec["profiles"] = [profile_name(namespace)]
    await store.apply(decode_resource(current, default_namespace=namespace))
    return current


async def workload_endpoints(store: ResourceStore) -> list[dict[str, Any]]:
    listed = await store.list("WorkloadEndpoint")
    return [encode_resource(item) for item in listed.items]

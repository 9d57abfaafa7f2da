"""The lab's datastore writes: IP pools, the BGP topology, and namespace profiles.

What it is: the part of the lab that stands in for an installer and for kube-controllers.  With
no Kubernetes API, the lab does what kube-controllers' namespace controller would do: a Profile
``kns.<ns>`` per namespace (allow-all both ways, ``labelsToApply``
``pcns.projectcalico.org/name=<ns>``), which the CNI plugin's WorkloadEndpoints reference
(``policy.type: k8s``).  Pod labels need nothing here: the runtime passes them to the plugin
(``args.cni.labels``).  Everything goes through ``ResourceStore`` over the lab's host relay.
What it is not: the CNI plugin or calicoctl.

Invariants: every write is an idempotent apply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from pycalico.datastore.etcd import EtcdKVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.model.codec import decode_resource

T = TypeVar("T")


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


def namespace_profile(namespace: str, labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Profile kube-controllers' namespace controller writes for a namespace: its labels
    become ``pcns.<key>`` on every endpoint in it (with Kubernetes, the Namespace's labels)."""
    to_apply = {f"pcns.{key}": value for key, value in sorted((labels or {}).items())}
    to_apply["pcns.projectcalico.org/name"] = namespace
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Profile",
        "metadata": {"name": profile_name(namespace)},
        "spec": {
            "ingress": [{"action": "Allow"}],
            "egress": [{"action": "Allow"}],
            "labelsToApply": to_apply,
        },
    }


def pool_manifest(
    name: str, cidr: str, block_size: int, vxlan_mode: str = "Never"
) -> dict[str, Any]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPPool",
        "metadata": {"name": name},
        "spec": {
            "cidr": cidr,
            "blockSize": block_size,
            "ipipMode": "Never",
            "vxlanMode": vxlan_mode,
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

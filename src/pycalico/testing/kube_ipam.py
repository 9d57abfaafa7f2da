"""Test support for the node controller and the IPAM GC: Calico Nodes of Kubernetes nodes, pod
addresses allocated through the real IPAM (as the CNI plugin's ADD does) with their
WorkloadEndpoints, and ``FakeKubeView``, an in-memory ``KubeView``.

Test and benchmark support only: real clusters get these from calico-node and the CNI plugin.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from pycalico.datastore.resources import ResourceStore
from pycalico.ipam.allocator import IPAM, AutoAssignRequest
from pycalico.ipam.records import IPAddress
from pycalico.model.endpoints import WorkloadEndpoint, workload_endpoint_name
from pycalico.model.node import Node


async def create_calico_node(
    store: ResourceStore, name: str, kube_name: str | None = None, **metadata: Any
) -> Node:
    """A Calico Node whose ``orchRefs`` names Kubernetes node ``kube_name`` (default: ``name``)."""
    node = Node.model_validate(
        {
            "metadata": {"name": name, **metadata},
            "spec": {"orchRefs": [{"orchestrator": "k8s", "nodeName": kube_name or name}]},
        }
    )
    created = await store.create(node)
    assert isinstance(created, Node)
    return created


def pod_handle(namespace: str, pod: str) -> str:
    """The CNI plugin's handle form, ``<network>.<containerID>``, with a made-up container ID."""
    return f"k8s-pod-network.{namespace}-{pod}"


async def assign_pod_address(
    ipam: IPAM, node: str, namespace: str, pod: str, *, endpoint: bool = True
) -> IPAddress:
    """Allocate an address for pod ``namespace/pod`` on ``node`` as the CNI ADD does (handle and
    attributes) and, with ``endpoint``, write its WorkloadEndpoint."""
    v4, _ = await ipam.auto_assign(
        AutoAssignRequest(
            num4=1,
            handle_id=pod_handle(namespace, pod),
            attrs={"node": node, "namespace": namespace, "pod": pod},
            node=node,
        )
    )
    address = v4.addresses[0].ip
    if endpoint:
        await write_endpoint(ResourceStore(ipam.kv), node, namespace, pod, address)
    return address


async def write_endpoint(
    store: ResourceStore, node: str, namespace: str, pod: str, address: IPAddress
) -> WorkloadEndpoint:
    network = ipaddress.ip_network(address)
    endpoint = WorkloadEndpoint.model_validate(
        {
            "metadata": {
                "name": workload_endpoint_name(node, "k8s", pod, "eth0"),
                "namespace": namespace,
            },
            "spec": {
                "orchestrator": "k8s",
                "node": node,
                "pod": pod,
                "endpoint": "eth0",
                "interfaceName": f"cali{abs(hash((namespace, pod))) % 10**10:010d}",
                "ipNetworks": [str(network)],
            },
        }
    )
    created = await store.create(endpoint)
    assert isinstance(created, WorkloadEndpoint)
    return created


@dataclass
class FakeKubeView:
    """Kubernetes nodes and pods in memory (``KubeView``); ``reads`` counts live reads."""

    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    pod_nodes: dict[tuple[str, str], str] = field(default_factory=dict)
    reads: int = 0

    def add_node(self, name: str, labels: dict[str, str] | None = None) -> None:
        self.nodes[name] = {"metadata": {"name": name, "labels": dict(labels or {})}}

    async def node_names(self) -> frozenset[str]:
        return frozenset(self.nodes)

    async def pods(self) -> dict[tuple[str, str], str]:
        return dict(self.pod_nodes)

    async def read_node(self, name: str) -> dict[str, Any] | None:
        self.reads += 1
        return self.nodes.get(name)

    async def read_pod(self, namespace: str, name: str) -> str | None:
        self.reads += 1
        return self.pod_nodes.get((namespace, name))

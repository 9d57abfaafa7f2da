"""The node controller and IPAM GC against a real kube-apiserver and a real etcd.

Nodes and pods are Kubernetes objects (no kubelet runs: pods are bound with ``spec.nodeName``);
their addresses are allocated through the real IPAM as the CNI ADD does, with their
WorkloadEndpoints; ``kubectl`` deletes and labels nodes; ``calicoctl ipam check`` judges what
is left.  Every wait is for an observed state (``eventually``) or a counted GC pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pycalico.datastore.api import KeyNotFound
from pycalico.datastore.resources import ResourceStore
from pycalico.ipam.allocator import IPAM
from pycalico.k8s.client import KubeClient
from pycalico.kubecontrollers.ipam_gc import IPAMGarbageCollector
from pycalico.kubecontrollers.node import NodeController, NodeControllerConfig, node_controller
from pycalico.kubecontrollers.node_kube import ApiKubeView
from pycalico.model.bgp import BGPPeer
from pycalico.model.endpoints import HostEndpoint
from pycalico.model.node import FelixConfiguration
from pycalico.testing.calicoctl import CALICOCTL
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.eventually import eventually
from pycalico.testing.ipam import put_pool
from pycalico.testing.kube_ipam import (
    assign_pod_address,
    create_calico_node,
    pod_handle,
)
from pycalico.testing.kube_server import KubeControlPlane

pytestmark = pytest.mark.root


async def kubectl(plane: KubeControlPlane, *args: str) -> str:
    done = await asyncio.to_thread(plane.apiserver.kubectl, *args)
    return done.stdout


async def calicoctl_ipam_check(etcd: EtcdServer, report: Path) -> tuple[int, str, Any]:
    process = await asyncio.create_subprocess_exec(
        CALICOCTL,
        "ipam",
        "check",
        "-o",
        str(report),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "ETCD_ENDPOINTS": etcd.endpoint, "DATASTORE_TYPE": "etcdv3"},
    )
    out, _ = await process.communicate()
    return int(process.returncode or 0), out.decode(), json.loads(report.read_text())


class Kube:
    """Nodes and pods of one test, with unique names; removed afterwards."""

    def __init__(self, plane: KubeControlPlane, kube: KubeClient, namespace: str) -> None:
        self.plane, self.kube, self.namespace = plane, kube, namespace
        self.suffix = namespace.removeprefix("nc-")
        self.nodes: list[str] = []

    def node_name(self, short: str) -> str:
        return f"{short}-{self.suffix}"

    async def add_node(self, short: str, labels: dict[str, str] | None = None) -> str:
        name = self.node_name(short)
        body = {"metadata": {"name": name, "labels": labels or {}}}
        await self.kube.core.create_node(body)
        self.nodes.append(name)
        return name

    async def add_pod(self, name: str, node: str) -> None:
        body = {
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {
                "nodeName": node,
                "serviceAccountName": "runner",
                "automountServiceAccountToken": False,
                "containers": [{"name": "main", "image": "busybox"}],
            },
        }
        await self.kube.core.create_namespaced_pod(self.namespace, body)

    async def delete_pod(self, name: str) -> None:
        await self.kube.core.delete_namespaced_pod(name, self.namespace, grace_period_seconds=0)


@pytest.fixture
async def cluster(kube_plane: KubeControlPlane, kube: KubeClient) -> AsyncIterator[Kube]:
    namespace = f"nc-{secrets.token_hex(4)}"
    await kubectl(kube_plane, "create", "namespace", namespace)
    await kubectl(kube_plane, "create", "serviceaccount", "runner", "-n", namespace)
    made = Kube(kube_plane, kube, namespace)
    try:
        yield made
    finally:
        for node in made.nodes:
            await kubectl(kube_plane, "delete", "node", node, "--ignore-not-found")
        await kubectl(kube_plane, "delete", "namespace", namespace, "--wait=false")


@pytest.fixture
async def seeded(store: ResourceStore) -> ResourceStore:
    await put_pool(store.kv, "pool1", "10.65.0.0/16", block_size=26)
    return store


@contextlib.asynccontextmanager
async def running(controller: NodeController) -> AsyncIterator[NodeController]:
    task = asyncio.create_task(controller.run())
    try:
        await asyncio.wait_for(controller.synced.wait(), 20)
        yield controller
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def gc_passes(controller: NodeController, count: int, timeout: float = 30.0) -> None:
    """Wait until ``count`` more GC passes have completed."""
    target = controller.gc.passes + count

    async def done() -> None:
        assert controller.gc.passes >= target, f"{controller.gc.passes} GC passes so far"

    await eventually(done, timeout)


async def test_kubectl_delete_node_removes_its_calico_data_while_other_pods_are_added(
    kube_plane: KubeControlPlane,
    kube: KubeClient,
    seeded: ResourceStore,
    etcd: EtcdServer,
    cluster: Kube,
    tmp_path: Path,
) -> None:
    store = seeded
    ipam = IPAM(store.kv)
    doomed, other = await cluster.add_node("doomed"), await cluster.add_node("other")
    await create_calico_node(store, doomed)
    await create_calico_node(store, other)
    for index in range(5):
        await cluster.add_pod(f"d{index}", doomed)
        await assign_pod_address(ipam, doomed, cluster.namespace, f"d{index}")
    for item in (
        BGPPeer.model_validate(
            {
                "metadata": {"name": f"peer-{doomed}"},
                "spec": {"node": doomed, "asNumber": 64512, "peerIP": "10.0.0.9"},
            }
        ),
        FelixConfiguration.model_validate({"metadata": {"name": f"node.{doomed}"}, "spec": {}}),
        HostEndpoint.model_validate(
            {
                "metadata": {"name": f"{doomed}-eth0"},
                "spec": {"node": doomed, "interfaceName": "eth0"},
            }
        ),
    ):
        await store.create(item)

    controller = node_controller(kube, store, config=NodeControllerConfig(reconciler_period=60))
    async with running(controller):
        added: dict[str, Any] = {}

        async def pod_adds() -> None:  # CNI ADDs on the other node, during the deletion
            for index in range(15):
                name = f"o{index}"
                await cluster.add_pod(name, other)
                added[name] = await assign_pod_address(ipam, other, cluster.namespace, name)

        adds = asyncio.create_task(pod_adds())
        await kubectl(kube_plane, "delete", "node", doomed)

        async def removed() -> None:
            assert controller.removed == [doomed], controller.removed

        await eventually(removed)
        await adds

    for kind, name in (
        ("Node", doomed),
        ("BGPPeer", f"peer-{doomed}"),
        ("FelixConfiguration", f"node.{doomed}"),
        ("HostEndpoint", f"{doomed}-eth0"),
    ):
        with pytest.raises(KeyNotFound):
            await store.get(kind, name)
    endpoints = (await store.list("WorkloadEndpoint")).items
    assert {e.spec.node for e in endpoints} == {other}  # type: ignore[attr-defined]
    for name, address in added.items():
        info = await ipam.allocation_info(address)
        assert info is not None and info.handle_id == pod_handle(cluster.namespace, name)
    code, out, report = await calicoctl_ipam_check(etcd, tmp_path / "report.json")
    assert code == 0 and "found 0 problems" in out and "Found 15 allocated IPs." in out, out
    allocations = [a for entries in report["allocations"].values() for a in entries]
    assert len(allocations) == 15 and all(a["inUse"] for a in allocations)  # nothing leaked
    assert not report.get("leakedHandles")


async def test_leaked_address_released_after_grace_and_pod_being_created_kept(
    kube: KubeClient, seeded: ResourceStore, cluster: Kube
) -> None:
    store = seeded
    ipam = IPAM(store.kv)
    node = await cluster.add_node("gc")
    await create_calico_node(store, node)
    await cluster.add_pod("kept", node)
    kept = await assign_pod_address(ipam, node, cluster.namespace, "kept")
    await cluster.add_pod("leaky", node)
    # The CNI ADD allocated, failed before writing the endpoint; the pod was then deleted.
    leaked = await assign_pod_address(ipam, node, cluster.namespace, "leaky", endpoint=False)
    await cluster.delete_pod("leaky")
    # A CNI ADD whose pod the GC cannot see yet (created in Kubernetes a little later).
    creating = await assign_pod_address(ipam, node, cluster.namespace, "late", endpoint=False)

    config = NodeControllerConfig(leak_grace_period=2.0, gc_interval=0.2)
    controller = node_controller(kube, store, config=config)
    async with running(controller):
        await gc_passes(controller, 2)
        await cluster.add_pod("late", node)  # within the grace period

        async def released() -> None:
            assert await ipam.allocation_info(leaked) is None

        await eventually(released)
        await gc_passes(controller, 3)  # well past the grace period of "late" too
        assert await ipam.allocation_info(kept) is not None
        assert await ipam.allocation_info(creating) is not None
        assert (
            controller.gc.metrics.value(  # type: ignore[attr-defined]
                "ipam_allocations_gc_reclamations", ippool="pool1", node=node
            )
            == 1
        )


async def test_reassigned_address_is_never_freed(
    kube: KubeClient, seeded: ResourceStore, cluster: Kube
) -> None:
    store = seeded
    ipam = IPAM(store.kv)
    node = await cluster.add_node("race")
    await create_calico_node(store, node)
    await cluster.add_pod("old", node)
    address = await assign_pod_address(ipam, node, cluster.namespace, "old", endpoint=False)
    await cluster.delete_pod("old")
    view = ApiKubeView(kube)
    live_read = view.read_pod

    async def reassigned_right_after_the_read(namespace: str, name: str) -> str | None:
        result = await live_read(namespace, name)
        if name == "old":  # the old pod's DEL lands, and a new pod gets the very address
            await ipam.release_by_handle(pod_handle(namespace, "old"))
            await cluster.add_pod("new", node)
            await ipam.assign_ip(
                address,
                node=node,
                handle_id=pod_handle(namespace, "new"),
                attrs={"node": node, "namespace": namespace, "pod": "new"},
            )
        return result

    view.read_pod = reassigned_right_after_the_read  # type: ignore[method-assign]
    gc = IPAMGarbageCollector(view, store, ipam, leak_grace_period=0.0)
    result = await gc.run_once()
    assert result.released == () and result.skipped == 1
    info = await ipam.allocation_info(address)
    assert info is not None and info.handle_id == pod_handle(cluster.namespace, "new")
    assert (await gc.run_once()).released == ()  # the new pod exists: valid


async def test_kubernetes_node_labels_are_copied_and_user_labels_kept(
    kube_plane: KubeControlPlane, kube: KubeClient, seeded: ResourceStore, cluster: Kube
) -> None:
    store = seeded
    node = await cluster.add_node("labels", {"zone": "a"})
    controller = node_controller(kube, store, config=NodeControllerConfig(reconciler_period=60))
    async with running(controller):
        # calico-node registers after the controller has seen the Kubernetes node.
        await create_calico_node(store, node, labels={"user": "x"})

        async def labels_are(expected: dict[str, str]) -> None:
            found = await store.get("Node", node)
            assert found.metadata.labels == expected, found.metadata.labels

        await eventually(lambda: labels_are({"user": "x", "zone": "a"}))
        await kubectl(kube_plane, "label", "node", node, "rack=r1", "zone-")
        await eventually(lambda: labels_are({"user": "x", "rack": "r1"}))


async def test_live_reads_say_not_found_only_on_404(kube: KubeClient, cluster: Kube) -> None:
    view = ApiKubeView(kube)
    node = await cluster.add_node("present")
    assert (await view.read_node(node) or {})["metadata"]["name"] == node
    assert await view.read_node(f"missing-{cluster.suffix}") is None
    assert await view.read_pod(cluster.namespace, "missing") is None
    await cluster.add_pod("there", node)
    assert await view.read_pod(cluster.namespace, "there") == node
    assert (cluster.namespace, "there") in await view.pods()

"""IPAMGarbageCollector over the real IPAM on an in-memory datastore, with a fake Kubernetes
view and a fake clock: leaks released after the grace period, vanished nodes at once, a
re-assignment between plan and release never freed, empty blocks, metrics."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from pycalico.datastore.resources import ResourceStore
from pycalico.ipam.allocator import IPAM
from pycalico.ipam.check import check
from pycalico.kubecontrollers.ipam_gc import IPAMGarbageCollector
from pycalico.kubecontrollers.node_ipam_metrics import (
    BLOCKS,
    GC_CANDIDATES,
    GC_RECLAMATIONS,
    IN_USE,
    InMemoryMetrics,
)
from pycalico.model.node import Node
from pycalico.testing.ipam import put_pool
from pycalico.testing.kube_ipam import (
    FakeKubeView,
    assign_pod_address,
    create_calico_node,
    pod_handle,
)
from pycalico.testing.memory_kv import MemoryKVStore

GRACE = 10.0


class Cluster:
    def __init__(self) -> None:
        self.kv = MemoryKVStore()
        self.store = ResourceStore(self.kv)
        self.ipam = IPAM(self.kv)
        self.view = FakeKubeView()
        self.now = 0.0
        self.metrics = InMemoryMetrics()
        self.gc = IPAMGarbageCollector(
            self.view,
            self.store,
            self.ipam,
            leak_grace_period=GRACE,
            metrics=self.metrics,
            clock=lambda: self.now,
        )

    async def node(self, name: str) -> None:
        await create_calico_node(self.store, name)
        self.view.add_node(name)

    async def pod(
        self, node: str, name: str, *, visible: bool = True, endpoint: bool = True
    ) -> Any:
        address = await assign_pod_address(self.ipam, node, "ns", name, endpoint=endpoint)
        if visible:
            self.view.pod_nodes[("ns", name)] = node
        return address


@pytest.fixture
async def cluster() -> Cluster:
    made = Cluster()
    await put_pool(made.kv, "pool1", "10.65.0.0/16", block_size=26)
    await made.node("n1")
    await made.node("n2")
    return made


async def test_leaked_pod_address_released_after_grace_and_valid_ones_kept(
    cluster: Cluster,
) -> None:
    kept = await cluster.pod("n1", "web")
    # The CNI ADD failed after allocating (no WorkloadEndpoint), then the pod was deleted.
    leaked = await cluster.pod("n1", "gone", endpoint=False)
    del cluster.view.pod_nodes[("ns", "gone")]

    result = await cluster.gc.run_once()
    assert result.released == () and [a.address for a in result.plan.candidates] == [leaked]
    assert cluster.metrics.value(GC_CANDIDATES, ippool="pool1", node="n1") == 1
    cluster.now = GRACE - 0.1
    assert (await cluster.gc.run_once()).released == ()
    cluster.now = GRACE
    result = await cluster.gc.run_once()
    assert [a.address for a in result.released] == [leaked]
    assert await cluster.ipam.allocation_info(leaked) is None
    assert await cluster.ipam.allocation_info(kept) is not None
    assert await cluster.kv.get(f"/calico/ipam/v2/handle/{pod_handle('ns', 'gone')}") is None
    assert cluster.metrics.value(GC_RECLAMATIONS, ippool="pool1", node="n1") == 1
    assert cluster.metrics.value(GC_CANDIDATES, ippool="pool1", node="n1") == 0
    assert cluster.metrics.value(IN_USE, ippool="pool1", node="n1") == 2  # as this pass read
    assert cluster.metrics.value(BLOCKS, ippool="pool1", node="n1") == 1
    report = await check(cluster.kv)
    assert report.clean and not report.leaked


async def test_pod_being_created_is_not_released_within_grace(cluster: Cluster) -> None:
    address = await cluster.pod("n1", "new", visible=False)  # ADD ran, pod not listed yet
    await cluster.gc.run_once()
    cluster.now = GRACE / 2
    cluster.view.pod_nodes[("ns", "new")] = "n1"  # now it is seen
    await cluster.gc.run_once()
    cluster.now = GRACE * 3
    result = await cluster.gc.run_once()
    assert result.released == () and result.plan.candidates == ()
    assert await cluster.ipam.allocation_info(address) is not None


async def test_reassignment_between_plan_and_release_is_not_freed(cluster: Cluster) -> None:
    address = await cluster.pod("n1", "old")
    del cluster.view.pod_nodes[("ns", "old")]
    await cluster.gc.run_once()
    cluster.now = GRACE
    original = cluster.view.read_pod

    async def reassign_then_read(namespace: str, name: str) -> str | None:
        # The live re-read happens; just after it the old handle is released and the very
        # address handed to a new pod -- the release must quote a stale sequence number.
        result = await original(namespace, name)
        if name == "old":
            await cluster.ipam.release_by_handle(pod_handle("ns", "old"))
            await cluster.ipam.assign_ip(
                address,
                node="n1",
                handle_id=pod_handle("ns", "new"),
                attrs={"node": "n1", "namespace": "ns", "pod": "new"},
            )
            cluster.view.pod_nodes[("ns", "new")] = "n1"
        return result

    cluster.view.read_pod = reassign_then_read  # type: ignore[method-assign]
    result = await cluster.gc.run_once()
    assert result.released == () and result.skipped == 1
    info = await cluster.ipam.allocation_info(address)
    assert info is not None and info.handle_id == pod_handle("ns", "new")


async def test_vanished_node_addresses_released_at_once_even_with_gc_disabled(
    cluster: Cluster,
) -> None:
    cluster.gc.leak_grace_period = None
    on_n2 = await cluster.pod("n2", "a")
    pod_leak = await cluster.pod("n1", "b")
    del cluster.view.nodes["n2"]
    del cluster.view.pod_nodes[("ns", "b")]
    result = await cluster.gc.run_once()
    assert [a.address for a in result.released] == [on_n2]
    assert await cluster.ipam.allocation_info(pod_leak) is not None


async def test_calico_node_without_a_kubernetes_node_keeps_its_addresses(
    cluster: Cluster,
) -> None:
    await cluster.store.create(Node.model_validate({"metadata": {"name": "bare"}}))
    address = await cluster.pod("bare", "host-service", visible=False)
    cluster.now = GRACE * 10
    await cluster.gc.run_once()
    result = await cluster.gc.run_once()
    assert result.released == () and result.plan.candidates == ()
    assert await cluster.ipam.allocation_info(address) is not None


async def test_node_back_before_release_keeps_addresses(cluster: Cluster) -> None:
    address = await cluster.pod("n2", "a")
    node = cluster.view.nodes.pop("n2")
    original = cluster.view.read_node

    async def node_returns(name: str) -> dict[str, Any] | None:
        cluster.view.nodes["n2"] = node  # came back between the list and the live read
        return await original(name)

    cluster.view.read_node = node_returns  # type: ignore[method-assign]
    result = await cluster.gc.run_once()
    assert result.released == () and await cluster.ipam.allocation_info(address) is not None


async def test_empty_blocks_released_on_the_second_pass_keeping_one_per_node(
    cluster: Cluster,
) -> None:
    for index in range(65):  # two blocks of 64 on n1
        await cluster.pod("n1", f"p{index}")
    blocks = await cluster.ipam.list_blocks()
    assert len(blocks) == 2
    for index in range(65):
        await cluster.ipam.release_by_handle(pod_handle("ns", f"p{index}"))
    assert (await cluster.gc.run_once()).blocks_released == 0
    assert (await cluster.gc.run_once()).blocks_released == 1
    remaining = await cluster.ipam.list_blocks()
    assert len(remaining) == 1 and remaining[0][1].host == "n1"


async def test_release_node_addresses_only_touches_that_node(cluster: Cluster) -> None:
    kept = await cluster.pod("n1", "a")
    gone = await cluster.pod("n2", "b")
    del cluster.view.nodes["n2"]
    assert await cluster.gc.release_node_addresses("n2") == 1
    assert await cluster.ipam.allocation_info(gone) is None
    assert await cluster.ipam.allocation_info(kept) is not None
    assert ipaddress.ip_address(gone) in ipaddress.ip_network("10.65.0.0/16")

"""The node controller's sweep (a vanished Kubernetes node's Calico data removed) and label sync,
over the real IPAM on an in-memory datastore and a fake Kubernetes view."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

import pytest

from pycalico.datastore.api import KeyNotFound
from pycalico.datastore.resources import ResourceStore
from pycalico.ipam.allocator import IPAM
from pycalico.ipam.check import check
from pycalico.k8s.client import KubeClient
from pycalico.kubecontrollers.node import NodeController, NodeControllerConfig
from pycalico.kubecontrollers.node_labels import KUBE_LABELS_ANNOTATION
from pycalico.model.bgp import BGPConfiguration, BGPPeer
from pycalico.model.endpoints import HostEndpoint
from pycalico.model.node import FelixConfiguration, Node
from pycalico.testing.ipam import ipam_keys, put_pool
from pycalico.testing.kube_ipam import FakeKubeView, assign_pod_address, create_calico_node
from pycalico.testing.memory_kv import MemoryKVStore


@pytest.fixture
async def controller() -> NodeController:
    kv = MemoryKVStore()
    await put_pool(kv, "pool1", "10.65.0.0/16", block_size=26)
    made = NodeController(
        cast(KubeClient, None),  # the sweep and label sync never use the client itself
        ResourceStore(kv),
        config=NodeControllerConfig(),
        ipam=IPAM(kv),
        view=FakeKubeView(),
    )
    return made


def view(controller: NodeController) -> FakeKubeView:
    assert isinstance(controller.view, FakeKubeView)
    return controller.view


async def node_with_everything(controller: NodeController, name: str) -> list[tuple[str, Any]]:
    store = controller.store
    await create_calico_node(store, name, f"kube-{name}")
    view(controller).add_node(f"kube-{name}")
    controller.kube_labels[f"kube-{name}"] = {}
    for pod in ("a", "b"):
        await assign_pod_address(controller.ipam, name, "ns", f"{name}-{pod}")
    objects: list[Any] = [
        BGPPeer.model_validate(
            {
                "metadata": {"name": f"peer-{name}"},
                "spec": {"node": name, "peerIP": "10.0.0.9", "asNumber": 64512},
            }
        ),
        FelixConfiguration.model_validate({"metadata": {"name": f"node.{name}"}, "spec": {}}),
        BGPConfiguration.model_validate({"metadata": {"name": f"node.{name}"}, "spec": {}}),
        HostEndpoint.model_validate(
            {
                "metadata": {"name": f"{name}-eth0"},
                "spec": {"node": name, "interfaceName": "eth0"},
            }
        ),
    ]
    for item in objects:
        await store.create(item)
    return [(type(item).KIND, item.metadata.name) for item in objects]


async def test_sweep_removes_a_vanished_nodes_data_and_nothing_else(
    controller: NodeController,
) -> None:
    doomed = await node_with_everything(controller, "n1")
    survivors = await node_with_everything(controller, "n2")
    del view(controller).nodes["kube-n1"]
    del controller.kube_labels["kube-n1"]

    await controller.sweep()

    assert controller.removed == ["n1"]
    store = controller.store
    for kind, name in [*doomed, ("Node", "n1")]:
        with pytest.raises(KeyNotFound):
            await store.get(kind, name)
    for kind, name in [*survivors, ("Node", "n2")]:
        await store.get(kind, name)
    endpoints = (await store.list("WorkloadEndpoint")).items
    assert {e.spec.node for e in endpoints} == {"n2"}  # type: ignore[attr-defined]
    keys = await ipam_keys(controller.ipam.kv)
    assert not [k for k in keys if "/n1/" in k or "ns.n1-" in k]  # affinity, handles gone
    report = await check(controller.ipam.kv)
    assert report.clean and not report.leaked


async def test_sweep_keeps_a_node_the_live_read_finds(controller: NodeController) -> None:
    await node_with_everything(controller, "n1")
    del controller.kube_labels["kube-n1"]  # the watch is behind; the API server has it
    await controller.sweep()
    assert controller.removed == []
    await controller.store.get("Node", "n1")


async def test_sweep_ignores_calico_nodes_kubernetes_does_not_manage(
    controller: NodeController,
) -> None:
    await controller.store.create(Node.model_validate({"metadata": {"name": "bare"}}))
    await controller.sweep()
    await controller.store.get("Node", "bare")


async def test_label_sync_copies_kubernetes_labels_and_keeps_user_labels(
    controller: NodeController,
) -> None:
    await create_calico_node(controller.store, "calico-1", "kube-1", labels={"user": "x"})
    controller.kube_labels["kube-1"] = {"zone": "a"}
    await controller.sync_labels("kube-1")
    node = await controller.store.get("Node", "calico-1")
    assert node.metadata.labels == {"user": "x", "zone": "a"}
    assert node.metadata.annotations == {KUBE_LABELS_ANNOTATION: '{"zone":"a"}'}
    revision = node.metadata.resource_version

    await controller.sync_labels("kube-1")  # unchanged: no write
    assert (await controller.store.get("Node", "calico-1")).metadata.resource_version == revision

    controller.kube_labels["kube-1"] = {}
    await controller.sync_labels("kube-1")
    node = await controller.store.get("Node", "calico-1")
    assert node.metadata.labels == {"user": "x"}


def test_config_defaults_and_checks() -> None:
    config = NodeControllerConfig()
    assert config.leak_grace_period == 900 and config.effective_gc_interval == 300
    assert NodeControllerConfig(leak_grace_period=60).effective_gc_interval == 30
    assert NodeControllerConfig(leak_grace_period=0).effective_gc_interval == 300
    with pytest.raises(ValueError, match="leakGracePeriod"):
        NodeControllerConfig(leak_grace_period=-1)


async def test_calico_node_registered_later_gets_its_labels_at_once(
    controller: NodeController,
) -> None:
    controller.kube_labels["kube-late"] = {"zone": "b"}
    watching = asyncio.create_task(controller.watch_calico_nodes())
    try:
        await create_calico_node(controller.store, "calico-late", "kube-late")

        async def labelled() -> None:
            while True:
                node = await controller.store.get("Node", "calico-late")
                if node.metadata.labels == {"zone": "b"}:
                    return
                await asyncio.sleep(0.01)

        await asyncio.wait_for(labelled(), 5)
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        await controller.workers.close()

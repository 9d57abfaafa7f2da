"""The node controller of calico/kube-controllers (etcd mode): Calico data of deleted Kubernetes
nodes removed, Kubernetes node labels copied to Calico Nodes, and IPAM garbage collection.

``node_controller(kube, store, config=NodeControllerConfig(...), metrics=...)`` returns a
``NodeController``; ``await controller.run()`` until cancelled.  It list-watches Kubernetes
Nodes (``pycalico.k8s.watch``) and reconciles three kinds of key with ``KeyedWorkers``:

* ``sweep``: every Calico Node whose ``orchRefs`` k8s ``nodeName`` is not among the Kubernetes
  nodes is re-checked with a live read; on 404 its data and then itself are removed
  (``node_cleanup``).  Calico Nodes without a k8s orchRef are never touched (Calico's
  ``ErrorNotKubernetes``).  Enqueued after every (re-)list, every Node DELETED event and every
  ``reconciler_period``.
* ``labels/<k8s node>`` (``sync_labels``): the Kubernetes node's labels copied to its Calico
  Node (``node_labels``), read-modify-write at the Node's revision.  Enqueued on ADDED/MODIFIED,
  when a Calico Node naming it appears (a watch on Calico Nodes) and for every node each
  ``reconciler_period``.
* ``ipam-gc``: one IPAM GC pass (``ipam_gc``) every ``gc_interval``.

Node removal and GC passes never run at once (one lock), which keeps their releases from
competing; each is safe on its own (sequence-checked releases).  A failing key is retried with
back-off by its worker, so an API-server or etcd outage delays work and loses none.

Not here: the executable, its configuration file and leader election (``pycalico.k8s``), the
Prometheus exporter (it implements ``node_ipam_metrics.MetricsSink``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from pycalico.datastore.api import DatastoreError, KeyNotFound, RevisionConflict, WatchEventType
from pycalico.datastore.resources import ResourceStore
from pycalico.datastore.retry import read_modify_write
from pycalico.ipam.allocator import IPAM
from pycalico.k8s.client import KubeClient
from pycalico.k8s.watch import Changed, Listed, ListWatcher
from pycalico.kubecontrollers.controllers import RECONCILER_PERIOD
from pycalico.kubecontrollers.ipam_gc import LEAK_GRACE_PERIOD, IPAMGarbageCollector
from pycalico.kubecontrollers.node_cleanup import remove_node
from pycalico.kubecontrollers.node_ipam_metrics import MetricsSink
from pycalico.kubecontrollers.node_kube import ApiKubeView, KubeView
from pycalico.kubecontrollers.node_labels import kube_node_name, synced_labels
from pycalico.kubecontrollers.workers import KeyedWorkers
from pycalico.model.node import Node

log = logging.getLogger(__name__)

SWEEP = "sweep"
IPAM_GC = "ipam-gc"
LABELS = "labels/"
DEFAULT_GC_INTERVAL = 300.0  # Calico: leakGracePeriod / 2, at most 5 minutes


@dataclass(frozen=True, slots=True)
class NodeControllerConfig:
    """KubeControllersConfiguration's node controller settings, in seconds."""

    sync_labels: bool = True  # syncLabels: Enabled
    leak_grace_period: float | None = LEAK_GRACE_PERIOD  # None (Calico: 0) disables pod-leak GC
    reconciler_period: float = RECONCILER_PERIOD
    gc_interval: float | None = None  # None: Calico's (half the grace period, at most 5 min)

    def __post_init__(self) -> None:
        if self.leak_grace_period is not None and self.leak_grace_period < 0:
            raise ValueError("leakGracePeriod: must not be negative")
        if self.reconciler_period <= 0:
            raise ValueError("reconcilerPeriod: must be positive")
        if self.gc_interval is not None and self.gc_interval <= 0:
            raise ValueError("gc_interval: must be positive")

    @property
    def effective_gc_interval(self) -> float:
        if self.gc_interval is not None:
            return self.gc_interval
        if not self.leak_grace_period:
            return DEFAULT_GC_INTERVAL
        return min(DEFAULT_GC_INTERVAL, self.leak_grace_period / 2)


class NodeController:
    def __init__(
        self,
        kube: KubeClient,
        store: ResourceStore,
        *,
        config: NodeControllerConfig | None = None,
        metrics: MetricsSink | None = None,
        ipam: IPAM | None = None,
        view: KubeView | None = None,
    ) -> None:
        self.kube = kube
        self.store = store
        self.config = config or NodeControllerConfig()
        self.view: KubeView = view if view is not None else ApiKubeView(kube)
        self.ipam = ipam if ipam is not None else IPAM(store.kv)
        grace = self.config.leak_grace_period or None  # Calico: 0 disables
        self.gc = IPAMGarbageCollector(
            self.view, store, self.ipam, leak_grace_period=grace, metrics=metrics
        )
        self.kube_labels: dict[str, dict[str, str]] = {}  # k8s node -> its labels
        self.workers = KeyedWorkers(self._reconcile)
        self.synced = asyncio.Event()  # set once the first list of nodes is in
        self.removed: list[str] = []  # Calico nodes removed (for tests and logs)
        self._ipam_lock = asyncio.Lock()

    async def run(self) -> None:
        loops = [
            asyncio.create_task(self.watch_calico_nodes()),
            asyncio.create_task(self._every(self.config.reconciler_period, self.resync)),
            asyncio.create_task(self._every(self.config.effective_gc_interval, self._gc_due)),
        ]
        try:
            await self._watch()
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await self.workers.close()

    async def _watch(self) -> None:
        watcher = ListWatcher(self.kube.core.list_node)
        async for event in watcher.events():
            if isinstance(event, Listed):
                wires = [self.kube.to_wire(item) for item in event.items]
                self.kube_labels = {w["metadata"]["name"]: _labels(w) for w in wires}
                self.resync()
                self.workers.enqueue(IPAM_GC)
                self.synced.set()
            elif isinstance(event, Changed):
                wire = self.kube.to_wire(event.object)
                name = wire["metadata"]["name"]
                if event.type == "DELETED":
                    self.kube_labels.pop(name, None)
                    self.workers.enqueue(SWEEP)
                else:
                    self.kube_labels[name] = _labels(wire)
                    if self.config.sync_labels:
                        self.workers.enqueue(LABELS + name)

    async def watch_calico_nodes(self) -> None:
        """A Calico Node registered after its Kubernetes node gets its labels at once (Calico's
        label controller follows Calico Nodes too).  A failed watch is started again."""
        delay = 0.1
        while True:
            try:
                async for event in self.store.watch("Node"):
                    delay = 0.1
                    if event.type is not WatchEventType.ADDED:
                        continue
                    assert isinstance(event.resource, Node)
                    name = kube_node_name(event.resource)
                    if name and self.config.sync_labels and name in self.kube_labels:
                        self.workers.enqueue(LABELS + name)
            except DatastoreError as error:
                log.warning(
                    "node controller: Calico Node watch failed, again in %.1fs: %s", delay, error
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def resync(self) -> None:
        """Enqueue the deletion sweep and every node's label sync."""
        self.workers.enqueue(SWEEP)
        if self.config.sync_labels:
            self.workers.enqueue_all(LABELS + name for name in list(self.kube_labels))

    def _gc_due(self) -> None:
        self.workers.enqueue(IPAM_GC)

    async def _every(self, period: float, action: Callable[[], None]) -> None:
        await self.synced.wait()
        while True:
            await asyncio.sleep(period)
            action()

    async def _reconcile(self, key: str) -> None:
        if key == SWEEP:
            await self.sweep()
        elif key == IPAM_GC:
            async with self._ipam_lock:
                await self.gc.run_once()
        elif key.startswith(LABELS):
            await self.sync_labels(key.removeprefix(LABELS))

    async def sweep(self) -> None:
        """Remove the Calico data of every Kubernetes node a live read no longer finds."""
        listed = await self.store.list("Node")
        for node in listed.items:
            assert isinstance(node, Node)
            name = kube_node_name(node)
            if name is None or name in self.kube_labels:
                continue
            if await self.view.read_node(name) is not None:
                continue  # the list was behind: the node exists
            async with self._ipam_lock:
                await remove_node(self.store, self.gc, node)
            self.removed.append(node.metadata.name)

    async def sync_labels(self, kube_name: str) -> None:
        """Copy the Kubernetes node's labels to the Calico Node(s) that name it."""
        labels = self.kube_labels.get(kube_name)
        if labels is None:
            return  # deleted: the sweep handles it
        listed = await self.store.list("Node")
        for node in listed.items:
            assert isinstance(node, Node)
            if kube_node_name(node) == kube_name:
                await self._write_labels(node.metadata.name, labels)

    async def _write_labels(self, calico_name: str, labels: dict[str, str]) -> None:
        async def step(last: DatastoreError | None) -> None:
            current = await self.store.get("Node", calico_name)
            metadata = current.metadata
            result = synced_labels(metadata.labels, metadata.annotations, labels)
            if not result.changed:
                return
            updated = metadata.model_copy(
                update={"labels": result.labels, "annotations": result.annotations}
            )
            await self.store.update(current.model_copy(update={"metadata": updated}))
            log.info("node controller: labels of Calico node %s synced", calico_name)

        with contextlib.suppress(KeyNotFound):  # the Calico node went meanwhile
            await read_modify_write(
                step, what=f"label sync of Node({calico_name})", conflicts=(RevisionConflict,)
            )


def _labels(wire: dict[str, object]) -> dict[str, str]:
    metadata = wire.get("metadata") or {}
    assert isinstance(metadata, dict)
    return dict(metadata.get("labels") or {})


def node_controller(
    kube: KubeClient,
    store: ResourceStore,
    *,
    config: NodeControllerConfig | None = None,
    metrics: MetricsSink | None = None,
) -> NodeController:
    """The node controller (deletion, label sync, IPAM GC) on ``kube`` and ``store``."""
    return NodeController(kube, store, config=config, metrics=metrics)

"""IPAM garbage collection: leaked addresses released, empty blocks given up -- the I/O half of
Calico's kube-controllers IPAM GC (the decisions are ``node_ipam_plan``, pure).

One pass (``IPAMGarbageCollector.run_once``) reads, in this order, every IPAM block, the
Kubernetes nodes, the Calico Nodes, every pod and every WorkloadEndpoint; asks the planner what
is leaked; then, for each confirmed leak (all addresses of one handle together):

1. reads the address's allocation again from its block, and the allocation's node, pod and the
   pod's WorkloadEndpoints live (``node_ipam_plan.still_leaked``), skipping it if anything
   says it is valid or it changed;
2. releases it through ``IPAM.release_ips`` quoting the sequence number and handle seen, so an
   address re-assigned after step 1 is not freed (``ReleaseConflict``: skipped, retried by a
   later pass if still leaked).

Empty blocks seen empty twice are released with ``IPAM.release_block_affinity`` requiring the
block to be empty and at the sequence number seen.  Metrics go to a ``MetricsSink``.

Reading blocks before pods matters: a pod exists before its CNI ADD allocates, so every
allocation read has its pod in the later pod list unless the pod is really gone.

Not here: deciding (``node_ipam_plan``), node deletion (``node_cleanup``), scheduling passes
(``node``).  Invariant: no address is released without a live re-read that still finds it
leaked and a sequence-number-checked release.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pycalico.datastore.api import DatastoreError, KeyNotFound
from pycalico.datastore.resources import ResourceStore
from pycalico.ipam.allocator import IPAM, IPAMError, ReleaseConflict
from pycalico.ipam.blocks import ReleaseOption
from pycalico.ipam.pools import Pool
from pycalico.ipam.records import IPAddress
from pycalico.kubecontrollers.node_ipam_metrics import (
    InMemoryMetrics,
    MetricsSink,
    count_reclaimed,
    ipam_metrics,
    publish,
)
from pycalico.kubecontrollers.node_ipam_plan import (
    Allocation,
    BlockView,
    LeakTracker,
    Plan,
    PodKey,
    Verdict,
    World,
    classify,
    handle_groups,
    read_block,
    still_leaked,
)
from pycalico.kubecontrollers.node_kube import KubeView
from pycalico.kubecontrollers.node_labels import kube_node_name
from pycalico.model.endpoints import WorkloadEndpoint
from pycalico.model.node import Node

log = logging.getLogger(__name__)

LEAK_GRACE_PERIOD = 900.0  # Calico's default leakGracePeriod: 15m
MAX_RELEASES_PER_PASS = 10_000  # a soft guard; the rest waits for the next pass


class NodeInUse(Exception):
    """A vanished node's address could not be released (it changed, or the node is back)."""


@dataclass(frozen=True, slots=True)
class PassResult:
    plan: Plan
    released: tuple[Allocation, ...]
    blocks_released: int
    skipped: int  # confirmed leaks that a re-read or a sequence check kept
    seconds: float


@dataclass(frozen=True, slots=True)
class Snapshot:
    pools: list[Pool]
    blocks: list[BlockView]
    allocations: list[Allocation]
    world: World


async def calico_nodes(store: ResourceStore) -> tuple[dict[str, str], frozenset[str]]:
    """Calico node name -> Kubernetes node name for Calico Nodes with a k8s orchRef, and the
    names of those without one (not Kubernetes' nodes)."""
    listed = await store.list("Node")
    mapping: dict[str, str] = {}
    unmanaged: set[str] = set()
    for node in listed.items:
        assert isinstance(node, Node)
        name = kube_node_name(node)
        if name:
            mapping[node.metadata.name] = name
        else:
            unmanaged.add(node.metadata.name)
    return mapping, frozenset(unmanaged)


def _addresses(endpoint: WorkloadEndpoint) -> set[IPAddress]:
    out: set[IPAddress] = set()
    for network in endpoint.spec.ip_networks or []:
        try:
            out.add(ipaddress.ip_interface(network).ip)
        except ValueError:
            continue
    return out


async def pod_addresses(
    store: ResourceStore, namespace: str | None = None, pod: str | None = None
) -> dict[PodKey, frozenset[IPAddress]]:
    """The addresses of every k8s WorkloadEndpoint, by pod (one pod may have several WEPs)."""
    listed = await store.list("WorkloadEndpoint", namespace)
    out: dict[PodKey, set[IPAddress]] = {}
    for endpoint in listed.items:
        assert isinstance(endpoint, WorkloadEndpoint)
        spec = endpoint.spec
        if spec.orchestrator != "k8s" or not spec.pod or (pod is not None and spec.pod != pod):
            continue
        key = (endpoint.metadata.namespace or "", spec.pod)
        out.setdefault(key, set()).update(_addresses(endpoint))
    return {key: frozenset(value) for key, value in out.items()}


class IPAMGarbageCollector:
    def __init__(
        self,
        kube: KubeView,
        store: ResourceStore,
        ipam: IPAM,
        *,
        leak_grace_period: float | None = LEAK_GRACE_PERIOD,
        metrics: MetricsSink | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.store = store
        self.ipam = ipam
        self.leak_grace_period = leak_grace_period
        self.metrics: MetricsSink = metrics if metrics is not None else InMemoryMetrics()
        self.clock = clock
        self.tracker = LeakTracker()
        self.passes = 0

    async def snapshot(self) -> Snapshot:
        pools = await self.ipam.list_pools()
        blocks: list[BlockView] = []
        allocations: list[Allocation] = []
        for _, block in await self.ipam.list_blocks():
            view, held = read_block(block)
            blocks.append(view)
            allocations.extend(held)
        kube_nodes = await self.kube.node_names()
        calico_to_kube, unmanaged = await calico_nodes(self.store)
        world = World(
            kube_nodes=kube_nodes,
            calico_to_kube=calico_to_kube,
            pods=await self.kube.pods(),
            pod_addresses=await pod_addresses(self.store),
            unmanaged=unmanaged,
        )
        return Snapshot(pools=pools, blocks=blocks, allocations=allocations, world=world)

    async def run_once(self) -> PassResult:
        """One full pass: read, plan, re-check and release, publish metrics."""
        started = time.perf_counter()
        snap = await self.snapshot()
        plan = self.tracker.plan(
            snap.allocations,
            snap.blocks,
            snap.world,
            now=self.clock(),
            leak_grace_period=self.leak_grace_period,
        )
        released: list[Allocation] = []
        skipped = 0
        for group in plan.release:
            if len(released) >= MAX_RELEASES_PER_PASS:
                break
            if await self._release_group(group, snap.world):
                released.extend(group)
            else:
                skipped += len(group)
        blocks_released = 0
        for block in plan.release_blocks:
            blocks_released += await self._release_block(block)
        count_reclaimed(self.metrics, snap.pools, released)
        publish(
            self.metrics, ipam_metrics(snap.pools, snap.allocations, snap.blocks, plan.candidates)
        )
        self.passes += 1
        seconds = time.perf_counter() - started
        if released or blocks_released:
            log.info(
                "IPAM GC: released %d leaked addresses and %d empty blocks (%.2fs)",
                len(released),
                blocks_released,
                seconds,
            )
        return PassResult(plan, tuple(released), blocks_released, skipped, seconds)

    async def release_node_addresses(self, node: str) -> int:
        """Release every address of Calico node ``node`` that is leaked because its Kubernetes
        node is gone (pods' and tunnel addresses), all of a handle together, each re-checked
        live and released at the sequence number seen.  ``NodeInUse`` if one is not released
        (the node is back, or an address changed): the caller retries later."""
        snap = await self.snapshot()
        mine = [a for a in snap.allocations if a.node == node]
        confirmed = {a.key for a in mine if classify(a, snap.world) is Verdict.NODE_GONE}
        released = 0
        for group in handle_groups(mine, confirmed):
            if not await self._release_group(group, snap.world):
                raise NodeInUse(f"node {node}: address {group[0].address} was not released")
            released += len(group)
        count_reclaimed(self.metrics, snap.pools, [a for a in mine if a.key in confirmed])
        return released

    async def _live_world(self, allocation: Allocation, seen: World) -> World:
        """The allocation's node, pod and WorkloadEndpoints, read live now."""
        calico_to_kube = dict(seen.calico_to_kube)
        calico_to_kube.pop(allocation.node, None)
        try:
            got = await self.store.get("Node", allocation.node)
            assert isinstance(got, Node)
            name = kube_node_name(got)
            if not name:  # exists, and is not Kubernetes': never collected
                return World(frozenset(), {}, {}, unmanaged=frozenset({allocation.node}))
            calico_to_kube[allocation.node] = name
        except KeyNotFound:
            pass  # the Calico node is gone too: its Kubernetes node has its name
        kube_node = calico_to_kube.get(allocation.node) or allocation.node
        exists = await self.kube.read_node(kube_node) is not None
        pods: dict[PodKey, str] = {}
        addresses: dict[PodKey, frozenset[IPAddress]] = {}
        pod = allocation.pod
        if pod is not None and exists:
            scheduled = await self.kube.read_pod(*pod)
            if scheduled is not None:
                pods[pod] = scheduled
                addresses = await pod_addresses(self.store, pod[0], pod[1])
        return World(
            kube_nodes=frozenset({kube_node} if exists else ()),
            calico_to_kube=calico_to_kube,
            pods=pods,
            pod_addresses=addresses,
        )

    async def _current(self, allocation: Allocation) -> Allocation | None:
        info = await self.ipam.allocation_info(allocation.address)
        if info is None:
            return None
        return Allocation(
            address=info.address,
            block=info.block,
            sequence=info.sequence_number,
            handle=info.handle_id,
            attrs=dict(info.attributes),
        )

    async def _release_group(self, group: Sequence[Allocation], seen: World) -> bool:
        """Re-check every address of one handle, then release them all (sequence-checked)."""
        for allocation in group:
            current = await self._current(allocation)
            if not still_leaked(allocation, current, await self._live_world(allocation, seen)):
                log.info("IPAM GC: %s is in use again; not released", allocation.address)
                return False
        options = [
            ReleaseOption(a.address, sequence_number=a.sequence, handle_id=a.handle) for a in group
        ]
        try:
            await self.ipam.release_ips(options)
        except ReleaseConflict as error:
            log.info("IPAM GC: not released, changed meanwhile: %s", error)
            return False
        for allocation in group:
            log.info(
                "IPAM GC: released leaked %s (handle %s, node %s, pod %s)",
                allocation.address,
                allocation.handle,
                allocation.node,
                allocation.pod,
            )
        return True

    async def _release_block(self, block: BlockView) -> int:
        if block.host is None:
            return 0
        try:
            await self.ipam.release_block_affinity(
                block.host, block.cidr, require_empty=True, required_sequence=block.sequence
            )
        except (IPAMError, DatastoreError) as error:  # not empty, changed or claimed meanwhile
            log.info("IPAM GC: kept block %s of %s: %s", block.cidr, block.host, error)
            return 0
        log.info("IPAM GC: released empty block %s of %s", block.cidr, block.host)
        return 1

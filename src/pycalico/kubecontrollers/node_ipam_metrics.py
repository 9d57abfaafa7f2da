"""IPAM metrics of the GC, with Calico's names (PURE): what one pass computes and the small
protocol an exporter implements.

Calico's kube-controllers exports, per IP pool and node (labels ``ippool``, ``node``):
``ipam_allocations_in_use``, ``ipam_allocations_borrowed`` (allocated to a node other than the
block's), ``ipam_allocations_gc_candidates`` (pod leaks within their grace period),
``ipam_blocks`` (blocks affine to the node), the counter ``ipam_allocations_gc_reclamations``;
per pool ``ipam_ippool_size``; and the legacy per-node families ``ipam_allocations_per_node``,
``ipam_allocations_borrowed_per_node``, ``ipam_allocations_gc_candidates_per_node``,
``ipam_allocations_gc_reclamations_per_node`` and ``ipam_blocks_per_node``.

``MetricsSink`` is what the GC reports to: ``set_gauges`` replaces a whole gauge family (so a
node that vanished stops being reported), ``add_counter`` increases a counter.  The
executable's Prometheus exporter implements it; ``InMemoryMetrics`` is the default and what
tests read.  Not here: serving HTTP, registering with prometheus_client.

Invariant: ``ipam_metrics`` is a function of its inputs only; every family it returns is
complete (absent label sets are zero, not stale).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pycalico.ipam.pools import Pool, pool_for_address
from pycalico.kubecontrollers.node_ipam_plan import Allocation, BlockView

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs

IN_USE = "ipam_allocations_in_use"
BORROWED = "ipam_allocations_borrowed"
GC_CANDIDATES = "ipam_allocations_gc_candidates"
GC_RECLAMATIONS = "ipam_allocations_gc_reclamations"
BLOCKS = "ipam_blocks"
POOL_SIZE = "ipam_ippool_size"
LEGACY = {
    IN_USE: "ipam_allocations_per_node",
    BORROWED: "ipam_allocations_borrowed_per_node",
    GC_CANDIDATES: "ipam_allocations_gc_candidates_per_node",
    GC_RECLAMATIONS: "ipam_allocations_gc_reclamations_per_node",
    BLOCKS: "ipam_blocks_per_node",
}
GAUGES = (
    IN_USE,
    BORROWED,
    GC_CANDIDATES,
    BLOCKS,
    POOL_SIZE,
    *[LEGACY[n] for n in (IN_USE, BORROWED, GC_CANDIDATES, BLOCKS)],
)
COUNTERS = (GC_RECLAMATIONS, LEGACY[GC_RECLAMATIONS])
UNKNOWN_POOL = "no_ippool"
# The label names of each family (an empty family still has them).
LABEL_NAMES: dict[str, tuple[str, ...]] = {
    **{
        name: ("ippool", "node")
        for name in (IN_USE, BORROWED, GC_CANDIDATES, GC_RECLAMATIONS, BLOCKS)
    },
    **{legacy: ("node",) for legacy in LEGACY.values()},
    POOL_SIZE: ("ippool",),
}
HELP = {
    IN_USE: "IPs currently allocated in IPAM to a workload or tunnel endpoint.",
    BORROWED: "IPs allocated to a node from a block affine to another node.",
    GC_CANDIDATES: "IPs currently marked as leak candidates, within their grace period.",
    GC_RECLAMATIONS: "IPs the garbage collector has released as leaked.",
    BLOCKS: "IPAM blocks affine to the node.",
    POOL_SIZE: "Total number of addresses in the IP pool.",
    **{legacy: f"Per node (legacy): see {name}." for name, legacy in LEGACY.items()},
}


class MetricsSink(Protocol):
    def set_gauges(self, name: str, values: Mapping[Labels, float]) -> None: ...

    def add_counter(self, name: str, labels: Labels, amount: float) -> None: ...


@dataclass
class InMemoryMetrics:
    """The default sink: the latest gauges and the counters, by family and label set."""

    gauges: dict[str, dict[Labels, float]] = field(default_factory=dict)
    counters: dict[str, dict[Labels, float]] = field(default_factory=dict)

    def set_gauges(self, name: str, values: Mapping[Labels, float]) -> None:
        self.gauges[name] = dict(values)

    def add_counter(self, name: str, labels: Labels, amount: float) -> None:
        family = self.counters.setdefault(name, {})
        family[labels] = family.get(labels, 0.0) + amount

    def value(self, name: str, **labels: str) -> float:
        key = labels_of(**labels)
        family = self.gauges.get(name) or self.counters.get(name) or {}
        return family.get(key, 0.0)


def labels_of(**labels: str) -> Labels:
    return tuple(sorted(labels.items()))


def pool_name(pools: Sequence[Pool], allocation_or_block: Allocation | BlockView) -> str:
    if isinstance(allocation_or_block, Allocation):
        pool = pool_for_address(pools, allocation_or_block.address)
    else:
        pool = pool_for_address(pools, allocation_or_block.cidr.network_address)
    return pool.name if pool is not None else UNKNOWN_POOL


def _count(family: dict[Labels, float], labels: Labels) -> None:
    family[labels] = family.get(labels, 0.0) + 1


def ipam_metrics(
    pools: Sequence[Pool],
    allocations: Iterable[Allocation],
    blocks: Iterable[BlockView],
    candidates: Iterable[Allocation],
) -> dict[str, dict[Labels, float]]:
    """Every gauge family for one pass."""
    families: dict[str, dict[Labels, float]] = {name: {} for name in GAUGES}
    hosts = {}
    for block in blocks:
        hosts[block.cidr] = block.host or ""
        if block.host:
            _count(families[BLOCKS], labels_of(ippool=pool_name(pools, block), node=block.host))
            _count(families[LEGACY[BLOCKS]], labels_of(node=block.host))
    for allocation in allocations:
        node = allocation.node or hosts.get(allocation.block, "")
        labels = labels_of(ippool=pool_name(pools, allocation), node=node)
        _count(families[IN_USE], labels)
        _count(families[LEGACY[IN_USE]], labels_of(node=node))
        if node != hosts.get(allocation.block, ""):
            _count(families[BORROWED], labels)
            _count(families[LEGACY[BORROWED]], labels_of(node=node))
    for allocation in candidates:
        labels = labels_of(ippool=pool_name(pools, allocation), node=allocation.node)
        _count(families[GC_CANDIDATES], labels)
        _count(families[LEGACY[GC_CANDIDATES]], labels_of(node=allocation.node))
    for pool in pools:
        families[POOL_SIZE][labels_of(ippool=pool.name)] = float(pool.cidr.num_addresses)
    return families


def publish(sink: MetricsSink, families: Mapping[str, Mapping[Labels, float]]) -> None:
    for name, values in families.items():
        sink.set_gauges(name, values)


def count_reclaimed(
    sink: MetricsSink, pools: Sequence[Pool], released: Iterable[Allocation]
) -> None:
    for allocation in released:
        sink.add_counter(
            GC_RECLAMATIONS,
            labels_of(ippool=pool_name(pools, allocation), node=allocation.node),
            1,
        )
        sink.add_counter(LEGACY[GC_RECLAMATIONS], labels_of(node=allocation.node), 1)

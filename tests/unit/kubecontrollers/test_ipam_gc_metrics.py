"""The IPAM GC's metric families (Calico's names and labels) from plain data."""

from __future__ import annotations

import ipaddress

from pycalico.ipam.pools import Pool
from pycalico.kubecontrollers.node_ipam_metrics import (
    BLOCKS,
    BORROWED,
    GC_CANDIDATES,
    GC_RECLAMATIONS,
    IN_USE,
    LEGACY,
    POOL_SIZE,
    InMemoryMetrics,
    count_reclaimed,
    ipam_metrics,
    labels_of,
    publish,
)
from pycalico.kubecontrollers.node_ipam_plan import Allocation, BlockView

POOLS = [Pool("pool1", ipaddress.ip_network("10.65.0.0/16"), 26)]
BLOCK = ipaddress.ip_network("10.65.0.0/26")


def alloc(last: int, node: str) -> Allocation:
    return Allocation(ipaddress.ip_address(f"10.65.0.{last}"), BLOCK, 1, f"h{last}", {"node": node})


def test_families_by_pool_and_node_with_borrowed_and_legacy_names() -> None:
    allocations = [alloc(1, "n1"), alloc(2, "n1"), alloc(3, "n2")]  # n2 borrows from n1's block
    families = ipam_metrics(
        POOLS, allocations, [BlockView(BLOCK, "n1", False, 1)], [alloc(2, "n1")]
    )
    sink = InMemoryMetrics()
    publish(sink, families)
    assert sink.value(IN_USE, ippool="pool1", node="n1") == 2
    assert sink.value(IN_USE, ippool="pool1", node="n2") == 1
    assert sink.value(BORROWED, ippool="pool1", node="n2") == 1
    assert sink.value(BORROWED, ippool="pool1", node="n1") == 0
    assert sink.value(GC_CANDIDATES, ippool="pool1", node="n1") == 1
    assert sink.value(BLOCKS, ippool="pool1", node="n1") == 1
    assert sink.value(LEGACY[BLOCKS], node="n1") == 1
    assert sink.value(LEGACY[IN_USE], node="n2") == 1
    assert sink.value(POOL_SIZE, ippool="pool1") == 65536


def test_a_family_is_replaced_whole_and_counters_add_up() -> None:
    sink = InMemoryMetrics()
    publish(sink, ipam_metrics(POOLS, [alloc(1, "gone")], [], []))
    publish(sink, ipam_metrics(POOLS, [], [], []))
    assert sink.gauges[IN_USE] == {}  # a vanished node is no longer reported
    count_reclaimed(sink, POOLS, [alloc(1, "gone"), alloc(2, "gone")])
    count_reclaimed(sink, POOLS, [alloc(3, "gone")])
    assert sink.counters[GC_RECLAMATIONS] == {labels_of(ippool="pool1", node="gone"): 3}
    assert sink.value(LEGACY[GC_RECLAMATIONS], node="gone") == 3

"""The IPAM GC's Prometheus sink: Calico's exact names in the text exposition."""

from __future__ import annotations

import ipaddress

from prometheus_client import CollectorRegistry, generate_latest

from pycalico.ipam.pools import Pool
from pycalico.kubecontrollers.node_ipam_metrics import count_reclaimed, ipam_metrics, publish
from pycalico.kubecontrollers.node_ipam_plan import Allocation, BlockView
from pycalico.kubecontrollers.node_ipam_prometheus import PrometheusIPAMMetrics

POOLS = [Pool("pool1", ipaddress.ip_network("10.65.0.0/16"), 26)]
BLOCK = ipaddress.ip_network("10.65.0.0/26")


def test_scrape_shows_calicos_names_and_labels() -> None:
    registry = CollectorRegistry()
    sink = PrometheusIPAMMetrics.register(registry)
    allocation = Allocation(ipaddress.ip_address("10.65.0.1"), BLOCK, 1, "h", {"node": "n1"})
    publish(sink, ipam_metrics(POOLS, [allocation], [BlockView(BLOCK, "n1", False, 1)], []))
    count_reclaimed(sink, POOLS, [allocation])
    text = generate_latest(registry).decode()
    for line in (
        "# TYPE ipam_allocations_in_use gauge",
        'ipam_allocations_in_use{ippool="pool1",node="n1"} 1.0',
        'ipam_blocks{ippool="pool1",node="n1"} 1.0',
        'ipam_blocks_per_node{node="n1"} 1.0',
        'ipam_ippool_size{ippool="pool1"} 65536.0',
        'ipam_allocations_gc_reclamations{ippool="pool1",node="n1"} 1.0',
        'ipam_allocations_gc_reclamations_per_node{node="n1"} 1.0',
        "# TYPE ipam_allocations_gc_candidates gauge",
    ):
        assert line in text, text
    assert "_total" not in text

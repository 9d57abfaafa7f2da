"""kube-controllers' Prometheus metrics, served on ``prometheusMetricsPort`` at ``/metrics``.

What it is: the series of the process's default registry (``prometheus_client.REGISTRY``, so
the IPAM garbage collector's ``ipam_*`` gauges appear beside them, as in Calico), which are:

* ``leader_election_master_status{name}`` -- client-go's leader-election gauge: 1 while this
  copy holds the Lease, else 0;
* pycalico's ``kube_controllers_reconciles_total``, ``kube_controllers_reconcile_errors_total``
  and ``kube_controllers_writes_total`` (label ``controller``), read from the running
  controllers at scrape time (Calico has no per-controller series to match);
* the ``process_*`` and ``python_*`` series of prometheus_client (Go's ``process_*`` in Calico).

What it is not: the IPAM series (the IPAM garbage collector's own module).
Invariants: registered once per process; a scrape never fails because a controller stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client import REGISTRY, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from pycalico.kubecontrollers.controllers import Controller, Reconciler
from pycalico.kubecontrollers.pods import PodReconciler

log = logging.getLogger(__name__)

LEASE_NAME_LABEL = "name"

LEADER = Gauge(
    "leader_election_master_status",
    "Whether this copy is the leader (1) or not (0), as client-go reports it.",
    [LEASE_NAME_LABEL],
)


class ControllerCollector(Collector):
    """Counters of the controllers running now (replaced as they start and stop)."""

    def __init__(self) -> None:
        self.running: dict[str, Any] = {}
        self._totals: dict[tuple[str, str], float] = {}  # counts of controllers stopped

    def set_running(self, running: dict[str, Any]) -> None:
        for name, runnable in self.running.items():
            for series, value in _counts(runnable).items():
                self._totals[(series, name)] = self._totals.get((series, name), 0) + value
        self.running = dict(running)

    def collect(self) -> Iterator[CounterMetricFamily]:
        families = {
            "reconciles": CounterMetricFamily(
                "kube_controllers_reconciles",
                "Reconciles of one key made by each controller.",
                labels=["controller"],
            ),
            "errors": CounterMetricFamily(
                "kube_controllers_reconcile_errors",
                "Reconciles that failed (and were retried).",
                labels=["controller"],
            ),
            "writes": CounterMetricFamily(
                "kube_controllers_writes",
                "Calico resources created, updated or deleted by each controller.",
                labels=["controller"],
            ),
        }
        names = set(self.running) | {name for _, name in self._totals}
        for name in sorted(names):
            counts = _counts(self.running[name]) if name in self.running else {}
            for series, family in families.items():
                value = counts.get(series, 0) + self._totals.get((series, name), 0)
                family.add_metric([name], value)
        yield from families.values()


def _counts(runnable: Any) -> dict[str, float]:
    if not isinstance(runnable, Controller):
        return {}
    reconciler = runnable.reconciler
    writes = reconciler.writes if isinstance(reconciler, Reconciler | PodReconciler) else 0
    return {
        "reconciles": runnable.workers.reconciles,
        "errors": runnable.workers.failures,
        "writes": writes,
    }


COLLECTOR = ControllerCollector()
REGISTRY.register(COLLECTOR)


def serve(port: int) -> Any:
    """Serve the default registry on ``port`` (all addresses), in a thread; the server is
    returned (``.shutdown()`` stops it)."""
    server, _thread = start_http_server(port, registry=REGISTRY)
    log.info("serving Prometheus metrics on port %d", port)
    return server

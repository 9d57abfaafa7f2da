"""The IPAM GC's metrics on Prometheus: a ``MetricsSink`` that is a prometheus_client collector.

``PrometheusIPAMMetrics.register()`` adds one to the default registry (once per process) and
returns it; pass it as the node controller's ``metrics``.  Each scrape yields the families the
last GC pass published (gauges) and the counters, under Calico's exact names: the
reclamation counters are exposed untyped, because prometheus_client would rename a counter
``..._total`` and Calico's Go client does not.

Not here: computing the values (``node_ipam_metrics``), serving HTTP (the executable).
Invariant: a scrape reads a consistent copy (a lock guards the swap of a family).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import CollectorRegistry
from prometheus_client.samples import Sample

from pycalico.kubecontrollers.node_ipam_metrics import COUNTERS, GAUGES, HELP, LABEL_NAMES, Labels


class PrometheusIPAMMetrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gauges: dict[str, dict[Labels, float]] = {}
        self._counters: dict[str, dict[Labels, float]] = {}

    @classmethod
    def register(cls, registry: CollectorRegistry = REGISTRY) -> PrometheusIPAMMetrics:
        sink = cls()
        registry.register(sink)
        return sink

    def set_gauges(self, name: str, values: Mapping[Labels, float]) -> None:
        with self._lock:
            self._gauges[name] = dict(values)

    def add_counter(self, name: str, labels: Labels, amount: float) -> None:
        with self._lock:
            family = self._counters.setdefault(name, {})
            family[labels] = family.get(labels, 0.0) + amount

    def describe(self) -> Iterator[Metric]:
        return iter(())  # families appear with the first pass; no eager description

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            gauges = {name: dict(self._gauges.get(name, {})) for name in GAUGES}
            counters = {name: dict(self._counters.get(name, {})) for name in COUNTERS}
        for name, values in gauges.items():
            family = GaugeMetricFamily(name, HELP.get(name, name), labels=LABEL_NAMES[name])
            for labels, value in sorted(values.items()):
                family.add_metric([value_of(labels, n) for n in LABEL_NAMES[name]], value)
            yield family
        for name, values in counters.items():
            metric = Metric(name, HELP.get(name, name), "unknown")
            for labels, value in sorted(values.items()):
                metric.samples.append(Sample(name, dict(labels), value))
            yield metric


def value_of(labels: Labels, name: str) -> str:
    return dict(labels).get(name, "")

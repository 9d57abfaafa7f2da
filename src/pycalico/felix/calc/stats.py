"""Counters and sizes the calculation graph exposes for tests, benchmarks and Felix's metrics.

What it is: two plain data classes, shared by the graph's modules.  What it is not: a metrics
exporter (the daemon turns these into Prometheus metrics).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class GraphStats:
    """Running counters (monotonic)."""

    updates: int = 0
    invalid_resources: int = 0
    policy_activations: int = 0
    endpoint_computations: int = 0


@dataclass(frozen=True, slots=True)
class GraphSummary:
    """Sizes of the current desired state, for Felix's metrics (endpoints, policies, sets, rules)."""

    local_endpoints: int
    active_policies: int
    active_profiles: int
    ip_sets: int
    ip_set_members: int
    rules: int

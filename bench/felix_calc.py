"""Felix calculation-graph benchmark: one label change, incremental versus from scratch.

What this measures, on a synthetic cluster shaped like issue 5's target (10,000 WorkloadEndpoints
over 100 nodes, 100 of them on this node; 10 namespaces with their ``kns.`` profiles; 1,000
policies: 500 namespaced NetworkPolicies and 500 GlobalNetworkPolicies in 3 tiers, whose rules use
200 distinct selectors, so about 200 IP sets):

* initial load: every stored value as the daemon handles a syncer batch — the typed stream's
  decoder (``resource_syncer.decode_updates``) then ``CalcGraph.on_batch`` (dispatch + flush),
  the same two calls, in the same order, as ``calico-felix``; the decoding part on its own too.
  The whole cold start from process start and etcd to the kernel is ``bench.felix_cold_start``;
* one label change on a local endpoint (moving it between policies and IP sets) applied and
  flushed, repeated; p50 and p99;
* the reference, measured in the same run: recomputing everything from scratch over the same
  decoded resources (a fresh graph, ``on_resource`` for all, ``flush``), best of 3;
* the same label change with 1,000 endpoints in the cluster (10 nodes): the 10k/1k ratio shows
  the cost does not grow with the cluster.

Peak RSS is the process's (``ru_maxrss``), after everything.

Run: ``.venv/bin/python -m bench.felix_calc`` (``--quick``: 2,000 endpoints, 200 policies).
"""

from __future__ import annotations

import gc
import resource
import statistics
import sys
import time
from typing import Any

from pycalico.datastore.resource_syncer import decode_updates
from pycalico.datastore.syncer import SyncerUpdate
from pycalico.felix.calc import CalcGraph, key_of
from pycalico.model.codec import encode_value
from pycalico.model.endpoints import WorkloadEndpoint
from pycalico.model.meta import Resource
from pycalico.model.policy import GlobalNetworkPolicy, NetworkPolicy, Tier
from pycalico.model.selectors import parse
from pycalico.testing.felix_calc import HOSTNAME, namespace_profile, workload

NAMESPACES = 10
APPS = 200  # distinct app labels: also the distinct rule selectors, hence IP sets


def _address(number: int) -> str:
    return f"10.{number // 65536 % 256}.{number // 256 % 256}.{number % 256}"


def cluster(endpoints: int, policies: int, nodes: int) -> list[Resource]:
    resources: list[Resource] = [
        Tier.model_validate({"metadata": {"name": "security"}, "spec": {"order": 100}}),
        Tier.model_validate(
            {"metadata": {"name": "platform"}, "spec": {"order": 200, "defaultAction": "Pass"}}
        ),
    ]
    resources += [namespace_profile(f"ns{n}", {"team": f"team{n % 3}"}) for n in range(NAMESPACES)]
    for number in range(endpoints):
        # The first hundredth are local, so that local pods span the apps (and policies).
        node = HOSTNAME if number < endpoints // nodes else f"node-{number % nodes}"
        resources.append(
            workload(
                f"pod{number}",
                namespace=f"ns{number % NAMESPACES}",
                node=node,
                labels={"app": f"app{number % APPS}", "role": f"role{number % 7}"},
                ips=[_address(number)],
                ports=[{"name": "http", "protocol": "TCP", "port": 8080}],
            )
        )
    for number in range(policies):
        source = f"app == 'app{(number * 7 + number // 400) % APPS}'"
        rules: list[dict[str, Any]] = [
            {"action": "Allow", "protocol": "TCP", "source": {"selector": source}},
            {"action": "Deny", "source": {"nets": ["192.0.2.0/24"]}},
        ]
        if number % 2:
            resources.append(
                NetworkPolicy.model_validate(
                    {
                        "metadata": {
                            "name": f"np{number}",
                            "namespace": f"ns{number % NAMESPACES}",
                        },
                        "spec": {"selector": f"app == 'app{number % APPS}'", "ingress": rules},
                    }
                ).with_defaults(namespace=f"ns{number % NAMESPACES}")
            )
        else:
            tier = ("default", "security", "platform")[number % 3]
            name = f"gnp{number}" if tier == "default" else f"{tier}.gnp{number}"
            resources.append(
                GlobalNetworkPolicy.model_validate(
                    {
                        "metadata": {"name": name},
                        "spec": {
                            "tier": tier,
                            "order": number % 10,
                            "selector": f"role == 'role{number % 7}' && app == 'app{number % APPS}'",
                            "egress": rules,
                        },
                    }
                ).with_defaults()
            )
    return resources


def _load_decoded(resources: list[Resource]) -> CalcGraph:
    """The reference: everything from scratch, collector paused as ``on_updates`` does."""
    graph = CalcGraph(HOSTNAME)
    gc.disable()
    try:
        for item in resources:
            graph.on_resource(item)
    finally:
        gc.enable()
    graph.on_in_sync()
    graph.flush()
    return graph


def _decode_all(raw: list[SyncerUpdate]) -> None:
    decode_updates(raw)


def _timed(function: Any, *args: Any) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def _pick(graph: CalcGraph, resources: list[Resource], *, local: bool) -> tuple[Resource, str]:
    """A pod, and another app to move it to, both apps having an active (global) IP set, so
    that the change moves the pod between sets (and, for a local pod, policies)."""
    active = graph.members.active_set_ids
    apps = [f"app{n}" for n in range(APPS) if parse(f"app == 'app{n}'").unique_id in active]
    pods = [
        r
        for r in resources
        if isinstance(r, WorkloadEndpoint)
        and (r.spec.node == HOSTNAME) == local
        and (r.metadata.labels or {}).get("app") in apps
    ]
    pod = pods[len(pods) // 2]
    current = (pod.metadata.labels or {})["app"]
    return pod, next(app for app in apps if app != current)


class _Mover:
    """Moves one pod to another app and back, one change (plus flush) per call."""

    def __init__(self, graph: CalcGraph, pod_and_app: tuple[Resource, str]) -> None:
        pod, target = pod_and_app
        labels = dict(pod.metadata.labels or {})
        self.graph = graph
        self.variants = [
            pod.with_metadata(labels={**labels, "app": app}) for app in (target, labels["app"])
        ]
        self.latencies: list[float] = []

    def change(self) -> None:
        variant = self.variants[len(self.latencies) % 2]
        start = time.perf_counter()
        self.graph.on_resource(variant)
        messages = self.graph.flush()
        self.latencies.append(time.perf_counter() - start)
        assert messages, "a label change must produce messages"


def interleaved(movers: list[_Mover], rounds: int) -> None:
    """Round-robin over the movers, so that machine-load drift hits every series alike."""
    for _ in range(rounds):
        for mover in movers:
            mover.change()


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    return statistics.median(latencies), statistics.quantiles(latencies, n=100)[98]


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    endpoints, policies, rounds = (2_000, 200, 100) if quick else (10_000, 1_000, 400)
    nodes = endpoints // 100

    resources = cluster(endpoints, policies, nodes)
    raw = [SyncerUpdate(key_of(r), encode_value(r), n) for n, r in enumerate(resources, 1)]

    def load_encoded() -> CalcGraph:
        # The daemon's path for the snapshot batch: decode, then on_batch (in-sync + flush).
        graph = CalcGraph(HOSTNAME)
        graph.on_batch(decode_updates(raw), in_sync=True)
        return graph

    load_time, graph = _timed(load_encoded)
    scratch_times = [_timed(_load_decoded, resources)[0] for _ in range(3)]
    scratch = min(scratch_times)
    decode_time = _timed(_decode_all, raw)[0]

    small = cluster(endpoints // 10, policies, nodes // 10)
    small_graph = _load_decoded(small)
    movers = [
        _Mover(graph, _pick(graph, resources, local=True)),
        _Mover(small_graph, _pick(small_graph, small, local=True)),
        _Mover(graph, _pick(graph, resources, local=False)),
        _Mover(small_graph, _pick(small_graph, small, local=False)),
    ]
    interleaved(movers, rounds)
    local_p50, local_p99 = _percentiles(movers[0].latencies)
    small_local = statistics.median(movers[1].latencies)
    remote_p50, remote_p99 = _percentiles(movers[2].latencies)
    small_remote = statistics.median(movers[3].latencies)
    active_sets = len(graph.members.active_set_ids)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(
        f"cluster: {endpoints} endpoints ({endpoints // nodes} local), {policies} policies, "
        f"{active_sets} active IP sets"
    )
    print("initial load (cold: first in the process), the daemon's path (decode + on_batch):")
    print(f"                                             {load_time * 1000:8.1f} ms")
    print(f"  of which decoding (decode_updates):          {decode_time * 1000:8.1f} ms")
    print(f"reference: full recompute from decoded:      {scratch * 1000:8.1f} ms (best of 3)")
    for what, p50, p99, small_p50 in (
        ("local pod (moves between policies and IP sets)", local_p50, local_p99, small_local),
        ("remote pod (moves between IP sets)", remote_p50, remote_p99, small_remote),
    ):
        print(f"one label change on a {what}:")
        print(f"  p50 {p50 * 1e6:8.1f} us   p99 {p99 * 1e6:8.1f} us")
        print(f"  ratio p50 / full recompute: {p50 / scratch:.1e}")
        print(
            f"  with {endpoints // 10} endpoints: p50 {small_p50 * 1e6:.1f} us; "
            f"ratio {endpoints}/{endpoints // 10} endpoints: {p50 / small_p50:.2f}"
        )
    print(f"peak RSS: {rss_mb:.0f} MB")
    print(f"reproduce: .venv/bin/python -m bench.felix_calc{' --quick' if quick else ''}")


if __name__ == "__main__":
    main(sys.argv[1:])

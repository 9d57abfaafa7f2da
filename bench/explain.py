"""``calicoctl explain`` benchmark: one flow explained in a 10,000-endpoint, 1,000-policy cluster.

What this measures, on ``bench.felix_calc``'s synthetic cluster (10,000 WorkloadEndpoints over
100 nodes, 10 namespaces with their ``kns.`` profiles, 1,000 policies in 3 tiers):

* ``explain`` (``pycalico.felix.calc.explain``) for pod-to-pod TCP flows between random pods,
  over the decoded resources: the first call in the process (which also builds the address
  and policy-selector indexes: what one ``calicoctl explain`` run does), the first call on a
  fresh ``Cluster`` with the process's caches warm (best of 3), and the following calls, p50
  and p99 over the pairs;
* the reference, in the same run: what the same question costs through Felix's calc graph the
  usual way — a cold start of the destination node's ``CalcGraph`` over every resource, then
  ``flush`` (best of 3);
* host endpoint flows in the same cluster plus one HostEndpoint per node and 20 host policies
  (normal, pre-DNAT, untracked, applyOnForward): an outside address to a random node's host
  endpoint (input: untracked, pre-DNAT, normal stages) and to a random pod (forwarded through
  its node's host endpoint), p50 and p99;
* for context: decoding the cluster's stored values (what ``calicoctl explain`` does after
  listing them from etcd, before ``explain``).

Run: ``.venv/bin/python -m bench.explain`` (``--quick``: 2,000 endpoints, 200 policies).
"""

from __future__ import annotations

import gc
import random
import statistics
import sys
import time

from bench.felix_calc import cluster
from pycalico.datastore.resource_syncer import decode_updates
from pycalico.datastore.syncer import SyncerUpdate
from pycalico.felix.calc import CalcGraph, key_of
from pycalico.felix.calc.explain import Cluster, explain
from pycalico.felix.rules.model import RenderConfig
from pycalico.model.codec import encode_value
from pycalico.model.endpoints import HostEndpoint, Profile, WorkloadEndpoint
from pycalico.model.meta import Resource
from pycalico.model.policy import GlobalNetworkPolicy, NetworkPolicy, Tier
from pycalico.testing import felix_calc as build


def _explain_cluster(resources: list[Resource]) -> Cluster:
    return Cluster(
        workload_endpoints=[r for r in resources if isinstance(r, WorkloadEndpoint)],
        host_endpoints=[r for r in resources if isinstance(r, HostEndpoint)],
        policies=[r for r in resources if isinstance(r, NetworkPolicy | GlobalNetworkPolicy)],
        profiles=[r for r in resources if isinstance(r, Profile)],
        tiers=[r for r in resources if isinstance(r, Tier)],
        default_config=RenderConfig(),  # Felix's built-in settings
    )


def _graph_cold_start(resources: list[Resource], hostname: str) -> float:
    gc.collect()
    start = time.perf_counter()
    graph = CalcGraph(hostname)
    for item in resources:
        graph.on_resource(item)
    graph.on_in_sync()
    graph.flush()
    return time.perf_counter() - start


def _host_resources(nodes: list[str]) -> list[Resource]:
    """One HostEndpoint per node and 20 GlobalNetworkPolicies selecting some of them."""
    out: list[Resource] = [
        build.host_endpoint(f"{node}-eth0", node=node, ips=[f"192.168.{n // 250}.{n % 250 + 1}"],
                            labels={"host": "yes", "rack": f"r{n % 5}"})
        for n, node in enumerate(nodes)
    ]  # fmt: skip
    for n in range(20):
        kind = ({"preDNAT": True, "applyOnForward": True}, {"doNotTrack": True,
                "applyOnForward": True}, {"applyOnForward": True}, {})[n % 4]  # fmt: skip
        rule = {"action": "Allow" if n % 3 else "Deny", "protocol": "TCP",
                "destination": {"ports": [8000 + n]}}  # fmt: skip
        out.append(build.global_policy(f"host-{n}", selector=f"rack == 'r{n % 5}'",
                                       types=["Ingress"], ingress=[rule], **kind))  # fmt: skip
    return out


def _host_flows(world: Cluster, resources: list[Resource], count: int) -> list[float]:
    """Outside to a node's host endpoint and to a pod (through its node's host endpoint)."""
    rng = random.Random(11)
    heps = [r for r in resources if isinstance(r, HostEndpoint)]
    pods = [r for r in resources if isinstance(r, WorkloadEndpoint)]
    timings = []
    for n in range(count):
        target = rng.choice(heps) if n % 2 else rng.choice(pods)
        to = (
            f"hostendpoint/{target.metadata.name}"
            if isinstance(target, HostEndpoint)
            else f"{target.metadata.namespace}/{target.spec.pod}"
        )
        start = time.perf_counter()
        explain(world, "192.0.2.9", to, "TCP", 8000 + n % 25)
        timings.append(time.perf_counter() - start)
    return timings


def main(argv: list[str]) -> None:
    quick = "--quick" in argv
    endpoints, policies, queries = (2_000, 200, 30) if quick else (10_000, 1_000, 100)
    resources = cluster(endpoints, policies, endpoints // 100)
    pods = [r for r in resources if isinstance(r, WorkloadEndpoint)]
    resources += _host_resources(sorted({p.spec.node or "" for p in pods}))
    rng = random.Random(7)
    pairs = [tuple(rng.sample(pods, 2)) for _ in range(queries + 1)]
    names = [
        (f"{a.metadata.namespace}/{a.spec.pod}", f"{b.metadata.namespace}/{b.spec.pod}")
        for a, b in pairs
    ]

    world = _explain_cluster(resources)
    gc.collect()
    timings: list[float] = []
    verdicts: dict[str, int] = {}
    for source, destination in names:
        start = time.perf_counter()
        answer = explain(world, source, destination, "TCP", 8080)
        timings.append(time.perf_counter() - start)
        verdicts[answer.verdict] = verdicts.get(answer.verdict, 0) + 1
    first, rest = timings[0], timings[1:]
    p50, p99 = statistics.median(rest), statistics.quantiles(rest, n=100)[98]

    fresh = []  # a new Cluster (its indexes rebuilt), process caches warm: best of 3
    for _ in range(3):
        again = _explain_cluster(resources)
        gc.collect()
        start = time.perf_counter()
        explain(again, *names[0], "TCP", 8080)
        fresh.append(time.perf_counter() - start)

    host = _host_flows(world, resources, queries)
    host_p50, host_p99 = statistics.median(host), statistics.quantiles(host, n=100)[98]

    destination_node = pairs[0][1].spec.node or ""
    reference = min(_graph_cold_start(resources, destination_node) for _ in range(3))
    raw = [SyncerUpdate(key_of(r), encode_value(r), n) for n, r in enumerate(resources, 1)]
    gc.collect()
    start = time.perf_counter()
    decode_updates(raw)
    decoding = time.perf_counter() - start

    ms = 1000.0
    print(f"explain: {endpoints} endpoints, {policies} policies, {queries} random pod pairs")
    print(f"  verdicts: {verdicts}")
    print(
        f"  first call (cold process; builds the address and policy indexes): {first * ms:.1f} ms"
    )
    print(f"  first call on a fresh Cluster, warm process, best of 3: {min(fresh) * ms:.1f} ms")
    print(f"  p50 / p99 / max: {p50 * ms:.1f} / {p99 * ms:.1f} / {max(rest) * ms:.1f} ms")
    print(f"  host endpoint flows (outside -> host endpoint / pod), p50 / p99: "
          f"{host_p50 * ms:.1f} / {host_p99 * ms:.1f} ms")  # fmt: skip
    print(
        f"  reference: the node's CalcGraph cold start + flush, best of 3: {reference * ms:.0f} ms"
    )
    print(f"  ratios to the reference: first {first / reference:.3f}, p50 {p50 / reference:.3f}")
    print(f"  context: decoding the {len(raw)} stored values: {decoding * ms:.0f} ms")
    met = max(first, p99, host_p99) < 0.1
    print(f"  target < 100 ms: {'met' if met else 'NOT met'} (first, p99, host p99)")
    print("  command: .venv/bin/python -m bench.explain" + (" --quick" if quick else ""))


if __name__ == "__main__":
    main(sys.argv[1:])

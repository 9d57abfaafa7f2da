"""Felix end to end (calculation graph + dataplane + real nftables): cold start and label changes.

What this measures, in one run, in private network namespaces (needs root), on issue 5's target
cluster (``bench.felix_calc.cluster``: 10,000 WorkloadEndpoints over 100 nodes, 100 on this node,
1,000 policies in 3 tiers whose rules use 200 selectors) plus two real pods behind ``cali`` veths
guarded by a policy that admits sources labelled ``probe == 'allowed'``:

* cold start: every resource into ``CalcGraph``, in-sync, flush, and the dataplane's first apply
  (one atomic nft transaction) — time to fully programmed, and the process's peak RSS;
* one label change on the client pod (in and out of the allowed selector) until enforced: the
  update goes through the graph and one dataplane apply, then probe packets (TCP connects from
  the client) are sent until the verdict flips; p50 and p99 over 20 flips.  A blocked verdict is
  known only after a probe times out (10 ms), which is included;
* the same at 1,000 endpoints (10 nodes): the ratio 10k/1k shows the change is incremental;
* the nft transaction of one label change against the full ruleset, in bytes.

Routes and sysctls of the 98 local endpoints without veths go to the fake kernel; the two real
pods get real routes.  Run: ``sudo .venv/bin/python -m bench.felix_e2e`` (``--quick``: 2,000).
"""

from __future__ import annotations

import gc
import resource
import socket
import statistics
import sys
import time

from bench.felix_calc import cluster
from pycalico.felix.calc import CalcGraph
from pycalico.felix.dataplane.loop import Dataplane, DataplaneOptions
from pycalico.felix.drivers.conntrack import ConntrackCommand
from pycalico.felix.drivers.interfaces import ProcSysctls
from pycalico.felix.drivers.nft import LibNftablesBackend
from pycalico.felix.drivers.routes import NetlinkRoutes, Route
from pycalico.model.meta import Resource
from pycalico.model.policy import GlobalNetworkPolicy
from pycalico.testing import netns
from pycalico.testing.fake_kernel import FakeKernel
from pycalico.testing.felix_calc import HOSTNAME, workload

CLIENT_IP, SERVER_IP, PORT = "10.250.0.1", "10.250.0.2", 8080


def probe_resources(topology: netns.Topology, client_label: str) -> list[Resource]:
    client, server = topology.pods["x"], topology.pods["y"]
    return [
        workload("probe-x", namespace="ns0", node=HOSTNAME, labels={"probe": client_label},
                 ips=[CLIENT_IP], interface=client.interface),
        workload("probe-y", namespace="ns0", node=HOSTNAME, labels={"probe": "target"},
                 ips=[SERVER_IP], interface=server.interface),
        GlobalNetworkPolicy.model_validate({
            "metadata": {"name": "probe-guard"},
            "spec": {"selector": "probe == 'target'", "ingress": [
                {"action": "Allow", "source": {"selector": "probe == 'allowed'"}}]},
        }).with_defaults(),
    ]  # fmt: skip


def reachable(topology: netns.Topology, timeout: float) -> bool:
    with netns.enter(topology.pods["x"].name):
        sock = socket.socket()
    sock.settimeout(timeout)
    try:
        sock.connect((SERVER_IP, PORT))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def run(topology: netns.Topology, endpoints: int, policies: int, nodes: int, flips: int
        ) -> dict[str, float]:  # fmt: skip
    resources = cluster(endpoints, policies, nodes) + probe_resources(topology, "allowed")
    kernel = FakeKernel()
    with netns.enter(topology.node):
        dataplane = Dataplane(
            DataplaneOptions(), LibNftablesBackend(), kernel.routes, ProcSysctls(),
            ConntrackCommand(),
        )  # fmt: skip
        real = NetlinkRoutes()
        for key, address in (("x", CLIENT_IP), ("y", SERVER_IP)):
            real.replace(Route(f"{address}/32", topology.pods[key].interface))
        kernel.links.update(pod.interface for pod in topology.pods.values())
        gc.collect()
        start = time.perf_counter()
        graph = CalcGraph(HOSTNAME)
        gc.disable()
        for item in resources:
            graph.on_resource(item)
        gc.enable()
        graph.on_in_sync()
        dataplane.on_updates(graph.flush())
        report = dataplane.apply()
        cold = time.perf_counter() - start
        assert report is not None and report.nft_full
        full_bytes = report.nft_bytes
        assert reachable(topology, 1.0), "the allowed client cannot reach the server"
        latencies: list[float] = []
        applied: list[float] = []
        change_bytes: list[int] = []
        for flip in range(flips):
            label = "denied" if flip % 2 == 0 else "allowed"
            updated = probe_resources(topology, label)[0]
            start = time.perf_counter()
            graph.on_resource(updated)
            dataplane.on_updates(graph.flush())
            report = dataplane.apply()
            applied.append(time.perf_counter() - start)
            want = label == "allowed"
            while reachable(topology, 0.01) != want:
                if time.perf_counter() - start > 5:
                    raise RuntimeError(f"label change {flip} not enforced within 5 s")
            latencies.append(time.perf_counter() - start)
            assert report is not None
            change_bytes.append(report.nft_bytes)
        counts = dataplane.counts()
    allow_flips = latencies[1::2]  # odd flips re-admit the client: the probe connects at once
    return {
        "cold": cold,
        "full_bytes": full_bytes,
        "p50": statistics.median(latencies),
        "p99": _p99(latencies),
        "allow_p50": statistics.median(allow_flips),
        "applied_p50": statistics.median(applied),
        "applied_p99": _p99(applied),
        "change_bytes": statistics.median(change_bytes),
        "rules": counts["rules"],
        "endpoints": counts["endpoints"],
    }


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def main() -> int:
    quick = "--quick" in sys.argv
    big = (2000, 200, 20) if quick else (10000, 1000, 100)
    small = (200, 20, 2) if quick else (1000, 100, 10)
    flips = 10 if quick else 20
    results = {}
    for label, (endpoints, policies, nodes) in (("big", big), ("small", small)):
        topology = netns.Topology()
        try:
            topology.create_node()
            topology.add_pod("x", CLIENT_IP)
            topology.add_pod("y", SERVER_IP)
            server = _server(topology)
            try:
                results[label] = run(topology, endpoints, policies, nodes, flips)
            finally:
                server.close()
        finally:
            topology.cleanup()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    b, s = results["big"], results["small"]
    print(f"Felix end to end ({big[0]} endpoints, {big[0] // big[2]} local, {big[1]} policies):")
    print(
        f"  cold start to fully programmed : {b['cold']:.2f} s  ({b['endpoints']:.0f} local "
        f"endpoints, {b['rules']:.0f} nft rules, {b['full_bytes'] / 1e6:.2f} MB transaction)"
    )
    print(f"  peak RSS of the process        : {peak_mb:.0f} MB")
    print(
        f"  label change until enforced    : p50 {b['p50'] * 1000:.1f} ms, "
        f"p99 {b['p99'] * 1000:.1f} ms (probe packets, {flips} flips; re-admitting flips "
        f"p50 {b['allow_p50'] * 1000:.1f} ms; blocking flips include a 10 ms probe timeout)"
    )
    print(
        f"  of which graph + nft apply     : p50 {b['applied_p50'] * 1000:.1f} ms, "
        f"p99 {b['applied_p99'] * 1000:.1f} ms"
    )
    print(
        f"  same at {small[0]} endpoints       : until enforced p50 {s['p50'] * 1000:.1f} ms "
        f"(ratio {b['p50'] / s['p50']:.2f}), graph + apply p50 {s['applied_p50'] * 1000:.1f} ms "
        f"(ratio {b['applied_p50'] / s['applied_p50']:.2f})"
    )
    print(
        f"  label-change transaction       : {b['change_bytes']:.0f} bytes vs full ruleset "
        f"{b['full_bytes']:.0f} bytes ({b['full_bytes'] / b['change_bytes']:.0f}x smaller)"
    )
    print("reproduce: sudo .venv/bin/python -m bench.felix_e2e")
    return 0


def _server(topology: netns.Topology) -> socket.socket:
    import threading

    with netns.enter(topology.pods["y"].name):
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((SERVER_IP, PORT))
        server.listen(128)

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            connection.close()

    threading.Thread(target=serve, daemon=True).start()
    return server


if __name__ == "__main__":
    sys.exit(main())

"""Felix end to end (calculation graph + dataplane + real nftables): cold start and label changes.

What this measures, in one run, in private network namespaces (needs root), on issue 5's target
cluster (``bench.felix_calc.cluster``: 10,000 WorkloadEndpoints over 100 nodes, 100 on this node,
1,000 policies in 3 tiers whose rules use 200 selectors) plus two real pods behind ``cali`` veths
guarded by a policy that admits sources labelled ``probe == 'allowed'``:

* cold start: every resource into ``CalcGraph``, in-sync, flush, and the dataplane's first apply
  (one atomic nft transaction) — time to fully programmed, and the process's peak RSS;
* one label change on the client pod (in and out of the allowed selector) until enforced: the
  clock starts when the updated endpoint enters the graph and covers the graph, one dataplane
  apply (one nft transaction) and probe packets (TCP connects from the client, sent back to back)
  until the verdict flips.  Both verdicts are answers, no timeout is in the clock: the guard's
  last rule is a Deny rendered as ``reject`` (``iptablesFilterDenyAction: Reject``), so a
  blocked connect is refused at once.  Blocking and re-admitting flips are reported apart, 200
  of each (p99 is the 199th of 200, not the maximum);
* the same at 1,000 endpoints (10 nodes): the ratio 10k/1k shows the change is incremental;
* the nft transaction of one label change against the full ruleset, in bytes.

Routes and sysctls of the 98 local endpoints without veths go to the fake kernel; the two real
pods get real routes.  Run: ``sudo .venv/bin/python -m bench.felix_e2e`` (``--quick``: 2,000).
"""

from __future__ import annotations

import gc
import os
import resource
import socket
import statistics
import subprocess
import sys
import time

from bench.felix_calc import cluster
from pycalico.felix.calc import CalcGraph
from pycalico.felix.dataplane.loop import Dataplane, DataplaneOptions
from pycalico.felix.drivers.conntrack import ConntrackCommand
from pycalico.felix.drivers.interfaces import ProcSysctls
from pycalico.felix.drivers.nft import LibNftablesBackend
from pycalico.felix.drivers.routes import NetlinkRoutes, Route
from pycalico.felix.rules.model import RenderConfig
from pycalico.model.meta import Resource
from pycalico.model.policy import GlobalNetworkPolicy
from pycalico.testing import netns
from pycalico.testing.fake_kernel import FakeKernel
from pycalico.testing.felix_calc import HOSTNAME, workload

CLIENT_IP, SERVER_IP, PORT = "10.250.0.1", "10.250.0.2", 8080
NODE_IP = "10.250.255.1"


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
                {"action": "Allow", "source": {"selector": "probe == 'allowed'"}},
                {"action": "Deny"}]},
        }).with_defaults(),
    ]  # fmt: skip


def reachable(topology: netns.Topology, timeout: float = 1.0) -> bool:
    """True: the server accepted; False: the guard's reject refused.  No answer is an error (it
    would put a timeout into the clock)."""
    with netns.enter(topology.pods["x"].name):
        sock = socket.socket()
    sock.settimeout(timeout)
    try:
        sock.connect((SERVER_IP, PORT))
        return True
    except ConnectionRefusedError:
        return False
    except TimeoutError as error:
        raise RuntimeError("a probe got no answer: the guard's reject is missing") from error
    finally:
        sock.close()


def run(topology: netns.Topology, endpoints: int, policies: int, nodes: int, flips: int
        ) -> dict[str, float]:  # fmt: skip
    resources = cluster(endpoints, policies, nodes) + probe_resources(topology, "allowed")
    kernel = FakeKernel()
    with netns.enter(topology.node):
        dataplane = Dataplane(
            DataplaneOptions(render=RenderConfig(deny_action="Reject")), LibNftablesBackend(),
            kernel.routes, ProcSysctls(), ConntrackCommand(),
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
        assert reachable(topology), "the allowed client cannot reach the server"
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
            while reachable(topology) != want:
                if time.perf_counter() - start > 5:
                    raise RuntimeError(f"label change {flip} not enforced within 5 s")
            latencies.append(time.perf_counter() - start)
            assert report is not None
            change_bytes.append(report.nft_bytes)
        counts = dataplane.counts()
    block, admit = latencies[0::2], latencies[1::2]  # even flips block the client, odd re-admit
    return {
        "cold": cold,
        "full_bytes": full_bytes,
        "block_p50": statistics.median(block),
        "block_p99": _p99(block),
        "admit_p50": statistics.median(admit),
        "admit_p99": _p99(admit),
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
    flips = 20 if quick else 400  # half of them of each kind
    load = os.getloadavg()
    results = {}
    for label, (endpoints, policies, nodes) in (("big", big), ("small", small)):
        topology = netns.Topology()
        try:
            topology.create_node()
            # The node's own address: the source of the guard's ICMP rejects (with none, the
            # kernel has no address to send them from).
            subprocess.run(
                ["ip", "-n", topology.node, "addr", "add", f"{NODE_IP}/32", "dev", "lo"], check=True
            )
            # Flips come back to back: the kernel's ICMP rate limits (one error a second per
            # peer) would silence all but the first rejects and put a timeout into the clock.
            subprocess.run(
                ["ip", "netns", "exec", topology.node, "sysctl", "-qw",
                 "net.ipv4.icmp_ratelimit=0", "net.ipv4.icmp_msgs_per_sec=100000"],
                check=True,
            )  # fmt: skip
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
        f"  graph + first apply (decoded)  : {b['cold']:.2f} s  ({b['endpoints']:.0f} local "
        f"endpoints, {b['rules']:.0f} nft rules, {b['full_bytes'] / 1e6:.2f} MB transaction)"
    )
    print(f"  peak RSS of the process        : {peak_mb:.0f} MB")
    for kind, name in (("block", "blocking"), ("admit", "re-admitting")):
        print(
            f"  label change until enforced, {name} flips ({flips // 2}): "
            f"p50 {b[kind + '_p50'] * 1000:.2f} ms, p99 {b[kind + '_p99'] * 1000:.2f} ms; "
            f"at {small[0]} endpoints p50 {s[kind + '_p50'] * 1000:.2f} ms "
            f"(ratio 10k/1k {b[kind + '_p50'] / s[kind + '_p50']:.2f})"
        )
    print(
        f"  of which graph + nft apply     : p50 {b['applied_p50'] * 1000:.2f} ms, "
        f"p99 {b['applied_p99'] * 1000:.2f} ms; at {small[0]} endpoints p50 "
        f"{s['applied_p50'] * 1000:.2f} ms (ratio {b['applied_p50'] / s['applied_p50']:.2f})"
    )
    print(
        f"  label-change transaction       : {b['change_bytes']:.0f} bytes vs full ruleset "
        f"{b['full_bytes']:.0f} bytes ({b['full_bytes'] / b['change_bytes']:.0f}x smaller)"
    )
    after = os.getloadavg()
    print(f"  load average: {load[0]:.2f} at the start, {after[0]:.2f} at the end (1 min)")
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

"""Flow logs and rule counters: what they cost Felix (label-change latency, iperf3 throughput).

What this measures, in one run, two nodes side by side (private network namespaces, needs
root), each with ``bench.felix_calc.cluster`` (default 2,000 endpoints over 20 nodes, 200
policies) plus two real pods guarded as in ``bench.felix_e2e`` (sources labelled ``probe ==
'allowed'`` admitted, the rest hit a Deny rendered as ``reject``):

* node "off": Felix's dataplane as shipped by default;
* node "on": ``counter`` on every policy rule, a rate-limited NFLOG ``log group`` on every deny
  path, and ``FlowLogs`` running in a thread of the same process (as in Felix): the NFLOG
  reader writing ``denied.jsonl`` and the counter reader listing the table every second (ten
  times Felix's default).

Label-change latency: the client pod's label flips in and out of the allowed selector, until the
probe's verdict flips (graph + nft apply + probe packets, as ``bench.felix_e2e``); the flips
alternate between the nodes, so load drift hits both alike.  Throughput: ``iperf3 -t 3`` from
client to server pod, alternating nodes, several rounds; medians are compared.  Ratios: on/off.
Run: ``sudo .venv/bin/python -m bench.flows`` (``--quick``: 500 endpoints, fewer flips).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from bench.felix_calc import cluster
from bench.felix_e2e import CLIENT_IP, NODE_IP, SERVER_IP, _p99, _server, probe_resources, reachable
from pycalico.felix.calc import CalcGraph
from pycalico.felix.dataplane.flows import FlowLogs
from pycalico.felix.dataplane.loop import Dataplane, DataplaneOptions
from pycalico.felix.drivers.conntrack import ConntrackCommand
from pycalico.felix.drivers.interfaces import ProcSysctls
from pycalico.felix.drivers.nft import LibNftablesBackend
from pycalico.felix.drivers.routes import NetlinkRoutes, Route
from pycalico.felix.messages import Message
from pycalico.felix.rules.model import RenderConfig
from pycalico.testing import netns
from pycalico.testing.fake_kernel import FakeKernel
from pycalico.testing.felix_calc import HOSTNAME

NFLOG_GROUP = 11


@dataclass
class Side:
    name: str
    topology: netns.Topology
    graph: CalcGraph
    dataplane: Dataplane
    flows: FlowLogs | None = None
    loop: asyncio.AbstractEventLoop | None = None
    latencies: list[float] = field(default_factory=list)
    throughput: list[float] = field(default_factory=list)

    def feed(self, messages: list[Message]) -> None:
        if self.flows is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(self.flows.observe, messages)
        self.dataplane.on_updates(messages)


def prepare(topology: netns.Topology) -> None:
    topology.create_node()
    subprocess.run(["ip", "-n", topology.node, "addr", "add", f"{NODE_IP}/32", "dev", "lo"],
                   check=True)  # fmt: skip
    subprocess.run(
        ["ip", "netns", "exec", topology.node, "sysctl", "-qw",
         "net.ipv4.icmp_ratelimit=0", "net.ipv4.icmp_msgs_per_sec=100000"],
        check=True,
    )  # fmt: skip
    topology.add_pod("x", CLIENT_IP)
    topology.add_pod("y", SERVER_IP)


def start_flows(side: Side, directory: str) -> None:
    """FlowLogs on its own event loop in a thread bound to the node's namespace."""
    ready = threading.Event()

    async def serve() -> None:
        side.loop = asyncio.get_running_loop()
        with netns.enter(side.topology.node):
            assert side.flows is not None
            side.flows.start()
        ready.set()
        await asyncio.Event().wait()  # until the loop is stopped

    def thread() -> None:
        # A stopped loop makes asyncio.run raise RuntimeError: that is the end.
        with netns.enter(side.topology.node), contextlib.suppress(RuntimeError):
            asyncio.run(serve())

    side.flows = FlowLogs(HOSTNAME, directory=directory, nflog_group=NFLOG_GROUP,
                          counters_interval=1.0)  # fmt: skip
    threading.Thread(target=thread, daemon=True).start()
    if not ready.wait(10):
        raise RuntimeError("flow logs did not start")


def build(
    name: str,
    topology: netns.Topology,
    size: tuple[int, int, int],
    render: RenderConfig,
    directory: str,
) -> Side:
    kernel = FakeKernel()
    with netns.enter(topology.node):
        dataplane = Dataplane(DataplaneOptions(render=render), LibNftablesBackend(),
                              kernel.routes, ProcSysctls(), ConntrackCommand())  # fmt: skip
        for key, address in (("x", CLIENT_IP), ("y", SERVER_IP)):
            NetlinkRoutes().replace(Route(f"{address}/32", topology.pods[key].interface))
    kernel.links.update(pod.interface for pod in topology.pods.values())
    side = Side(name, topology, CalcGraph(HOSTNAME), dataplane)
    if render.deny_log_group:
        start_flows(side, directory)
    for item in cluster(*size) + probe_resources(topology, "allowed"):
        side.graph.on_resource(item)
    side.graph.on_in_sync()
    side.feed(side.graph.flush())
    with netns.enter(topology.node):
        side.dataplane.apply()
    if not reachable(topology):
        raise RuntimeError(f"{name}: the allowed client cannot reach the server")
    return side


def flip(side: Side, number: int) -> None:
    label = "denied" if number % 2 == 0 else "allowed"
    start = time.perf_counter()
    side.graph.on_resource(probe_resources(side.topology, label)[0])
    side.feed(side.graph.flush())
    with netns.enter(side.topology.node):
        side.dataplane.apply()
    while reachable(side.topology) != (label == "allowed"):
        if time.perf_counter() - start > 5:
            raise RuntimeError(f"{side.name}: label change {number} not enforced within 5 s")
    side.latencies.append(time.perf_counter() - start)


def iperf(side: Side, seconds: int) -> None:
    client, server = side.topology.pods["x"].name, side.topology.pods["y"].name
    daemon = subprocess.Popen(["ip", "netns", "exec", server, "iperf3", "-s", "-1", "-B", SERVER_IP],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        for _ in range(50):  # the server binds asynchronously: retry the client until it answers
            done = subprocess.run(
                ["ip", "netns", "exec", client, "iperf3", "-c", SERVER_IP, "-t", str(seconds),
                 "-J"], capture_output=True, check=False,
            )  # fmt: skip
            report = json.loads(done.stdout or b"{}")
            if "sum_received" in report.get("end", {}):
                side.throughput.append(report["end"]["sum_received"]["bits_per_second"])
                return
            time.sleep(0.1)  # the only wait: iperf3 -s has no readiness signal
        raise RuntimeError(f"{side.name}: iperf3 failed: {report.get('error', report)!r}"[:800])
    finally:
        daemon.kill()
        daemon.wait()


def main() -> int:
    quick = "--quick" in sys.argv
    size = (500, 50, 5) if quick else (2000, 200, 20)
    flips, rounds = (20, 2) if quick else (200, 5)
    load = os.getloadavg()
    off_render = RenderConfig(deny_action="Reject")
    on_render = RenderConfig(deny_action="Reject", rule_counters=True, deny_log_group=NFLOG_GROUP)
    sides: list[Side] = []
    topologies: list[netns.Topology] = []
    servers: list[socket.socket] = []
    with tempfile.TemporaryDirectory(prefix="bench-flows-") as directory:
        try:
            for name, render in (("off", off_render), ("on", on_render)):
                topology = netns.Topology()
                topologies.append(topology)
                prepare(topology)
                servers.append(_server(topology))
                sides.append(build(name, topology, size, render, directory))
            for number in range(flips):
                for side in sides if number % 4 < 2 else reversed(sides):
                    flip(side, number)
            for _ in range(rounds):
                for side in sides:
                    iperf(side, 1 if quick else 3)
            on = sides[1]
            assert on.flows is not None
            records, counted = on.flows.records_written, sum(p for p, _ in on.flows.totals.values())
        finally:
            for server in servers:
                server.close()
            for side in sides:
                if side.loop is not None:
                    side.loop.call_soon_threadsafe(side.loop.stop)
                if side.flows is not None:
                    side.flows.close()
            for topology in topologies:
                topology.cleanup()
    p50 = {side.name: statistics.median(side.latencies) for side in sides}
    p99 = {side.name: _p99(side.latencies) for side in sides}
    rate = {side.name: statistics.median(side.throughput) for side in sides}
    print(f"Flow logs and rule counters on vs off ({size[0]} endpoints, {size[1]} policies):")
    print(f"  label change until enforced ({flips} flips each): off p50 {p50['off'] * 1000:.2f} ms"
          f" p99 {p99['off'] * 1000:.2f} ms; on p50 {p50['on'] * 1000:.2f} ms"
          f" p99 {p99['on'] * 1000:.2f} ms; ratio on/off p50 {p50['on'] / p50['off']:.3f}")  # fmt: skip
    print(
        f"  iperf3 pod to pod ({rounds} rounds each): off {rate['off'] / 1e9:.2f} Gbit/s, "
        f"on {rate['on'] / 1e9:.2f} Gbit/s; ratio on/off {rate['on'] / rate['off']:.3f}"
    )
    print(f"  on: {records} denied records written, {counted} packets counted by policy rules")
    after = os.getloadavg()
    print(f"  load average: {load[0]:.2f} at the start, {after[0]:.2f} at the end (1 min)")
    print("reproduce: sudo .venv/bin/python -m bench.flows")
    return 0


if __name__ == "__main__":
    sys.exit(main())

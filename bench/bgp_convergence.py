"""BGP convergence: from the start of an IPAM request on one node until the new block's route is
in the kernel of every other node, against BIRD alone propagating a static route over the same
sessions.

Run as root: ``.venv/bin/python -m bench.bgp_convergence [--nodes 4] [--mode mesh|rr]
[--trials 20]``.  It starts its own etcd member and N calico-nodes (real BIRD, one network
namespace each, on one bridge), and removes everything when it ends.

Measured, alternating trials so both see the same machine state:

* **ours** (the figure): from the start of ``IPAM.auto_assign`` of a whole /26 on node 1 — the
  user-visible event, a pod asking for addresses — until the block's route is in the kernel of
  every other node (seen by ``ip monitor route`` in each namespace).  The clock covers IPAM's
  etcd writes (affinity, block, addresses), confd's watch, build, render, ``configure
  "<candidate>"`` over BIRD's control socket and rename, BIRD's static blackhole, the BGP UPDATE
  and each peer's kernel write.  Whatever IPAM writes first (the pending affinity included) is
  inside the clock: nothing is timed from a later point.
* **reference (BIRD alone)**: the same kind of route made BIRD's own way: node 1's current
  configuration plus one ``protocol static`` route written to its file and ``configure`` sent
  over the same control socket, then the same propagation to the same kernels; timed from the
  write of the file.  What separates the two is everything pycalico adds in front of BIRD: the
  IPAM writes to etcd, the watch and confd.  The ratio is ours / reference (medians).

Also printed: node 1's own blackhole (local latency), BGP sessions per node, and the resident
memory per node (calico-node + its confd child + BIRD).
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import queue
import statistics
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pycalico.bgp.bird import BirdControl
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.ipam.allocator import IPAM, AutoAssignRequest
from pycalico.testing.bgp_cluster import BgpCluster, wait_for
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.netns_fabric import FabricNode

POOL = "10.70.0.0/16"
REFERENCE_BASE = ipaddress.ip_network("10.70.200.0/26")


class RouteWatch:
    """``ip monitor route`` in every node namespace; first time each prefix was added."""

    def __init__(self, nodes: Sequence[FabricNode]) -> None:
        self.seen: dict[tuple[str, str], float] = {}
        self.lock = threading.Lock()
        self.processes = []
        self.events: queue.Queue[tuple[str, str]] = queue.Queue()
        for node in nodes:
            process = subprocess.Popen(
                ["stdbuf", "-oL", "ip", "-n", node.namespace, "monitor", "route"],
                stdout=subprocess.PIPE,
                text=True,
                bufsize=1,
            )
            self.processes.append(process)
            threading.Thread(target=self._read, args=(node.name, process), daemon=True).start()
        # Every `ip monitor` must have subscribed before the first timed route is made: add a
        # probe route (TEST-NET-1, never routed anywhere) in each namespace until all report it.
        for index, node in enumerate(nodes):
            probe = f"192.0.2.{index % 250 + 1}"  # `ip` prints a host route without "/32"
            deadline = time.perf_counter() + 60
            while self.when(node.name, probe) is None:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"ip monitor in {node.namespace} never reported")
                # Delete and add again: re-adding an identical route would notify nobody.
                subprocess.run(
                    ["ip", "-n", node.namespace, "route", "del", probe],
                    check=False,
                    stderr=subprocess.DEVNULL,
                )
                subprocess.run(
                    ["ip", "-n", node.namespace, "route", "add", "blackhole", probe], check=True
                )
                time.sleep(0.05)
            subprocess.run(["ip", "-n", node.namespace, "route", "del", probe], check=False)

    def _read(self, name: str, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            now = time.perf_counter()
            if line.startswith("Deleted"):
                continue
            words = line.split()
            if not words:
                continue
            prefix = words[1] if words[0] in ("blackhole", "unreachable") else words[0]
            with self.lock:
                self.seen.setdefault((name, prefix), now)

    def when(self, name: str, prefix: str) -> float | None:
        with self.lock:
            return self.seen.get((name, prefix))

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
            process.wait(5)


async def wait_everywhere(
    watch: RouteWatch, nodes: Sequence[FabricNode], prefix: str, timeout: float = 30.0
) -> float:
    """When the last of ``nodes`` got ``prefix`` in its kernel."""
    deadline = time.perf_counter() + timeout
    while True:
        times = [watch.when(node.name, prefix) for node in nodes]
        if all(value is not None for value in times):
            return max(value for value in times if value is not None)
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{prefix} missing on some of {[n.name for n in nodes]}")
        await asyncio.sleep(0.001)


@dataclass
class Figures:
    reference_remote: list[float] = field(default_factory=list)
    reference_local: list[float] = field(default_factory=list)
    ours_remote: list[float] = field(default_factory=list)  # from the start of the IPAM call
    ours_local: list[float] = field(default_factory=list)
    ipam_call: list[float] = field(default_factory=list)


async def reference(cluster: BgpCluster, watch: RouteWatch, trial: int, figures: Figures) -> None:
    owner, others = cluster.nodes[0], cluster.nodes[1:]
    block = str(ipaddress.ip_network((int(REFERENCE_BASE.network_address) + trial * 64, 26)))
    with open(owner.bird_config) as file:
        text = file.read()
    extra = f"\nprotocol static bench_reference {{\n  ipv4;\n  route {block} blackhole;\n}}\n"
    start = time.perf_counter()
    with open(owner.bird_config + ".tmp", "w") as file:
        file.write(text + extra)
    os.replace(owner.bird_config + ".tmp", owner.bird_config)
    await BirdControl(owner.bird_socket).configure()
    figures.reference_remote.append(await wait_everywhere(watch, others, block) - start)
    figures.reference_local.append(await wait_everywhere(watch, [owner], block) - start)


async def ours(
    ipam: IPAM,
    cluster: BgpCluster,
    watch: RouteWatch,
    trial: int,
    figures: Figures,
) -> None:
    owner, others = cluster.nodes[0], cluster.nodes[1:]
    request = AutoAssignRequest(num4=64, handle_id=f"bench.{trial}", node=owner.name)
    start = time.perf_counter()
    v4, _ = await ipam.auto_assign(request)
    figures.ipam_call.append(time.perf_counter() - start)
    blocks = {str(address.network) for address in v4.addresses}
    assert len(blocks) == 1, f"expected one new block, got {blocks}"
    (block,) = blocks
    remote = await wait_everywhere(watch, others, block)
    figures.ours_remote.append(remote - start)
    figures.ours_local.append(await wait_everywhere(watch, [owner], block) - start)


async def run_trials(cluster: BgpCluster, watch: RouteWatch, count: int) -> Figures:
    kv = EtcdKVStore([cluster.endpoint])
    figures = Figures()
    try:
        ipam = IPAM(kv)
        await ipam.get_config()  # the connection is up before the first timed call
        for trial in range(count):
            await reference(cluster, watch, trial, figures)
            await asyncio.sleep(0.3)
            await ours(ipam, cluster, watch, trial, figures)
            await asyncio.sleep(0.3)
    finally:
        await kv.close()
    return figures


def rss_kib(pids: Sequence[int]) -> dict[str, int]:
    usage: dict[str, int] = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as file:
                fields = dict(line.split(":", 1) for line in file if ":" in line)
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                words = [w.decode() for w in file.read().split(b"\0") if w]
        except OSError:
            continue
        rss = int(fields.get("VmRSS", "0 kB").split()[0])
        name = (
            "bird"
            if os.path.basename(words[0]) == "bird"
            else ("confd" if "-confd" in words else "calico-node")
        )
        usage[name] = usage.get(name, 0) + rss
    return usage


def switch_to_reflectors(cluster: BgpCluster) -> list[FabricNode]:
    reflectors = cluster.nodes[-2:]
    for node in reflectors:
        current = cluster.get("Node", node.name)
        cluster.apply(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "Node",
                "metadata": {"name": node.name, "labels": {"route-reflector": "true"}},
                "spec": {
                    "bgp": {
                        "ipv4Address": current.spec.bgp.ipv4_address,  # type: ignore[attr-defined]
                        "routeReflectorClusterID": "244.0.0.1",
                    }
                },
            }
        )
    cluster.apply(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "BGPPeer",
            "metadata": {"name": "peer-with-route-reflectors"},
            "spec": {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"},
        },
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "BGPConfiguration",
            "metadata": {"name": "default"},
            "spec": {"nodeToNodeMeshEnabled": False},
        },
    )
    return reflectors


def expected_sessions(cluster: BgpCluster, node: FabricNode, mode: str) -> int:
    size = len(cluster.nodes)
    if mode == "mesh":
        return size - 1
    return size - 1 if node in cluster.nodes[-2:] else 2


def summary(values: Sequence[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return f"median {statistics.median(ordered) * 1000:7.1f} ms, p90 {p90 * 1000:7.1f} ms"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--mode", choices=("mesh", "rr"), default="mesh")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument(
        "--confd-in-process",
        action="store_true",
        help="run confd inside calico-node (CALICO_CONFD_IN_PROCESS=true)",
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("bench.bgp_convergence needs root (network namespaces, BIRD)")

    load_before = os.getloadavg()
    with (
        EtcdServer(name="bench-bgp") as etcd,
        BgpCluster(
            etcd.endpoint,
            args.nodes,
            prefix=f"pcb{os.getpid() % 10000:04d}",
            pool=POOL,
            extra_env={"CALICO_CONFD_IN_PROCESS": "true"} if args.confd_in_process else None,
        ) as cluster,
    ):
        started = time.perf_counter()
        cluster.start()
        modes = ["mesh", "rr"] if args.mode == "rr" else ["mesh"]
        for mode in modes:
            if mode == "rr":
                switch_to_reflectors(cluster)
            for node in cluster.nodes:
                want = expected_sessions(cluster, node, mode)
                try:
                    wait_for(
                        lambda node=node, want=want: (
                            len(cluster.established(node)) == want
                            and len(cluster.bgp_protocols(node)) == want
                        ),
                        180,
                        interval=0.5,
                    )
                except TimeoutError:
                    protocols = cluster.bgp_protocols(node)
                    late = {k: v for k, v in protocols.items() if not v.startswith("Established")}
                    raise SystemExit(
                        f"{node.name}: {len(protocols)} BGP protocols (want {want}), "
                        f"not established: {late}\n{cluster.logs(node)[-3000:]}"
                    ) from None
        ready = time.perf_counter() - started
        watch = RouteWatch(cluster.nodes)
        try:
            figures = asyncio.run(run_trials(cluster, watch, args.trials))
        finally:
            watch.close()
        sessions = [len(cluster.established(node)) for node in cluster.nodes]
        memory = [rss_kib(cluster.fabric.pids(node.namespace)) for node in cluster.nodes]

    reference_median = statistics.median(figures.reference_remote)
    where = "confd in calico-node" if args.confd_in_process else "confd as a child"
    print(f"BGP convergence, {args.nodes} nodes, {args.mode}, {where}, {args.trials} trials each")
    print(f"  load average at the start: {' '.join(f'{v:.2f}' for v in load_before)}")
    print(f"  cluster up (all sessions Established): {ready:.1f} s")
    print(f"  reference, BIRD alone, every other kernel: {summary(figures.reference_remote)}")
    print(f"  reference, BIRD alone, node 1's kernel:    {summary(figures.reference_local)}")
    print(f"  ours, IPAM call -> every other kernel:     {summary(figures.ours_remote)}")
    print(f"  ours, IPAM call -> node 1's blackhole:     {summary(figures.ours_local)}")
    print(f"  the IPAM call itself (claim + 64 addresses): {summary(figures.ipam_call)}")
    print(
        "  ratio, ours (start of the IPAM call) / BIRD alone (write of its config), medians, "
        f"every other kernel: {statistics.median(figures.ours_remote) / reference_median:.2f}"
    )
    print(f"  load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(
        f"  BGP sessions per node: {sorted(set(sessions))} (min {min(sessions)}, max {max(sessions)})"
    )
    for part in ("calico-node", "confd", "bird"):
        values = [m.get(part, 0) / 1024 for m in memory]
        print(f"  RSS per node, {part}: median {statistics.median(values):.1f} MiB")
    total = [sum(m.values()) / 1024 for m in memory]
    print(f"  RSS per node, total: median {statistics.median(total):.1f} MiB")
    print(
        f"  reproduce: .venv/bin/python -m bench.bgp_convergence --nodes {args.nodes} "
        f"--mode {args.mode} --trials {args.trials}"
        + (" --confd-in-process" if args.confd_in_process else "")
    )


if __name__ == "__main__":
    main()

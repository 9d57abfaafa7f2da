"""calico-lab at scale: bring-up time for 10, 30 and 50 nodes and where it goes, pods per second
across the lab, and memory per node (calico-node + confd + Felix + BIRD).

Run as root: ``.venv/bin/python -m bench.lab_scale [--sizes 10,30,50] [--pods-per-node 2]
[--quick]``.  Each lab has its own state directory and namespace prefix, and is removed at the
end (also on failure).  The load average is printed before each size.

Where the bring-up time goes, two views of the same ``calico-lab up``:

* **phases** (wall clock, from ``up``'s own progress lines): fabric + etcd healthy + datastore
  written; node namespaces built and every calico-node spawned; then until Felix is ready on
  every node, and until every BGP session is Established (both end at "ready");
* **CPU** spent by each kind of process of every node until ready (utime + stime from
  ``/proc``; calico-node includes its startup), against the wall clock times the machine's CPUs:
  when the sum is close to that product, bring-up is CPU-bound and grows with N times per-node CPU.

Reference, measured in the same run on the same machine:

* **bring-up**: the same fabric (a bridge namespace, one namespace per node) with only BIRD in
  each node, configured by hand for the same full mesh, until every session is Established.
  The ratio says what calico-node (registration in etcd, confd, Felix's first sync and
  nftables, the CNI agent) costs on top of bare namespaces and BGP.
* **pods/s**: the kernel work alone of a minimal pod network (namespace, veth pair, address,
  the /32 route and gateway routes) done by ``ip`` commands, with the same parallelism, against
  the lab's ``calico`` CNI ADDs (IPAM in etcd, WorkloadEndpoint, Felix programming).
* **memory**: BIRD alone per node in the reference fabric, against the lab's node (PSS: shared
  pages divided among the processes that share them, so the sum means something).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pycalico.bgp.bird import BirdControl
from pycalico.lab import cluster, kernel, pods
from pycalico.lab.state import FABRIC_SUBNET


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(kernel.children(current))
    return found


# --- reference: bare namespaces + BIRD -------------------------------------------------------


def bird_config(index: int, size: int, directory: str) -> str:
    lines = [f"router id {FABRIC_SUBNET}.{index};", "protocol device {}"]
    for peer in range(1, size + 1):
        if peer == index:
            continue
        lines.append(
            f"protocol bgp peer{peer} {{ local as 64512; neighbor {FABRIC_SUBNET}.{peer} as 64512;"
            " direct; ipv4 { import all; export none; }; }"
        )
    path = os.path.join(directory, f"bird{index}.conf")
    Path(path).write_text("\n".join(lines) + "\n")
    return path


def reference_bringup(size: int, prefix: str, directory: str) -> tuple[float, list[int]]:
    """Seconds until every BIRD session is Established; the BIRD pids."""
    fabric = f"{prefix}-fabric"
    started = time.monotonic()
    kernel.add_namespace(fabric)
    kernel.ip(fabric, "link", "add", "br0", "type", "bridge")
    kernel.ip(fabric, "link", "set", "br0", "up")
    pids = []
    for index in range(1, size + 1):
        namespace = f"{prefix}-node{index}"
        kernel.add_namespace(namespace)
        kernel.attach_to_bridge(fabric, namespace, f"n{index}")
        kernel.ip(namespace, "addr", "add", f"{FABRIC_SUBNET}.{index}/24", "dev", "eth0")
        config = bird_config(index, size, directory)
        socket_path = os.path.join(directory, f"bird{index}.ctl")
        pids.append(
            kernel.start_daemon(
                ["bird", "-f", "-c", config, "-s", socket_path],
                namespace=namespace,
                env={"PATH": os.environ["PATH"]},
                log_path=os.path.join(directory, f"bird{index}.log"),
                pid_path=os.path.join(directory, f"bird{index}.pid"),
            )
        )

    def established(index: int) -> int:
        try:
            rows = asyncio.run(
                BirdControl(os.path.join(directory, f"bird{index}.ctl"), timeout=2).protocols()
            )
        except Exception:
            return 0
        return sum(1 for row in rows if row.proto == "BGP" and row.info.startswith("Established"))

    deadline = time.monotonic() + 300
    while any(established(i) < size - 1 for i in range(1, size + 1)):
        if time.monotonic() > deadline:
            raise RuntimeError("reference BIRD mesh did not establish in 300s")
        time.sleep(0.25)
    return time.monotonic() - started, pids


def reference_pods(prefix: str, count: int, parallel: int) -> float:
    """Seconds for ``count`` bare pod networks (namespace, veth, address, routes)."""
    node = f"{prefix}-node1"
    kernel.sysctls(node, {"net.ipv4.ip_forward": "1"})

    def one(i: int) -> None:
        pod = f"{prefix}-pod{i}"
        kernel.add_namespace(pod)
        host = f"cali{i:011d}"
        kernel.ip(node, "link", "add", host, "type", "veth", "peer", "name", "eth0", "netns", pod)
        kernel.ip(node, "link", "set", host, "up")
        address = f"10.97.{i // 250}.{i % 250 + 1}"
        kernel.ip(pod, "addr", "add", f"{address}/32", "dev", "eth0")
        kernel.ip(pod, "link", "set", "eth0", "up")
        kernel.ip(pod, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
        kernel.ip(pod, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
        kernel.ip(node, "route", "add", f"{address}/32", "dev", host)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(one, range(count)))
    return time.monotonic() - started


def remove(prefix: str, directory: str) -> None:
    pids = []
    for path in Path(directory).glob("*.pid"):
        pid = kernel.read_pid(path)
        if pid:
            pids.append(pid)
    kernel.kill_tree(pids)
    for namespace in kernel.list_namespaces(prefix):
        kernel.kill_tree(kernel.namespace_pids(namespace), grace=0.5)
        kernel.delete_namespace(namespace)


# --- the lab ---------------------------------------------------------------------------------


def lab_memory(lab_dir: str) -> dict[str, list[int]]:
    """Per component, the PSS (KiB) of each node's process."""
    lab = cluster.require(lab_dir)
    found: dict[str, list[int]] = {"calico-node": [], "confd": [], "felix": [], "bird": []}
    for node in lab.nodes:
        root = kernel.read_pid(cluster.pid_file(node))
        assert root is not None
        for pid in descendants(root):
            words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            found[component(words)].append(pss_kib(pid))
    return found


def component(words: list[bytes]) -> str:
    text = b" ".join(words).decode(errors="replace")
    if "-confd" in text:
        return "confd"
    if "calico-felix" in text:
        return "felix"
    if os.path.basename(words[0].decode()) == "bird":
        return "bird"
    return "calico-node"


def lab_cpu(lab_dir: str) -> dict[str, float]:
    """CPU seconds (user + system) spent so far by each kind of process, summed over nodes."""
    lab = cluster.require(lab_dir)
    ticks = os.sysconf("SC_CLK_TCK")
    found = {"calico-node": 0.0, "confd": 0.0, "felix": 0.0, "bird": 0.0}
    for node in lab.nodes:
        root = kernel.read_pid(cluster.pid_file(node))
        assert root is not None
        for pid in descendants(root):
            try:
                words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            found[component(words)] += (int(fields[11]) + int(fields[12])) / ticks
    return found


class Phases:
    """Timestamps of ``up``'s progress lines, turned into phases."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.lines: list[tuple[float, str]] = []

    def __call__(self, message: str) -> None:
        self.lines.append((time.monotonic() - self.start, message))

    def first(self, predicate: str) -> float:
        return next(t for t, line in self.lines if predicate in line)

    def all_of(self, what: str, size: int) -> float:
        """When ``what`` (Felix ready / BGP complete) first reached every node."""
        mark = f"{what} on {size}/{size}"
        return next((t for t, line in self.lines if mark in line), self.lines[-1][0])

    def summary(self, size: int) -> str:
        nodes = self.first("nodes:")
        spawned = self.first("Felix ready on")
        ready = self.lines[-1][0]
        return (
            f"fabric + etcd + datastore {nodes:.1f}s; namespaces + spawn {spawned - nodes:.1f}s; "
            f"then Felix ready everywhere at +{self.all_of('Felix ready', size) - spawned:.1f}s, "
            f"BGP complete everywhere at +{self.all_of('BGP complete', size) - spawned:.1f}s "
            f"(ready at {ready:.1f}s)"
        )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lab_scale")
    parser.add_argument("--sizes", default="10,30,50")
    parser.add_argument("--pods-per-node", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="sizes 3,5")
    args = parser.parse_args(argv)
    sizes = [3, 5] if args.quick else [int(s) for s in args.sizes.split(",")]
    if os.geteuid() != 0:
        print("bench.lab_scale needs root (network namespaces)")
        return 1
    print(f"machine: {os.cpu_count()} CPUs; sizes {sizes}; full BGP mesh", flush=True)
    work = tempfile.mkdtemp(prefix="pycalico-bench-lab-")
    ref_prefix, lab_prefix = f"bref{os.getpid() % 1000}", f"blab{os.getpid() % 1000}"
    lab_dir = os.path.join(work, "lab")
    results: dict[int, dict[str, float]] = {}
    try:
        for size in sizes:
            load = os.getloadavg()
            print(f"\n{size} nodes: load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
            ref_dir = os.path.join(work, f"ref{size}")
            os.makedirs(ref_dir)
            # The same room in the kernel's shared neighbour table as `calico-lab up` makes
            # (a full mesh of N needs about N^2 entries; the default limit is 1,024).
            neighbours = kernel.raise_neighbour_limits(size + 3)
            try:
                ref_seconds, bird_pids = reference_bringup(size, ref_prefix, ref_dir)
                bird_pss = statistics.mean(pss_kib(pid) for pid in bird_pids)
                pod_count = size * args.pods_per_node
                ref_pod_seconds = reference_pods(ref_prefix, pod_count, args.parallel)
            finally:
                remove(ref_prefix, ref_dir)
                kernel.restore_neighbour_limits(neighbours)
            try:
                phases = Phases()
                cluster.up(
                    state_dir=lab_dir, prefix=lab_prefix, nodes=size, timeout=600, progress=phases
                )
                lab_seconds = time.monotonic() - phases.start
                cpu = lab_cpu(lab_dir)
                memory = lab_memory(lab_dir)
                specs = [
                    pods.PodSpec(f"p{i}", f"node{i % size + 1}", f"ns{i % 3}")
                    for i in range(pod_count)
                ]
                started = time.monotonic()
                pods.add(lab_dir, specs, parallel=args.parallel)
                pod_seconds = time.monotonic() - started
            finally:
                cluster.down(state_dir=lab_dir, prefix=lab_prefix)
            per_node = {name: statistics.mean(values) for name, values in memory.items()}
            total = sum(per_node.values())
            results[size] = {"lab": lab_seconds, "ref": ref_seconds}
            print(
                f"  bring-up: lab {lab_seconds:.1f}s, reference (namespaces + BIRD mesh) "
                f"{ref_seconds:.1f}s  -> ratio {lab_seconds / ref_seconds:.1f}x"
            )
            print(f"  phases: {phases.summary(size)}")
            cpus = os.cpu_count() or 1
            print(
                f"  CPU until ready: {sum(cpu.values()):.1f}s of {lab_seconds * cpus:.1f}s "
                f"({cpus} CPUs x wall) -- "
                + ", ".join(f"{k} {v:.1f}s ({v / size:.2f}s/node)" for k, v in cpu.items())
            )
            print(
                f"  pods: {pod_count} in {pod_seconds:.1f}s = {pod_count / pod_seconds:.1f} "
                f"pods/s (parallel {args.parallel}); reference bare veth+netns "
                f"{pod_count / ref_pod_seconds:.1f} pods/s -> ratio "
                f"{ref_pod_seconds / pod_seconds:.2f} of the reference rate"
            )
            print(
                "  memory per node (PSS, MiB): "
                + ", ".join(f"{k} {v / 1024:.1f}" for k, v in per_node.items())
                + f"; total {total / 1024:.1f}; BIRD-only reference {bird_pss / 1024:.1f} "
                f"-> ratio {total / bird_pss:.0f}x"
            )
            sys.stdout.flush()
    finally:
        cluster.down(state_dir=lab_dir, prefix=lab_prefix)
        remove(ref_prefix, work)
        subprocess.run(["rm", "-rf", work], check=False)
    if len(sizes) > 1:
        first = sizes[0]
        for size in sizes[1:]:
            growth = results[size]["lab"] / results[first]["lab"]
            print(
                f"\nbring-up {first} -> {size} nodes: x{growth:.1f} for x{size / first:.0f} nodes"
            )
    print(
        f"\nreproduce: .venv/bin/python -m bench.lab_scale --sizes {','.join(map(str, sizes))} "
        f"--pods-per-node {args.pods_per_node} --parallel {args.parallel}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

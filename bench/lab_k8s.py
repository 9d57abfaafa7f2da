"""calico-lab in Kubernetes mode: ``kubectl apply`` of 30 pods over 3 nodes until every pod is
Running with an IP, against the same 30 pods through the lab's etcd-mode runtime (``pod add``'s
code, ``pycalico.lab.pods.add``) in the same lab, in the same run.

Run as root: ``.venv/bin/python -m bench.lab_k8s [--pods 30] [--rounds 3] [--quick]``.  The lab
(3 nodes, ``up --kubernetes``) has its own state directory and namespace prefix and is removed
at the end, also on failure.

* **Kubernetes**: the clock starts before ``kubectl apply -f`` of 30 Pods without a node (the
  runner's scheduler binds them, 10 per node) and stops when a watch of the Pods (started
  before) has seen all 30 ``Running`` with a ``podIP``: binding, the runner's watch, CNI ADD,
  the status patch and the watch event back.
* **reference**: the same 30 pods (same names in another namespace, 10 per node) through
  ``pods.add`` with the same CNI parallelism as the runner (``PARALLEL_PER_NODE`` per node):
  namespace + CNI ADD with etcd-mode CNI_ARGS, nothing else.

The ratio is what the Kubernetes side (API round trips, scheduling, watches, status writes)
costs on top of the CNI work itself.  Between rounds every pod is deleted (``kubectl delete``:
graceful delete, the runner's DEL, then its final delete; timed too, against ``pods.delete``).
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

from pycalico.k8s.client import KubeClient
from pycalico.k8s.watch import Changed, Listed, ListWatcher
from pycalico.lab import cluster, kube, kubelet, pods
from pycalico.lab import state as lab_state

NODES = 3
NAMESPACE = "bench"


def manifest(count: int) -> str:
    return "---\n".join(
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, labels: {{app: bench}}}}\n"
        "spec: {containers: [{name: main, image: registry.k8s.io/pause:3.10}]}\n"
        for i in range(count)
    )


def kubectl(lab: lab_state.LabState, *args: str, stdin: str = "") -> str:
    assert lab.kube is not None
    done = subprocess.run(
        [cluster.executable("kubectl"), f"--kubeconfig={lab.kube.kubeconfig}", *args],
        input=stdin, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)}: {done.stderr}")
    return done.stdout


async def _running(lab: lab_state.LabState, count: int, started: asyncio.Event) -> float:
    """Watch the default namespace's Pods; the time when ``count`` are Running with an IP."""
    assert lab.kube is not None
    async with await KubeClient.from_kubeconfig(lab.kube.kubeconfig) as client:
        running: set[str] = set()
        watcher = ListWatcher(client.core.list_namespaced_pod, namespace="default")
        async for event in watcher.events():
            objects = event.items if isinstance(event, Listed) else ()
            if isinstance(event, Changed):
                objects = (event.object,)
            for item in objects:
                pod = client.to_wire(item)
                status = pod.get("status") or {}
                if status.get("phase") == "Running" and status.get("podIP"):
                    running.add(pod["metadata"]["name"])
            started.set()
            if len(running) >= count:
                return time.monotonic()
    raise AssertionError("unreachable")


def kubernetes_round(lab: lab_state.LabState, count: int) -> tuple[float, float]:
    async def main() -> tuple[float, float]:
        started = asyncio.Event()
        watch = asyncio.create_task(_running(lab, count, started))
        await started.wait()
        begin = time.monotonic()
        await asyncio.to_thread(kubectl, lab, "apply", "-f", "-", stdin=manifest(count))
        done = await asyncio.wait_for(watch, 300)
        return begin, done

    begin, done = asyncio.run(main())
    state = lab_state.load(lab.state_dir)
    assert state is not None
    networked = [p for p in state.pods if p.uid]
    assert len(networked) == count and all(p.ipv4 for p in networked), "not every pod networked"
    spread = sorted(sum(1 for p in networked if p.node == n.name) for n in lab.nodes)
    assert spread[-1] - spread[0] <= 1, f"scheduler did not spread: {spread}"
    removal = time.monotonic()
    kubectl(lab, "delete", "pods", "--all", "--timeout=300s")
    return done - begin, time.monotonic() - removal


def reference_round(lab: lab_state.LabState, count: int) -> tuple[float, float]:
    specs = [
        pods.PodSpec(f"r{i}", lab.nodes[i % NODES].name, NAMESPACE, {"app": "bench"})
        for i in range(count)
    ]
    begin = time.monotonic()
    pods.add(lab.state_dir, specs, parallel=NODES * kubelet.PARALLEL_PER_NODE)
    added = time.monotonic() - begin
    begin = time.monotonic()
    with ThreadPoolExecutor(max_workers=NODES * kubelet.PARALLEL_PER_NODE) as pool:
        list(pool.map(lambda spec: pods.delete(lab.state_dir, spec.name), specs))
    return added, time.monotonic() - begin


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lab_k8s", description=__doc__)
    parser.add_argument("--pods", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="6 pods, 1 round")
    options = parser.parse_args(argv)
    count, rounds = (6, 1) if options.quick else (options.pods, options.rounds)
    if os.geteuid() != 0:
        print("bench.lab_k8s needs root (network namespaces)", file=sys.stderr)
        return 1
    state_dir = tempfile.mkdtemp(prefix="pycalico-bench-k8s-")
    prefix = f"bk{os.getpid() % 10000}"
    print(
        f"load average {os.getloadavg()[0]:.1f}; lab: {NODES} nodes, {count} pods, {rounds} rounds"
    )
    try:
        begin = time.monotonic()
        lab = cluster.up(state_dir=state_dir, prefix=prefix, nodes=NODES)
        lab = kube.up(lab, lambda _: None)
        print(f"up --kubernetes: {time.monotonic() - begin:.1f} s")
        results: dict[str, list[tuple[float, float]]] = {"kubernetes": [], "reference": []}
        for number in range(rounds):
            results["reference"].append(reference_round(lab, count))
            results["kubernetes"].append(kubernetes_round(lab, count))
            k8s, ref = results["kubernetes"][-1], results["reference"][-1]
            print(
                f"round {number + 1}: kubectl apply -> all Running {k8s[0]:.2f} s "
                f"(delete {k8s[1]:.2f} s); pod add reference {ref[0]:.2f} s "
                f"(delete {ref[1]:.2f} s); ratio {k8s[0] / ref[0]:.2f}"
            )
    finally:
        cluster.down(state_dir=state_dir, prefix=prefix)
    k8s_add = statistics.median(r[0] for r in results["kubernetes"])
    ref_add = statistics.median(r[0] for r in results["reference"])
    k8s_del = statistics.median(r[1] for r in results["kubernetes"])
    ref_del = statistics.median(r[1] for r in results["reference"])
    print(
        f"median: {count} pods Running via kubectl apply {k8s_add:.2f} s "
        f"({count / k8s_add:.1f} pods/s), reference {ref_add:.2f} s ({count / ref_add:.1f} "
        f"pods/s): ratio {k8s_add / ref_add:.2f}; delete {k8s_del:.2f} s vs {ref_del:.2f} s: "
        f"ratio {k8s_del / ref_del:.2f}"
    )
    print(f"command: .venv/bin/python -m bench.lab_k8s --pods {count} --rounds {rounds}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

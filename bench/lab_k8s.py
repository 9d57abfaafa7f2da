"""calico-lab in Kubernetes mode: ``kubectl apply`` of 30 pods over 3 nodes until every pod is
Running with an IP, against the same 30 pods through the lab's etcd-mode runtime (``pod add``'s
code, ``pycalico.lab.pods.add``) in the same lab, in the same run.

Run as root: ``.venv/bin/python -m bench.lab_k8s [--pods 30] [--rounds 3] [--quick]``.  The lab
(3 nodes, ``up --kubernetes``) has its own state directory and namespace prefix and is removed
at the end, also on failure.

* **Kubernetes**: the clock starts before ``kubectl apply -f`` of 30 Pods without a node (the
  runner's scheduler binds them, 10 per node) and stops when a watch of the Pods (started
  before) has seen all 30 ``Running`` with a ``podIP``: kubectl itself (its own time is printed
  too), binding, the runner's watch, CNI ADD, the status patch and the watch event back.
* **reference**: the same 30 pods (same names in another namespace, 10 per node) through
  ``pods.add`` with the same CNI parallelism as the runner (``PARALLEL_PER_NODE`` per node):
  namespace + CNI ADD with etcd-mode CNI_ARGS, nothing else.

The ratio is what the Kubernetes side (API round trips, scheduling, watches, status writes, and
with ``kubelet.CNI_READS_API`` the plugin's own pod read and annotation patch) costs on top of
the CNI work itself.  Between rounds every pod is deleted, timed too: ``kubectl
delete pods --all --wait=false`` until the watch has seen every Pod gone (graceful delete, the
runner's DEL, its final delete), against ``pods.delete`` of the reference pods, same parallelism.
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


async def _until(lab: lab_state.LabState, count: int, ready: asyncio.Event) -> float:
    """Watch the default namespace's Pods; the time when ``count`` of them are Running with an
    IP (``count`` 0: when none is left)."""
    assert lab.kube is not None
    async with await KubeClient.from_kubeconfig(lab.kube.kubeconfig) as client:
        pods_seen: dict[str, bool] = {}  # name -> Running with an IP
        watcher = ListWatcher(client.core.list_namespaced_pod, namespace="default")
        async for event in watcher.events():
            if isinstance(event, Listed):
                changes = [("ADDED", item) for item in event.items]
            elif isinstance(event, Changed):
                changes = [(event.type, event.object)]
            else:
                continue
            for kind, item in changes:
                pod = client.to_wire(item)
                status = pod.get("status") or {}
                name = pod["metadata"]["name"]
                if kind == "DELETED":
                    pods_seen.pop(name, None)
                else:
                    pods_seen[name] = status.get("phase") == "Running" and bool(status.get("podIP"))
            ready.set()
            running = sum(pods_seen.values())
            if (count and running >= count) or (not count and not pods_seen):
                return time.monotonic()
    raise AssertionError("unreachable")


async def _timed(lab: lab_state.LabState, count: int, *command: str, stdin: str = "") -> tuple[
    float, float
]:  # fmt: skip
    """Run kubectl ``command`` with a watch already running; (when kubectl returned, when the
    watch saw the goal), both from the start."""
    ready = asyncio.Event()
    watch = asyncio.create_task(_until(lab, count, ready))
    await ready.wait()
    begin = time.monotonic()
    await asyncio.to_thread(kubectl, lab, *command, stdin=stdin)
    returned = time.monotonic()
    done = await asyncio.wait_for(watch, 300)
    return returned - begin, done - begin


def kubernetes_round(lab: lab_state.LabState, count: int) -> tuple[float, float, float]:
    """(kubectl apply returned, all Running, all deleted): seconds."""
    applied, running = asyncio.run(_timed(lab, count, "apply", "-f", "-", stdin=manifest(count)))
    state = lab_state.load(lab.state_dir)
    assert state is not None
    networked = [p for p in state.pods if p.uid]
    assert len(networked) == count and all(p.ipv4 for p in networked), "not every pod networked"
    spread = sorted(sum(1 for p in networked if p.node == n.name) for n in lab.nodes)
    assert spread[-1] - spread[0] <= 1, f"scheduler did not spread: {spread}"
    _, deleted = asyncio.run(_timed(lab, 0, "delete", "pods", "--all", "--wait=false"))
    return applied, running, deleted


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
        lab = cluster.up(
            state_dir=state_dir,
            prefix=prefix,
            nodes=NODES,
            before_nodes=lambda built: kube.start_control_plane(built, lambda _: None),
        )
        lab = kube.start_pods(lab, lambda _: None)
        print(f"up --kubernetes: {time.monotonic() - begin:.1f} s")
        k8s: list[tuple[float, float, float]] = []
        ref: list[tuple[float, float]] = []
        for number in range(rounds):
            ref.append(reference_round(lab, count))
            k8s.append(kubernetes_round(lab, count))
            print(
                f"round {number + 1}: kubectl apply returned {k8s[-1][0]:.2f} s, all Running "
                f"{k8s[-1][1]:.2f} s (delete --wait=false -> all gone {k8s[-1][2]:.2f} s); "
                f"pod add reference {ref[-1][0]:.2f} s (delete {ref[-1][1]:.2f} s); "
                f"ratio {k8s[-1][1] / ref[-1][0]:.2f}"
            )
    finally:
        cluster.down(state_dir=state_dir, prefix=prefix)
    applied = statistics.median(r[0] for r in k8s)
    k8s_add = statistics.median(r[1] for r in k8s)
    k8s_del = statistics.median(r[2] for r in k8s)
    ref_add = statistics.median(r[0] for r in ref)
    ref_del = statistics.median(r[1] for r in ref)
    print(
        f"median: {count} pods Running via kubectl apply {k8s_add:.2f} s "
        f"({count / k8s_add:.1f} pods/s; kubectl itself returned at {applied:.2f} s), reference "
        f"{ref_add:.2f} s ({count / ref_add:.1f} pods/s): ratio {k8s_add / ref_add:.2f}; "
        f"delete {k8s_del:.2f} s vs {ref_del:.2f} s: ratio {k8s_del / ref_del:.2f}"
    )
    print(f"command: .venv/bin/python -m bench.lab_k8s --pods {count} --rounds {rounds}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

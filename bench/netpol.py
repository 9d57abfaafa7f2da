"""A Kubernetes NetworkPolicy created with kubectl until enforced on packets, against the same
policy written directly with calicoctl, in one run and one lab.

Run as root: ``.venv/bin/python -m bench.netpol [--rounds 10] [--quick]``.  The lab (2 nodes,
``up --kubernetes``, with calico-kube-controllers) has its own state directory and namespace
prefix and is removed at the end, also on failure.

Two pods in namespace ``bench``: ``client`` on node1, ``server`` on node2 (a TCP server on
8080).  A standing NetworkPolicy denies all ingress to ``server``.  Each round, the clock
starts before the command and stops when a TCP probe client -> server first connects (probes
every ~50 ms, 50 ms timeout: the resolution):

* **kubectl**: ``kubectl apply`` of a NetworkPolicy allowing ingress from ``app=client``
  (API server, kube-controllers' policy controller writing ``knp.default.allow-client`` to etcd,
  Felix on node2);
* **calicoctl**: ``calicoctl apply`` of the Calico NetworkPolicy kube-controllers would write
  (etcd, Felix) — the reference.

After each, the policy is deleted and the probe waits until it is blocked again (not timed).
Rounds alternate the two ways.  Printed: p50/p99 of each and the ratio of the p50s; and the
same from the moment the command returned (calicoctl, a Python process, takes longer to start
than kubectl, so the first ratio can be below 1).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from pycalico.lab import cluster, kube
from pycalico.lab import state as lab_state
from pycalico.netns.connectivity import ConnectivityChecker, Endpoint, Probe

PORT = 8080
PODS = """\
apiVersion: v1
kind: Namespace
metadata: {name: bench}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: bench, labels: {app: client}}
spec: {nodeName: node1, containers: [{name: main, image: registry.k8s.io/pause:3.10}]}
---
apiVersion: v1
kind: Pod
metadata: {name: server, namespace: bench, labels: {app: server}}
spec: {nodeName: node2, containers: [{name: main, image: registry.k8s.io/pause:3.10}]}
"""
DENY = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny, namespace: bench}
spec: {podSelector: {matchLabels: {app: server}}, policyTypes: [Ingress]}
"""
ALLOW_K8S = """\
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-client, namespace: bench}
spec:
  podSelector: {matchLabels: {app: server}}
  ingress: [{from: [{podSelector: {matchLabels: {app: client}}}]}]
"""
ALLOW_CALICO = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: allow-client, namespace: bench}
spec:
  order: 1000
  selector: projectcalico.org/orchestrator == 'k8s' && app == 'server'
  types: [Ingress]
  ingress:
  - action: Allow
    source: {selector: projectcalico.org/orchestrator == 'k8s' && app == 'client'}
"""


def run(argv: list[str], env: dict[str, str], stdin: str = "") -> None:
    done = subprocess.run(
        argv, input=stdin, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)}: {done.stdout}{done.stderr}")


def until(
    checker: ConnectivityChecker, probe: Probe, reached: bool, timeout: float = 30.0
) -> float:
    begin = time.monotonic()
    while checker.measure([probe])[probe] != reached:
        if time.monotonic() - begin > timeout:
            raise SystemExit(
                f"{probe.label()}: not {'open' if reached else 'blocked'} in {timeout} s"
            )
        time.sleep(0.05)
    return time.monotonic()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def measure(lab: lab_state.LabState, rounds: int) -> dict[str, list[float]]:
    assert lab.kube is not None
    kenv = {**os.environ, "KUBECONFIG": lab.kube.kubeconfig}
    cenv = {**os.environ, "DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": lab.host_endpoints}
    kubectl, calicoctl = cluster.executable("kubectl"), cluster.executable("calicoctl")
    run([kubectl, "apply", "-f", "-"], kenv, PODS)
    run([kubectl, "wait", "-n", "bench", "--for=condition=Ready", "pods", "--all",
         "--timeout=60s"], kenv)  # fmt: skip
    state = lab_state.load(lab.state_dir)
    assert state is not None
    pods = {p.name: Endpoint(p.netns, p.ipv4) for p in state.pods if p.namespace == "bench"}
    checker = ConnectivityChecker(pods, probe_timeout=0.05)
    probe = Probe("client", "server", PORT, "tcp")
    ways = {
        "kubectl": ([kubectl, "apply", "-f", "-"], kenv, ALLOW_K8S,
                    [kubectl, "delete", "networkpolicy", "-n", "bench", "allow-client"]),
        "calicoctl": ([calicoctl, "apply", "-f", "-"], cenv, ALLOW_CALICO,
                      [calicoctl, "delete", "networkpolicy", "-n", "bench", "allow-client"]),
    }  # fmt: skip
    times: dict[str, list[float]] = {name: [] for name in ways}
    after: dict[str, list[float]] = {name: [] for name in ways}  # from the command's return
    try:
        checker.serve(["server"], tcp_ports=[PORT])
        until(checker, probe, True)
        run([kubectl, "apply", "-f", "-"], kenv, DENY)
        until(checker, probe, False)
        for number in range(rounds):
            for name, (apply, env, manifest, delete) in ways.items():
                begin = time.monotonic()
                run(apply, env, manifest)
                returned = time.monotonic()
                times[name].append(until(checker, probe, True) - begin)
                after[name].append(begin + times[name][-1] - returned)
                run(delete, env)
                until(checker, probe, False)
            print(
                f"round {number + 1}: " + ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items())
            )
    finally:
        checker.stop()
    times.update({f"{name} after return": values for name, values in after.items()})
    return times


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.netpol", description=__doc__)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="2 rounds")
    options = parser.parse_args(argv)
    rounds = 2 if options.quick else options.rounds
    if os.geteuid() != 0:
        print("bench.netpol needs root (network namespaces)", file=sys.stderr)
        return 1
    state_dir = tempfile.mkdtemp(prefix="pycalico-bench-netpol-")
    prefix = f"bn{os.getpid() % 10000}"
    print(f"load average {os.getloadavg()[0]:.1f}; lab: 2 nodes, {rounds} rounds")
    try:
        lab = cluster.up(
            state_dir=state_dir,
            prefix=prefix,
            nodes=2,
            before_nodes=lambda built: kube.start_control_plane(built, lambda _: None),
        )
        lab = kube.start_pods(lab, lambda _: None)
        times = measure(lab, rounds)
    finally:
        cluster.down(state_dir=state_dir, prefix=prefix)
    k8s, ref = times["kubectl"], times["calicoctl"]
    print(
        f"NetworkPolicy until enforced: kubectl p50 {percentile(k8s, 0.5):.2f} s "
        f"p99 {percentile(k8s, 0.99):.2f} s; calicoctl p50 {percentile(ref, 0.5):.2f} s "
        f"p99 {percentile(ref, 0.99):.2f} s; ratio of p50s "
        f"{percentile(k8s, 0.5) / percentile(ref, 0.5):.2f}"
    )
    k8s, ref = times["kubectl after return"], times["calicoctl after return"]
    print(
        f"from the command's return: kubectl p50 {percentile(k8s, 0.5):.2f} s "
        f"p99 {percentile(k8s, 0.99):.2f} s; calicoctl p50 {percentile(ref, 0.5):.2f} s "
        f"p99 {percentile(ref, 0.99):.2f} s"
    )
    print(f"command: .venv/bin/python -m bench.netpol --rounds {rounds}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

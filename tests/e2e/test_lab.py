"""calico-lab end to end: the demo's flow, a 10-node route-reflector cluster with 20 pods, a
node's calico-node killed and restarted, and ``down`` after an interrupted ``up``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pycalico.lab import matrix, pods
from tests.e2e.conftest import BIN, LabRunner

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_demo_flow_exits_zero_with_both_matrices_as_expected(tmp_path: Path) -> None:
    prefix = "edemo" + str(os.getpid() % 1000)
    state_dir = str(tmp_path / "demo")
    env = {**os.environ, "CALICO_DEMO_DIR": state_dir, "CALICO_DEMO_PREFIX": prefix}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pycalico.demo"],
        env={**env, "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert done.stdout.count("all as expected") == 2, done.stdout[-4000:]
    assert "Demo finished: both matrices as expected" in done.stdout
    # The Kubernetes story: pods and the NetworkPolicy with kubectl, the GNP with calicoctl.
    assert "pod/db created" in done.stdout
    assert "networkpolicy.networking.k8s.io/db-from-web-only created" in done.stdout
    # Exactly the policy's cells are blocked: 60 probes, 10 blocked.
    assert "60 of 60 probes reached their pod" in done.stdout
    assert "50 of 60 probes reached their pod" in done.stdout
    assert elapsed < 120, f"demo took {elapsed:.0f}s"
    runner = LabRunner(tmp_path)
    runner.prefix, runner.state_dir = prefix, state_dir
    assert runner.leftovers() == []


def test_ten_nodes_two_reflectors_twenty_pods_all_reach_each_other(lab: LabRunner) -> None:
    lab.run("up", "--nodes", "10", "--route-reflectors", "2")
    status = lab.run("status").stdout
    assert status.count("route reflector") == 2
    assert "9/9 Established" in status  # a reflector peers with every other node
    assert "2/2 Established" in status  # a client peers with the two reflectors
    # One pod through the CLI, nineteen through the same runtime code concurrently.
    lab.run("pod", "add", "pod-0", "--node", "node1", "--namespace", "ns-a", "--labels", "i=0")
    specs = [
        pods.PodSpec(f"pod-{i}", f"node{i % 10 + 1}", "ns-a" if i % 2 else "ns-b", {"i": str(i)})
        for i in range(1, 20)
    ]
    pods.add(lab.state_dir, specs)
    state = lab.state()
    assert len(state.pods) == 20
    assert {pod.node for pod in state.pods} == {f"node{i}" for i in range(1, 11)}
    assert len({pod.ipv4 for pod in state.pods}) == 20
    result = matrix.run(state.pods, lambda *_: True, deadline=60.0)
    assert not result.mismatches, matrix.summary(result) + f" {result.mismatches[:20]}" + lab.logs()
    assert result.reachable == 20 * 19 * 2
    check = lab.run("check", check=False)
    assert check.returncode == 0, check.stdout[-3000:]
    assert "760 of 760 probes reached their pod" in check.stdout

    lab.run("down")
    assert lab.leftovers() == []
    again = lab.run("down")
    assert "0 processes stopped, 0 namespaces deleted" in again.stdout


def test_killed_calico_node_leaves_its_pods_talking_and_restart_serves_new_pods(
    lab: LabRunner,
) -> None:
    lab.run("up", "--nodes", "3")
    pods.add(lab.state_dir, [pods.PodSpec(f"p{i}", f"node{i}", "default") for i in (1, 2, 3)])
    state = lab.state()
    result = matrix.run(state.pods, lambda *_: True, deadline=60.0)
    assert not result.mismatches, matrix.summary(result)

    lab.run("node", "stop", "node3", "--kill")
    node3 = state.node("node3")
    daemons = [pid for pid in lab_pids(node3.namespace) if pid_alive(pid)]
    assert daemons == [], f"node3 still runs {daemons}"
    # Every pod keeps talking, those on node3 too: node3's routes and rules stay in its kernel
    # and its peers keep its routes by graceful restart (BIRD died without a Cease).
    result = matrix.run(state.pods, lambda *_: True, deadline=10.0)
    assert not result.mismatches, "pods lost each other: " + matrix.summary(result)

    # While node3 is down the rest of the cluster still takes new pods.
    pods.add(lab.state_dir, [pods.PodSpec("p4", "node1", "default")])
    lab.run("node", "start", "node3")
    # The restarted node serves new pods again (its agent, IPAM, Felix and BGP all back).
    pods.add(lab.state_dir, [pods.PodSpec("p5", "node3", "default")])
    state = lab.state()
    result = matrix.run(state.pods, lambda *_: True, deadline=60.0)
    assert not result.mismatches, matrix.summary(result) + lab.logs()
    node3_line = next(line for line in lab.run("status").stdout.splitlines() if "node3" in line)
    assert "running" in node3_line and "ready" in node3_line and "not ready" not in node3_line


def test_down_after_killed_up_leaves_nothing(lab: LabRunner) -> None:
    process = subprocess.Popen(
        [str(BIN / "calico-lab"), "up", "--nodes", "2"],
        env=lab.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    # Kill it once calico-node processes exist (mid-way: nodes started, not yet ready).
    while time.monotonic() < deadline and not list(Path(lab.state_dir).glob("nodes/*/*.pid")):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert lab.leftovers(), "the interrupted up left nothing to clean: the test proves nothing"
    lab.run("down")
    assert lab.leftovers() == []


def lab_pids(namespace: str) -> list[int]:
    from pycalico.lab import kernel

    return kernel.namespace_pids(namespace)


def pid_alive(pid: int) -> bool:
    from pycalico.lab import kernel

    return kernel.alive(pid)


def test_dual_stack_lab_with_three_etcd_members(lab: LabRunner) -> None:
    lab.run("up", "--nodes", "2", "--ipv6", "--etcd-members", "3")
    state = lab.state()
    assert len(state.etcd) == 3 and len(state.host_endpoints.split(",")) == 3
    assert "2/2 Established" in lab.run("status").stdout  # one IPv4 and one IPv6 session
    pods.add(lab.state_dir, [pods.PodSpec("a", "node1"), pods.PodSpec("b", "node2")])
    state = lab.state()
    assert all(pod.ipv4 and pod.ipv6 for pod in state.pods)
    result = matrix.run(state.pods, lambda *_: True, deadline=60.0)
    assert set(result.actual) == {
        (s, d, c) for s, d in (("a", "b"), ("b", "a")) for c in ("icmp", "tcp", "icmp6", "tcp6")
    }
    assert not result.mismatches, matrix.summary(result)
    ctl = subprocess.run(
        [str(BIN / "calicoctl"), "get", "workloadendpoints", "-A", "-o", "wide"],
        env={**lab.env, "DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": state.host_endpoints},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for pod in state.pods:
        assert f"{pod.ipv4}/32" in ctl.stdout and f"{pod.ipv6}/128" in ctl.stdout
    assert lab.run("pod", "del", "b").stdout.strip() == "pod b deleted"
    assert "no pod b" in lab.run("pod", "del", "b").stdout

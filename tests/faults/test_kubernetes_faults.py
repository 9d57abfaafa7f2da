"""kube-apiserver and kube-controllers SIGKILLed during policy and pod churn (issue 16, Faults).

Its own lab (``calico-lab up --nodes 3 --kubernetes``; ``down`` also on failure): namespaces
``red`` and ``blue``; steady pods p1 (red, node1), p2 (blue, node2), p3 (red, node3) with the
suite's steady traffic between them (``faults.steady_traffic``); two anchor pods under fixed
policies (anchor1 in red: only from namespaces labelled team=red; anchor2 in blue: from
nothing), so the
final packet check always has cells that must pass and cells that must be blocked.

Each drill runs ``pycalico.testing.kube_churn`` (NetworkPolicies applied and deleted, namespace
and pod labels changed, pods created and deleted through the lab, each step retried while the
API is away), SIGKILLs the component with ``calico-lab kube stop --kill`` at a random point
(seeded; ``PYCALICO_FAULTS_SEED`` replays) up to 0.5 s after the runner made a churn pod's
network namespace (during its CNI ADD, where the plugin reads and annotates the Pod, or just
after it), leaves it down
``OUTAGE`` s while the churn goes on, starts it with ``calico-lab kube start`` and stops the
churn (its step under way completes).  Recovery: from the start command until Calico's data
equals Kubernetes' (``kube_churn.differences``: ``compare.differences`` plus one
WorkloadEndpoint per networked pod).  Then: ``calicoctl ipam check`` clean, every route, node2's
ruleset what a fresh Felix programs, no stray ``cali*`` interface, and every pod pair's TCP
verdict what the final NetworkPolicies say (``World.expected``), with packets, after a pod
labelled ``role=churn`` was added to each namespace that had none.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from pycalico.lab import kernel, kube
from pycalico.lab import state as lab_state
from pycalico.lab.state import LabState
from pycalico.netns.connectivity import ConnectivityChecker, Endpoint, Probe
from pycalico.testing import faults
from pycalico.testing.kube_churn import Churn, Policy, World, churning, differences
from tests.e2e.conftest import LabRunner
from tests.faults.conftest import Record

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.faults_long]

NAMESPACES = {"red": {"team": "red", "access": "yes"}, "blue": {"team": "blue", "access": "no"}}
STEADY = (("p1", "red", "node1"), ("p2", "blue", "node2"), ("p3", "red", "node3"))
ANCHORS = (("anchor1", "red", "node2"), ("anchor2", "blue", "node3"))
ANCHOR_POLICIES = {"red": Policy("anchor", ("team", "red")), "blue": Policy("anchor", None)}
NODES = ["node1", "node2", "node3"]
PORT = 80
BEFORE_STEPS = 4  # churn steps done before the fault
OUTAGE = 5.0  # seconds the component stays down while the churn goes on
FLOW_SECONDS = 60.0
RECOVERY_LIMIT = 90.0
ENFORCE_DEADLINE = 20.0


@dataclass
class KubeLab:
    runner: LabRunner
    world: World
    directory: Path


def setup_churn(lab: KubeLab, seed: int = 0, prefix: str = "c") -> Churn:
    return Churn(lab.runner.state(), lab.world, lab.directory, seed, NODES, pod_prefix=prefix)


@pytest.fixture(scope="module")
def kubelab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeLab]:
    runner = LabRunner(tmp_path_factory.mktemp("kubefaults"))
    directory = tmp_path_factory.mktemp("manifests")
    try:
        runner.run("up", "--nodes", "3", "--kubernetes")
        lab = KubeLab(runner, World({name: {} for name in NAMESPACES}), directory)
        setup = setup_churn(lab)
        for namespace, labels in NAMESPACES.items():
            done = kube.kubectl(runner.state(), "create", "namespace", namespace)
            assert done.returncode == 0, done.stderr
            for key, value in labels.items():
                setup.label_namespace(namespace, key, value)
        for namespace, policy in ANCHOR_POLICIES.items():
            setup.apply_policy(namespace, "anchor", policy)
        for name, namespace, node in STEADY:
            setup.add_pod(name, namespace, node, "steady")
        for name, namespace, node in ANCHORS:
            setup.add_pod(name, namespace, node, "anchor")
        check_reachability(lab)
        yield lab
    finally:
        runner.run("down", check=False)


def check_reachability(lab: KubeLab) -> int:
    """Every pod pair's TCP verdict as ``lab.world`` says; returns the number of probes."""
    pods = {pod.name: pod for pod in lab.runner.state().pods}
    assert set(pods) == set(lab.world.pods), (sorted(pods), sorted(lab.world.pods))
    expected = {
        Probe(source, destination, PORT): verdict
        for (source, destination), verdict in lab.world.expected().items()
    }
    assert True in expected.values() and False in expected.values()
    checker = ConnectivityChecker(
        {name: Endpoint(pod.netns, pod.ipv4) for name, pod in pods.items()}, probe_timeout=0.5
    )
    try:
        checker.serve(pods, tcp_ports=(PORT,))
        checker.check(expected, deadline=ENFORCE_DEADLINE)
    finally:
        checker.stop()
    return len(expected)


def pod_add_started(lab: KubeLab, churn: Churn) -> bool:
    """The churn's pod add is under way and the runner has made the pod's network namespace
    (its CNI ADD comes next)."""
    if not churn.current.startswith("add pod"):
        return False
    netns = lab_state.pod_netns(lab.runner.prefix, churn.current.split()[2])
    return netns in kernel.list_namespaces(lab.runner.prefix)


def wait_in_sync(lab: KubeLab, state: LabState) -> None:
    found: list[str] = []

    def same() -> bool:
        found[:] = differences(state)
        return not found

    try:
        faults.wait_for("Calico's data equal to Kubernetes'", same, RECOVERY_LIMIT, 0.5)
    except faults.FaultTimeout as error:
        policies = kube.kubectl(lab.runner.state(), "get", "networkpolicy", "-A", "-o", "yaml")
        raise AssertionError(
            f"{error}: {found}\nKubernetes: {policies.stdout}" + kube_logs(lab)
        ) from error


def kube_logs(lab: KubeLab) -> str:
    state = lab.runner.state()
    assert state.kube is not None
    parts = []
    for name in ("kube-controllers.log", "kubelet.log", "kube-apiserver.log"):
        path = Path(state.kube.directory, name)
        text = path.read_text(errors="replace")[-3000:] if path.exists() else ""
        parts.append(f"\n--- {path}\n{text}")
    return "".join(parts)


def drill(lab: KubeLab, record: Record, component: str, prefix: str) -> None:
    seed = int(os.environ.get("PYCALICO_FAULTS_SEED") or time.time())
    print(f"seed {seed} (PYCALICO_FAULTS_SEED)")
    chance = random.Random(seed)
    runner, state = lab.runner, lab.runner.state()
    steady = replace(state, pods=tuple(p for p in state.pods if p.labels.get("role") == "steady"))
    churn = setup_churn(lab, seed, prefix)
    with faults.steady_traffic(steady, FLOW_SECONDS) as traffic, churning(churn):
        flows_started = time.monotonic()
        faults.wait_for("churn under way", lambda: churn.steps >= BEFORE_STEPS or churn.errors, 60)
        churn.next_kind = "add"  # the kill lands at a random point of a pod's CNI ADD
        faults.wait_for("a pod add under way", lambda: pod_add_started(lab, churn), 60, 0.02)
        time.sleep(chance.uniform(0.0, 0.5))  # the fault's random point: a duration, not a wait
        assert kube.stop_control(state, component, kill=True)  # as `calico-lab kube stop --kill`
        churn.note(f"-- {component} SIGKILLed")
        during = churn.steps
        time.sleep(OUTAGE)  # the outage itself: a duration, not a wait for an event
        while_down = churn.steps - during
        restarted = time.monotonic()
        churn.note(f"-- {component} started")
        runner.run("kube", "start", component)
        ready = time.monotonic() - restarted
        churn.stop()
        print("churn:", *churn.log, sep="\n  ")
        assert not churn.errors, churn.errors
        wait_in_sync(lab, state)
        seconds = time.monotonic() - restarted
        in_flows = time.monotonic() - flows_started < FLOW_SECONDS
        traffic.finish(timeout=FLOW_SECONDS + 30)
    churn.top_up(chance)  # after the recovery: pods for the final policies to select
    state = runner.state()
    consistency = faults.consistency(state, fresh_felix=[state.node("node2")])
    stray = faults.stray_interfaces(state)
    probes = check_reachability(lab)
    summary = consistency.summary() + (f"; {len(stray)} stray interfaces" if stray else "")
    summary += f"; Calico = Kubernetes; {probes} TCP verdicts as the final policies say"
    record(
        f"{component} SIGKILLed for {OUTAGE:.0f} s during churn ({churn.steps} steps, "
        f"{while_down} done while it was down, {churn.failed_attempts} attempts refused; "
        f"{'API ready' if component == 'kube-apiserver' else 'started'} {ready:.1f} s after "
        "the restart)",
        traffic.packets_lost(),
        seconds,
        summary,
    )
    assert in_flows, "recovery outlasted the steady traffic: its loss is incomplete"
    assert not stray, stray
    assert consistency.clean, consistency.details() + runner.logs()
    losses = {name: f"{value:.1f} %" for name, value in traffic.losses().items() if value >= 1.0}
    assert not losses, f"traffic lost: {losses}"
    churn.clean()


def test_kube_apiserver_sigkilled_during_churn_loses_nothing(
    kubelab: KubeLab, record: Record
) -> None:
    drill(kubelab, record, "kube-apiserver", "api")


def test_kube_controllers_sigkilled_during_churn_resyncs_everything(
    kubelab: KubeLab, record: Record
) -> None:
    drill(kubelab, record, "kube-controllers", "kc")

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

The third drill kills kube-apiserver provably inside CNI ADDs: as soon as the runner's
``calico`` plugin process for a churn pod's ADD exists, at a random point within
``ADD_WINDOW``; a kill counts when the plugin still ran after the API server was gone and the
ADD failed.  While the API server is down, the failed ADD must have left no IPAM handle,
WorkloadEndpoint or host interface; after its restart the runner's retry must network the pod
(Running, with its address); ``KILLS`` such kills, then the checks above.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from pycalico.cni.pod_request import POD_IP as POD_IP_ANNOTATION
from pycalico.datastore import paths
from pycalico.lab import kernel, kube, pods
from pycalico.lab import state as lab_state
from pycalico.lab.cluster import agent_socket
from pycalico.lab.state import LabState, NodeState
from pycalico.netns.connectivity import ConnectivityChecker, Endpoint, Probe
from pycalico.testing import cni_churn, faults
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


def seeded() -> int:
    seed = int(os.environ.get("PYCALICO_FAULTS_SEED") or time.time())
    print(f"seed {seed} (PYCALICO_FAULTS_SEED)")
    return seed


def steady(state: LabState) -> LabState:
    """The lab with only its steady pods (the ones the steady traffic runs between)."""
    return replace(state, pods=tuple(p for p in state.pods if p.labels.get("role") == "steady"))


def drill(lab: KubeLab, record: Record, component: str, prefix: str) -> None:
    seed = seeded()
    chance = random.Random(seed)
    runner, state = lab.runner, lab.runner.state()
    churn = setup_churn(lab, seed, prefix)
    with faults.steady_traffic(steady(state), FLOW_SECONDS) as traffic, churning(churn):
        flows_started = time.monotonic()
        faults.wait_for(
            "churn under way", lambda: churn.steps >= BEFORE_STEPS or bool(churn.errors), 60
        )
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
    fault = (
        f"{component} SIGKILLed for {OUTAGE:.0f} s during churn ({churn.steps} steps, "
        f"{while_down} done while it was down, {churn.failed_attempts} attempts refused; "
        f"{'API ready' if component == 'kube-apiserver' else 'started'} {ready:.1f} s after "
        "the restart)"
    )
    conclude(lab, churn, chance, traffic, record, fault, seconds)
    assert in_flows, "recovery outlasted the steady traffic: its loss is incomplete"
    churn.clean()


def conclude(
    lab: KubeLab,
    churn: Churn,
    chance: random.Random,
    traffic: faults.Traffic,
    record: Record,
    fault: str,
    seconds: float,
    note: str = "",
) -> None:
    """A drill's end: a ``role=churn`` pod in each namespace that has none, every pod pair's
    verdict with packets, then the suite's checks and the row (``faults.conclude``)."""
    churn.top_up(chance)  # after the recovery: pods for the final policies to select
    probes = check_reachability(lab)
    faults.conclude(
        lab.runner.state(),
        traffic,
        record,
        fault,
        seconds,
        fresh_felix="node2",
        note=f"; Calico = Kubernetes{note}; {probes} TCP verdicts as the final policies say",
        reach_all=False,
        logs=lab.runner.logs,
    )


def test_kube_apiserver_sigkilled_during_churn_loses_nothing(
    kubelab: KubeLab, record: Record
) -> None:
    drill(kubelab, record, "kube-apiserver", "api")


def test_kube_controllers_sigkilled_during_churn_resyncs_everything(
    kubelab: KubeLab, record: Record
) -> None:
    drill(kubelab, record, "kube-controllers", "kc")


# --- kube-apiserver SIGKILLed inside CNI ADDs --------------------------------------------------

KILLS = 4  # kills that land inside a churn pod's CNI ADD and fail it
MAX_KILLS = 3 * KILLS  # a kill after its ADD's last API call is not one of them
ADD_DOWN = 2.0  # seconds the API server stays down after each kill
ADD_WINDOW = 0.15  # the kill's random point after the plugin started (an ADD takes ~0.3 s)
ADD_FLOW_SECONDS = 130.0
UNDOING = re.compile(r"ADD (\S+) failed: .*; undoing (\d+) steps")  # the plugin's log
RUNNER_FAILED = re.compile(r"pod (\S+): CNI ADD by 'calico' failed \(code \d+\): ([^:]*)")


@dataclass(frozen=True)
class PluginAdd:
    """A ``calico`` CNI ADD the lab's pod runner is running (``nsenter``, then the plugin in the
    same process, until the node agent has answered it)."""

    pid: int
    namespace: str
    pod: str
    container_id: str
    node: NodeState

    def running(self) -> bool:
        """Still running, and still this ADD (not a reused pid)."""
        return (
            kernel.alive(self.pid) and environ(self.pid).get("CNI_CONTAINERID") == self.container_id
        )


def environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0"))
    return {name: value for name, _, value in pairs if name}


def plugin_add(state: LabState, pod: str) -> PluginAdd | None:
    """The CNI ADD the pod runner is running for ``pod``, if any."""
    assert state.kube is not None
    runner = kernel.read_pid(os.path.join(state.kube.directory, "kubelet.pid"))
    for pid in cni_churn.plugin_processes(runner) if runner else []:
        env = environ(pid)
        args = dict(part.partition("=")[::2] for part in env.get("CNI_ARGS", "").split(";"))
        if env.get("CNI_COMMAND") != "ADD" or args.get("K8S_POD_NAME") != pod:
            continue  # still the runner's fork before exec, or another pod's call
        (node,) = [n for n in state.nodes if env["CALICO_AGENT_SOCKET"] == agent_socket(n)]
        return PluginAdd(pid, args["K8S_POD_NAMESPACE"], pod, env["CNI_CONTAINERID"], node)
    return None


def add_leftovers(state: LabState, add: PluginAdd) -> list[str]:
    """What ``add`` (failed) left: its IPAM handle (an address held), its pod's
    WorkloadEndpoint or host interface."""
    keys = set(faults.etcdctl(state, "get", "--prefix", "--keys-only", paths.CALICO_ROOT).split())
    handle = paths.handle_key(f"{lab_state.NETWORK_NAME}.{add.container_id}")
    name = pods.endpoint_name(add.node.name, add.pod)
    endpoint = paths.resource_key("workloadendpoints", name, add.namespace)
    interface = pods.host_interface(add.namespace, add.pod)
    links = kernel.run("ip", "-n", add.node.namespace, "-o", "link", "show")
    found = [f"IPAM handle {handle}"] if handle in keys else []
    found += [f"WorkloadEndpoint {name}"] if endpoint in keys else []
    if re.search(rf"^\d+: {interface}[@:]", links, flags=re.M):
        found.append(f"{add.node.name}: interface {interface}")
    return found


@dataclass(frozen=True)
class Kill:
    pod: str
    inside: bool  # the plugin was still running once the API server was gone
    failure: str  # the request the ADD failed on, as the pod runner logged it ("": it succeeded)
    undone: int  # the steps its failure undid (the plugin's log; 0: it failed before any)
    left: list[str]  # what it left behind (checked while the API server was still down)
    recovered: float  # from the restart until the pod was networked and Calico = Kubernetes

    @property
    def landed(self) -> bool:
        return self.inside and bool(self.failure)


def since(path: Path) -> Callable[[], str]:
    """A reader of what is written to ``path`` from now on."""
    offset = path.stat().st_size if path.exists() else 0
    return lambda: path.read_bytes()[offset:].decode(errors="replace") if path.exists() else ""


def add_outcome(state: LabState, add: PluginAdd, runner_log: str) -> str | None:
    """The request ``add`` failed on (the pod runner logs the plugin's error: "get pod
    red/ka3", "patch pod red/ka3 status", ...); "" when it succeeded (the runner recorded the
    pod with its container); None while neither is known."""
    for match in RUNNER_FAILED.finditer(runner_log):
        if match.group(1) == f"{add.namespace}/{add.pod}":
            return match.group(2)
    current = lab_state.load(state.state_dir)
    done = any(pod.container_id == add.container_id for pod in (current.pods if current else ()))
    return "" if done else None


def kill_inside_add(lab: KubeLab, churn: Churn, chance: random.Random) -> Kill:
    """SIGKILL kube-apiserver at a random point of a churn pod's CNI ADD; once the ADD is over,
    check what it left while the API server is still down; start it again and wait until the
    pod is networked (the runner retries it) and Calico's data equals Kubernetes'."""
    runner, state = lab.runner, lab.runner.state()
    assert state.kube is not None
    found: list[PluginAdd] = []

    def add_running() -> bool:
        what = churn.current
        if not what.startswith("add pod"):
            churn.next_kind = "add"
            return False
        found[:] = [add] if (add := plugin_add(state, what.split()[2])) else []
        return bool(found)

    faults.wait_for("a churn pod's CNI ADD running", add_running, 60, 0.005)
    add = found[0]
    churn.keep.add(add.pod)  # its Kubernetes status is checked at the end
    cni_log = since(Path(add.node.directory, "log", "cni.log"))
    runner_log = since(Path(state.kube.directory, "kubelet.log"))
    time.sleep(chance.uniform(0.0, ADD_WINDOW))  # the kill's random point: a duration
    assert kube.stop_control(state, "kube-apiserver", kill=True)
    killed = time.monotonic()
    inside = add.running()
    churn.note(f"-- kube-apiserver SIGKILLed {'inside' if inside else 'after'} {add.pod}'s ADD")
    outcome: list[str] = []

    def over() -> bool:
        known = None if add.running() else add_outcome(state, add, runner_log())
        outcome[:] = [] if known is None else [known]
        return bool(outcome)

    faults.wait_for(f"{add.pod}: its ADD over, failed or recorded", over, 30, 0.02)
    wep = pods.endpoint_name(add.node.name, add.pod)
    undone = next((m.group(2) for m in UNDOING.finditer(cni_log()) if m.group(1) == wep), "0")
    left = add_leftovers(state, add) if outcome[0] else []  # the API down: no retry gets far
    time.sleep(max(0.0, ADD_DOWN - (time.monotonic() - killed)))  # the outage: a duration
    restarted = time.monotonic()
    runner.run("kube", "start", "kube-apiserver")
    step = f"add pod {add.pod} ("  # the churn's step done (the pod may be deleted again since)
    try:
        faults.wait_for(
            f"{add.pod} networked by the runner's retry",
            lambda: any(step in line for line in churn.log) or bool(churn.errors),
            RECOVERY_LIMIT,
        )
    except faults.FaultTimeout as error:
        tail = f"\n--- cni.log\n{cni_log()[-3000:]}" + kube_logs(lab)
        raise AssertionError(f"{error}\n{churn.log}{tail}") from error
    wait_in_sync(lab, state)
    kill = Kill(add.pod, inside, outcome[0], int(undone), left, time.monotonic() - restarted)
    print(kill)
    return kill


def not_running(lab: KubeLab, names: list[str]) -> list[str]:
    """The pods of ``names`` that Kubernetes does not show Running with the address the lab
    gave them, in ``podIP`` and in Calico's ``podIP`` annotation."""
    done = kube.kubectl(lab.runner.state(), "get", "pods", "-A", "-o", "json")
    assert done.returncode == 0, done.stderr
    items = {item["metadata"]["name"]: item for item in json.loads(done.stdout)["items"]}
    recorded = {pod.name: pod.ipv4 for pod in lab.runner.state().pods}
    problems = []
    for name in names:
        item = items.get(name, {})
        status = item.get("status", {})
        annotation = item.get("metadata", {}).get("annotations", {}).get(POD_IP_ANNOTATION, "")
        seen = (status.get("phase"), status.get("podIP"), annotation.split("/")[0])
        if seen != ("Running", recorded.get(name), recorded.get(name)):
            problems.append(f"{name}: phase, podIP, annotation {seen}; lab {recorded.get(name)}")
    return problems


@pytest.mark.timeout(600)  # the module's lab comes up in its time too
def test_kube_apiserver_sigkilled_inside_cni_adds_leaves_nothing(
    kubelab: KubeLab, record: Record
) -> None:
    seed = seeded()
    chance = random.Random(seed)
    state = kubelab.runner.state()
    churn = setup_churn(kubelab, seed, "ka")
    kills: list[Kill] = []
    with faults.steady_traffic(steady(state), ADD_FLOW_SECONDS) as traffic, churning(churn):
        flows_started = time.monotonic()
        faults.wait_for(
            "churn under way", lambda: churn.steps >= BEFORE_STEPS or bool(churn.errors), 60
        )
        while sum(k.landed for k in kills) < KILLS and len(kills) < MAX_KILLS:
            if churn.errors:
                break
            kills.append(kill_inside_add(kubelab, churn, chance))
        churn.stop()
        print("churn:", *churn.log, sep="\n  ")
        assert not churn.errors, churn.errors
        in_flows = time.monotonic() - flows_started < ADD_FLOW_SECONDS
        traffic.finish(timeout=ADD_FLOW_SECONDS + 30)
    landed = [kill for kill in kills if kill.landed]
    assert len(landed) >= KILLS, f"{len(landed)} of {len(kills)} kills inside an ADD: {kills}"
    left = {kill.pod: kill.left for kill in kills if kill.left}
    assert not left, f"failed ADDs left: {left}"
    stopped = not_running(kubelab, [kill.pod for kill in landed])
    assert not stopped, stopped
    reading = sum(kill.failure.startswith("get ") for kill in landed)
    fault = (
        f"kube-apiserver SIGKILLed inside {len(landed)} churn pods' CNI ADDs ({len(kills)} "
        f"kills, {sum(kill.inside for kill in kills)} with the plugin still running; "
        f"{reading} ADDs failed reading the Pod, {len(landed) - reading} annotating it, "
        f"undoing up to {max(kill.undone for kill in landed)} steps; {ADD_DOWN:.0f} s down "
        f"each, {churn.steps} churn steps)"
    )
    recovered = max(kill.recovered for kill in kills)
    note = "; failed ADDs left nothing; retried pods Running with their address"
    conclude(kubelab, churn, chance, traffic, record, fault, recovered, note)
    assert in_flows, "the kills outlasted the steady traffic: its loss is incomplete"
    churn.clean()

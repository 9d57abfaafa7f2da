"""The soak (issue 16, Load): pod and policy churn for ``PYCALICO_SOAK`` seconds, nothing leaks.

A lab of its own (``PYCALICO_SOAK_NODES``; default 10 nodes for a soak of 10 minutes or more,
else 4) with three long-lived pods p1..p3 (label ``soak=steady``) pinging each other (10/s) and
p1 -> p2 iperf3 UDP for the whole soak.  Meanwhile, one step after another:

* pod churn: a lab pod added in namespace ``churn`` on the next node in turn (every node gets
  some), the oldest deleted once ``nodes`` churn pods exist — each a real CNI ADD/DEL through
  the node agent;
* policy churn, in rotation: a GlobalNetworkPolicy closing churn pods labelled
  ``soak-side=closed`` to the steady pods applied / deleted; a churn pod's endpoint relabelled
  (closed / open); a GlobalNetworkPolicy allowing everything to the steady pods applied /
  deleted (their rules reprogrammed under traffic); a NetworkPolicy with a new name each time
  in ``churn``, deleting the previous one.  Once, at the start, the closing policy is shown to
  change reachability (a closed churn pod unreachable from p1, reachable when opened).

Every ``PYCALICO_SOAK_INTERVAL`` s (30 s, 10 s for short soaks) a sample: RSS and fds of every
calico-node (the CNI agent), Felix, confd, BIRD and etcd; the etcd keys under ``/calico/`` per
kind against what the live objects need; IPAM allocations against live pods.  The steps are
sequential, so samples are exact: every sample must match.  At the end the churn is removed and
``calicoctl ipam check`` must be clean (and every route right, node2's ruleset what a fresh
Felix programs, no ``cali*`` interface without its pod), the keys back to the baseline, every
memory and fd series flat (``pycalico.testing.soak.trend``), no process restarted and the
steady traffic unbroken (lost packets and the longest outage reported).  etcd's RSS is
reported with the writes it took, not judged: it keeps its raft log in memory until
``--snapshot-count`` entries (100,000 in etcd 3.4) and every revision until a compaction,
which the lab does not configure, so it grows with writes by its own settings.  The table goes to the terminal and to
``$PYCALICO_SOAK_TABLE`` (default /tmp/pycalico-soak.md).

Run only by ``make faults`` (its own step, so that no other lab is up meanwhile).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from pycalico.lab import pods
from pycalico.lab.state import LabState
from pycalico.testing import faults, soak
from pycalico.testing.calicoctl import Calicoctl
from tests.e2e.conftest import LabRunner

SOAK = float(os.environ.get("PYCALICO_SOAK") or 0)
LONG_SOAK = SOAK >= 600
NODES = int(os.environ.get("PYCALICO_SOAK_NODES") or (10 if LONG_SOAK else 4))
INTERVAL = float(os.environ.get("PYCALICO_SOAK_INTERVAL") or (30 if LONG_SOAK else 10))
WARMUP = SOAK / 6  # seconds of samples not judged (caches filling, the churn reaching its size)
STEADY = ("p1", "p2", "p3")
CHURN_NS = "churn"
OUTAGE_LIMIT = 5.0  # seconds: the longest any steady flow may go unanswered
UP_SECONDS: list[float] = []  # how long `calico-lab up` took, for the report

pytestmark = [
    pytest.mark.root,
    pytest.mark.slow,
    pytest.mark.faults_long,
    pytest.mark.skipif(not SOAK, reason="run by its own step of `make faults` (PYCALICO_SOAK)"),
    # The soak itself, plus the lab, the final clean-up and the consistency check.
    pytest.mark.timeout(SOAK + 900),
]

CLOSING = """apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: soak-closed}
spec:
  order: 100
  selector: soak-side == 'closed'
  types: [Ingress]
  ingress:
  - {action: Deny, source: {selector: soak == 'steady'}}
  - {action: Allow}
"""
STEADY_ALLOW = """apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: soak-steady}
spec:
  order: 10
  selector: soak == 'steady'
  types: [Ingress, Egress]
  ingress: [{action: Allow}]
  egress: [{action: Allow}]
"""
NAMESPACED = """apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: soak-np-{n}, namespace: churn}}
spec:
  selector: soak == 'churn'
  types: [Ingress]
  ingress:
  - {{action: Allow, protocol: TCP, destination: {{ports: [{port}]}}}}
  - {{action: Allow, protocol: ICMP}}
"""


@pytest.fixture
def soaklab(tmp_path: Path) -> Iterator[LabRunner]:
    runner = LabRunner(tmp_path)
    try:
        started = time.monotonic()
        runner.run("up", "--nodes", str(NODES), timeout=600)
        UP_SECONDS.append(time.monotonic() - started)
        specs = [
            pods.PodSpec(name, f"node{i + 1}", "default", {"soak": "steady"})
            for i, name in enumerate(STEADY)
        ]
        pods.add(runner.state_dir, specs)
        yield runner
    finally:
        runner.run("down", check=False)


class Churn:
    """The soak's own objects, so that every sample knows what must exist."""

    def __init__(self, lab: LabRunner) -> None:
        self.lab = lab
        self.ctl = Calicoctl(lab.state().host_endpoints)
        self.pods: list[str] = []
        self.serial = 0
        self.step = 0
        self.policies: dict[str, set[str]] = {"globalnetworkpolicies": set()}
        self.policies["networkpolicies"] = set()
        self.errors: list[str] = []

    def apply(self, text: str) -> None:
        self.ctl.ok("apply", "-f", "-", stdin=text)

    def add_pod(self) -> str:
        self.serial += 1
        name = f"c{self.serial}"
        node = f"node{(self.serial % NODES) + 1}"
        pods.add(self.lab.state_dir, [pods.PodSpec(name, node, CHURN_NS, {"soak": "churn"})])
        self.pods.append(name)
        return name

    def delete_pod(self, name: str) -> None:
        assert pods.delete(self.lab.state_dir, name), f"{name}: no such pod"
        self.pods.remove(name)

    def endpoint(self, pod: str) -> str:
        return self.lab.state().pod(pod).workload_endpoint

    def relabel(self, pod: str, side: str) -> None:
        self.ctl.ok(
            "label", "workloadendpoints", self.endpoint(pod), "-n", CHURN_NS,
            f"soak-side={side}", "--overwrite",
        )  # fmt: skip

    def toggle(self, kind: str, name: str, text: str) -> None:
        if name in self.policies[kind]:
            namespace = ["-n", CHURN_NS] if kind == "networkpolicies" else []
            self.ctl.ok("delete", kind, name, *namespace)
            self.policies[kind].discard(name)
        else:
            self.apply(text)
            self.policies[kind].add(name)

    def next(self) -> None:
        """One pod step and one policy step."""
        self.add_pod()
        if len(self.pods) > NODES:
            self.delete_pod(self.pods[0])
        self.step += 1
        match self.step % 4:
            case 0:
                self.toggle("globalnetworkpolicies", "soak-closed", CLOSING)
            case 1:
                side = "closed" if self.step % 8 == 1 else "open"
                self.relabel(self.pods[-1], side)
            case 2:
                self.toggle("globalnetworkpolicies", "soak-steady", STEADY_ALLOW)
            case _:
                previous = set(self.policies["networkpolicies"])
                name = f"soak-np-{self.step}"
                self.apply(NAMESPACED.format(n=self.step, port=8000 + self.step % 1000))
                self.policies["networkpolicies"].add(name)
                for old in previous:
                    self.toggle("networkpolicies", old, "")

    def clear(self) -> None:
        for name in list(self.pods):
            self.delete_pod(name)
        for kind, names in self.policies.items():
            for name in list(names):
                self.toggle(kind, name, "")

    def live(self, lab: LabState) -> soak.Live:
        per_node: dict[str, int] = {}
        for pod in lab.pods:
            per_node[pod.node] = per_node.get(pod.node, 0) + 1
        assert sorted(pod.name for pod in lab.pods) == sorted([*STEADY, *self.pods])
        return soak.Live(
            pods=len(lab.pods),
            policies={kind: len(names) for kind, names in self.policies.items()},
            nodes=len(lab.nodes),
            max_pods_per_node=max(per_node.values(), default=0),
        )


def reachable(lab: LabState, source: str, target: str) -> bool:
    argv = pods.exec_argv(lab, source, ["ping", "-n", "-c", "1", "-W", "1", lab.pod(target).ipv4])
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def show_policy_changes_reachability(churn: Churn) -> None:
    """A churn pod closed by label is unreachable from p1, reachable again when opened."""
    target = churn.add_pod()
    churn.toggle("globalnetworkpolicies", "soak-closed", CLOSING)
    churn.relabel(target, "closed")
    lab = churn.lab.state()
    faults.wait_for("closed pod unreachable", lambda: not reachable(lab, "p1", target), 60, 0.5)
    churn.relabel(target, "open")
    faults.wait_for("opened pod reachable", lambda: reachable(lab, "p1", target), 60, 0.5)
    churn.toggle("globalnetworkpolicies", "soak-closed", CLOSING)
    churn.delete_pod(target)


def test_soak_leaks_nothing(
    soaklab: LabRunner, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    churn = Churn(soaklab)
    show_policy_changes_reachability(churn)  # also creates the churn namespace's profile
    state = soaklab.state()
    faults.wait_for("every node ready", lambda: faults.all_ready(state), 120, 0.5)
    baseline_keys = soak.categories(soak.etcd_keys(state)[0])
    baseline_files = {node.name: soak.node_files(node.directory) for node in state.nodes}
    at_baseline = churn.live(state)
    samples: list[list[soak.ProcessSample]] = []
    mismatches: list[str] = []
    key_totals: list[float] = []
    key_counts: list[dict[str, int]] = []
    revisions: list[int] = []

    def take() -> None:
        lab = soaklab.state()
        keys, revision = soak.etcd_keys(lab)
        revisions.append(revision)
        live = churn.live(lab)
        counts = soak.categories(keys)
        expected = soak.expected_keys(baseline_keys, at_baseline, live)
        problems = soak.key_problems(counts, expected)
        allocated = soak.allocations(keys)
        if allocated != live.pods:
            problems.append(f"{allocated} addresses allocated for {live.pods} pods")
        if problems:
            mismatches.append(f"sample {len(samples)}: " + "; ".join(problems))
        samples.append(soak.sample_processes(lab))
        key_totals.append(float(len(keys)))
        key_counts.append(dict(counts))

    logs = tmp_path / "pings"
    logs.mkdir()
    steady = replace(state, pods=tuple(pod for pod in state.pods if pod.name in STEADY))
    started = time.monotonic()
    with faults.steady_traffic(steady, SOAK, log_dir=str(logs)) as traffic:
        take()
        next_sample = started + INTERVAL
        while time.monotonic() - started < SOAK:
            churn.next()
            if time.monotonic() >= next_sample:
                take()
                next_sample += INTERVAL
        churn.clear()
        traffic.finish(timeout=120)
    take()
    steps = churn.step
    end = soaklab.state()
    # After the samples (it restarts node2's Felix): ipam check, every route, node2's ruleset
    # what a fresh Felix programs (no chain or set left of a deleted endpoint or policy).
    consistency = faults.consistency(end, fresh_felix=[end.node("node2")])
    stray = faults.stray_interfaces(end)
    files = {node.name: soak.node_files(node.directory) for node in end.nodes}
    more_files = {f"{name}:{path}" for name in files for path in files[name] - baseline_files[name]}
    warmup = int(WARMUP // INTERVAL)
    rows = soak.process_rows(samples, warmup)
    keys_trend = soak.trend(key_totals[:-1], warmup=warmup, tolerance=0.0, slack=2 * NODES + 4)
    losses = traffic.losses()
    outages = {
        name: soak.longest_outage(output, faults.PING_INTERVAL)
        for name, output in traffic.outputs.items()
        if name.startswith("ping")
    }
    changed = {
        name: key_counts[-1].get(name, 0) - baseline_keys.get(name, 0)
        for name in sorted(set(key_counts[-1]) | set(baseline_keys))
        if key_counts[-1].get(name, 0) != baseline_keys.get(name, 0)
    }
    writes = revisions[-1] - revisions[0]
    etcd = [one.rss_kib for taken in samples for one in taken if one.kind == "etcd"]
    etcd_growth = etcd[-1] - etcd[0] if etcd else 0
    report = "\n".join(
        [
            f"Soak: {SOAK:.0f} s, {NODES} nodes (lab up in {UP_SECONDS[-1]:.0f} s),"
            f" {steps} churn steps ({churn.serial} pods added),"
            f" {len(samples)} samples every {INTERVAL:.0f} s, first {warmup} not judged",
            soak.table(rows),
            f"etcd keys under /calico/: {key_totals[0]:.0f} at the start, {max(key_totals):.0f}"
            f" at most, {key_totals[-1]:.0f} at the end; trend {keys_trend.describe()}",
            "keys at the end vs before the churn: "
            + (", ".join(f"{name} {change:+d}" for name, change in changed.items()) or "same"),
            f"samples not matching the live objects: {len(mismatches)}",
            f"etcd: {writes} writes (revisions) during the soak; its RSS"
            f" {etcd_growth / 1024:+.1f} MiB, {1024 * etcd_growth / max(writes, 1):.0f} bytes"
            " per write (raft log kept until --snapshot-count, history until a compaction)",
            f"consistency (ipam check, routes, node2 ruleset): {consistency.summary()};"
            f" cali interfaces without a pod: {len(stray)};"
            f" files not there before (status files, CNI caches): {sorted(more_files) or 0}",
            "steady traffic lost: "
            + ", ".join(f"{name} {value:.2f} %" for name, value in losses.items())
            + f"; longest outage {max(outages.values()):.1f} s",
        ]
    )
    with capsys.disabled():
        print("\n" + report)
    Path(os.environ.get("PYCALICO_SOAK_TABLE") or "/tmp/pycalico-soak.md").write_text(report + "\n")
    dump = {
        "processes": [[vars(one) for one in taken] for taken in samples],
        "keys": key_counts,
        "revisions": revisions,
    }
    (tmp_path / "samples.json").write_text(json.dumps(dump))
    assert not mismatches, mismatches[:5]
    assert consistency.clean, consistency.details()
    assert not stray, stray
    assert not more_files, more_files
    assert all(row.restarts == 0 for row in rows), report
    # etcd's memory follows its retention settings (module docstring), so only its fds are
    # judged; every Calico process is judged on both.
    assert all(row.flat for row in rows if row.kind != "etcd"), report
    assert all(row.fds_trend.flat is not False for row in rows), report
    assert keys_trend.flat is not False, report
    assert max(outages.values()) <= OUTAGE_LIMIT, report

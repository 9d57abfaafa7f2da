"""200 concurrent pod ADD/DEL with SIGKILL of the node agent, or of the CNI plugin processes
themselves, at random points (issue 16).

On node1 of the suite's lab, 100 sandboxes are added and deleted (200 CNI operations, 16 at a
time, as a runtime does: DEL after a failed ADD, DEL retried until it succeeds) while either
node1's calico-node — the agent serving the CNI socket, with Felix, confd and BIRD — is
SIGKILLed at two random points and started again, or the ``calico``/``calico-ipam`` processes
the runtime spawned are SIGKILLed at random points (seeded: the seed is printed,
``PYCALICO_FAULTS_SEED`` replays).  Afterwards nothing of the churn is left: ``calicoctl ipam
check`` clean, no ``cali*`` interface without its pod, no WorkloadEndpoint in the churn's
namespace, node1's ruleset what a fresh Felix programs.
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest

from pycalico.lab import cluster
from pycalico.lab.state import LabState
from pycalico.testing import faults
from pycalico.testing.calicoctl import Calicoctl
from pycalico.testing.cni_churn import ChurnResult, churn, kill_plugins
from tests.e2e.conftest import LabRunner
from tests.faults.conftest import Record

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.faults_long]

SANDBOXES = 100
KILLS = 2


def seeded() -> random.Random:
    seed = int(os.environ.get("PYCALICO_FAULTS_SEED") or time.time())
    print(f"seed {seed} (PYCALICO_FAULTS_SEED)")
    return random.Random(seed)


def leftovers(state: LabState) -> tuple[faults.Consistency, list[str]]:
    """The consistency check (node1's ruleset against a fresh Felix's) and what the churn left:
    ``cali*`` interfaces without a pod, WorkloadEndpoints in its namespace."""
    consistency = faults.consistency(state, fresh_felix=[state.node("node1")])
    left = faults.stray_interfaces(state)
    endpoints = Calicoctl(state.host_endpoints)("get", "workloadendpoints", "-n", "churn")
    left += [
        f"endpoint {line.split()[1]}" for line in endpoints.stdout.splitlines()[1:] if line.strip()
    ]
    return consistency, left


def test_concurrent_add_del_with_agent_sigkilled_leaves_nothing(
    lab: LabRunner, record: Record, tmp_path: Path
) -> None:
    chance = seeded()
    state = lab.state()
    node = state.node("node1")
    outcome: list[ChurnResult | BaseException] = []

    def run() -> None:
        try:
            outcome.append(churn(state, "node1", SANDBOXES, parallel=16))
        except BaseException as error:  # reported below
            outcome.append(error)

    with faults.steady_traffic(state, 45.0) as traffic, faults.route_timeline(state) as routes:
        worker = threading.Thread(target=run)
        worker.start()
        events = [("churn started", time.time())]  # wall clock: ping -D's timestamps
        restarted = time.monotonic()
        for kill in range(1, KILLS + 1):
            time.sleep(chance.uniform(1.0, 5.0))  # a random point in the churn: the fault itself
            events.append((f"kill {kill}", time.time()))
            cluster.stop_node(node, kill=True)
            cluster.start_node(state, node)
            events.append((f"restart {kill}", time.time()))
            restarted = time.monotonic()
        recovered = restarted + faults.wait_for(
            "node1 ready", lambda: faults.node_ready(state, node), 90
        )
        events.append(("node1 ready", time.time()))
        worker.join(timeout=240)
        assert not worker.is_alive(), "the churn did not finish in 240 s"
        events.append(("churn done", time.time()))
        traffic.finish(timeout=90)
    print("loss by flow:\n" + faults.loss_report(traffic.timeline(), events))
    print(faults.route_report(routes, events[0][1]))
    result = outcome[0]
    assert isinstance(result, ChurnResult), f"churn failed: {result!r}"
    consistency, left = leftovers(state)
    summary = consistency.summary() + (f"; {len(left)} left: {left[:3]}" if left else "")
    record(
        f"{2 * SANDBOXES} concurrent ADD/DEL, calico-node SIGKILLed {KILLS}x "
        f"({result.added} ADDs ok, {result.add_failed} failed cleanly)",
        traffic.packets_lost(),
        recovered - restarted,
        summary,
    )
    assert not result.del_gave_up, result.del_gave_up[:5]
    assert result.deleted == SANDBOXES
    assert not left, left
    assert consistency.clean, consistency.details() + lab.logs()


def test_concurrent_add_del_with_plugins_sigkilled_leaves_nothing(
    lab: LabRunner, record: Record
) -> None:
    chance = seeded()
    state = lab.state()
    stop = threading.Event()
    killed: list[str] = []
    killer = threading.Thread(target=lambda: killed.extend(kill_plugins(chance, stop)))
    with faults.steady_traffic(state, 45.0) as traffic:
        started = time.monotonic()
        events = [("churn started", time.time())]
        killer.start()
        try:
            result = churn(state, "node1", SANDBOXES, parallel=16)
        finally:
            stop.set()
            killer.join(timeout=30)
        took = time.monotonic() - started
        events.append(("churn done", time.time()))
        traffic.finish(timeout=90)
    print("loss by flow:\n" + faults.loss_report(traffic.timeline(), events))
    print(f"killed {len(killed)} plugin processes: {killed}")
    consistency, left = leftovers(state)
    summary = consistency.summary() + (f"; {len(left)} left: {left[:3]}" if left else "")
    ipam = sum(1 for entry in killed if entry.endswith("calico-ipam"))
    record(
        f"{2 * SANDBOXES} concurrent ADD/DEL, {len(killed)} CNI plugin processes SIGKILLed "
        f"({ipam} calico-ipam; {result.added} ADDs ok, {result.add_failed} failed, "
        f"{result.del_retries} DEL retries)",
        traffic.packets_lost(),
        took,
        summary,
    )
    assert killed, "no plugin process was killed: the drill tested nothing"
    assert not result.del_gave_up, result.del_gave_up[:5]
    assert result.deleted == SANDBOXES
    assert not left, left
    assert consistency.clean, consistency.details() + lab.logs()

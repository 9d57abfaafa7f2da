"""200 concurrent pod ADD/DEL with SIGKILL of the node agent at random points (issue 16).

On node1 of the suite's lab, 100 sandboxes are added and deleted (200 CNI operations, 16 at a
time, as a runtime does: DEL after a failed ADD, DEL retried until it succeeds) while node1's
calico-node — the agent serving the CNI socket, with Felix, confd and BIRD — is SIGKILLed at
two random points (seeded: the seed is printed) and started again.  Afterwards nothing of the
churn is left: ``calicoctl ipam check`` clean, no ``cali*`` interface without its pod, no
WorkloadEndpoint in the churn's namespace, node1's ruleset what a fresh Felix programs.
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import pytest

from pycalico.lab import cluster
from pycalico.testing import faults
from pycalico.testing.calicoctl import Calicoctl
from pycalico.testing.cni_churn import ChurnResult, churn
from tests.e2e.conftest import LabRunner
from tests.faults.conftest import Record

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.faults_long]

SANDBOXES = 100
KILLS = 2


def test_concurrent_add_del_with_agent_sigkilled_leaves_nothing(
    lab: LabRunner, record: Record, tmp_path: Path
) -> None:
    seed = int(os.environ.get("PYCALICO_FAULTS_SEED") or time.time())
    print(f"seed {seed} (PYCALICO_FAULTS_SEED)")
    chance = random.Random(seed)
    state = lab.state()
    node = state.node("node1")
    outcome: list[ChurnResult | BaseException] = []

    def run() -> None:
        try:
            outcome.append(churn(state, "node1", SANDBOXES, parallel=16))
        except BaseException as error:  # reported below
            outcome.append(error)

    with faults.steady_traffic(state, 45.0) as traffic:
        worker = threading.Thread(target=run)
        worker.start()
        restarted = time.monotonic()
        for _ in range(KILLS):
            time.sleep(chance.uniform(1.0, 5.0))  # a random point in the churn: the fault itself
            cluster.stop_node(node, kill=True)
            cluster.start_node(state, node)
            restarted = time.monotonic()
        recovered = restarted + faults.wait_for(
            "node1 ready", lambda: faults.node_ready(state, node), 90
        )
        worker.join(timeout=240)
        assert not worker.is_alive(), "the churn did not finish in 240 s"
        traffic.finish(timeout=90)
    result = outcome[0]
    assert isinstance(result, ChurnResult), f"churn failed: {result!r}"
    consistency = faults.consistency(state, fresh_felix=[node])
    stray = faults.stray_interfaces(state)
    endpoints = Calicoctl(state.host_endpoints)("get", "workloadendpoints", "-n", "churn")
    leftover = [line for line in endpoints.stdout.splitlines()[1:] if line.strip()]
    summary = consistency.summary() + (f"; {len(stray)} stray interfaces" if stray else "")
    summary += f"; {len(leftover)} endpoints left" if leftover else ""
    record(
        f"{2 * SANDBOXES} concurrent ADD/DEL, calico-node SIGKILLed {KILLS}x "
        f"({result.added} ADDs ok, {result.add_failed} failed cleanly)",
        traffic.packets_lost(),
        recovered - restarted,
        summary,
    )
    assert not result.del_gave_up, result.del_gave_up[:5]
    assert result.deleted == SANDBOXES
    assert not stray, stray
    assert not leftover, leftover
    assert consistency.clean, consistency.details() + lab.logs()

"""A member of a 3-member etcd killed during a burst of pod ADDs (issue 16, Faults).

Its own lab (2 nodes, 3 etcd members; ``up`` and ``down`` here, ``down`` also on failure), a
pod on each node with steady traffic between them; then 24 pods added 8 at a time, and etcd
member 1 SIGKILLed as soon as the first of them has its interface.  Every ADD must succeed
(the clients fail over to the other members), and afterwards: ``calicoctl ipam check`` clean,
no ``cali*`` interface without its pod, every pod routed and reaching every other.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from pycalico.lab import kernel, pods
from pycalico.testing import faults
from tests.e2e.conftest import LabRunner
from tests.faults.conftest import Record

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.faults_long]

BURST = 24


def cali_count(namespace: str) -> int:
    return kernel.run("ip", "-n", namespace, "-o", "link", "show").count(": cali")


def test_etcd_member_killed_during_pod_burst_loses_nothing(tmp_path: Path, record: Record) -> None:
    lab = LabRunner(tmp_path)
    try:
        lab.run("up", "--nodes", "2", "--etcd-members", "3")
        pods.add(lab.state_dir, [pods.PodSpec("p1", "node1"), pods.PodSpec("p2", "node2")])
        state = lab.state()
        errors: list[BaseException] = []
        specs = [pods.PodSpec(f"b{i}", f"node{i % 2 + 1}") for i in range(BURST)]

        def burst() -> None:
            try:
                pods.add(lab.state_dir, specs, parallel=8)
            except BaseException as error:  # reported below
                errors.append(error)

        with faults.steady_traffic(state, 20.0) as traffic:
            worker = threading.Thread(target=burst)
            worker.start()
            node = state.node("node1")
            faults.wait_for("first burst pod", lambda: cali_count(node.namespace) > 1, 30, 0.02)
            killed = time.monotonic()
            faults.stop_etcd(state, 0)
            worker.join(timeout=120)
            assert not worker.is_alive(), "the burst of ADDs did not finish in 120 s"
            burst_took = time.monotonic() - killed
            faults.start_etcd(state, 0)
            traffic.finish(timeout=60)
        assert not errors, f"ADD failed with a member down: {errors[0]!r}"
        state = lab.state()
        assert len(state.pods) == BURST + 2
        faults.conclude(
            state,
            traffic,
            record,
            f"etcd member killed during {BURST} pod ADDs (3 members)",
            burst_took,
            fresh_felix="node1",
            note=f"; {BURST}/{BURST} ADDs ok",
            logs=lab.logs,
        )
    finally:
        lab.run("down", check=False)

"""Faults of calico-node's own processes under steady traffic (issue 16, Faults).

A 3-node lab with a pod on each; through each fault every pod pings every other (10/s) and p1
sends p2 an iperf3 UDP flow.  Each drill records the packets lost and the seconds until the
node was whole again, then checks that nothing is left inconsistent: ``calicoctl ipam check``
clean, every pod's route on every node, and the faulted node's nft ruleset equal to what a
freshly restarted Felix programs.

* Felix SIGKILLed (calico-node restarts it): Felix leaves the dataplane alone until it is in
  sync again, so nothing is lost (target < 1 %).
* BIRD SIGKILLed, once and twice in a row: it sends no Cease, the peers keep node2's routes by
  graceful restart and its kernel routes persist, so nothing is lost.
* confd SIGKILLed: BIRD keeps running with its last config; nothing is lost.
* The dataplane tampered with behind Felix's back (a chain deleted, a set flushed, a route
  removed): repaired within the refresh interval set in FelixConfiguration.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from pycalico.lab.state import LabState, NodeState
from pycalico.testing import faults
from tests.e2e.conftest import LabRunner
from tests.faults.conftest import Record

pytestmark = [pytest.mark.root, pytest.mark.slow]

BEFORE = 2.0  # seconds of traffic before the fault
RECOVERY_LIMIT = 30.0
FLOW_SECONDS = 12.0


def drill(
    lab: LabRunner,
    inject: Callable[[LabState], Callable[[], bool]],
    duration: float = FLOW_SECONDS,
) -> tuple[faults.Traffic, float]:
    """Traffic for ``duration`` s; ``inject`` (after BEFORE s) returns the recovery condition."""
    state = lab.state()
    with faults.steady_traffic(state, duration) as traffic:
        time.sleep(BEFORE)  # traffic flowing before the fault: a duration, not a wait for an event
        recovered = inject(state)
        seconds = faults.wait_for("recovery", recovered, RECOVERY_LIMIT)
        assert seconds < duration - BEFORE, f"recovery took {seconds:.1f} s, longer than the flows"
        traffic.finish(timeout=duration + 30)
    return traffic, seconds


def check_and_record(
    lab: LabRunner, record: Record, fault: str, traffic: faults.Traffic, seconds: float
) -> None:
    state = lab.state()
    result = faults.consistency(state, fresh_felix=[state.node("node2")])
    record(fault, traffic.packets_lost(), seconds, result.summary())
    losses = {name: f"{value:.1f} %" for name, value in traffic.losses().items() if value >= 1.0}
    assert not losses, f"{fault}: traffic lost: {losses}" + lab.logs()
    assert result.clean, f"{fault}: {result.details()}" + lab.logs()


def restarted_since(node: NodeState, child: str, old: int) -> Callable[[], bool]:
    return lambda: faults.restarted(node, child, old)


def kill_and_wait(child: str, times: int = 1) -> Callable[[LabState], Callable[[], bool]]:
    def inject(state: LabState) -> Callable[[], bool]:
        node = state.node("node2")
        old = faults.kill_child(node, child)
        for _ in range(times - 1):  # killed again as soon as it is back
            faults.wait_for(f"{child} restarted", restarted_since(node, child, old), 20)
            old = faults.kill_child(node, child)
        last = old
        return lambda: faults.restarted(node, child, last) and faults.all_ready(state)

    return inject


def test_felix_sigkilled_and_restarted_loses_nothing(lab: LabRunner, record: Record) -> None:
    traffic, seconds = drill(lab, kill_and_wait("felix"))
    check_and_record(lab, record, "Felix SIGKILLed, restarted by calico-node", traffic, seconds)


@pytest.mark.faults_long
@pytest.mark.parametrize("times", [1, 2], ids=["once", "twice"])
def test_bird_sigkilled_keeps_routes_by_graceful_restart(
    lab: LabRunner, record: Record, times: int
) -> None:
    traffic, seconds = drill(lab, kill_and_wait("bird", times))
    label = "BIRD SIGKILLed" + (" twice in a row" if times == 2 else "")
    check_and_record(lab, record, label, traffic, seconds)


@pytest.mark.faults_long
def test_confd_sigkilled_loses_nothing(lab: LabRunner, record: Record) -> None:
    traffic, seconds = drill(lab, kill_and_wait("confd"))
    check_and_record(lab, record, "confd SIGKILLed", traffic, seconds)

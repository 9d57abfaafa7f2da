"""The node's uplink flapping under steady traffic (issue 16, Faults).

node2's ``eth0`` (its only link to the fabric) goes down for a second and up again, three times.
Packets to and from node2's pod are lost while it is down (the figure); after the last flap the
node must be whole again without anyone's help: BGP sessions Established, every pod's route on
every node (the kernel drops node2's routes through ``eth0`` with the link, so BIRD must put
them back), ipam check clean, the ruleset unchanged.  The default route the lab gave the node
is not Calico's: a node's own network configuration puts it back, and so does the test.
"""

from __future__ import annotations

import time

import pytest

from pycalico.lab import kernel
from pycalico.lab import state as lab_state
from pycalico.lab.state import LabState
from pycalico.testing import faults
from tests.e2e.conftest import LabRunner
from tests.faults.conftest import Record
from tests.faults.test_process_faults import BEFORE

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.faults_long]

FLAPS = 3
DOWN = 1.0  # seconds each flap keeps the link down: the fault's duration


def flap(state: LabState) -> float:
    """Flaps node2's uplink; returns the time of the last ``up``."""
    node = state.node("node2")
    for _ in range(FLAPS):
        kernel.ip(node.namespace, "link", "set", "eth0", "down")
        time.sleep(DOWN)
        kernel.ip(node.namespace, "link", "set", "eth0", "up")
        time.sleep(DOWN)
    up = time.monotonic()
    if "default" not in kernel.ip(node.namespace, "route", "show", "default"):
        gateway = f"{lab_state.FABRIC_SUBNET}.254"
        kernel.ip(node.namespace, "route", "replace", "default", "via", gateway)
    return up


def test_uplink_flapping_recovers_routes_and_sessions(lab: LabRunner, record: Record) -> None:
    state = lab.state()
    with faults.steady_traffic(state, BEFORE + 2 * FLAPS * DOWN + 15) as traffic:
        time.sleep(BEFORE)  # traffic flowing before the fault: a duration, not an event wait
        up = flap(state)
        faults.wait_for(
            "sessions and routes back",
            lambda: faults.all_ready(state) and not faults.route_problems(state),
            20.0,
            0.1,
        )
        recovered = time.monotonic() - up
        traffic.finish(timeout=60)
    consistency = faults.consistency(state, fresh_felix=[state.node("node2")])
    record(
        f"node2 uplink flapped {FLAPS}x ({DOWN:.0f} s down)",
        traffic.packets_lost(),
        recovered,
        consistency.summary(),
    )
    assert consistency.clean, consistency.details() + lab.logs()

"""etcd away and the dataplane tampered with, under steady traffic (issue 16, Faults).

* etcd stopped (SIGKILL) for ``PYCALICO_FAULTS_ETCD_DOWN`` seconds (30 in ``make faults``, 5 in
  the fast subset): no existing connectivity changes; as soon as it is back a policy is applied
  and must be enforced (the figure is the seconds from etcd's return to enforcement).
* The dataplane tampered with behind Felix's back on node2 (a chain deleted, a set flushed, a
  pod's route removed) with a 5 s refresh (a per-node FelixConfiguration): repaired within the
  refresh interval; the packets lost meanwhile are the figure.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pycalico.lab import matrix
from pycalico.testing import faults
from pycalico.testing.calicoctl import Calicoctl
from tests.e2e.conftest import LabRunner
from tests.faults.conftest import LONG, Record
from tests.faults.test_process_faults import BEFORE

pytestmark = [pytest.mark.root, pytest.mark.slow]

ETCD_DOWN = float(os.environ.get("PYCALICO_FAULTS_ETCD_DOWN") or (30 if LONG else 5))
REFRESH = 5.0
DENY_ALL = """apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: faults-deny-all, namespace: default}
spec:
  selector: all()
  types: [Ingress]
  ingress: [{action: Deny}]
"""
FAST_REFRESH = f"""apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {{name: node.node2}}
spec: {{routeRefreshInterval: {REFRESH:.0f}s, iptablesRefreshInterval: {REFRESH:.0f}s}}
"""


def test_etcd_stopped_keeps_connectivity_and_next_policy_is_enforced(
    lab: LabRunner, record: Record, tmp_path: Path
) -> None:
    state = lab.state()
    ctl = Calicoctl(state.host_endpoints, files=tmp_path)
    try:
        with faults.steady_traffic(state, BEFORE + ETCD_DOWN + 3) as traffic:
            time.sleep(BEFORE)  # traffic flowing before the fault: a duration, not an event wait
            faults.stop_etcd(state)
            try:
                time.sleep(ETCD_DOWN)  # the outage itself is the fault's duration
            finally:
                faults.start_etcd(state)
            back = time.monotonic()
            faults.wait_for("etcd answering", lambda: ctl("get", "nodes").returncode == 0, 30)
            ctl.ok("apply", "-f", ctl.manifest(DENY_ALL))
            result = matrix.run(state.pods, lambda *_: False, deadline=30.0)
            enforced = time.monotonic() - back
            traffic.finish(timeout=60)
        assert not result.mismatches, "policy not enforced: " + matrix.summary(result)
    finally:
        ctl("delete", "networkpolicy", "faults-deny-all", "-n", "default")
    during = {k: v for k, v in traffic.outputs.items() if k.startswith("iperf")}
    assert during, "no iperf3 flow"
    result = matrix.run(state.pods, lambda *_: True, deadline=30.0)
    assert not result.mismatches, "policy deleted, still blocked: " + matrix.summary(result)
    # Only the flows' part before the policy counts as "during the outage": the policy then
    # blocks them on purpose, so their loss is not asserted here, only recorded.
    fault = f"etcd stopped {ETCD_DOWN:.0f} s, then a deny policy applied"
    consistency = faults.consistency(state, fresh_felix=[state.node("node2")])
    record(fault, traffic.packets_lost(), enforced, consistency.summary() + " (policy enforced)")
    assert consistency.clean, consistency.details() + lab.logs()


@pytest.mark.faults_long
def test_dataplane_tampered_is_repaired_within_the_refresh_interval(
    lab: LabRunner, record: Record, tmp_path: Path
) -> None:
    state = lab.state()
    node = state.node("node2")
    ctl = Calicoctl(state.host_endpoints, files=tmp_path)
    pid = faults.child_pid(node, "felix")
    assert pid is not None
    ctl.ok("apply", "-f", ctl.manifest(FAST_REFRESH))
    try:
        # A restart-only setting: Felix exits and calico-node starts it with the new intervals.
        faults.wait_for("Felix restarted", lambda: faults.restarted(node, "felix", pid), 30)
        faults.wait_for("node2 ready", lambda: faults.node_ready(state, node), 60)
        wanted = faults.ruleset(node)
        with faults.steady_traffic(state, BEFORE + 3 * REFRESH) as traffic:
            time.sleep(BEFORE)  # traffic flowing before the fault: a duration, not an event wait
            done = faults.tamper(node, state.pod("p2").ipv4)
            repaired = faults.wait_for(
                f"{'; '.join(done)} repaired",
                lambda: faults.ruleset(node) == wanted and not faults.route_problems(state),
                2 * REFRESH + 5,
                0.2,
            )
            traffic.finish(timeout=60)
        assert repaired <= REFRESH + 2.0, f"repaired after {repaired:.1f} s: {done}"
        # The removed route drops p2's packets until the repair: that loss is the figure.
        consistency = faults.consistency(state, fresh_felix=[node])
        record("dataplane tampered: " + "; ".join(done), traffic.packets_lost(), repaired,
               consistency.summary())  # fmt: skip
        assert consistency.clean, consistency.details() + lab.logs()
    finally:
        last = faults.child_pid(node, "felix") or 0
        ctl("delete", "felixconfiguration", "node.node2")
        faults.wait_for("Felix restarted", lambda: faults.restarted(node, "felix", last), 30)

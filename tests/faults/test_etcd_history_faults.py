"""etcd's history compacted past a watcher, and etcd's space quota used up (issue 16, Faults).

* Compaction: node2's Felix and confd (both watch etcd through ``Syncer``) are SIGSTOPped;
  meanwhile a pod p4 is added on node3, a policy denying egress to p4 is applied, and enough
  junk is written and deleted under ``/calico/`` that their watch streams fall behind; etcd is
  compacted to its latest revision and defragmented, then the two are SIGCONTed.  Their watch
  must get the compaction error, re-list and converge: p2 -> p4 blocked (enforced by node2's
  Felix, as p1 -> p4 and p3 -> p4 by theirs), every other pair reaching, p4 routed everywhere, and node2's ruleset what a fresh
  Felix programs (nothing missed across the gap).
* Space: its own lab (2 nodes, ``--etcd-quota-bytes``) filled with junk until the NOSPACE
  alarm fires; a CNI ADD then fails with an error naming the cause and leaves no address,
  interface or WorkloadEndpoint; ``calicoctl apply`` names it too; pods already running keep
  their connectivity.  Then the operator's recovery (junk deleted, compaction, defrag,
  ``alarm disarm``) and a new pod is added and reachable.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from pycalico.lab import matrix, pods
from pycalico.lab.state import LabState, PodState
from pycalico.testing import faults
from pycalico.testing.calicoctl import Calicoctl
from tests.e2e.conftest import LabRunner
from tests.faults.conftest import Record
from tests.faults.test_process_faults import BEFORE

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.faults_long]

JUNK = "/calico/faults-junk/"
JUNK_KEYS = 3000  # far more watch responses than etcd buffers for a watcher that stopped reading
JUNK_SIZE = 2000
QUOTA = 16 * 1024 * 1024


def deny_egress_to(address: str) -> str:
    return f"""apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {{name: faults-deny-to-late, namespace: default}}
spec:
  selector: all()
  types: [Egress]
  egress:
  - {{action: Deny, destination: {{nets: [{address}/32]}}}}
  - {{action: Allow}}
"""


def endpoints_of(lab: LabState, pod: str) -> list[str]:
    done = Calicoctl(lab.host_endpoints)("get", "workloadendpoints", "-n", "default")
    # Columns: NAMESPACE WORKLOAD NODE NETWORKS INTERFACE.
    return [line for line in done.stdout.splitlines()[1:] if line.split()[1:2] == [pod]]


def test_compaction_past_stopped_watchers_resyncs_them(
    lab: LabRunner, record: Record, tmp_path: Path
) -> None:
    state = lab.state()
    node = state.node("node2")
    ctl = Calicoctl(state.host_endpoints, files=tmp_path)
    # calico-node's children log to <node>/log/<child>.log (felix.log, confd.log, ...).
    logs = {path: path.stat().st_size for path in (Path(node.directory) / "log").glob("*.log")}
    stopped = [faults.child_pid(node, "felix"), faults.child_pid(node, "confd")]
    assert None not in stopped, f"node2's watchers not running: {stopped}"
    try:
        with faults.steady_traffic(state, 40.0) as traffic:
            time.sleep(BEFORE)  # traffic flowing before the fault: a duration, not an event wait
            for pid in stopped:
                os.kill(pid or 0, signal.SIGSTOP)
            try:
                (late,) = pods.add(lab.state_dir, [pods.PodSpec("p4", "node3")])
                ctl.ok("apply", "-f", ctl.manifest(deny_egress_to(late.ipv4)))
                written = faults.write_junk(state, JUNK, JUNK_KEYS, JUNK_SIZE)
                assert written == JUNK_KEYS
                faults.delete_junk(state, JUNK)
                compacted = faults.compact_and_defrag(state)
            finally:
                for pid in stopped:
                    os.kill(pid or 0, signal.SIGCONT)
            resumed = time.monotonic()
            state = lab.state()

            def converged(source: PodState, destination: PodState, _: str) -> bool:
                return destination.name != "p4"  # the policy applies to p1-p3: all()

            result = matrix.run(state.pods, converged, deadline=60.0)
            enforced = time.monotonic() - resumed
            faults.wait_for("node2 ready", lambda: faults.node_ready(state, node), 60)
            traffic.finish(timeout=60)
        assert not result.mismatches, "not converged: " + matrix.summary(result) + lab.logs()
        # Each watcher's Syncer logs "revision N compacted (oldest available M); re-listing".
        relisted = sorted(
            path.stem
            for path, size in logs.items()
            if "; re-listing" in path.read_text(errors="replace")[size:]
        )
        consistency = faults.consistency(state, fresh_felix=[node])
        record(
            f"etcd compacted (rev {compacted}) past node2's SIGSTOPped Felix and confd; "
            "meanwhile a pod and a policy added",
            traffic.packets_lost(),
            enforced,
            consistency.summary() + f" (policy enforced; re-listed: {', '.join(relisted)})",
        )
        assert "felix" in relisted, f"Felix never saw the compaction (re-listed: {relisted})"
        assert consistency.clean, consistency.details() + lab.logs()
        assert endpoints_of(state, "p4"), "p4's WorkloadEndpoint missing"
    finally:
        ctl("delete", "networkpolicy", "faults-deny-to-late", "-n", "default")
        if any(pod.name == "p4" for pod in lab.state().pods):
            pods.delete(lab.state_dir, "p4")


def test_etcd_out_of_space_refuses_adds_cleanly_and_recovers(
    tmp_path: Path, record: Record
) -> None:
    lab = LabRunner(tmp_path)
    try:
        lab.run("up", "--nodes", "2", "--etcd-quota-bytes", str(QUOTA))
        pods.add(lab.state_dir, [pods.PodSpec("p1", "node1"), pods.PodSpec("p2", "node2")])
        state = lab.state()
        ctl = Calicoctl(state.host_endpoints, files=tmp_path)
        with faults.steady_traffic(state, 30.0) as traffic:
            time.sleep(BEFORE)  # traffic flowing before the fault: a duration, not an event wait
            written = faults.write_junk(state, JUNK, QUOTA // 100_000 * 4, 100_000, parallel=4)
            assert "NOSPACE" in faults.alarms(state), f"{written} junk keys, no NOSPACE alarm"
            with pytest.raises(pods.CniFailure) as refused:
                pods.network(state, pods.PodSpec("full", "node1"))
            applied = ctl("apply", "-f", ctl.manifest(deny_egress_to("10.0.0.1")))
            faults.delete_junk(state, JUNK)
            faults.compact_and_defrag(state)
            faults.etcdctl(state, "alarm", "disarm")
            disarmed = time.monotonic()
            (fresh,) = pods.add(lab.state_dir, [pods.PodSpec("p3", "node1")])
            recovered = time.monotonic() - disarmed
            traffic.finish(timeout=60)
        error = str(refused.value)
        print(f"CNI ADD under NOSPACE: {error}\ncalicoctl apply: {applied.stderr.strip()}")
        assert "out of space" in error, error
        assert applied.returncode != 0 and "out of space" in applied.stdout + applied.stderr
        assert not endpoints_of(state, "full"), "a WorkloadEndpoint was left by the failed ADD"
        state = lab.state()
        assert fresh in state.pods
        faults.conclude(
            state,
            traffic,
            record,
            f"etcd out of space ({QUOTA // 2**20} MiB quota, NOSPACE): CNI ADD refused naming "
            "the cause, nothing left; after compact, defrag, disarm a new pod added",
            recovered,
            fresh_felix="node1",
            logs=lab.logs,
        )
    finally:
        lab.run("down", check=False)

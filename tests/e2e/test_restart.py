"""A calico-node restart loses no traffic between pods that already talk (issue 19.1).

Three nodes, a pod on each.  Through each kind of restart of node2's calico-node — a kill of its
whole process group (what a container kill is) and a clean stop — followed by a start, packets
flow all the time: a 10/s ping to the pod *on* node2, a 10/s ping *from* it, and an iperf3 UDP
flow to it.  Each must lose under 1 %, as Calico's does (BIRD dies without a Cease, so the
peers keep node2's routes by graceful restart; BIRD's kernel routes persist; Felix leaves the
dataplane alone until it is in sync again).
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from pycalico.lab import matrix, pods
from pycalico.lab.state import LabState
from tests.e2e.conftest import LabRunner

pytestmark = [pytest.mark.root, pytest.mark.slow]

PING_INTERVAL = 0.1
UDP_RATE = "1M"
DOWN_FOR = 2.0  # seconds between the stop and the start, as in the drill
AFTER_START = 3.0  # seconds of traffic at least once the node is ready again
FLOW_SECONDS = 30.0


@dataclass(frozen=True)
class Flow:
    name: str
    process: subprocess.Popen[str]


def _in_pod(lab: LabState, pod: str, *command: str) -> list[str]:
    return pods.exec_argv(lab, pod, list(command))


@contextmanager
def traffic(lab: LabState, duration: float) -> Iterator[list[Flow]]:
    """Pings both ways across node2 and a UDP flow to node2's pod, for ``duration`` s."""
    p2, p3 = lab.pod("p2"), lab.pod("p3")
    server = subprocess.Popen(
        _in_pod(lab, "p2", "iperf3", "-s", "-1", "-B", p2.ipv4),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.3)  # iperf3 -s has no readiness signal; the client retries below if early
    count = str(int(duration / PING_INTERVAL))
    flows = [
        Flow(
            "ping p1->p2 (to the restarted node)",
            subprocess.Popen(
                _in_pod(lab, "p1", "ping", "-n", "-q", "-i", "0.1", "-c", count, p2.ipv4),
                stdout=subprocess.PIPE,
                text=True,
            ),
        ),
        Flow(
            "ping p2->p3 (from the restarted node)",
            subprocess.Popen(
                _in_pod(lab, "p2", "ping", "-n", "-q", "-i", "0.1", "-c", count, p3.ipv4),
                stdout=subprocess.PIPE,
                text=True,
            ),
        ),
        Flow(
            "iperf3 UDP p1->p2 (to the restarted node)",
            subprocess.Popen(
                _in_pod(
                    lab,
                    "p1",
                    "iperf3",
                    "-c",
                    p2.ipv4,
                    "-u",
                    "-b",
                    UDP_RATE,
                    "-l",
                    "1000",
                    "-t",
                    str(int(duration)),
                    "--json",
                    "--connect-timeout",
                    "3000",
                ),
                stdout=subprocess.PIPE,
                text=True,
            ),
        ),
    ]
    try:
        yield flows
    finally:
        for flow in flows:
            if flow.process.poll() is None:
                flow.process.send_signal(signal.SIGINT)
                flow.process.wait(timeout=30)
        server.kill()
        server.wait()


def loss(name: str, output: str) -> float:
    """Percentage of packets lost by a finished flow, from its output."""
    if name.startswith("ping"):
        found = re.search(r"(\d+) packets transmitted, (\d+) received", output)
        assert found, f"{name}: no ping summary in {output!r}"
        sent, received = int(found[1]), int(found[2])
        assert sent > 0, f"{name}: nothing sent"
        return 100.0 * (sent - received) / sent
    report = json.loads(output)
    assert "error" not in report, f"{name}: {report['error']}"
    total = report["end"]["sum"]
    assert total["packets"] > 0, f"{name}: nothing sent"
    return float(total["lost_percent"])


def drill(lab: LabRunner, stop_args: tuple[str, ...]) -> dict[str, float]:
    """Stop node2 (``stop_args``), start it, with traffic flowing throughout; loss per flow."""
    state = lab.state()
    with traffic(state, duration=FLOW_SECONDS) as flows:
        started = time.monotonic()
        time.sleep(2.0)  # traffic established before the stop
        lab.run("node", "stop", "node2", *stop_args)
        time.sleep(DOWN_FOR)
        lab.run("node", "start", "node2")  # returns once Felix is ready and BGP Established
        restarted = time.monotonic() - started
        assert restarted < FLOW_SECONDS - AFTER_START, (
            f"the restart took {restarted:.0f} s, longer than the flows: the drill proves nothing"
        )
        outputs = {
            flow.name: flow.process.communicate(timeout=FLOW_SECONDS + 30)[0] for flow in flows
        }
    return {name: loss(name, output) for name, output in outputs.items()}


@pytest.mark.parametrize("stop_args", [("--kill",), ()], ids=["kill-process-group", "clean-stop"])
def test_restart_of_calico_node_loses_no_traffic(
    lab: LabRunner, stop_args: tuple[str, ...]
) -> None:
    lab.run("up", "--nodes", "3")
    pods.add(lab.state_dir, [pods.PodSpec(f"p{i}", f"node{i}", "default") for i in (1, 2, 3)])
    state = lab.state()
    result = matrix.run(state.pods, lambda *_: True, deadline=60.0)
    assert not result.mismatches, matrix.summary(result)

    losses = drill(lab, stop_args)
    print(f"loss through {stop_args or 'a clean stop'}: {losses}")
    # How: node2's BIRD went without a Cease (killed, or by its `graceful restart` command), so
    # node1 kept node2's routes by graceful restart.
    logs = Path(lab.state_dir) / "nodes"
    own_log = (logs / "node2" / "log" / "bird.log").read_text()
    shutdowns = re.findall(r"<INFO> (Shutting down.*)", own_log)  # the daemon's, not a protocol's
    expected = [] if stop_args else ["Shutting down for graceful restart"]
    assert shutdowns == expected, own_log[-2000:]
    peer_log = (logs / "node1" / "log" / "bird.log").read_text()
    assert "Administrative shutdown" not in peer_log, peer_log[-2000:]
    bad = {name: f"{value:.1f} %" for name, value in losses.items() if value >= 1.0}
    assert not bad, f"traffic lost through {stop_args or 'a clean stop'}: {bad}" + lab.logs()
    # The restarted node is whole again: a new pod on it reaches the others.
    pods.add(lab.state_dir, [pods.PodSpec("p4", "node2", "default")])
    result = matrix.run(lab.state().pods, lambda *_: True, deadline=60.0)
    assert not result.mismatches, matrix.summary(result) + lab.logs()

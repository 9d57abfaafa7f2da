"""Felix turns on IP forwarding (FelixConfiguration ``ipForwarding``, default Enabled).

The lab does not set ``net.ipv4.ip_forward`` in its node namespaces (a fresh namespace starts
with it off), so pods on different nodes reach each other only because Felix writes it at start.
The test also shows it can fail: with forwarding switched off under a running Felix (which
writes it only at start), cross-node traffic stops; a restarted calico-node brings it back.
"""

from __future__ import annotations

import subprocess

import pytest

from pycalico.lab import matrix, pods
from pycalico.lab.state import PodState
from tests.e2e.conftest import LabRunner

pytestmark = [pytest.mark.root, pytest.mark.slow]


def ip_forward(namespace: str) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", namespace, "sysctl", "-n", "net.ipv4.ip_forward"],
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def same_node(source: PodState, destination: PodState, _protocol: str) -> bool:
    return source.node == destination.node


def test_felix_turns_on_forwarding_and_cross_node_pods_talk(lab: LabRunner) -> None:
    lab.run("up", "--nodes", "2")
    pods.add(lab.state_dir, [pods.PodSpec("f1", "node1", "default")])
    pods.add(lab.state_dir, [pods.PodSpec("f2", "node2", "default")])
    state = lab.state()
    node2 = state.node("node2")
    assert ip_forward(node2.namespace) == "1", "Felix did not turn forwarding on"
    result = matrix.run(state.pods, lambda *_: True, deadline=60.0)
    assert not result.mismatches, matrix.summary(result) + lab.logs()

    # Off again under the running Felix: node2 no longer forwards between eth0 and its pod.
    subprocess.run(
        ["ip", "netns", "exec", node2.namespace, "sysctl", "-qw", "net.ipv4.ip_forward=0"],
        check=True,
    )
    result = matrix.run(state.pods, same_node, deadline=20.0)
    assert not result.mismatches, "cross-node traffic still flows: " + matrix.summary(result)

    # A calico-node restart starts Felix again, which writes it at start.
    lab.run("node", "stop", "node2")
    lab.run("node", "start", "node2")
    result = matrix.run(state.pods, lambda *_: True, deadline=60.0)
    assert not result.mismatches, matrix.summary(result) + lab.logs()
    assert ip_forward(node2.namespace) == "1"

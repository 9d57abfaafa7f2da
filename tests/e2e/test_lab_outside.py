"""The lab's outside host and Felix's outgoing NAT, with packets.

The outside host (``<prefix>-outside``, ``203.0.113.1``) sits behind the fabric router, which
knows no pod routes.  A pod's datagrams to it carry the pod's own address while the pool has
``natOutgoing: false``; once the pool is patched to ``true``, the outside host sees the node's
address instead, and pod-to-pod traffic keeps the pod's address (it is never masqueraded).
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from pycalico.datastore.resources import ResourceStore
from pycalico.lab import pods, store
from pycalico.lab import state as lab_state
from pycalico.lab.state import LabState
from tests.e2e.conftest import LabRunner

pytestmark = [pytest.mark.root, pytest.mark.slow]

PORT = 9977
# Prints the source address of every datagram until the deadline, one per line.
RECEIVER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(0.2)
end = time.monotonic() + float(sys.argv[2])
print("ready", flush=True)
while time.monotonic() < end:
    try:
        _, (source, _) = s.recvfrom(100)
    except socket.timeout:
        continue
    print(source, flush=True)
"""
SENDER = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end:
    s.sendto(b"x", (sys.argv[1], int(sys.argv[2])))
    time.sleep(0.1)
"""


def sources_seen(receiver_netns: str, sender_netns: str, target: str, seconds: float) -> set[str]:
    """The source addresses ``receiver_netns`` sees while ``sender_netns`` sends to ``target``."""
    receiver = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            receiver_netns,
            sys.executable,
            "-c",
            RECEIVER,
            str(PORT),
            str(seconds),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stdout is not None and receiver.stdout.readline().strip() == "ready"
        subprocess.run(
            ["ip", "netns", "exec", sender_netns, sys.executable, "-c", SENDER, target, str(PORT),
             str(seconds)],
            check=True,
            timeout=seconds + 10,
        )  # fmt: skip
        output, _ = receiver.communicate(timeout=seconds + 10)
    finally:
        receiver.kill()
        receiver.wait()
    return set(output.split())


def set_nat_outgoing(lab: LabState, enabled: bool) -> None:
    async def patch(resources: ResourceStore) -> None:
        pool = store.pool_manifest("default-ipv4-ippool", lab_state.IPV4_POOL, 26)
        pool["spec"]["natOutgoing"] = enabled
        await store.apply_all(resources, [pool])

    store.call(lab.host_endpoints, patch)


def test_outside_host_sees_the_node_only_with_outgoing_nat(lab: LabRunner) -> None:
    lab.run("up", "--nodes", "2")
    pods.add(lab.state_dir, [pods.PodSpec("n1", "node1", "default")])
    pods.add(lab.state_dir, [pods.PodSpec("n2", "node2", "default")])
    state = lab.state()
    pod1, pod2 = state.pod("n1"), state.pod("n2")
    node1 = state.node("node1")
    outside = state.outside_namespace

    # Without NAT the pod's own address leaves the cluster (the router may drop it: it has no
    # route back to pods); the node's address never appears.
    assert node1.address not in sources_seen(outside, pod1.netns, lab_state.OUTSIDE_ADDRESS, 2.0)

    set_nat_outgoing(state, True)
    deadline = time.monotonic() + 30
    seen: set[str] = set()
    while node1.address not in seen and time.monotonic() < deadline:
        seen = sources_seen(outside, pod1.netns, lab_state.OUTSIDE_ADDRESS, 2.0)
    assert seen == {node1.address}, f"the outside host saw {seen}, not node1's {node1.address}"

    # Pod to pod across nodes is never masqueraded.
    assert sources_seen(pod2.netns, pod1.netns, pod2.ipv4, 1.5) == {pod1.ipv4}

"""Host endpoints on a real node interface: failsafe ports, default deny, profiles, forwarding.

Requires root.  The node has ``eth1`` to an "outside" namespace; Felix protects ``eth1`` with a
HostEndpoint.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from pycalico.felix import messages as m
from pycalico.testing import netns
from pycalico.testing.connectivity import ConnectivityChecker, Endpoint, Probe

from .conftest import ALLOW, PROFILE, Node, host_endpoint_topology

pytestmark = pytest.mark.root

NODE_IP = "192.168.77.1"
OUTSIDE_IP = "192.168.77.2"
HEP = m.HostEndpointID("node-eth1")


@pytest.fixture(scope="module")
def topology() -> Iterator[netns.Topology]:
    with host_endpoint_topology("10.65.1.1", NODE_IP, OUTSIDE_IP, "10.65.1.0/24") as topo:
        yield topo


@pytest.fixture
def checker(topology: netns.Topology) -> Iterator[ConnectivityChecker]:
    endpoints = {
        "out": Endpoint(topology.pods["out"].name, OUTSIDE_IP),
        "node": Endpoint(topology.node, NODE_IP),
        "pod": Endpoint(topology.pods["pod"].name, "10.65.1.1"),
    }
    checker = ConnectivityChecker(endpoints)
    try:
        checker.serve(["node"], tcp_ports=(22, 8080))
        checker.serve(["out"], tcp_ports=(9999, 2379))
        checker.serve(["pod"], tcp_ports=(80,))
        yield checker
    finally:
        checker.stop()


def hep(profiles: tuple[m.ProfileID, ...] = ()) -> m.HostEndpointUpdate:
    return m.HostEndpointUpdate(HEP, "eth1", (NODE_IP,), (), profiles, ())


def test_host_endpoint_default_deny_with_failsafe_and_profile(
    topology: netns.Topology, checker: ConnectivityChecker
) -> None:
    node = Node(topology)
    pod = node.topology.pods["pod"]
    workload = m.WorkloadEndpointUpdate(
        m.WorkloadEndpointID("k8s", "default/pod", "eth0"), pod.interface, "", ("10.65.1.1/32",),
        (), (PROFILE,), (),
    )  # fmt: skip
    node.send(m.ActiveProfileUpdate(PROFILE, (ALLOW,), (ALLOW,)), workload, m.InSync())
    no_hep = {
        Probe("out", "node", 22): True,
        Probe("out", "node", 8080): True,
        Probe("node", "out", 9999): True,
        Probe("out", "pod", 80): True,
    }
    checker.check(no_hep)
    node.send(hep())
    checker.check(
        {
            Probe("out", "node", 22): True,  # failsafe inbound
            Probe("out", "node", 8080): False,  # default deny
            Probe("node", "out", 2379): True,  # failsafe outbound
            Probe("node", "out", 9999): False,
            Probe("out", "pod", 80): True,  # forwarded traffic: no applyOnForward policy
        }
    )
    node.send(hep((PROFILE,)))
    checker.check({**no_hep, Probe("node", "out", 2379): True})
    node.send(m.HostEndpointRemove(HEP))
    checker.check(no_hep)


def _peer_seen_by_outside(topology: netns.Topology) -> str:
    """Connect pod -> outside:7070 and return the source address the outside saw."""
    with netns.enter(topology.pods["out"].name):
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind((OUTSIDE_IP, 7070))
        server.listen(1)
    server.settimeout(3)
    try:
        with netns.enter(topology.pods["pod"].name):
            client = socket.create_connection((OUTSIDE_IP, 7070), timeout=3)
        with client:
            connection, peer = server.accept()
            connection.close()
        return str(peer[0])
    finally:
        server.close()


def test_nat_outgoing_masquerades_pool_traffic_leaving_the_pools(
    topology: netns.Topology,
) -> None:
    node = Node(topology)
    pod = topology.pods["pod"]
    workload = m.WorkloadEndpointUpdate(
        m.WorkloadEndpointID("k8s", "default/pod", "eth0"), pod.interface, "", ("10.65.1.1/32",),
        (), (PROFILE,), (),
    )  # fmt: skip
    node.send(m.ActiveProfileUpdate(PROFILE, (ALLOW,), (ALLOW,)), workload, m.InSync())
    assert _peer_seen_by_outside(topology) == "10.65.1.1"
    node.send(m.IPPoolUpdate("10.65.1.0/24", "10.65.1.0/24", masquerade=True))
    assert _peer_seen_by_outside(topology) == NODE_IP
    # Traffic between pools is never masqueraded: the outside's net becomes a pool too.
    node.send(m.IPPoolUpdate("192.168.77.0/24", "192.168.77.0/24", masquerade=False))
    assert _peer_seen_by_outside(topology) == "10.65.1.1"
    node.send(m.IPPoolRemove("192.168.77.0/24"), m.IPPoolRemove("10.65.1.0/24"))
    assert _peer_seen_by_outside(topology) == "10.65.1.1"

"""Attacks from a hostile workload, shown with packets on real namespaces, veths and nftables.

Requires root.  Each test has the attacker (pod ``a``) craft the packets it would send, and a
raw socket or a probe says whether they were delivered; each also shows the contrary case (the
same packet delivered when Felix's configuration allows it, or a harmless neighbour packet that
passes) so the test would fail if the blocking came from somewhere else.

Already covered elsewhere (not repeated here): a forged IPv4 source
(``test_dataplane_netns.py::test_forged_source_address_is_dropped_unless_allowed``), VXLAN from
a workload (``::test_vxlan_from_workloads_is_dropped``), a ``cali*`` interface no endpoint owns
(``::test_cali_interface_without_endpoint_passes_nothing``), a workload reaching the host
(``::test_default_endpoint_to_host_action``).
"""

from __future__ import annotations

import socket
from typing import Literal

import pytest

from pycalico.felix import messages as m
from pycalico.felix.dataplane.loop import DataplaneOptions
from pycalico.felix.rules.model import RenderConfig
from pycalico.testing import netns, packets
from pycalico.testing.connectivity import ConnectivityChecker, Endpoint, Probe

from .conftest import ALLOW, PODS, PROFILE, Node, host_endpoint_topology

pytestmark = pytest.mark.root


def test_forged_ipv6_source_is_dropped_unless_allowed(
    node: Node, matrix: ConnectivityChecker, topology: netns.Topology
) -> None:
    forged = "fd00:65::99"
    pod = topology.pods["a"]
    netns.netns_run(pod.name, "ip", "-6", "addr", "add", f"{forged}/128", "dev", "eth0", "nodad")
    # Route the forged address back to a: only Felix's rules can stop the spoofed flow.
    netns.netns_run(topology.node, "ip", "-6", "route", "replace", forged, "dev", pod.interface)
    try:
        node.start()
        probes = {Probe("a", "b6", 80, source_ip=forged): False, Probe("a", "b6", 80): True}
        matrix.check(probes)
        node.send(node.workload("a", allow_spoofed=(f"{forged}/128",)))
        matrix.check({p: True for p in probes})
    finally:
        netns.netns_run(pod.name, "ip", "-6", "addr", "del", f"{forged}/128", "dev", "eth0",
                        check=False)  # fmt: skip
        netns.netns_run(topology.node, "ip", "-6", "route", "del", forged, check=False)


def _ipip_delivered(topology: netns.Topology, marker: bytes) -> bool:
    """Pod a sends an IPIP packet to pod b; does b's stack receive it?"""
    a, b = topology.pods["a"], topology.pods["b"]
    packet = packets.ipip_packet(a.ipv4, b.ipv4, "10.99.0.1", "10.99.0.2", marker)
    with packets.sniff(b.name, socket.AF_INET, socket.SOCK_RAW, packets.IPPROTO_IPIP) as sniffer:
        for _ in range(3):
            packets.send_ipv4_raw(a.name, packet)
            if sniffer.wait(lambda p: marker in p, timeout=0.5) is not None:
                return True
    return False


def test_ipip_from_a_workload_is_dropped_unless_allowed(topology: netns.Topology) -> None:
    Node(topology).start()
    assert not _ipip_delivered(topology, b"ipip-attack-1")
    allowing = RenderConfig(allow_ipip_packets_from_workloads=True)
    Node(topology, DataplaneOptions(render=allowing)).start()
    assert _ipip_delivered(topology, b"ipip-attack-2")


def _node_ipv6_state(topology: netns.Topology) -> tuple[str, str]:
    routes = netns.netns_run(topology.node, "ip", "-6", "route", "show", "table", "all")
    addresses = netns.netns_run(topology.node, "ip", "-6", "-o", "addr", "show")
    return routes, addresses


@pytest.mark.parametrize("to_host", ["Drop", "Accept"])
def test_router_advertisement_from_a_workload_never_reaches_the_host(
    topology: netns.Topology, to_host: Literal["Drop", "Accept"]
) -> None:
    """With ``DefaultEndpointToHostAction: Accept`` only the RA rule stops it (checked: the test
    fails without that rule); with the default Drop it is stopped twice."""
    Node(topology, DataplaneOptions(render=RenderConfig(
        default_endpoint_to_host_action=to_host))).start()  # fmt: skip
    a = topology.pods["a"]
    sysctl = f"/proc/sys/net/ipv6/conf/{a.interface}/accept_ra"
    assert netns.netns_run(topology.node, "cat", sysctl).strip() == "0"
    before = _node_ipv6_state(topology)
    advert = packets.router_advertisement("2001:db8:bad::/64")
    with packets.sniff(topology.node, socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6,
                       a.interface) as sniffer:  # fmt: skip
        # Control: a router solicitation (which Calico lets through to the fake gateway) from
        # the same pod, to the same group, arrives, so the sniffer would see an RA too.
        packets.send_icmpv6(a.name, "eth0", "ff02::1", packets.router_solicitation())
        solicit = packets.ICMPV6_ROUTER_SOLICIT
        assert sniffer.wait(lambda p: p[0] == solicit, timeout=3.0) is not None
        for destination in ("ff02::1", netns.IPV6_GATEWAY):
            packets.send_icmpv6(a.name, "eth0", destination, advert)
        advert_type = packets.ICMPV6_ROUTER_ADVERT
        assert sniffer.wait(lambda p: p[0] == advert_type, timeout=1.0) is None
    assert _node_ipv6_state(topology) == before
    assert "2001:db8:bad" not in "".join(before)


def test_arp_claiming_another_pods_address_does_not_divert_its_traffic(
    node: Node, matrix: ConnectivityChecker, topology: netns.Topology
) -> None:
    node.start()
    a, b = topology.pods["a"], topology.pods["b"]
    victim = PODS["b"]
    claims = (
        packets.arp_reply(a.mac, victim, "ff:ff:ff:ff:ff:ff", victim),  # gratuitous
        packets.arp_reply(a.mac, victim, "ee:ee:ee:ee:ee:ee", "169.254.1.1"),  # unsolicited
    )
    for frame in claims * 3:
        packets.send_frame(a.name, "eth0", frame)
    neighbours = netns.netns_run(topology.node, "ip", "-4", "neigh", "show", victim)
    assert a.mac not in neighbours and a.interface not in neighbours, neighbours
    assert b.mac in neighbours and b.interface in neighbours, neighbours

    def to_victim(frame: bytes) -> bool:
        return frame[12:14] == b"\x08\x00" and frame[30:34] == socket.inet_aton(victim)

    with packets.sniff(a.name, socket.AF_PACKET, socket.SOCK_RAW,
                       socket.htons(packets.ETH_P_ALL), "eth0") as sniffer:  # fmt: skip
        matrix.check({Probe("c", "b", 80): True, Probe("c", "b", 53, "udp"): True,
                      Probe("a", "b", 80): True})  # fmt: skip
        # Nothing for b was ever sent down a's veth (b's own replies to a excepted: a probed).
        assert sniffer.wait(lambda f: to_victim(f) and f[26:30] != socket.inet_aton(PODS["a"]),
                            timeout=0.5) is None  # fmt: skip


NODE_IP = "192.168.78.1"
OUTSIDE_IP = "192.168.78.2"
POD_IP = "10.65.2.1"


def test_workload_reaches_host_services_only_as_its_policy_and_host_action_allow() -> None:
    """A HostEndpoint on the node's uplink forbids the outside (failsafe 22 open); a workload's
    way to the host is Calico's ``cali-wl-to-host``: its own egress policy, then
    ``DefaultEndpointToHostAction`` (Drop by default; failsafe ports are host-endpoint only)."""
    hep_id = m.HostEndpointID("node-eth1")
    with host_endpoint_topology(POD_IP, NODE_IP, OUTSIDE_IP, "10.65.2.0/24") as topo:
        pod = topo.pods["pod"]
        checker = ConnectivityChecker({
            "out": Endpoint(topo.pods["out"].name, OUTSIDE_IP),
            "node": Endpoint(topo.node, NODE_IP),
            "pod": Endpoint(pod.name, POD_IP),
        })  # fmt: skip
        deny_8080 = m.ResolvedRule("deny", protocol="tcp", destination_nets=(f"{NODE_IP}/32",),
                                   destination_ports=(m.PortRange(8080, 8080),))  # fmt: skip
        policy = m.PolicyID("default", "no-node-8080")

        def start(node: Node) -> None:
            workload = m.WorkloadEndpointUpdate(
                m.WorkloadEndpointID("k8s", "default/pod", "eth0"), pod.interface, pod.mac,
                (f"{POD_IP}/32",), (), (PROFILE,),
                (m.TierInfo("default", "pass", (), (policy,)),),
            )  # fmt: skip
            node.send(
                m.ActiveProfileUpdate(PROFILE, (ALLOW,), (ALLOW,)),
                m.ActivePolicyUpdate(policy, (), (deny_8080,)),
                workload,
                m.HostEndpointUpdate(hep_id, "eth1", (NODE_IP,), (), (), ()),
                m.InSync(),
            )

        try:
            checker.serve(["node"], tcp_ports=(22, 8080, 8081))
            start(Node(topo))
            outside = {Probe("out", "node", 22): True, Probe("out", "node", 8080): False}
            checker.check({**outside, Probe("pod", "node", 22): False,
                           Probe("pod", "node", 8081): False})  # fmt: skip
            start(Node(topo, DataplaneOptions(render=RenderConfig(
                default_endpoint_to_host_action="Accept"))))  # fmt: skip
            checker.check({**outside, Probe("pod", "node", 8080): False,
                           Probe("pod", "node", 8081): True})  # fmt: skip
        finally:
            checker.stop()

"""Untracked (doNotTrack) and pre-DNAT host endpoint policy, with packets in real namespaces.

Requires root.  As in ``test_host_endpoints``: the node has ``eth1`` to an "outside" namespace
and Felix protects ``eth1`` with a HostEndpoint; a pod sits behind a ``cali*`` veth.  Each test
ends by removing the policy and checking that traffic and the table are back to normal.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pycalico.felix import messages as m
from pycalico.felix.rules import names
from pycalico.testing import netns
from pycalico.testing.connectivity import ConnectivityChecker, Endpoint, Probe

from .conftest import ALLOW, PROFILE, Node, host_endpoint_topology

pytestmark = pytest.mark.root

NODE_IP = "192.168.78.1"
OUTSIDE_IP = "192.168.78.2"
POD_IP = "10.65.2.1"
HEP = m.HostEndpointID("node-eth1")
POLICY = m.PolicyID("default", "host-prefilter")
DNAT_PORT = 9090  # a test DNAT rule forwards node:9090 to pod:80
TEST_NAT_TABLE = "ip fxtest-dnat"


@pytest.fixture(scope="module")
def topology() -> Iterator[netns.Topology]:
    with host_endpoint_topology(POD_IP, NODE_IP, OUTSIDE_IP, "10.65.2.0/24") as topo:
        yield topo


@pytest.fixture
def checker(topology: netns.Topology) -> Iterator[ConnectivityChecker]:
    endpoints = {
        "out": Endpoint(topology.pods["out"].name, OUTSIDE_IP),
        "node": Endpoint(topology.node, NODE_IP),
        "pod": Endpoint(topology.pods["pod"].name, POD_IP),
    }
    checker = ConnectivityChecker(endpoints)
    try:
        checker.serve(["node"], tcp_ports=(22, 8080, 8081))
        checker.serve(["pod"], tcp_ports=(80,))
        yield checker
    finally:
        checker.stop()


@pytest.fixture
def node(topology: netns.Topology) -> Node:
    """A fresh dataplane with the pod as a workload (allow-all profile), in sync."""
    node = Node(topology)
    pod = topology.pods["pod"]
    workload = m.WorkloadEndpointUpdate(
        m.WorkloadEndpointID("k8s", "default/pod", "eth0"), pod.interface, "", (f"{POD_IP}/32",),
        (), (PROFILE,), (),
    )  # fmt: skip
    node.send(m.ActiveProfileUpdate(PROFILE, (ALLOW,), (ALLOW,)), workload, m.InSync())
    return node


def tcp_ports(action: m.Action, *ports: int, source: bool = False) -> m.ResolvedRule:
    port_ranges = tuple(m.PortRange(p, p) for p in ports)
    if source:
        return m.ResolvedRule(action=action, protocol="tcp", source_ports=port_ranges)
    return m.ResolvedRule(action=action, protocol="tcp", destination_ports=port_ranges)


def hep(
    *,
    profiles: tuple[m.ProfileID, ...] = (PROFILE,),
    untracked: tuple[m.TierInfo, ...] = (),
    pre_dnat: tuple[m.TierInfo, ...] = (),
) -> m.HostEndpointUpdate:
    return m.HostEndpointUpdate(
        HEP,
        "eth1",
        (NODE_IP,),
        (),
        profiles,
        (),
        untracked_tiers=untracked,
        pre_dnat_tiers=pre_dnat,
    )


def tier(ingress: bool = True, egress: bool = False) -> tuple[m.TierInfo, ...]:
    return (
        m.TierInfo("default", "deny", (POLICY,) if ingress else (), (POLICY,) if egress else ()),
    )


def conntrack_entries(topology: netns.Topology, port: int) -> str:
    # conntrack exits 0 with "0 flow entries" on stderr when nothing matches.
    return netns.netns_run(
        topology.node, "conntrack", "-L", "-p", "tcp", "--dport", str(port), check=False
    )


def flush_conntrack(topology: netns.Topology) -> None:
    netns.netns_run(topology.node, "conntrack", "-F", check=False)


def base_chains(node: Node) -> set[str]:
    listing = node.nft("list", "table", names.TABLE_FAMILY, names.TABLE_NAME)
    return {
        name
        for name in (
            names.CHAIN_RAW_PREROUTING,
            names.CHAIN_RAW_OUTPUT,
            names.CHAIN_MANGLE_PREROUTING,
        )
        if f"chain {name} {{" in listing
    }


BASELINE = {
    Probe("out", "node", 22): True,
    Probe("out", "node", 8080): True,
    Probe("out", "node", 8081): True,
    Probe("out", "pod", 80): True,
}


def test_untracked_deny_drops_matching_traffic_only_and_keeps_failsafe(
    node: Node, checker: ConnectivityChecker
) -> None:
    node.send(hep())
    checker.check(BASELINE)
    assert base_chains(node) == set()  # nothing untracked: no raw hook at all

    # Denying 22 too: the failsafe port must stay open.
    node.send(m.ActivePolicyUpdate(POLICY, (tcp_ports("deny", 22, 8080),), ()))
    node.send(hep(untracked=tier()))
    assert base_chains(node) == {names.CHAIN_RAW_PREROUTING}
    checker.check({**BASELINE, Probe("out", "node", 8080): False})

    node.send(hep(), m.ActivePolicyRemove(POLICY))
    checker.check(BASELINE)
    assert base_chains(node) == set()


def test_untracked_allow_bypasses_conntrack_and_normal_policy(
    topology: netns.Topology, node: Node, checker: ConnectivityChecker
) -> None:
    # The host endpoint's normal policy (no profile) is default deny; the untracked policy
    # allows 8080 both ways (no conntrack: the replies need their own allow).
    inbound = (tcp_ports("allow", 8080),)
    outbound = (tcp_ports("allow", 8080, source=True),)
    node.send(m.ActivePolicyUpdate(POLICY, inbound, outbound))
    node.send(hep(profiles=(), untracked=tier(egress=True)))
    assert base_chains(node) == {names.CHAIN_RAW_PREROUTING, names.CHAIN_RAW_OUTPUT}
    flush_conntrack(topology)
    checker.check(
        {
            Probe("out", "node", 22): True,  # failsafe, tracked
            Probe("out", "node", 8080): True,  # untracked allow beats the default deny
            Probe("out", "node", 8081): False,  # normal policy: default deny
            Probe("out", "pod", 80): True,
        }
    )
    assert "dport=8080" not in conntrack_entries(topology, 8080)
    assert "dport=22" in conntrack_entries(topology, 22)

    # With a profile allowing the rest, 8081 is allowed by normal policy and tracked.
    node.send(hep(profiles=(PROFILE,), untracked=tier(egress=True)))
    flush_conntrack(topology)
    checker.check(BASELINE)
    assert "dport=8081" in conntrack_entries(topology, 8081)
    assert "dport=8080" not in conntrack_entries(topology, 8080)

    node.send(hep(), m.ActivePolicyRemove(POLICY))
    assert base_chains(node) == set()
    flush_conntrack(topology)
    checker.check(BASELINE)
    assert "dport=8080" in conntrack_entries(topology, 8080)


@pytest.fixture
def dnat(topology: netns.Topology) -> Iterator[None]:
    """A foreign nft table in the node: node:9090 is DNATted to pod:80 (a NodePort stand-in)."""
    netns.netns_run(
        topology.node,
        "nft",
        f"add table {TEST_NAT_TABLE}\n"
        f"add chain {TEST_NAT_TABLE} pre {{ type nat hook prerouting priority dstnat; }}\n"
        f"add rule {TEST_NAT_TABLE} pre tcp dport {DNAT_PORT} dnat to {POD_IP}:80\n",
    )
    try:
        yield
    finally:
        netns.netns_run(topology.node, "nft", "delete", "table", *TEST_NAT_TABLE.split())


def test_pre_dnat_policy_sees_the_original_destination(
    node: Node, checker: ConnectivityChecker, dnat: None
) -> None:
    node.send(hep())
    with_dnat = {**BASELINE, Probe("out", "node", DNAT_PORT): True}
    checker.check(with_dnat)

    # Deny on the pre-DNAT port: the DNATted path closes, the pod's own port stays open.
    node.send(m.ActivePolicyUpdate(POLICY, (tcp_ports("deny", 22, DNAT_PORT),), ()))
    node.send(hep(pre_dnat=tier()))
    assert base_chains(node) == {names.CHAIN_MANGLE_PREROUTING}
    checker.check({**with_dnat, Probe("out", "node", DNAT_PORT): False})

    # Allow overrides the host endpoint's normal (default deny) ingress policy, as in Calico.
    node.send(m.ActivePolicyUpdate(POLICY, (tcp_ports("allow", 8080),), ()))
    node.send(hep(profiles=(), pre_dnat=tier()))
    checker.check(
        {
            Probe("out", "node", 22): True,
            Probe("out", "node", 8080): True,
            Probe("out", "node", 8081): False,
            Probe("out", "node", DNAT_PORT): True,  # forwarded: no applyOnForward policy
        }
    )

    node.send(hep(), m.ActivePolicyRemove(POLICY))
    checker.check(with_dnat)
    assert base_chains(node) == set()


def test_wildcard_host_endpoint_untracked_deny(node: Node, checker: ConnectivityChecker) -> None:
    node.send(m.ActivePolicyUpdate(POLICY, (tcp_ports("deny", 8080),), ()))
    wildcard = m.HostEndpointUpdate(
        m.HostEndpointID("all"), "*", (), (), (PROFILE,), (), untracked_tiers=tier()
    )
    node.send(wildcard)
    checker.check({**BASELINE, Probe("out", "node", 8080): False})
    # eth1's own host endpoint (no untracked policy) takes precedence over the wildcard.
    node.send(hep())
    checker.check(BASELINE)
    node.send(m.HostEndpointRemove(HEP))
    checker.check({**BASELINE, Probe("out", "node", 8080): False})
    node.send(m.HostEndpointRemove(wildcard.id), m.ActivePolicyRemove(POLICY))
    checker.check(BASELINE)
    assert base_chains(node) == set()

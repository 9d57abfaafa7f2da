"""NFTablesFlowTableOffload on real namespaces, veths and nftables.

With offload requested, policy must behave exactly as without it: a denied source stays denied,
an allowed TCP flow works, and an established flow keeps flowing after a policy starts denying
its source (Calico semantics: conntrack accepts established packets before policy).  On a kernel
with flowtables the ``cali-ft`` flowtable must exist with exactly the workload interfaces as
devices, following workloads as they come and go; on a kernel without them (this CI kernel has
``CONFIG_NF_FLOW_TABLE`` unset) Felix must run without offload rather than fail its
transactions.  Whether the kernel has flowtables is read from ``/proc/config.gz`` here, not from
Felix's own probe, so a wrong probe fails the test.
"""

from __future__ import annotations

import gzip
import itertools
import re
import socket

import pytest

from pycalico.felix import messages as m
from pycalico.felix.dataplane.loop import DataplaneOptions
from pycalico.felix.drivers.nft import LibNftablesBackend, flowtable_supported
from pycalico.felix.rules.model import RenderConfig
from pycalico.testing import netns
from pycalico.testing.connectivity import ConnectivityChecker, Probe

from .conftest import ALLOW, PODS, Node

pytestmark = pytest.mark.root

OFFLOAD = DataplaneOptions(render=RenderConfig(flowtable_offload=True))


def kernel_has_flowtables(topology: netns.Topology) -> bool:
    try:
        with gzip.open("/proc/config.gz", "rt") as handle:
            config = handle.read()
    except OSError:
        with netns.enter(topology.node):
            return flowtable_supported(LibNftablesBackend())
    return re.search(r"^CONFIG_NF_FLOW_TABLE=[ym]$", config, re.MULTILINE) is not None


def flowtable_devices(node: Node) -> set[str] | None:
    """The devices of ``cali-ft`` as the kernel lists them; None when there is no flowtable."""
    listing = node.nft("list", "table", "inet", "calico")
    match = re.search(r"flowtable cali-ft \{(.*?)\n\t\}", listing, re.DOTALL)
    if match is None:
        return None
    devices = re.search(r"devices = \{([^}]*)\}", match.group(1))
    if devices is None:
        return set()
    return {name.strip().strip('"') for name in devices.group(1).split(",") if name.strip()}


def matrix_of(blocked: set[tuple[str, str]]) -> dict[Probe, bool]:
    return {
        Probe(src, dst, 80): (src, dst) not in blocked
        for src, dst in itertools.permutations(PODS, 2)
    }


def deny_from(name: str, *sources: str) -> tuple[m.IPSetUpdate, m.ActivePolicyUpdate]:
    members = frozenset(f"{PODS[key]}/32" for key in sources)
    ip_set = m.IPSetUpdate("s:" + name, m.IPSetType.IP, members)
    rule = m.ResolvedRule("deny", source_ip_set_ids=(ip_set.id,))
    return ip_set, m.ActivePolicyUpdate(m.PolicyID("default", name), (rule, ALLOW), ())


def tier_of(*policies: m.ActivePolicyUpdate) -> tuple[m.TierInfo, ...]:
    return (m.TierInfo("default", "deny", tuple(p.id for p in policies), ()),)


@pytest.fixture
def offload_node(topology: netns.Topology) -> Node:
    return Node(topology, OFFLOAD)


def test_policy_still_enforced_with_offload_requested(
    offload_node: Node, matrix: ConnectivityChecker, topology: netns.Topology
) -> None:
    node = offload_node
    supported = kernel_has_flowtables(topology)
    deny_a = deny_from("deny-a", "a")
    node.start(*deny_a, tiers={"b": tier_of(deny_a[1])})
    assert node.dataplane.flowtable_offload is supported
    listing = node.nft("list", "table", "inet", "calico")
    if supported:
        assert "flow add @cali-ft" in listing
        assert flowtable_devices(node) == {pod.interface for pod in topology.pods.values()}
    else:
        assert "flowtable" not in listing and "flow add" not in listing
    # New flows: the denied source stays denied, everything else (allowed TCP) works.
    matrix.check(matrix_of({("a", "b")}))

    # An established c -> b flow (offloaded when the kernel can) survives a policy that starts
    # denying c, while a new c -> b connection is refused.
    listener = netns.echo_server(topology.pods["b"].name, 8080)
    try:
        with netns.enter(topology.pods["c"].name):
            client = socket.create_connection((PODS["b"], 8080), timeout=2)
        with client:
            for round_trip in range(5):
                client.sendall(b"before%d" % round_trip)
                assert client.recv(64) == b"before%d" % round_trip
            deny_ac = deny_from("deny-a", "a", "c")
            node.send(*deny_ac)
            for round_trip in range(20):
                client.sendall(b"after%d" % round_trip)
                assert client.recv(64) == b"after%d" % round_trip
        matrix.check(matrix_of({("a", "b"), ("c", "b")}))
    finally:
        listener.close()


def test_flowtable_devices_follow_workloads(offload_node: Node, topology: netns.Topology) -> None:
    if not kernel_has_flowtables(topology):
        pytest.skip("kernel without nftables flowtables (CONFIG_NF_FLOW_TABLE unset)")
    node = offload_node
    node.start()
    interfaces = {key: pod.interface for key, pod in topology.pods.items()}
    assert flowtable_devices(node) == set(interfaces.values())
    report = node.send(m.WorkloadEndpointRemove(node.workload("c").id))
    assert report is not None and not report.nft_full  # removed incrementally
    assert flowtable_devices(node) == {interfaces["a"], interfaces["b"]}
    report = node.send(node.workload("c"))
    assert report is not None and not report.nft_full
    assert flowtable_devices(node) == set(interfaces.values())


def test_offload_off_by_default_leaves_no_flowtable(node: Node) -> None:
    node.start()
    assert node.dataplane.flowtable_offload is False
    listing = node.nft("list", "table", "inet", "calico")
    assert "flowtable" not in listing and "flow add" not in listing

"""``calicoctl explain`` for a host endpoint against real Felix: its verdicts are the packets'.

Real etcd, ``calico-felix`` in a node namespace (the fixtures of ``test_felix_daemon``) whose
``eth1`` leads to an "outside" namespace and is a HostEndpoint, with a normal policy (allow
8080 and 8082, deny the rest), a pre-DNAT policy (deny 8082), an untracked policy (allow 8083
in, and its replies out), and the default failsafe ports; then ``calicoctl explain -o json``
for probes from outside to the host (allow, deny, failsafe, pre-DNAT deny, untracked allow),
from outside through the host to a pod, and from a pod to its own host (DefaultEndpointToHost
Action); each must be delivered exactly when explain said "allow".  Requires root (~15 s).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from tests.integration.felix.test_felix_daemon import RELAY_PORT, FelixProcess, check, felix

from pycalico.datastore.etcd import EtcdKVStore
from pycalico.testing import felix_calc as build
from pycalico.testing import netns
from pycalico.testing.calicoctl import Calicoctl
from pycalico.testing.connectivity import ConnectivityChecker, Endpoint, Probe
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.felix_world import pod_workload, put
from pycalico.testing.netns_fabric import EtcdRelay

pytestmark = pytest.mark.root
# felix (a fixture) and RELAY_PORT (which the conftest's world reads) come from test_felix_daemon.
__all__ = ["RELAY_PORT", "felix"]

PODS = {"a": "10.66.0.1"}  # the conftest's world reads it
NODE_IP = "192.168.77.1"
OUTSIDE_IP = "192.168.77.2"
HOST = {"host": "yes"}
SELECTOR = "host == 'yes'"


def tcp_in(action: str, *ports: int) -> dict[str, object]:
    return {"action": action, "protocol": "TCP", "destination": {"ports": list(ports)}}


POLICIES = [
    build.global_policy("hep-normal", selector=SELECTOR, types=["Ingress"],
                        ingress=[tcp_in("Allow", 8080, 8082), {"action": "Deny"}]),
    build.global_policy("hep-pre-dnat", selector=SELECTOR, types=["Ingress"], preDNAT=True,
                        applyOnForward=True, ingress=[tcp_in("Deny", 8082)]),
    build.global_policy("hep-untracked", selector=SELECTOR, types=["Ingress", "Egress"],
                        doNotTrack=True, applyOnForward=True, ingress=[tcp_in("Allow", 8083)],
                        egress=[{"action": "Allow", "protocol": "TCP",
                                 "source": {"ports": [8083]}}]),
]  # fmt: skip
PROBES = {  # probe -> (explain --from, --to)
    Probe("out", "node", 8080): (OUTSIDE_IP, NODE_IP),  # normal policy allows
    Probe("out", "node", 8081): (OUTSIDE_IP, "hostendpoint/node-eth1"),  # normal policy denies
    Probe("out", "node", 22): (OUTSIDE_IP, NODE_IP),  # failsafe despite the deny
    Probe("out", "node", 8082): (OUTSIDE_IP, NODE_IP),  # pre-DNAT denies what normal allows
    Probe("out", "node", 8083): (OUTSIDE_IP, NODE_IP),  # untracked allows what normal denies
    Probe("out", "a", 80): (OUTSIDE_IP, "default/pod-a"),  # forwarded: no applyOnForward
    Probe("a", "node", 8080): ("default/pod-a", NODE_IP),  # DefaultEndpointToHostAction Drop
}


@pytest.fixture(scope="module")
def outside(world: tuple[netns.Topology, EtcdRelay]) -> netns.Pod:
    """The outside namespace on the node's eth1 (removed with the world's namespaces)."""
    return world[0].add_outside("out", "eth1", NODE_IP, OUTSIDE_IP)


@pytest.fixture
def checker(
    world: tuple[netns.Topology, EtcdRelay], outside: netns.Pod
) -> Iterator[ConnectivityChecker]:
    topo = world[0]
    checker = ConnectivityChecker(
        {
            "out": Endpoint(outside.name, OUTSIDE_IP),
            "node": Endpoint(topo.node, NODE_IP),
            "a": Endpoint(topo.pods["a"].name, PODS["a"]),
        }
    )
    try:
        checker.serve(["node"], tcp_ports=(22, 8080, 8081, 8082, 8083))
        checker.serve(["a"], tcp_ports=(80,))
        yield checker
    finally:
        checker.stop()


def explained(calicoctl: Calicoctl, ends: tuple[str, str], port: int) -> dict[str, object]:
    args = ["explain", "--from", ends[0], "--to", ends[1], "--port", str(port), "-o", "json"]
    answer: dict[str, object] = json.loads(calicoctl.ok(*args))
    return answer


async def test_host_endpoint_verdicts_are_what_the_packets_do(
    kv: EtcdKVStore,
    etcd_server: EtcdServer,
    world: tuple[netns.Topology, EtcdRelay],
    checker: ConnectivityChecker,
    felix: FelixProcess,
) -> None:
    topo, _ = world
    await put(kv, build.namespace_profile("default"))
    await put(kv, pod_workload(topo, "a", PODS["a"], node=felix.hostname))
    hep = build.host_endpoint(
        "node-eth1", node=felix.hostname, labels=HOST, interface="eth1", ips=[NODE_IP]
    )
    await put(kv, hep)
    for resource in POLICIES:
        await put(kv, resource)
    calicoctl = Calicoctl(etcd_server.endpoint)
    answers = {
        probe: await asyncio.to_thread(explained, calicoctl, ends, probe.port)
        for probe, ends in PROBES.items()
    }
    expected = {probe: answer["verdict"] == "allow" for probe, answer in answers.items()}
    # explain's own answers are the ones the policies were written for ...
    assert expected == {
        Probe("out", "node", 8080): True,
        Probe("out", "node", 8081): False,
        Probe("out", "node", 22): True,
        Probe("out", "node", 8082): False,
        Probe("out", "node", 8083): True,
        Probe("out", "a", 80): True,
        Probe("a", "node", 8080): False,
    }, answers
    stages = {
        probe: [s["stage"] for s in answer["ingress"]["stages"]]  # type: ignore[index]
        for probe, answer in answers.items()
    }
    assert stages[Probe("out", "node", 8082)] == ["untracked", "preDNAT"]
    assert stages[Probe("out", "node", 8083)] == ["untracked"]
    assert stages[Probe("a", "node", 8080)] == ["workload-to-host"]
    # ... and the kernel, programmed by Felix, does what explain said.
    felix.start()
    await asyncio.to_thread(felix.wait_ready)
    await check(felix, checker, expected, 10.0)

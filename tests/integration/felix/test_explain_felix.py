"""``calicoctl explain`` against real Felix: its verdicts are what the packets do.

Real etcd, ``calico-felix`` as a process in a node namespace with three pods (the fixtures of
``test_felix_daemon``), policies with tiers, Pass, egress nets and ports; then the installed
``calicoctl explain -o json`` for a handful of probes, and the probes sent: each must be
delivered exactly when explain said "allow".  Requires root (about 15 s).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from tests.integration.felix.test_felix_daemon import (
    PODS,
    RELAY_PORT,
    SCENARIO_PODS,
    FelixProcess,
    check,
    felix,
    workload,
)

from pycalico.datastore.etcd import EtcdKVStore
from pycalico.testing import felix_calc as build
from pycalico.testing import netns
from pycalico.testing.calicoctl import Calicoctl
from pycalico.testing.connectivity import Probe
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.felix_world import put, serving
from pycalico.testing.netns_fabric import EtcdRelay

pytestmark = pytest.mark.root
# felix (a fixture) and RELAY_PORT (which the conftest's world reads) come from test_felix_daemon.
__all__ = ["RELAY_PORT", "felix"]

POLICIES = [
    build.tier("security", order=100),
    build.global_policy("security.pass-clients", tier="security", selector="role == 'web'",
                        ingress=[{"action": "Pass", "source": {"selector": "role == 'client'"}},
                                 {"action": "Deny"}]),
    build.policy("knp.default.web-80", namespace="default", selector="role == 'web'",
                 types=["Ingress"],
                 ingress=[{"action": "Allow", "protocol": "TCP", "destination": {"ports": [80]}}]),
    build.global_policy("attacker-egress", selector="role == 'attacker'", types=["Egress"],
                        egress=[{"action": "Allow", "destination": {"nets": ["10.66.0.2/32"]}}]),
]  # fmt: skip
PROBES = [
    Probe("c", "b", 80),
    Probe("c", "b", 81),
    Probe("c", "b", 53, "udp"),
    Probe("a", "b", 80),
    Probe("a", "c", 80),
    Probe("c", "a", 80),
    Probe("b", "c", 0, "icmp"),
]


def explained(calicoctl: Calicoctl, probe: Probe) -> bool:
    def end(key: str) -> str:
        return f"{SCENARIO_PODS[key][0]}/pod-{key}"

    args = ["explain", "--from", end(probe.source), "--to", end(probe.destination)]
    args += ["--protocol", probe.protocol.upper(), "-o", "json"]
    if probe.protocol != "icmp":
        args += ["--port", str(probe.port)]
    answer = json.loads(calicoctl.ok(*args))
    return bool(answer["verdict"] == "allow")


async def test_explain_verdicts_are_what_the_packets_do(
    kv: EtcdKVStore,
    etcd_server: EtcdServer,
    world: tuple[netns.Topology, EtcdRelay],
    felix: FelixProcess,
) -> None:
    topo, _ = world
    await put(kv, build.namespace_profile("default"))
    await put(kv, build.namespace_profile("other"))
    for key, (namespace, labels) in SCENARIO_PODS.items():
        await put(kv, workload(topo, key, namespace=namespace, node=felix.hostname, labels=labels))
    for resource in POLICIES:
        await put(kv, resource)
    calicoctl = Calicoctl(etcd_server.endpoint)
    expected = {probe: await asyncio.to_thread(explained, calicoctl, probe) for probe in PROBES}
    assert set(expected.values()) == {True, False}, expected  # both verdicts are exercised
    assert expected[Probe("c", "b", 80)] and not expected[Probe("a", "c", 80)]
    with serving(topo, PODS, tcp_ports=(80, 81)) as checker:
        felix.start()
        await asyncio.to_thread(felix.wait_ready)
        await check(felix, checker, expected, 10.0)

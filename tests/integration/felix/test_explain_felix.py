"""``calicoctl explain`` against real Felix: its verdicts are what the packets do.

Real etcd, ``calico-felix`` as a process in a node namespace with three pods (the fixtures of
``test_felix_daemon``), policies with tiers, Pass, egress nets and ports; then the installed
``calicoctl explain -o json`` for a handful of probes, and the probes sent: each must be
delivered exactly when explain said "allow".  Then every scenario of ``test_felix_daemon``'s
policy matrix, all 24 probes each: the packets do what the scenario says, explain's verdict is
the same, and ``--verify`` (in process, plus the installed command for a few probes) finds the
kernel deciding each side with the rule explain named.  Requires root (about 40 s).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from pathlib import Path

import pytest
from tests.integration.felix.test_felix_daemon import (
    ALL_PROBES,
    PODS,
    RELAY_PORT,
    SCENARIO_PODS,
    SCENARIOS,
    FelixProcess,
    check,
    expect,
    felix,
    put_scenario_pods,
)

from pycalico.ctl.explain import load_cluster
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.felix.calc import key_of
from pycalico.felix.calc.explain import Cluster
from pycalico.testing import doc_blocks, netns
from pycalico.testing import felix_calc as build
from pycalico.testing.calicoctl import Calicoctl
from pycalico.testing.connectivity import Probe
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.explain_check import explained_and_verified
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


def end(key: str) -> str:
    return f"{SCENARIO_PODS[key][0]}/pod-{key}"


def explain_args(probe: Probe) -> list[str]:
    args = ["explain", "--from", end(probe.source), "--to", end(probe.destination)]
    args += ["--protocol", probe.protocol.upper()]
    return args + ([] if probe.protocol == "icmp" else ["--port", str(probe.port)])


def explained(calicoctl: Calicoctl, probe: Probe) -> bool:
    answer = json.loads(calicoctl.ok(*explain_args(probe), "-o", "json"))
    return bool(answer["verdict"] == "allow")


def check_the_command(calicoctl: Calicoctl, node: str) -> None:
    """``calicoctl explain --verify`` prints docs/explain.md's example, and its json agrees."""
    start = time.monotonic()
    done = calicoctl(*explain_args(Probe("a", "b", 80)), "--verify")
    print(f"calicoctl explain --verify (the process, a denied TCP probe): "
          f"{time.monotonic() - start:.2f} s")  # fmt: skip
    assert done.returncode == 0, done.stderr
    docs = (Path(__file__).parents[3] / "docs" / "explain.md").read_text()
    example = next(b for b in doc_blocks.parse("docs/explain.md", docs)
                   if b.language == "text" and b.text.startswith("Verify ("))  # fmt: skip
    mismatch = doc_blocks.output_mismatch(example.text, done.stdout.replace(node, "node-a"))
    assert mismatch is None, f"{mismatch}\n{done.stdout}"
    out = calicoctl.ok(*explain_args(Probe("c", "b", 80)), "--verify", "-o", "json")
    answer = json.loads(out)["verify"]
    assert answer["agrees"] and answer["answered"], answer
    ingress = answer["ingress"]
    assert (ingress["kernel"], ingress["agrees"]) == ("allow", True), answer
    assert ingress["kernelDecision"]["owner"].endswith("web-80"), answer


def verified(cluster: Cluster, probe: Probe, delivered: bool, seconds: list[float]) -> str:
    port = None if probe.protocol == "icmp" else probe.port
    start = time.monotonic()
    try:
        return explained_and_verified(
            cluster, end(probe.source), end(probe.destination), probe.protocol, port, delivered
        )
    finally:
        seconds.append(time.monotonic() - start)


async def test_explain_verdicts_are_what_the_packets_do(
    kv: EtcdKVStore,
    etcd_server: EtcdServer,
    world: tuple[netns.Topology, EtcdRelay],
    felix: FelixProcess,
) -> None:
    topo, _ = world
    await put_scenario_pods(kv, topo, felix)
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


async def test_explain_verify_agrees_with_the_kernel_in_every_policy_scenario(
    kv: EtcdKVStore,
    etcd_server: EtcdServer,
    world: tuple[netns.Topology, EtcdRelay],
    felix: FelixProcess,
) -> None:
    topo, _ = world
    await put_scenario_pods(kv, topo, felix)
    calicoctl = Calicoctl(etcd_server.endpoint)
    with serving(topo, PODS, tcp_ports=(80, 81)) as checker:
        felix.start()
        await asyncio.to_thread(felix.wait_ready)
        seconds: list[float] = []
        for name, resources, blocked in [("no policy", [], lambda p: False), *SCENARIOS]:
            for resource in resources:
                await put(kv, resource)
            expected = expect(blocked)
            await check(felix, checker, expected, 3.0)  # the packets do what the scenario says
            cluster = await load_cluster(ResourceStore(kv))
            wrong = [
                problem
                for probe in ALL_PROBES
                if (problem := await asyncio.to_thread(
                    verified, cluster, probe, expected[probe], seconds))
            ]  # fmt: skip
            assert not wrong, f"scenario {name!r}:\n" + "\n".join(wrong)
            if name == "Pass to the next tier":  # the installed command: docs, json, status
                check_the_command(calicoctl, felix.hostname)
            for resource in reversed(resources):
                await kv.delete(key_of(resource))
    print(f"explain + verify in process: {len(seconds)} probes, median "
          f"{statistics.median(seconds) * 1000:.0f} ms, max {max(seconds) * 1000:.0f} ms")  # fmt: skip

"""Flow logs and rule counters end to end: real etcd, ``calico-felix`` in a node namespace, packets.

A Deny rule drops a real TCP SYN from pod ``a`` to pod ``b``; the test then reads the record
with ``calicoctl flows --denied`` (within 2 s of the packet, naming the policy and the rule) and
the rule's Prometheus counter from Felix's ``/metrics``.  Requires root.
"""

from __future__ import annotations

import asyncio
import json
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
from click.testing import CliRunner

from pycalico.ctl.main import cli
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.felix import messages as m
from pycalico.felix.dataplane.loop import DataplaneOptions
from pycalico.felix.rules.model import RenderConfig
from pycalico.testing import felix_calc as build
from pycalico.testing import netns
from pycalico.testing.felix_world import put
from pycalico.testing.netns_fabric import EtcdRelay

from .conftest import Node
from .test_felix_daemon import LABELS, PODS, FelixProcess, write_pods

pytestmark = pytest.mark.root

RELAY_PORT = 23791
DENY_ATTACKER = build.global_policy(
    "deny-attacker",
    selector="all()",
    ingress=[{"action": "Deny", "source": {"selector": "role == 'attacker'"}}, {"action": "Allow"}],
)
assert LABELS["a"] == {"role": "attacker"}


@pytest.fixture
def flow_dir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="felix-flows-") as directory:
        yield directory


@pytest.fixture
def felix(world: tuple[netns.Topology, EtcdRelay], flow_dir: str) -> Iterator[FelixProcess]:
    topo, _ = world
    process = FelixProcess(topo.node, f"felix-{topo.tag}", RELAY_PORT)
    process.env.update(
        FELIX_FLOWLOGSFILEENABLED="true",
        FELIX_FLOWLOGSFILEDIRECTORY=flow_dir,
        FELIX_POLICYRULECOUNTERSENABLED="true",
        FELIX_POLICYRULECOUNTERSINTERVAL="0.5",
    )
    try:
        yield process
    finally:
        process.cleanup()
        netns.netns_run(topo.node, "nft", "delete", "table", "inet", "calico", check=False)
        netns.netns_run(topo.node, "ip", "route", "flush", "proto", "80", check=False)


def send_syn(topo: netns.Topology, src: str, dst: str, port: int) -> None:
    """One TCP SYN from pod ``src`` to pod ``dst`` (the socket is closed right after)."""
    with netns.enter(topo.pods[src].name):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.setblocking(False)
        # The SYN is handed to the pod's veth inside connect(); the close then sends nothing.
        sock.connect_ex((topo.pods[dst].ipv4, port))


def denied_records(flow_dir: str) -> list[dict[str, object]]:
    result = CliRunner().invoke(cli, ["flows", "--denied", "-o", "json", "--directory", flow_dir])
    if result.exit_code != 0:
        return []
    return [json.loads(line) for line in result.output.splitlines() if line.strip()]


def rule_packets(felix: FelixProcess, policy: str, index: int) -> float:
    _code, body = felix.http(felix.metrics_port, "/metrics")
    total = 0.0
    for line in body.splitlines():
        if line.startswith("felix_policy_rule_packets_total{") and (
            f'policy="{policy}"' in line and f'rule_index="{index}"' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_denied_probe_is_logged_within_2s_and_counted(
    kv: EtcdKVStore,
    world: tuple[netns.Topology, EtcdRelay],
    felix: FelixProcess,
    flow_dir: str,
) -> None:
    topo, _ = world
    await write_pods(kv, topo, felix.hostname)
    await put(kv, DENY_ATTACKER)
    felix.start()
    await asyncio.to_thread(felix.wait_ready)
    assert rule_packets(felix, "deny-attacker", 0) == 0

    sent = time.monotonic()
    await asyncio.to_thread(send_syn, topo, "a", "b", 80)
    record = None
    while time.monotonic() - sent < 2.0 and record is None:
        for candidate in denied_records(flow_dir):
            if candidate.get("policy") == "deny-attacker":
                record = candidate
        await asyncio.sleep(0.05)
    assert record is not None, f"no denied record within 2 s\n{felix.tail(40)}"
    assert record["source_ip"] == PODS["a"] and record["destination_ip"] == PODS["b"]
    assert record["tier"] == "default" and record["rule_index"] == 0
    assert record["direction"] == "ingress" and record["destination_port"] == 80
    assert str(record["destination_endpoint"]).endswith("pod-b")

    deadline = time.monotonic() + 5.0
    while rule_packets(felix, "deny-attacker", 0) < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert rule_packets(felix, "deny-attacker", 0) >= 1, felix.tail(40)
    assert felix.stop() == 0, felix.tail()


def test_counters_and_deny_logs_of_every_rule_form_are_accepted_by_the_kernel(
    topology: netns.Topology,
) -> None:
    """Counters and rate-limited logs on each match kind, end-of-tier and no-profile drops,
    loaded into the real nft (in-process dataplane, node namespace of ``conftest.topology``)."""
    render = RenderConfig(rule_counters=True, deny_log_group=11, deny_log_rate="10/second")
    node = Node(topology, DataplaneOptions(render=render))
    ports = (m.PortRange(80, 80), m.PortRange(1000, 2000))
    forms = (
        m.ResolvedRule("allow", protocol="tcp", destination_ports=ports, source_ports=ports),
        m.ResolvedRule("deny", protocol="udp", not_destination_ports=ports),
        m.ResolvedRule("deny", protocol="icmp", icmp_type=8, icmp_code=0),
        m.ResolvedRule("deny", source_nets=("10.0.0.0/8", "fd00::/8"), ip_version=4),
        m.ResolvedRule("deny", source_ip_set_ids=("s:x",)),
        m.ResolvedRule("log", log_prefix="calico-packet"),
        m.ResolvedRule("pass", ip_version=6),
    )
    rules = tuple(replace(rule, rule_id=f"form{i:012d}") for i, rule in enumerate(forms))
    policy = m.PolicyID("default", "every-form")
    node.start(
        m.IPSetUpdate("s:x", m.IPSetType.IP, frozenset({"10.65.0.1/32", "fd00:65::1/128"})),
        m.ActivePolicyUpdate(policy, rules, rules),
        tiers={"b": (m.TierInfo("default", "deny", (policy,), (policy,)),)},
    )
    assert node.dataplane.nft.last is not None and node.dataplane.nft.failures == 0
    listing = node.nft("list", "table", "inet", "calico")
    assert 'log prefix "cali-deny:form000000000001" group 11' in listing
    assert 'log prefix "cali-eot:i:default" group 11' in listing
    assert 'log prefix "cali-nop:o" group 11' in listing
    assert listing.count("counter packets") >= len(forms)

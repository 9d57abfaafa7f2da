"""Flow logs and rule counters: rendering, naming, NFLOG parsing, deltas, records, the CLI.

Pure: the fake kernel stands in for nftables; NFLOG messages are built byte by byte.
"""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from pycalico.ctl.main import cli
from pycalico.felix import config as felix_config
from pycalico.felix import messages as m
from pycalico.felix.dataplane.flows import FlowLogs
from pycalico.felix.dataplane.loop import Dataplane, DataplaneOptions
from pycalico.felix.rules import flows, names
from pycalico.felix.rules.model import RenderConfig
from pycalico.felix.rules.policy import render_rules
from pycalico.testing.fake_kernel import FakeKernel

POLICY = m.PolicyID("default", "deny-attacker")
DENY = m.ResolvedRule("deny", source_nets=("10.65.0.1/32",), rule_id="R0deny0000000000")
ALLOW = m.ResolvedRule("allow", rule_id="R1allow000000000")
ON = RenderConfig(rule_counters=True, deny_log_group=11, deny_log_rate="5/second")


def test_off_by_default_the_rules_are_unchanged() -> None:
    rules = render_rules((DENY, ALLOW), RenderConfig())
    assert all("counter" not in rule and "log" not in rule for rule in rules)


def test_counters_on_every_rule_and_a_rate_limited_log_before_each_deny() -> None:
    rules = render_rules((DENY, ALLOW), ON)
    assert rules == (
        "meta nfproto ipv4 ip saddr 10.65.0.1 limit rate 5/second log prefix "
        '"cali-deny:R0deny0000000000" group 11',
        'meta nfproto ipv4 ip saddr 10.65.0.1 counter drop comment "cali:R0deny0000000000"',
        f"counter meta mark set meta mark | {names.MARK_ACCEPT:#x} return "
        'comment "cali:R1allow000000000"',
    )


def test_felix_config_switches_render_the_statements() -> None:
    config = felix_config.load(
        {"FlowLogsFileEnabled": "true", "PolicyRuleCountersEnabled": "true"}, {}, {}
    )
    render = config.render()
    assert render.rule_counters and render.deny_log_group == 11
    assert config.flow_logs_file_directory == "/var/log/calico/flows"
    off = felix_config.load(None, {}, {}).render()
    assert not off.rule_counters and off.deny_log_group == 0


def test_end_of_tier_and_no_profile_drops_are_logged_in_the_fake_kernel() -> None:
    kernel = FakeKernel()
    kernel.links.add("calia")
    dataplane = Dataplane(
        DataplaneOptions(render=ON), kernel.nft, kernel.routes, kernel.sysctls, kernel.conntrack
    )
    tier = m.TierInfo("default", "deny", (POLICY,), ())
    endpoint = m.WorkloadEndpointUpdate(
        m.WorkloadEndpointID("k8s", "default/a", "eth0"), "calia", "", ("10.65.0.2/32",), (),
        (m.ProfileID("kns.default"),), (tier,),
    )  # fmt: skip
    dataplane.on_updates(
        [
            m.ActiveProfileUpdate(m.ProfileID("kns.default"), (ALLOW,), (ALLOW,)),
            m.ActivePolicyUpdate(POLICY, (DENY, ALLOW), ()),
            endpoint,
            m.InSync(),
        ]
    )
    dataplane.apply()
    table = kernel.nft.table()
    ingress = table.chains[names.to_workload_chain("calia")]
    assert any('log prefix "cali-eot:i:default" group 11' in rule for rule in ingress)
    assert any('log prefix "cali-nop:i" group 11' in rule for rule in ingress)
    policy_rules = table.chains[names.policy_chain(POLICY, inbound=True)]
    assert any("counter drop" in rule for rule in policy_rules)


def _index() -> flows.RuleIndex:
    index = flows.RuleIndex()
    index.observe(
        [
            m.ActivePolicyUpdate(POLICY, (DENY, ALLOW), ()),
            m.WorkloadEndpointUpdate(
                m.WorkloadEndpointID("k8s", "default/b", "eth0"),
                "calib",
                "",
                ("10.65.0.2/32",),
                (),
                (),
                (),
            ),
        ]
    )
    return index


def test_rule_index_names_rules_tiers_and_endpoints_and_forgets_removed_ones() -> None:
    index = _index()
    identity = index.identify(flows.log_prefix_for_rule(DENY.rule_id))
    assert identity == flows.RuleIdentity(
        "GlobalNetworkPolicy", "default", "deny-attacker", "ingress", 0, "deny"
    )
    assert index.identify("cali-eot:o:security") == flows.RuleIdentity(
        "EndOfTier", "security", "", "egress", -1
    )
    assert index.identify("cali-nop:i") == flows.RuleIdentity("NoProfile", "", "", "ingress", -1)
    assert index.identify("someone-else") is None
    assert index.endpoints == {"10.65.0.2": "default/b"}
    index.observe([m.ActivePolicyRemove(POLICY)])
    assert index.rule(DENY.rule_id) is None


def _ipv4_tcp(source: str, destination: str, sport: int, dport: int) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0,
        socket.inet_aton(source), socket.inet_aton(destination),
    )  # fmt: skip
    return header + struct.pack("!HHIIHHHH", sport, dport, 0, 0, 0x5002, 0, 0, 0)


def _attribute(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def nflog_message(prefix: str, payload: bytes, indev: int = 7) -> bytes:
    body = struct.pack("!BBH", socket.AF_INET, 0, 11)
    body += _attribute(flows.NFULA_PACKET_HDR, struct.pack("!HBx", 0x0800, 1))
    body += _attribute(flows.NFULA_IFINDEX_INDEV, struct.pack("!I", indev))
    body += _attribute(flows.NFULA_PREFIX, prefix.encode() + b"\0")
    body += _attribute(flows.NFULA_PAYLOAD, payload)
    return struct.pack("=IHHII", 16 + len(body), flows.NFNL_SUBSYS_ULOG << 8, 0, 0, 0) + body


def test_nflog_datagram_becomes_a_record_naming_policy_rule_and_endpoints() -> None:
    datagram = nflog_message(
        flows.log_prefix_for_rule(DENY.rule_id), _ipv4_tcp("10.65.0.1", "10.65.0.2", 40000, 80)
    ) + nflog_message("cali-eot:i:default", _ipv4_tcp("10.65.0.3", "10.65.0.2", 1, 81))
    packets = flows.parse_nflog(datagram)
    assert [p.prefix for p in packets] == ["cali-deny:R0deny0000000000", "cali-eot:i:default"]
    assert packets[0].indev == 7
    record = flows.denied_record(packets[0], _index(), "node-1", 12.5)
    assert record == {
        "time": 12.5, "node": "node-1", "action": "deny",
        "source_ip": "10.65.0.1", "source_endpoint": "", "destination_ip": "10.65.0.2",
        "destination_endpoint": "default/b", "protocol": "TCP", "source_port": 40000,
        "destination_port": 80, "kind": "GlobalNetworkPolicy", "tier": "default",
        "policy": "deny-attacker", "direction": "ingress", "rule_index": 0,
    }  # fmt: skip
    assert flows.denied_record(flows.NflogPacket("ulogd", 0, 0, b""), _index(), "n", 0) is None


def test_config_message_binds_the_group_and_asks_for_an_ack() -> None:
    message = flows.config_message(11, flows.NFULNL_CFG_CMD_BIND, 1)
    length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", message)
    assert (length, kind, flags, seq) == (len(message), 0x0401, 5, 1)
    assert struct.unpack_from("!H", message, 18) == (11,)
    error = struct.pack("=IHHII", 36, flows.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -16)
    assert flows.netlink_error(error + b"\0" * 16) == -16


def _listing(*rules: tuple[str, int, str, int, int]) -> dict[str, object]:
    items: list[object] = [{"metainfo": {}}, {"table": {"name": "calico"}}]
    for chain, handle, comment, packets, octets in rules:
        expr = [{"counter": {"packets": packets, "bytes": octets}}, {"drop": None}]
        items.append({"rule": {"chain": chain, "handle": handle, "comment": comment, "expr": expr}})
    return {"nftables": items}


def test_counter_deltas_survive_rewritten_chains_and_ignore_other_chains() -> None:
    chain = names.policy_chain(POLICY, inbound=True)
    deltas = flows.CounterDeltas()
    first = flows.counter_samples(
        _listing((chain, 5, "cali:A", 3, 300), (chain, 6, "cali:A", 1, 100),
                 ("cali-tw-calia", 9, "cali:X", 50, 5000), (chain, 7, "Failsafe", 9, 9))
    )  # fmt: skip
    assert deltas.update(first) == {"A": (4, 400)}
    assert deltas.update(flows.counter_samples(_listing((chain, 5, "cali:A", 5, 500)))) == {
        "A": (2, 200)
    }
    # The chain was rewritten: new handle, counting from zero again.
    rewritten = flows.counter_samples(_listing((chain, 12, "cali:A", 1, 60)))
    assert deltas.update(rewritten) == {"A": (1, 60)}
    assert deltas.update(rewritten) == {}


def test_flow_logs_export_metrics_and_append_records(tmp_path: Path) -> None:
    logs = FlowLogs("node-1", directory=str(tmp_path))
    logs.observe([m.ActivePolicyUpdate(POLICY, (DENY, ALLOW), ())])
    chain = names.policy_chain(POLICY, inbound=True)
    logs.add_counts(flows.counter_samples(_listing((chain, 5, f"cali:{DENY.rule_id}", 2, 120))))
    labels = {
        "kind": "GlobalNetworkPolicy", "tier": "default", "policy": "deny-attacker",
        "direction": "ingress", "rule_index": "0", "action": "deny",
    }  # fmt: skip
    assert logs.packets.labels(**labels)._value.get() == 2
    assert logs.bytes.labels(**labels)._value.get() == 120
    with open(logs.path, "a", encoding="utf-8") as handle:
        logs._file = handle
        packet = flows.NflogPacket(
            flows.log_prefix_for_rule(DENY.rule_id), 0, 0,
            _ipv4_tcp("10.65.0.1", "10.65.0.2", 1234, 80),
        )  # fmt: skip
        logs.write([packet], 1.0)
        logs._file = None
    (line,) = (tmp_path / "denied.jsonl").read_text().splitlines()
    assert json.loads(line)["policy"] == "deny-attacker"


def test_calicoctl_flows_prints_denied_records_of_a_node(tmp_path: Path) -> None:
    node_dir = tmp_path / "node-1"
    node_dir.mkdir()
    record = {
        "time": 0, "node": "node-1", "action": "deny", "source_ip": "10.65.0.1",
        "source_endpoint": "default/a", "destination_ip": "10.65.0.2",
        "destination_endpoint": "default/b", "protocol": "TCP", "destination_port": 80,
        "kind": "GlobalNetworkPolicy", "tier": "default", "policy": "deny-attacker",
        "direction": "ingress", "rule_index": 0,
    }  # fmt: skip
    (node_dir / "denied.jsonl").write_text(json.dumps(record) + "\n" + '{"partial')
    result = CliRunner().invoke(
        cli, ["flows", "--denied", "--node", "node-1", "--directory", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    header, row = result.output.splitlines()
    assert header.startswith("TIME")
    assert "default/a(10.65.0.1)" in row and "default/deny-attacker" in row
    assert "ingress[0]" in row
    missing = CliRunner().invoke(cli, ["flows", "--directory", str(tmp_path / "none")])
    assert missing.exit_code == 1 and "flowLogsFileEnabled" in missing.output


@pytest.mark.parametrize("payload", [b"", b"\x60" + b"\0" * 10, b"\x10" * 30])
def test_short_or_foreign_payloads_have_no_header(payload: bytes) -> None:
    assert flows.parse_ip_packet(payload) is None


def test_follow_yields_lines_as_they_are_completed(tmp_path: Path) -> None:
    from pycalico.ctl.flows import _lines

    path = tmp_path / "denied.jsonl"
    lines = _lines(str(path), follow=True)  # the file does not exist yet: it waits for it
    path.write_text('{"n": 1}\n{"n": ')
    assert next(lines) == '{"n": 1}'
    with path.open("a") as handle:
        handle.write("2}\n")
    assert next(lines) == '{"n": 2}'

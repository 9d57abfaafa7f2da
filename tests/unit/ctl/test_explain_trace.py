"""``explain_trace``: decoding the kernel's nftables trace events and naming the deciding rule.

``data/nftrace-forward-drop.bin`` is one netlink read captured from a 6.x kernel: a TCP SYN
marked by a prerouting ``meta nftrace set 1`` rule (table ``pv``), then forwarded through
``inet calico``'s ``filter-FORWARD`` into ``cali-po-x``, where a rule (handle 3) drops it.
The walk through Felix's chain layout is checked on event sequences in that layout.
"""

from __future__ import annotations

from pathlib import Path

from pycalico.ctl.explain_trace import (
    Decision,
    KernelRule,
    Owner,
    TraceEvent,
    agrees,
    decide,
    expected,
    kernel_rules,
    parse_trace,
)
from pycalico.ctl.explain_verify import _icmp_echo, probe_match
from pycalico.felix.calc.explain import End, Explanation, make_packet
from pycalico.felix.calc.verdicts import Packet, evaluate_direction
from pycalico.felix.messages import PolicyID, ProfileID, ResolvedRule, TierInfo

CAPTURED = (Path(__file__).parent / "data" / "nftrace-forward-drop.bin").read_bytes()


def test_captured_trace_decodes_to_chains_handles_and_verdicts() -> None:
    events = parse_trace(CAPTURED)
    assert len({e.trace_id for e in events}) == 1
    steps = [(e.table, e.chain, e.kind, e.handle, e.verdict, e.target) for e in events]
    assert steps[0] == ("pv", "trace", "rule", 2, "continue", "")
    assert ("pv", "trace", "policy", None, "accept", "") in steps
    assert ("calico", "filter-FORWARD", "rule", 5, "jump", "cali-po-x") in steps
    assert steps[-1] == ("calico", "cali-po-x", "rule", 3, "drop", "")
    first = events[0]
    assert first.network_header[12:16] == bytes([10, 77, 0, 1])  # the probe's source address
    assert int.from_bytes(first.transport_header[:2], "big") == 40000


def test_non_trace_messages_and_truncated_input_are_skipped() -> None:
    assert parse_trace(b"") == []
    assert parse_trace(b"\x10\x00\x00\x00\x02\x00" + b"\x00" * 10) == []
    assert parse_trace(CAPTURED[:10]) == []


def _rule(chain: str, handle: int, verdict: str, target: str = "") -> TraceEvent:
    return TraceEvent(1, "calico", chain, "rule", handle, verdict, target)


RULES = {
    10: KernelRule("cali-fw-calia", "End of tier security. Drop if no policies passed packet"),
    11: KernelRule("cali-tw-calib", "Drop if no profiles matched"),
    12: KernelRule("cali-tw-calib", "Endpoint admin disabled"),
    20: KernelRule("cali-pi-web_x", "cali:id-pass"),
    21: KernelRule("cali-pi-web_x", "cali:id-deny"),
    30: KernelRule("cali-pi-allow_y", "cali:id-allow"),
}
OWNERS = {
    "cali-pi-web_x": Owner(
        "GlobalNetworkPolicy security.web", "policy", {"id-pass": 0, "id-deny": 1}
    ),
    "cali-pi-allow_y": Owner("GlobalNetworkPolicy default.allow", "policy", {"id-allow": 2}),
}


def test_pass_then_allow_in_the_next_tier_names_the_allowing_rule() -> None:
    events = [
        _rule("filter-FORWARD", 1, "jump", "cali-from-wl-dispatch"),
        _rule("cali-from-wl-dispatch", 2, "goto", "cali-fw-calia"),
        _rule("cali-fw-calia", 3, "continue"),
        _rule("cali-fw-calia", 4, "jump", "cali-pro-kns.other"),
        _rule("cali-pro-kns.other", 5, "return"),
        _rule("cali-fw-calia", 6, "return"),
        _rule("filter-FORWARD", 7, "jump", "cali-to-wl-dispatch"),
        _rule("cali-to-wl-dispatch", 8, "goto", "cali-tw-calib"),
        _rule("cali-tw-calib", 9, "jump", "cali-pi-web_x"),
        _rule("cali-pi-web_x", 20, "return"),
        _rule("cali-tw-calib", 13, "jump", "cali-pi-allow_y"),
        _rule("cali-pi-allow_y", 30, "return"),
        _rule("cali-tw-calib", 14, "return"),
    ]
    decided = decide(events, RULES, OWNERS)
    # A chain explain did not name is reported by its chain and comment, never guessed.
    assert decided["cali-fw-calia"] == Decision("allow", "profile", "cali-pro-kns.other", None,
                                                "cali-pro-kns.other")  # fmt: skip
    assert decided["cali-tw-calib"] == Decision(
        "allow", "policy", "GlobalNetworkPolicy default.allow", 2
    )


def test_drops_name_the_rule_the_end_of_tier_or_no_profile() -> None:
    deny = [_rule("cali-tw-calib", 9, "jump", "cali-pi-web_x"), _rule("cali-pi-web_x", 21, "drop")]
    assert decide(deny, RULES, OWNERS)["cali-tw-calib"] == Decision(
        "deny", "policy", "GlobalNetworkPolicy security.web", 1
    )
    end_of_tier = [_rule("cali-fw-calia", 10, "drop")]
    assert decide(end_of_tier, RULES, OWNERS)["cali-fw-calia"] == Decision(
        "deny", "end-of-tier", "security"
    )
    assert decide([_rule("cali-tw-calib", 11, "drop")], RULES, OWNERS)["cali-tw-calib"].kind == (
        "no-profile"
    )
    admin = decide([_rule("cali-tw-calib", 12, "drop")], RULES, OWNERS)["cali-tw-calib"]
    assert (admin.kind, admin.detail) == ("pre-policy", "Endpoint admin disabled")
    established = decide([_rule("cali-tw-calib", 15, "accept")], RULES, OWNERS)
    assert established["cali-tw-calib"].kind == "conntrack"
    # Events of other tables (the verify table) and an unfinished chain decide nothing.
    other = [TraceEvent(1, "pv", "cali-tw-calib", "rule", 1, "drop")]
    assert decide([*other, _rule("cali-tw-calib", 3, "continue")], RULES, OWNERS) == {}


def test_agreement() -> None:
    said = Decision("deny", "policy", "GlobalNetworkPolicy security.web", 1)
    assert agrees(said, said) is True
    assert agrees(said, Decision("deny", "policy", "GlobalNetworkPolicy security.web", 0)) is False
    assert agrees(said, Decision("not reached", "")) is None
    spoof = Decision("deny", "pre-policy", detail="anti-spoofing")
    assert agrees(spoof, Decision("deny", "pre-policy", detail="some drop")) is True


def test_kernel_rules_reads_handles_chains_and_comments() -> None:
    document = {"nftables": [
        {"metainfo": {}},
        {"rule": {"family": "inet", "table": "calico", "chain": "cali-pi-x", "handle": 7,
                  "comment": "cali:abc", "expr": []}},
        {"rule": {"family": "inet", "table": "calico", "chain": "cali-tw-y", "handle": 8,
                  "expr": []}},
    ]}  # fmt: skip
    assert kernel_rules(document) == {
        7: KernelRule("cali-pi-x", "cali:abc"),
        8: KernelRule("cali-tw-y", ""),
    }


def _direction(rules: dict[PolicyID, list[ResolvedRule]], default: str = "deny") -> Decision:
    tiers = [TierInfo("security", "deny", (PASS_OR_DENY,), ()),
             TierInfo("default", default, tuple(p for p in rules if p != PASS_OR_DENY), ())]  # type: ignore[arg-type]  # fmt: skip
    trace = evaluate_direction(
        ingress=True, tiers=tiers, profile_ids=(ProfileID("kns.default"),),
        policy_rules=lambda p: rules.get(p, ()), profile_rules=lambda p: (ResolvedRule("allow"),),
        packet=Packet("10.0.0.1", "10.0.0.2", "tcp", 40000, 80), sets={},
    )  # fmt: skip
    return expected(trace)


PASS_OR_DENY = PolicyID("security", "security.gate")
WEB = PolicyID("default", "default.web")


def test_expected_names_explains_deciding_step() -> None:
    passing = {PASS_OR_DENY: [ResolvedRule("pass")], WEB: [ResolvedRule("deny", protocol="udp"),
                                                           ResolvedRule("allow")]}  # fmt: skip
    assert _direction(passing) == Decision("allow", "policy", "GlobalNetworkPolicy default.web", 1)
    denying = {PASS_OR_DENY: [ResolvedRule("deny")], WEB: []}
    assert _direction(denying) == Decision("deny", "policy", "GlobalNetworkPolicy security.gate", 0)
    nothing = {PASS_OR_DENY: [ResolvedRule("pass")], WEB: [ResolvedRule("log")]}
    assert _direction(nothing) == Decision("deny", "end-of-tier", "default")
    assert _direction(nothing, "pass") == Decision("allow", "profile", "Profile kns.default", 0)


def test_the_probe_rule_matches_exactly_the_explained_packet() -> None:
    def explanation(protocol: str, destination: str = "10.0.0.2") -> Explanation:
        source = "fd00::1" if ":" in destination else "10.0.0.1"
        packet = make_packet(source, destination, protocol, 81)
        return Explanation(End(source), End(destination), packet, None, None)

    assert probe_match(explanation("udp"), 7) == (
        "ip saddr 10.0.0.1 ip daddr 10.0.0.2 meta l4proto udp th sport 40000 th dport 81"
    )
    assert probe_match(explanation("icmp", "fd00::2"), 7) == (
        "ip6 saddr fd00::1 ip6 daddr fd00::2 icmpv6 type echo-request icmpv6 id 7"
    )
    echo = _icmp_echo(0x1234, 4)
    padded = echo + b"\0" * (len(echo) % 2)
    total = sum(int.from_bytes(padded[i : i + 2], "big") for i in range(0, len(padded), 2))
    assert (total & 0xFFFF) + (total >> 16) == 0xFFFF  # a valid ICMP checksum
    assert echo[0] == 8 and echo[4:6] == b"\x12\x34"

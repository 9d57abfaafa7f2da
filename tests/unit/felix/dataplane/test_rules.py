"""Pure rendering: names, rules, endpoint chains, static chains."""

from __future__ import annotations

import pytest

from pycalico.felix import messages as m
from pycalico.felix.rules import endpoints, names, policy, sets
from pycalico.felix.rules.model import RenderConfig

CONFIG = RenderConfig()


def rule(**fields: object) -> m.ResolvedRule:
    return m.ResolvedRule(**fields)  # type: ignore[arg-type]


def test_names_are_prefixed_safe_and_hashed_when_long() -> None:
    assert names.to_workload_chain("cali12345678901") == "cali-tw-cali12345678901"
    long = names.profile_chain(m.ProfileID("x" * 100), inbound=True)
    assert long.startswith("cali-pri-") and len(long) <= names.MAX_NAME
    odd = names.profile_chain(m.ProfileID("ksa.ns.sa:weird name"), inbound=False)
    assert " " not in odd and ":" not in odd
    chain = names.policy_chain(m.PolicyID("default", "fwd"), inbound=True)
    assert chain.startswith("cali-pi-fwd_") and chain != "fwd"
    assert names.ip_set_name("s:abc-_", 4) == "cali40s_abc-_"
    # Deterministic, and distinct for distinct ids.
    assert names.policy_chain(m.PolicyID("t", "p"), True) == names.policy_chain(
        m.PolicyID("t", "p"), True
    )
    assert names.policy_chain(m.PolicyID("t", "p"), True) != names.policy_chain(
        m.PolicyID("t2", "p"), True
    )


@pytest.mark.parametrize(
    ("fields", "v4", "v6"),
    [
        ({"action": "allow"}, ["meta mark set meta mark | 0x10000 return"], None),
        ({"action": "deny"}, ["drop"], None),
        ({"action": "pass"}, ["meta mark set meta mark | 0x20000 return"], None),
        ({"action": "log"}, ['log prefix "calico-packet: "'], None),
        (
            {
                "action": "deny",
                "protocol": "tcp",
                "destination_ports": (m.PortRange(80, 80), m.PortRange(1000, 2000)),
            },
            ["meta l4proto tcp th dport 80 drop", "meta l4proto tcp th dport 1000-2000 drop"],
            None,
        ),
        (
            {"action": "deny", "source_nets": ("10.0.0.0/8", "10.1.0.0/16", "fd00::/8")},
            ["ip saddr 10.0.0.0/8 drop"],
            ["ip6 saddr fd00::/8 drop"],
        ),
        ({"action": "deny", "source_nets": ("10.0.0.0/8",)}, ["ip saddr 10.0.0.0/8 drop"], []),
        (
            {"action": "deny", "not_destination_nets": ("10.0.0.1/32",)},
            ["ip daddr != 10.0.0.1 drop"],
            ["drop"],
        ),
        (
            {"action": "allow", "source_ip_set_ids": ("s:a",), "not_source_ip_set_ids": ("s:b",)},
            ["ip saddr @cali40s_a ip saddr != @cali40s_b meta mark set meta mark | 0x10000 return"],
            None,
        ),
        (
            {"action": "deny", "protocol": "icmp", "icmp_type": 8, "icmp_code": 0},
            ["meta l4proto icmp icmp type 8 icmp code 0 drop"],
            [],
        ),
        (
            {"action": "deny", "protocol": "icmpv6", "icmp_type": 128},
            [],
            ["meta l4proto icmpv6 icmpv6 type 128 drop"],
        ),
        ({"action": "deny", "ip_version": 6}, [], ["drop"]),
        ({"action": "deny", "not_protocol": "udp"}, ["meta l4proto != udp drop"], None),
    ],
)
def test_rule_rendering(fields: dict[str, object], v4: list[str], v6: list[str] | None) -> None:
    resolved = rule(**fields)
    assert policy.render_rule(resolved, 4, CONFIG) == [
        line.replace("0x10000", "0x10000") for line in v4
    ]
    expected_v6 = v6 if v6 is not None else [
        line.replace("ip saddr", "ip6 saddr").replace("@cali40", "@cali60") for line in v4
    ]  # fmt: skip
    assert policy.render_rule(resolved, 6, CONFIG) == expected_v6


def test_numeric_and_named_ports_are_ored_as_separate_rules() -> None:
    resolved = rule(
        action="allow",
        protocol="tcp",
        destination_ports=(m.PortRange(80, 80),),
        destination_named_port_ip_set_ids=("n:http",),
        rule_id="r1",
    )
    lines = policy.render_rule(resolved, 4, CONFIG)
    assert lines == [
        'meta l4proto tcp th dport 80 meta mark set meta mark | 0x10000 return comment "cali:r1"',
        "meta l4proto tcp ip daddr . meta l4proto . th dport @cali40n_http "
        'meta mark set meta mark | 0x10000 return comment "cali:r1"',
    ]


def test_family_neutral_rules_render_once() -> None:
    assert policy.render_rules([rule(action="allow")], CONFIG) == (
        "meta mark set meta mark | 0x10000 return",
    )


def test_family_specific_rules_are_pinned_to_their_family() -> None:
    # notNets of one family: the other family's variant has no address match left, and must
    # still only see its own family.
    assert policy.render_rules(
        [rule(action="allow", not_source_nets=("10.0.0.1/32",))], CONFIG
    ) == (
        "meta nfproto ipv4 ip saddr != 10.0.0.1 meta mark set meta mark | 0x10000 return",
        "meta nfproto ipv6 meta mark set meta mark | 0x10000 return",
    )
    assert policy.render_rules([rule(action="deny", ip_version=6)], CONFIG) == (
        "meta nfproto ipv6 drop",
    )


def test_unknown_protocol_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="bogus"):
        policy.render_rule(rule(action="allow", protocol="bogus"), 4, CONFIG)


def endpoint(**fields: object) -> m.WorkloadEndpointUpdate:
    base: dict[str, object] = {
        "id": m.WorkloadEndpointID("k8s", "ns/pod", "eth0"),
        "interface_name": "cali0123456789a",
        "mac": "",
        "ipv4_nets": ("10.65.0.5/32",),
        "ipv6_nets": ("fd00::5/128",),
        "profile_ids": (m.ProfileID("kns.ns"),),
        "tiers": (),
    }
    base.update(fields)
    return m.WorkloadEndpointUpdate(**base)  # type: ignore[arg-type]


def test_workload_chains_order_conntrack_antispoof_tiers_profiles_drop() -> None:
    pid = m.PolicyID("default", "p")
    skipped = m.PolicyID("empty", "q")
    to_chain, from_chain = endpoints.workload_chains(
        endpoint(
            tiers=(
                m.TierInfo("empty", "deny", (), (skipped,)),
                m.TierInfo("default", "deny", (pid,), ()),
            ),
            allow_spoofed_source_prefixes=("192.168.0.0/24",),
        ),
        CONFIG,
    )
    assert to_chain.name == "cali-tw-cali0123456789a"
    assert to_chain.rules[:3] == (
        "ct state established,related accept",
        "ct state invalid drop",
        "meta mark set meta mark & 0xfffcffff",
    )
    text = "\n".join(to_chain.rules)
    assert names.policy_chain(pid, True) in text
    assert names.policy_chain(skipped, True) not in text  # tier without ingress policy skipped
    assert "End of tier default" in text
    assert to_chain.rules[-1] == 'drop comment "Drop if no profiles matched"'
    assert "jump cali-pri-kns.ns" in text
    egress = "\n".join(from_chain.rules)
    assert "ip saddr != 192.168.0.0/24 ip saddr != 10.65.0.5 drop" in egress
    assert "ip6 saddr != fe80::/10 ip6 saddr != fd00::5 drop" in egress
    assert "meta l4proto 4 drop" in egress
    assert "udp dport 4789 drop" in egress
    assert "icmpv6 type nd-router-advert drop" in egress
    assert names.policy_chain(skipped, False) in egress


def test_tier_with_default_pass_has_no_end_drop_and_admin_down_drops() -> None:
    pid = m.PolicyID("t", "p")
    to_chain, _ = endpoints.workload_chains(
        endpoint(tiers=(m.TierInfo("t", "pass", (pid,), ()),), admin_up=False), CONFIG
    )
    assert to_chain.rules[0] == 'drop comment "Endpoint admin disabled"'
    assert not any("End of tier" in r for r in to_chain.rules)


def test_endpoint_without_v4_address_drops_all_v4_egress() -> None:
    _, from_chain = endpoints.workload_chains(endpoint(ipv4_nets=()), CONFIG)
    assert "meta nfproto ipv4 drop" in from_chain.rules


def test_host_endpoint_has_failsafe_ports_before_policy() -> None:
    hep = m.HostEndpointUpdate(m.HostEndpointID("eth0-hep"), "eth0", ("10.0.0.1",), (), (), ())
    from_chain, to_chain, from_fwd, _to_fwd = endpoints.host_endpoint_chains(hep, CONFIG)
    assert 'tcp dport 22 accept comment "Failsafe"' in from_chain.rules
    assert 'udp dport 53 accept comment "Failsafe"' in to_chain.rules
    assert from_chain.rules[-1] == 'drop comment "Drop if no profiles matched"'
    assert from_fwd.rules == ("meta mark set meta mark & 0xfffcffff",)  # no forward policy: allow


def test_static_chains_dispatch_via_verdict_maps_and_fail_closed() -> None:
    chains = {
        c.name: c for c in endpoints.static_chains(RenderConfig(interface_prefixes=("cali", "tap")))
    }
    dispatch = chains[names.CHAIN_FROM_WL_DISPATCH].rules
    assert dispatch == (
        f"iifname vmap @{names.MAP_FROM_WL}",
        'drop comment "Unknown interface"',
    )
    forward = chains[names.CHAIN_FORWARD]
    assert "hook forward" in forward.hook
    assert 'iifname "tap*" jump cali-from-wl-dispatch' in forward.rules
    assert chains[names.CHAIN_WL_TO_HOST].rules[-1] == (
        'drop comment "Configured DefaultEndpointToHostAction"'
    )
    accept = RenderConfig(default_endpoint_to_host_action="Accept")
    wl_to_host = {c.name: c for c in endpoints.static_chains(accept)}[names.CHAIN_WL_TO_HOST]
    assert wl_to_host.rules[-1].startswith("accept")


def test_set_elements_split_by_family_and_collapse_nets() -> None:
    v4, v6 = sets.set_elements(
        "s:x", m.IPSetType.NET, frozenset({"10.0.0.0/8", "10.1.0.0/16", "fd00::1/128"})
    )
    assert v4 == {"10.0.0.0/8"} and v6 == {"fd00::1"}
    v4, _ = sets.set_elements("n:x", m.IPSetType.IP_AND_PORT, frozenset({"10.0.0.1,tcp:80"}))
    assert v4 == {"10.0.0.1 . tcp . 80"}
    with pytest.raises(ValueError, match="n:x"):
        sets.set_elements("n:x", m.IPSetType.IP_AND_PORT, frozenset({"10.0.0.1:80"}))
    definition4, definition6 = sets.set_defs("s:x", m.IPSetType.IP, frozenset({"10.0.0.1/32"}))
    assert definition4.type == "ipv4_addr" and definition6.type == "ipv6_addr"
    assert definition4.flags == ()  # single addresses: a plain hash set
    with_net, _ = sets.set_defs("s:x", m.IPSetType.IP, frozenset({"10.0.0.1/32", "10.1.0.0/30"}))
    assert with_net.flags == ("interval",)
    assert sets.set_defs("s:n", m.IPSetType.NET, frozenset({"10.0.0.1/32"}))[0].flags == ()
    assert sets.set_defs("s:n", m.IPSetType.NET, frozenset({"10.0.0.0/8"}))[0].flags == (
        "interval",
    )


def test_no_anonymous_interval_sets_anywhere() -> None:
    """nft reads every interval set's elements before each element change (see ``any_of``)."""
    import re

    resolved = rule(
        action="allow",
        protocol="tcp",
        source_nets=("10.0.0.0/8", "11.0.0.1/32", "12.0.0.0/16"),
        not_destination_nets=("10.1.0.0/16", "10.2.0.1/32", "10.3.0.1/32"),
        destination_ports=(m.PortRange(80, 80), m.PortRange(443, 443), m.PortRange(8000, 8100)),
        not_source_ports=(m.PortRange(1, 1023), m.PortRange(2000, 2000), m.PortRange(3000, 3000)),
    )
    lines = policy.render_rules([resolved], CONFIG)
    # Three source nets x (one set of single ports + one range) = six alternatives.
    assert len(lines) == 6
    anonymous = re.compile(r"\{[^}]*[/-][^}]*\}")
    assert not any(anonymous.search(line) for line in lines), lines
    assert "th dport { 80, 443 }" in lines[0]
    assert "ip daddr != 10.1.0.0/16 ip daddr != { 10.2.0.1, 10.3.0.1 }" in lines[0]
    chains = endpoints.workload_chains(
        endpoint(allow_spoofed_source_prefixes=("192.168.0.0/24", "fd01::/64")), CONFIG
    )
    assert not any(anonymous.search(r) for c in chains for r in c.rules)

"""Untracked (doNotTrack) and pre-DNAT host endpoint policy: pure rendering and the manager's
incremental programming against the fake kernel."""

from __future__ import annotations

import pytest

from pycalico.felix import messages as m
from pycalico.felix.dataplane.loop import Dataplane, DataplaneOptions
from pycalico.felix.rules import endpoints, names, prefilter
from pycalico.felix.rules.model import NO_PREFILTER, FailsafePort, PrefilterUse, RenderConfig
from pycalico.testing.fake_kernel import FakeKernel

CONFIG = RenderConfig(
    failsafe_inbound=(FailsafePort("tcp", 22),),
    failsafe_outbound=(FailsafePort("udp", 53), FailsafePort("tcp", 179, "10.0.0.0/8")),
)
POLICY = m.PolicyID("default", "dnt")
OTHER = m.PolicyID("default", "other")
ACCEPTED = "meta mark & 0x10000 == 0x10000"
HEP_ID = m.HostEndpointID("node-eth0")


def tier(ingress: tuple[m.PolicyID, ...] = (), egress: tuple[m.PolicyID, ...] = ()) -> m.TierInfo:
    return m.TierInfo("default", "deny", ingress, egress)


def hep(
    untracked: tuple[m.TierInfo, ...] = (),
    pre_dnat: tuple[m.TierInfo, ...] = (),
    interface: str = "eth0",
    name: str = "node-eth0",
) -> m.HostEndpointUpdate:
    return m.HostEndpointUpdate(
        m.HostEndpointID(name), interface, ("10.0.0.1",), (), (), (),
        untracked_tiers=untracked, pre_dnat_tiers=pre_dnat,
    )  # fmt: skip


def test_untracked_chains_failsafe_first_notrack_on_allow_and_no_end_of_tier_drop() -> None:
    rendered = prefilter.host_endpoint_chains(
        hep(untracked=(tier((POLICY, OTHER), (POLICY,)),)), CONFIG
    )
    assert rendered.raw_from is not None and rendered.raw_to is not None
    assert rendered.mangle_from is None
    assert rendered.raw_from.name == "raw-cali-fh-node-eth0"
    assert rendered.raw_to.name == "raw-cali-th-node-eth0"
    pi = names.policy_chain(POLICY, inbound=True)
    assert rendered.raw_from.rules == (
        'meta l4proto . th dport { tcp . 22 } accept comment "Failsafe"',
        # Replies of the host's own failsafe connections, which raw cannot tell from new flows.
        'meta l4proto . th sport { udp . 53 } accept comment "Failsafe"',
        'ip saddr 10.0.0.0/8 tcp sport 179 accept comment "Failsafe"',
        endpoints.CLEAR_ACCEPT_PASS,
        'meta mark set meta mark & 0xfffdffff comment "Start of tier default"',
        f"meta mark & 0x20000 == 0x0 jump {pi}",
        f"{ACCEPTED} notrack return",
        f"meta mark & 0x20000 == 0x0 jump {names.policy_chain(OTHER, inbound=True)}",
        f"{ACCEPTED} notrack return",
    )
    assert rendered.raw_to.rules[:4] == (
        'meta l4proto . th dport { udp . 53 } accept comment "Failsafe"',
        'ip daddr 10.0.0.0/8 tcp dport 179 accept comment "Failsafe"',
        'meta l4proto . th sport { tcp . 22 } accept comment "Failsafe"',
        endpoints.CLEAR_ACCEPT_PASS,
    )
    assert f"meta mark & 0x20000 == 0x0 jump {names.policy_chain(POLICY, False)}" in (
        rendered.raw_to.rules
    )
    for chain in (rendered.raw_from, rendered.raw_to):
        assert not any("drop" in rule or "Drop" in rule for rule in chain.rules)


def test_pre_dnat_chain_is_ingress_only_tracked_and_has_no_end_of_tier_drop() -> None:
    rendered = prefilter.host_endpoint_chains(hep(pre_dnat=(tier((POLICY,), (OTHER,)),)), CONFIG)
    assert rendered.raw_from is None and rendered.raw_to is None
    assert rendered.mangle_from is not None
    assert rendered.mangle_from.name == "mangle-cali-fh-node-eth0"
    assert rendered.mangle_from.rules == (
        "ct state established,related accept",
        "ct state invalid drop",
        'meta l4proto . th dport { tcp . 22 } accept comment "Failsafe"',
        endpoints.CLEAR_ACCEPT_PASS,
        'meta mark set meta mark & 0xfffdffff comment "Start of tier default"',
        f"meta mark & 0x20000 == 0x0 jump {names.policy_chain(POLICY, inbound=True)}",
        f"{ACCEPTED} return",
    )


def test_endpoint_without_such_policy_has_no_chains_and_returns_from_dispatch() -> None:
    rendered = prefilter.host_endpoint_chains(hep(), CONFIG)
    assert list(rendered.by_map()) == [(name, None) for name in prefilter.MAPS]
    assert prefilter.map_verdict(None) == "return"
    assert prefilter.use([hep()]) == NO_PREFILTER
    assert prefilter.static_chains(CONFIG, NO_PREFILTER) == ()


def test_unused_prefilter_leaves_the_filter_chains_exactly_as_before() -> None:
    assert endpoints.static_chains(CONFIG) == endpoints.static_chains(CONFIG, "", NO_PREFILTER)
    chains = {chain.name: chain for chain in endpoints.static_chains(CONFIG)}
    for name in (names.CHAIN_INPUT, names.CHAIN_OUTPUT, names.CHAIN_FORWARD):
        assert chains[name].rules[0] == endpoints.CLEAR_ALL
        assert not any("0x10000 == 0x10000 accept" in r for r in chains[name].rules[:-1])


@pytest.mark.parametrize(
    ("use", "raw_input"),
    [(PrefilterUse(raw_prerouting=True), True), (PrefilterUse(mangle_prerouting=True), False)],
)
def test_filter_chains_accept_what_raw_or_mangle_accepted(
    use: PrefilterUse, raw_input: bool
) -> None:
    chains = {chain.name: chain for chain in endpoints.static_chains(CONFIG, "", use)}
    assert chains[names.CHAIN_INPUT].rules[:2] == (
        f'iifname != "cali*" {ACCEPTED} accept comment "Accepted by untracked or pre-DNAT policy"',
        endpoints.CLEAR_ALL,
    )
    forward = chains[names.CHAIN_FORWARD].rules
    assert forward[0] == "meta mark set meta mark & 0xffe1ffff"  # keeps the accept bit
    assert forward[1] == (
        f'meta mark & 0x10000 == 0x0 iifname != "cali*" '
        f"jump {names.CHAIN_FROM_HEP_FORWARD_DISPATCH}"
    )
    # Output is untouched unless untracked egress policy exists.
    assert chains[names.CHAIN_OUTPUT].rules[0] == endpoints.CLEAR_ALL
    base = {chain.name: chain for chain in prefilter.static_chains(CONFIG, use)}
    assert (names.CHAIN_RAW_PREROUTING in base) is raw_input
    assert (names.CHAIN_MANGLE_PREROUTING in base) is not raw_input
    assert names.CHAIN_RAW_OUTPUT not in base
    if not raw_input:  # nobody cleared the marks before mangle: it does so itself, first
        assert base[names.CHAIN_MANGLE_PREROUTING].rules[0] == endpoints.CLEAR_ALL


def test_base_chains_hooks_dispatch_and_wildcard_fallback() -> None:
    use = PrefilterUse(True, True, True)
    wildcard = hep(untracked=(tier((POLICY,)),), interface="*", name="all")
    base = {chain.name: chain for chain in prefilter.static_chains(CONFIG, use, wildcard)}
    assert set(base) == prefilter.ALL_STATIC_CHAINS
    raw = base[names.CHAIN_RAW_PREROUTING]
    assert raw.hook == "type filter hook prerouting priority raw; policy accept;"
    assert raw.rules == (
        endpoints.CLEAR_ALL,
        f'iifname != "cali*" iifname != "lo" jump {names.CHAIN_RAW_FROM_HEP_DISPATCH}',
        f'{ACCEPTED} accept comment "Untracked policy accepted packet"',
    )
    assert (
        base[names.CHAIN_RAW_OUTPUT].hook == "type filter hook output priority raw; policy accept;"
    )
    mangle = base[names.CHAIN_MANGLE_PREROUTING]
    assert mangle.hook == "type filter hook prerouting priority mangle; policy accept;"
    # Raw cleared the marks already; an accept bit here means untracked policy allowed it.
    assert mangle.rules[:2] == ("ct state established,related accept", f"{ACCEPTED} accept")
    assert base[names.CHAIN_RAW_FROM_HEP_DISPATCH].rules == (
        f"iifname vmap @{names.MAP_RAW_FROM_HEP}",
        "goto raw-cali-fh-all",
    )
    # The wildcard has no untracked egress or pre-DNAT chain: nothing to fall back to.
    assert base[names.CHAIN_RAW_TO_HEP_DISPATCH].rules == (f"oifname vmap @{names.MAP_RAW_TO_HEP}",)
    assert base[names.CHAIN_MANGLE_FROM_HEP_DISPATCH].rules == (
        f"iifname vmap @{names.MAP_MANGLE_FROM_HEP}",
    )


def test_use_reflects_directions() -> None:
    assert prefilter.use([hep(untracked=(tier(egress=(POLICY,)),))]) == PrefilterUse(
        raw_output=True
    )
    assert prefilter.use(
        [hep(pre_dnat=(tier((POLICY,)),)), hep(untracked=(tier((POLICY,)),), name="b")]
    ) == PrefilterUse(raw_prerouting=True, mangle_prerouting=True)


# --- the endpoint manager against the fake kernel -------------------------------------------


@pytest.fixture
def kernel() -> FakeKernel:
    k = FakeKernel()
    k.links.add("eth0")
    return k


@pytest.fixture
def dataplane(kernel: FakeKernel) -> Dataplane:
    dataplane = Dataplane(
        DataplaneOptions(), kernel.nft, kernel.routes, kernel.sysctls, kernel.conntrack
    )
    dataplane.on_updates(
        [m.ActivePolicyUpdate(POLICY, (m.ResolvedRule(action="allow"),), ()), hep(), m.InSync()]
    )
    dataplane.apply()
    return dataplane


def test_manager_adds_and_removes_hooks_incrementally(
    dataplane: Dataplane, kernel: FakeKernel
) -> None:
    table = kernel.nft.table()
    assert not set(table.chains) & prefilter.ALL_STATIC_CHAINS
    assert set(prefilter.MAPS) <= set(table.sets)
    assert kernel.nft.map_entries(names.MAP_RAW_FROM_HEP) == {"eth0": "return"}

    dataplane.on_update(hep(untracked=(tier((POLICY,)),)))
    dataplane.apply()
    script = kernel.nft.scripts[-1]
    assert "delete table" not in script  # incremental
    table = kernel.nft.table()
    assert {names.CHAIN_RAW_PREROUTING, names.CHAIN_RAW_FROM_HEP_DISPATCH} <= set(table.chains)
    assert names.CHAIN_RAW_OUTPUT not in table.chains
    assert kernel.nft.map_entries(names.MAP_RAW_FROM_HEP) == {"eth0": "goto raw-cali-fh-node-eth0"}
    assert "notrack" in " ".join(kernel.nft.chain("raw-cali-fh-node-eth0"))
    # Only what changed was rewritten: the new chains, and the two filter chains that now let
    # already-accepted packets through.
    written = {line.split()[4] for line in script.splitlines() if "chain inet calico" in line}
    assert written == {
        names.CHAIN_RAW_PREROUTING,
        names.CHAIN_RAW_FROM_HEP_DISPATCH,
        "raw-cali-fh-node-eth0",
        names.CHAIN_INPUT,
        names.CHAIN_FORWARD,
    }

    # Re-sending the same update sends nothing.
    dataplane.on_update(hep(untracked=(tier((POLICY,)),)))
    assert dataplane.apply() is not None
    assert kernel.nft.scripts[-1] == script

    dataplane.on_update(hep())
    dataplane.apply()
    table = kernel.nft.table()
    assert not set(table.chains) & prefilter.ALL_STATIC_CHAINS
    assert "raw-cali-fh-node-eth0" not in table.chains
    assert kernel.nft.map_entries(names.MAP_RAW_FROM_HEP) == {"eth0": "return"}

    dataplane.on_update(m.HostEndpointRemove(HEP_ID))
    dataplane.apply()
    assert kernel.nft.map_entries(names.MAP_RAW_FROM_HEP) == {}


def test_full_resync_keeps_the_hooks(dataplane: Dataplane, kernel: FakeKernel) -> None:
    dataplane.on_update(hep(pre_dnat=(tier((POLICY,)),)))
    dataplane.apply()
    dataplane.nft.needs_full = True
    dataplane.apply()
    assert "delete table" in kernel.nft.scripts[-1]
    table = kernel.nft.table()
    assert table.hooks[names.CHAIN_MANGLE_PREROUTING].startswith("type filter hook prerouting")
    assert kernel.nft.map_entries(names.MAP_MANGLE_FROM_HEP) == {
        "eth0": "goto mangle-cali-fh-node-eth0"
    }

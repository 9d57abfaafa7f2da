"""Flowtable offload: rendering, script text, the driver's device deltas, the dataplane's probe.

Pure: a recording nft backend stands in for the kernel (the stateful fake kernel has no
flowtables); ``FakeSysctls`` says which interfaces exist.
"""

from __future__ import annotations

import dataclasses

import pytest

from pycalico.felix import config as felix_config
from pycalico.felix import messages as m
from pycalico.felix.dataplane.loop import Dataplane, DataplaneOptions
from pycalico.felix.drivers.errors import NftError
from pycalico.felix.drivers.nft import NftTable, flowtable_supported
from pycalico.felix.rules import endpoints, names, script
from pycalico.felix.rules.model import Chain, FlowtableDef, RenderConfig
from pycalico.model.node import FelixConfiguration
from pycalico.testing.fake_kernel import FakeConntrack, FakeRoutes, FakeSysctls

ALLOW = m.ResolvedRule(action="allow")
PROFILE = m.ProfileID("kns.default")
FT = FlowtableDef(names.FLOWTABLE)


class RecordingNft:
    """Accepts every script (or refuses flowtables, like a kernel without them)."""

    def __init__(self, flowtables: bool = True) -> None:
        self.flowtables = flowtables
        self.scripts: list[str] = []

    def run(self, text: str) -> None:
        if not self.flowtables and ("flowtable" in text or "flow add" in text):
            raise NftError("No such file or directory", text)
        self.scripts.append(text)


def forward_rules(config: RenderConfig) -> tuple[str, ...]:
    chains = {chain.name: chain for chain in endpoints.static_chains(config)}
    return chains[names.CHAIN_FORWARD].rules


# --- rendering and script text ---------------------------------------------------------------


def test_offload_rule_only_when_enabled_and_before_dispatch() -> None:
    assert not any("flow add" in rule for rule in forward_rules(RenderConfig()))
    rules = forward_rules(RenderConfig(flowtable_offload=True))
    assert rules[1] == endpoints.OFFLOAD_RULE
    assert rules[1].startswith("meta l4proto { tcp, udp } ct state established flow add @cali-ft")
    # Everything else is unchanged: the offload rule is an addition, never a replacement.
    assert rules[:1] + rules[2:] == forward_rules(RenderConfig())
    dispatch = next(i for i, rule in enumerate(rules) if names.CHAIN_FROM_WL_DISPATCH in rule)
    assert dispatch > 1


def test_offload_rule_never_in_chains_reachable_from_input_or_output() -> None:
    # The kernel accepts "flow add" only in forward-hook chains.
    for chain in endpoints.static_chains(RenderConfig(flowtable_offload=True)):
        if chain.name != names.CHAIN_FORWARD:
            assert not any("flow add" in rule for rule in chain.rules), chain.name


def test_flowtable_script_text() -> None:
    assert endpoints.flowtable() == FT
    assert script.add_flowtable(FT) == (
        "add flowtable inet calico cali-ft { hook ingress priority filter; }"
    )
    assert script.add_flowtable(FT, ["calib", "calia"]) == (
        'add flowtable inet calico cali-ft { hook ingress priority filter; devices = { "calia", '
        '"calib" }; }'
    )
    assert script.delete_flowtable_devices(FT, ["calia"]) == [
        'delete flowtable inet calico cali-ft { devices = { "calia" }; }'
    ]
    assert script.delete_flowtable_devices(FT, []) == []


# --- the driver ------------------------------------------------------------------------------


def table_with_flowtable(devices: frozenset[str]) -> tuple[NftTable, RecordingNft]:
    backend = RecordingNft()
    table = NftTable(backend)
    table.set_chain(Chain("filter-FORWARD", (endpoints.OFFLOAD_RULE,), "type filter hook"))
    table.set_flowtable(FT)
    table.set_flowtable_devices(devices)
    return table, backend


def test_full_script_declares_the_flowtable_before_chains() -> None:
    table, _ = table_with_flowtable(frozenset({"calia"}))
    lines = table.full_script()
    flowtable_line = lines.index(script.add_flowtable(FT, ["calia"]))
    first_chain = next(i for i, line in enumerate(lines) if line.startswith("add chain"))
    assert flowtable_line < first_chain


def test_device_changes_are_deltas_not_replaces() -> None:
    table, backend = table_with_flowtable(frozenset({"calia", "calib"}))
    assert table.apply() is not None and table.last is not None and table.last.full
    table.set_flowtable_devices(frozenset({"calib", "calic"}))
    assert table.dirty
    stats = table.apply()
    assert stats is not None and not stats.full
    assert backend.scripts[-1].splitlines() == [
        'delete flowtable inet calico cali-ft { devices = { "calia" }; }',
        'add flowtable inet calico cali-ft { hook ingress priority filter; devices = { "calic" }; }',
    ]
    table.set_flowtable_devices(frozenset({"calib", "calic"}))
    assert not table.dirty and table.apply() is None


def test_vanished_device_is_not_deleted_again() -> None:
    table, backend = table_with_flowtable(frozenset({"calia", "calib"}))
    table.apply()
    table.flowtable_device_gone("calia")  # the kernel unhooked it with the interface
    table.set_flowtable_devices(frozenset({"calib"}))
    assert not table.dirty
    table.set_flowtable_devices(frozenset({"calib", "calia"}))  # the veth came back
    table.apply()
    assert backend.scripts[-1].splitlines() == [
        'add flowtable inet calico cali-ft { hook ingress priority filter; devices = { "calia" }; }'
    ]


def test_adding_or_removing_the_flowtable_is_a_full_replace() -> None:
    table, backend = table_with_flowtable(frozenset({"calia"}))
    table.apply()
    table.set_flowtable(None)
    table.set_chain(Chain("filter-FORWARD", (), "type filter hook"))
    stats = table.apply()
    assert stats is not None and stats.full
    assert "flowtable" not in backend.scripts[-1]
    assert table.flowtable_devices == frozenset()


def test_probe_leaves_nothing_behind_and_reports_refusal() -> None:
    backend = RecordingNft()
    assert flowtable_supported(backend)
    lines = backend.scripts[0].splitlines()
    assert lines[0].startswith("add table") and lines[-1] == lines[0].replace("add", "delete")
    assert not flowtable_supported(RecordingNft(flowtables=False))


# --- the dataplane ---------------------------------------------------------------------------


def wep(key: str, ip: str) -> m.WorkloadEndpointUpdate:
    return m.WorkloadEndpointUpdate(
        m.WorkloadEndpointID("k8s", f"default/{key}", "eth0"),
        f"cali{key}",
        "",
        (f"{ip}/32",),
        (),
        (PROFILE,),
        (),
    )


def offload_dataplane(backend: RecordingNft, links: set[str]) -> Dataplane:
    options = DataplaneOptions(render=RenderConfig(flowtable_offload=True))
    return Dataplane(options, backend, FakeRoutes(links), FakeSysctls(links), FakeConntrack())


def test_devices_are_the_existing_workload_interfaces() -> None:
    backend = RecordingNft()
    links = {"calia"}  # calib's veth does not exist yet
    dataplane = offload_dataplane(backend, links)
    dataplane.on_updates(
        [
            m.ActiveProfileUpdate(PROFILE, (ALLOW,), (ALLOW,)),
            wep("a", "10.65.0.1"),
            wep("b", "10.65.0.2"),
            m.InSync(),
        ]
    )
    dataplane.apply()
    assert dataplane.flowtable_offload is True
    assert dataplane.nft.flowtable_devices == {"calia"}
    full = backend.scripts[-1]
    assert script.add_flowtable(FT, ["calia"]) in full and endpoints.OFFLOAD_RULE in full
    links.add("calib")
    dataplane.on_link("calib", present=True)
    dataplane.apply()
    assert dataplane.nft.flowtable_devices == {"calia", "calib"}
    assert backend.scripts[-1] == script.add_flowtable(FT, ["calib"]) + "\n"
    links.discard("calia")
    dataplane.on_link("calia", present=False)
    dataplane.on_update(m.WorkloadEndpointRemove(wep("a", "10.65.0.1").id))
    dataplane.apply()
    assert dataplane.nft.flowtable_devices == {"calib"}
    assert "delete flowtable" not in backend.scripts[-1]  # the kernel already unhooked it


def test_kernel_without_flowtables_runs_without_offload() -> None:
    backend = RecordingNft(flowtables=False)
    dataplane = offload_dataplane(backend, {"calia"})
    dataplane.on_updates(
        [m.ActiveProfileUpdate(PROFILE, (ALLOW,), (ALLOW,)), wep("a", "10.65.0.1"), m.InSync()]
    )
    report = dataplane.apply()
    assert report is not None and report.nft_full
    assert dataplane.flowtable_offload is False and dataplane.healthy
    assert "flow" not in backend.scripts[-1]


def test_offload_off_never_probes() -> None:
    backend = RecordingNft()
    dataplane = Dataplane(
        DataplaneOptions(), backend, FakeRoutes(set()), FakeSysctls(set()), FakeConntrack()
    )
    dataplane.on_update(m.InSync())
    dataplane.apply()
    assert dataplane.flowtable_offload is False
    assert not any("flowtable" in text for text in backend.scripts)


# --- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [({}, False), ({"nftablesFlowTableOffload": "Enabled"}, True)],
)
def test_config_field(source: dict[str, str], expected: bool) -> None:
    config = felix_config.load(datastore=source, default_hostname="h")
    assert config.render().flowtable_offload is expected


def test_config_env_and_bad_value() -> None:
    config = felix_config.load(environ={"FELIX_NFTABLESFLOWTABLEOFFLOAD": "enabled"})
    assert config.nftables_flow_table_offload == "Enabled"
    with pytest.raises(felix_config.ConfigError, match="nftablesFlowTableOffload"):
        felix_config.load(environ={"FELIX_NFTABLESFLOWTABLEOFFLOAD": "sometimes"})
    old = felix_config.load(default_hostname="h")
    assert felix_config.restart_needed(
        old, dataclasses.replace(old, nftables_flow_table_offload="Enabled")
    ) == ["nftablesFlowTableOffload"]


def test_model_field() -> None:
    resource = FelixConfiguration.model_validate(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "FelixConfiguration",
            "metadata": {"name": "default"},
            "spec": {"nftablesFlowTableOffload": "Enabled"},
        }
    )
    assert resource.spec.nftables_flow_table_offload == "Enabled"
    with pytest.raises(ValueError, match="nftablesFlowTableOffload"):
        FelixConfiguration.model_validate(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "FelixConfiguration",
                "metadata": {"name": "default"},
                "spec": {"nftablesFlowTableOffload": "Sometimes"},
            }
        )

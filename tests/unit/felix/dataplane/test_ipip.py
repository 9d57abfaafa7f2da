"""The IPIP refusal: the kernel probe, Felix's manager on the fake kernel, calico-node's report."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pycalico.datastore.resources import ResourceStore
from pycalico.felix import messages as m
from pycalico.felix.dataplane.ipip import IPIPManager
from pycalico.felix.dataplane.loop import Dataplane, DataplaneOptions
from pycalico.felix.drivers.ipip import probe_ipip
from pycalico.model.ipam import IPPool
from pycalico.node.startup import report_ipip_pools
from pycalico.testing.fake_kernel import FakeKernel
from pycalico.testing.memory_kv import MemoryKVStore

NO_IPIP = "no IPIP support: the ipip module"


def test_probe_names_the_missing_module_and_finds_it_when_present(tmp_path: Path) -> None:
    sys_module, lib = tmp_path / "sys", tmp_path / "lib"
    sys_module.mkdir()
    reason = probe_ipip(str(sys_module), str(lib), "6.1.0")
    assert reason is not None and "6.1.0" in reason and "CONFIG_NET_IPIP" in reason
    (lib / "6.1.0").mkdir(parents=True)
    (lib / "6.1.0" / "modules.dep").write_text("kernel/net/ipv4/ip_gre.ko.xz: x\n")
    assert probe_ipip(str(sys_module), str(lib), "6.1.0") is not None  # not ipip.ko
    (lib / "6.1.0" / "modules.dep").write_text("kernel/net/ipv4/ipip.ko.xz: tunnel4.ko.xz\n")
    assert probe_ipip(str(sys_module), str(lib), "6.1.0") is None
    (sys_module / "ipip").mkdir()
    assert probe_ipip(str(sys_module), str(tmp_path / "none"), "6.1.0") is None


def pool(cidr: str, mode: str = "Always", **fields: object) -> m.IPPoolUpdate:
    return m.IPPoolUpdate(cidr, cidr, False, ipip_mode=mode, **fields)  # type: ignore[arg-type]


def test_manager_reports_each_ipip_pool_once_and_forgets_it_when_it_goes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    probes: list[int] = []

    def probe() -> str:
        probes.append(1)
        return "this kernel (test) has no IPIP support: the ipip module ..."

    manager = IPIPManager(probe)
    manager.on_update(pool("10.70.0.0/16", "CrossSubnet"))
    manager.on_update(pool("10.71.0.0/16", "Never"))
    with caplog.at_level(logging.ERROR):
        manager.complete_deferred_work()
        manager.on_update(pool("10.70.0.0/16", "CrossSubnet"))  # unchanged: no new error
        manager.complete_deferred_work()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "10.70.0.0/16 has ipipMode CrossSubnet" in errors[0] and "no IPIP support" in errors[0]
    assert manager.refused_pools == {"10.70.0.0/16": "CrossSubnet"}
    manager.on_update(pool("10.70.0.0/16", "Never", vxlan_mode="Always"))  # moved to VXLAN
    assert manager.dirty and manager.refused_pools == {}
    manager.on_update(pool("10.72.0.0/16"))
    manager.on_update(m.IPPoolRemove("10.72.0.0/16"))
    assert manager.refused_pools == {}


def test_an_ipip_pool_programs_nothing_but_the_pool_sets() -> None:
    kernel = FakeKernel()
    plain = Dataplane(DataplaneOptions(), kernel.nft, kernel.routes, kernel.sysctls)
    plain.on_updates([pool("10.70.0.0/16", "Never"), m.InSync()])
    plain.apply()
    expected = {name: list(kernel.nft.chain(name)) for name in kernel.nft.table().chains}

    kernel = FakeKernel()
    dataplane = Dataplane(DataplaneOptions(), kernel.nft, kernel.routes, kernel.sysctls)
    dataplane.ipip._probe = lambda: NO_IPIP
    dataplane.on_updates([pool("10.70.0.0/16"), m.InSync()])
    dataplane.apply()
    assert {name: list(kernel.nft.chain(name)) for name in kernel.nft.table().chains} == expected
    assert kernel.routes.list_routes() == [] and not kernel.links  # no tunl0, no tunnel routes
    assert dataplane.counts()["ipip_unsupported_pools"] == 1


async def test_calico_node_reports_ipip_pools(caplog: pytest.LogCaptureFixture) -> None:
    store = ResourceStore(MemoryKVStore())
    for name, cidr, mode in (
        ("ipip", "10.70.0.0/16", "Always"),
        ("plain", "10.71.0.0/16", "Never"),
    ):
        spec = {"cidr": cidr, "ipipMode": mode}
        await store.create(IPPool.model_validate({"metadata": {"name": name}, "spec": spec}))
    with caplog.at_level(logging.ERROR):
        refused = await report_ipip_pools(store)
    assert refused == ["ipip (10.70.0.0/16, ipipMode Always)"]
    assert "IPIP" in caplog.text and "ipip (10.70.0.0/16" in caplog.text

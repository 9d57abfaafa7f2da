"""Outgoing NAT: the pure rendering and the NAT manager against the stateful fake kernel."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pycalico.felix import messages as m
from pycalico.felix.config import ConfigError, load
from pycalico.felix.dataplane.loop import Dataplane, DataplaneOptions
from pycalico.felix.rules import nat
from pycalico.felix.rules.model import RenderConfig
from pycalico.testing.fake_kernel import FakeKernel

MASQ4, ALL4 = "cali40masq-ipam-pools", "cali40all-ipam-pools"
MASQ6, ALL6 = "cali60masq-ipam-pools", "cali60all-ipam-pools"


def pool(cidr: str, masquerade: bool = True, **fields: object) -> m.IPPoolUpdate:
    return m.IPPoolUpdate(cidr, cidr, masquerade, **fields)  # type: ignore[arg-type]


def make(address: str = "") -> tuple[Dataplane, FakeKernel]:
    kernel = FakeKernel()
    options = DataplaneOptions(render=RenderConfig(nat_outgoing_address=address))
    dataplane = Dataplane(options, kernel.nft, kernel.routes, kernel.sysctls, kernel.conntrack)
    return dataplane, kernel


def test_chains_masquerade_from_masq_pools_to_outside_all_pools() -> None:
    assert nat.postrouting_chain().rules == ("jump nat-outgoing",)
    assert "hook postrouting priority srcnat" in nat.postrouting_chain().hook
    assert nat.nat_outgoing_chain().rules == (
        f"ip saddr @{MASQ4} ip daddr != @{ALL4} masquerade",
        f"ip6 saddr @{MASQ6} ip6 daddr != @{ALL6} masquerade",
    )
    elements = nat.pool_elements(["10.65.0.0/16"], ["10.65.0.0/16", "10.64.0.0/16", "fd00::/48"])
    assert elements[MASQ4] == {"10.65.0.0/16"}
    assert elements[ALL4] == {"10.64.0.0/15"}  # collapsed: no overlapping intervals
    assert elements[ALL6] == {"fd00::/48"} and elements[MASQ6] == frozenset()


def test_nat_outgoing_address_snats_its_own_family_only() -> None:
    rules = nat.nat_outgoing_chain("192.0.2.10").rules
    assert rules[0].endswith("snat ip to 192.0.2.10")
    assert rules[1].endswith("masquerade")  # an IPv4 address cannot be a v6 source


def test_empty_table_shape_before_any_pool() -> None:
    dataplane, kernel = make()
    dataplane.on_update(m.InSync())
    dataplane.apply()
    assert kernel.nft.chain("nat-POSTROUTING") == ["jump nat-outgoing"]
    assert len(kernel.nft.chain("nat-outgoing")) == 2
    assert all(kernel.nft.elements(name) == set() for name in (MASQ4, ALL4, MASQ6, ALL6))


def test_pool_changes_are_element_deltas_not_chain_rewrites() -> None:
    dataplane, kernel = make()
    dataplane.on_updates([pool("10.65.0.0/16"), pool("fd00:65::/64"), m.InSync()])
    dataplane.apply()
    assert kernel.nft.elements(MASQ4) == {"10.65.0.0/16"} == kernel.nft.elements(ALL4)
    assert kernel.nft.elements(MASQ6) == {"fd00:65::/64"}
    before = len(kernel.nft.scripts)

    # A disabled pool without natOutgoing: still a cluster destination, never a NAT source.
    dataplane.on_update(pool("10.80.0.0/16", masquerade=False, disabled=True))
    dataplane.apply()
    assert kernel.nft.elements(ALL4) == {"10.65.0.0/16", "10.80.0.0/16"}
    assert kernel.nft.elements(MASQ4) == {"10.65.0.0/16"}
    script = kernel.nft.scripts[before]
    assert "chain" not in script and "10.80.0.0/16" in script  # only the element went in

    dataplane.on_update(pool("10.65.0.0/16", masquerade=False))  # natOutgoing turned off
    dataplane.apply()
    assert kernel.nft.elements(MASQ4) == set()
    dataplane.on_update(m.IPPoolRemove("10.80.0.0/16"))
    dataplane.apply()
    assert kernel.nft.elements(ALL4) == {"10.65.0.0/16"}


def test_unrelated_pool_field_change_touches_nothing() -> None:
    dataplane, _ = make()
    dataplane.on_updates([pool("10.65.0.0/16"), m.InSync()])
    dataplane.apply()
    dataplane.on_update(pool("10.65.0.0/16", disable_bgp_export=True))
    assert not dataplane.nat.dirty
    assert dataplane.apply() is not None and not dataplane.nft.dirty


def test_nat_outgoing_address_from_config_reaches_the_kernel() -> None:
    config = load({"natOutgoingAddress": "192.0.2.10"}, {}, {}, "node1")
    dataplane, kernel = make(config.render().nat_outgoing_address)
    dataplane.on_updates([pool("10.65.0.0/16"), m.InSync()])
    dataplane.apply()
    assert kernel.nft.chain("nat-outgoing")[0].endswith("snat ip to 192.0.2.10")
    with pytest.raises(ConfigError, match="natOutgoingAddress"):
        load({"natOutgoingAddress": "fd00::1"}, {}, {}, "node1")
    assert replace(config.render(), nat_outgoing_address="").nat_outgoing_address == ""


def test_load_balancer_only_pools_are_outside_the_cluster() -> None:
    """Calico's masquerade manager: traffic to LoadBalancer addresses still leaves the cluster."""
    dataplane, kernel = make()
    lb = pool("10.90.0.0/24", masquerade=False, load_balancer_only=True)
    dataplane.on_updates([pool("10.65.0.0/16"), lb, m.InSync()])
    dataplane.apply()
    assert kernel.nft.elements(ALL4) == {"10.65.0.0/16"}
    dataplane.on_update(replace(lb, load_balancer_only=False))  # allowedUses changed
    dataplane.apply()
    assert kernel.nft.elements(ALL4) == {"10.65.0.0/16", "10.90.0.0/24"}

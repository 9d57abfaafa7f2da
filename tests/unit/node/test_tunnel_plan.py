"""calico-node's VXLAN tunnel address decisions (pure part of node.tunnel)."""

from __future__ import annotations

from pycalico.lib.vxlan import pod_mtu, tunnel_handle
from pycalico.model.ipam import IPPool
from pycalico.node.tunnel import Plan, plan, vxlan_pools


def pool(cidr: str, mode: str, **extra: object) -> IPPool:
    spec = {"cidr": cidr, "vxlanMode": mode, **extra}
    return IPPool.model_validate({"metadata": {"name": cidr.replace("/", "-")}, "spec": spec})


def test_only_enabled_vxlan_pools_of_the_family_that_select_the_node() -> None:
    pools = [
        pool("10.65.0.0/16", "Always"),
        pool("10.66.0.0/16", "Never"),
        pool("10.67.0.0/16", "CrossSubnet", disabled=True),
        pool("10.68.0.0/16", "CrossSubnet", nodeSelector="zone == 'b'"),
        pool("fd00:65::/48", "Always"),
    ]
    assert vxlan_pools(pools, {"zone": "a"}, 4) == ["10.65.0.0/16"]
    assert vxlan_pools(pools, {"zone": "b"}, 4) == ["10.65.0.0/16", "10.68.0.0/16"]
    assert vxlan_pools(pools, {}, 6) == ["fd00:65::/48"]


def test_plan() -> None:
    pools = ["10.65.0.0/16"]
    assert plan(None, [], pools) == Plan(keep=False, release=False, allocate=True)
    assert plan("10.65.0.1", ["10.65.0.1"], pools) == Plan(keep=True, release=False, allocate=False)
    # Outside every VXLAN pool (the pool changed): release and allocate again.
    assert plan("10.70.0.1", ["10.70.0.1"], pools) == Plan(keep=False, release=True, allocate=True)
    # Not held by our handle (someone else's): allocate our own.
    assert plan("10.65.0.1", [], pools) == Plan(keep=False, release=False, allocate=True)
    # No VXLAN pool left: release and clear.
    assert plan("10.65.0.1", ["10.65.0.1"], []) == Plan(keep=False, release=True, allocate=False)
    assert plan(None, [], []) == Plan(keep=False, release=False, allocate=False)


def test_calico_names_and_mtu() -> None:
    assert tunnel_handle("n1", 4) == "vxlan-tunnel-addr-n1"
    assert tunnel_handle("n1", 6) == "vxlan-v6-tunnel-addr-n1"
    assert pod_mtu(1500, vxlan_v4=True, vxlan_v6=False) == 1450
    assert pod_mtu(1500, vxlan_v4=True, vxlan_v6=True) == 1430
    assert pod_mtu(9000, vxlan_v4=False, vxlan_v6=False) == 9000

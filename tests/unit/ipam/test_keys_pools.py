"""Calico's IPAM key layout and pool selection/walk order."""

from __future__ import annotations

import ipaddress

import pytest

from pycalico.ipam import keys
from pycalico.ipam.allocator import IPAM, AutoAssignRequest, IPAMError
from pycalico.ipam.pools import (
    Pool,
    PoolSelectionError,
    block_walk,
    fnv32,
    resolve_requested,
    select_pools,
)
from pycalico.testing.ipam import pool_value
from pycalico.testing.memory_kv import MemoryKVStore

V4 = ipaddress.ip_network("10.65.0.0/26")
V6 = ipaddress.ip_network("fd00:1::/122")


def test_keys_match_calico() -> None:
    assert keys.block_key(V4) == "/calico/ipam/v2/assignment/ipv4/block/10.65.0.0-26"
    assert keys.block_key(V6) == "/calico/ipam/v2/assignment/ipv6/block/fd00:1::-122"
    assert keys.affinity_key("node-1", V4) == "/calico/ipam/v2/host/node-1/ipv4/block/10.65.0.0-26"
    assert keys.handle_key("k8s-pod-network.abc") == "/calico/ipam/v2/handle/k8s-pod-network.abc"
    assert keys.CONFIG_KEY == "/calico/ipam/v2/config"
    assert keys.ippool_key("p") == "/calico/resources/v3/projectcalico.org/ippools/p"
    parsed = keys.parse_affinity_key(keys.affinity_key("n", V6, "virtual"))
    assert parsed is not None and (parsed.host, parsed.cidr, parsed.affinity_type) == (
        "n",
        V6,
        "virtual",
    )
    assert keys.parse_block_key(keys.block_key(V6)) == V6
    assert keys.parse_handle_key("/calico/ipam/v2/handle/h") == "h"
    assert keys.parse_affinity_key("/calico/ipam/v2/handle/h") is None


def test_pool_from_resource_defaults() -> None:
    pool = Pool.from_resource_json(pool_value("p", "10.65.0.0/16"))
    assert (pool.block_size, pool.node_selector, pool.allowed_uses) == (
        26,
        "all()",
        ("Workload", "Tunnel"),
    )
    assert Pool.from_resource_json(pool_value("v6", "fd00::/48")).block_size == 122
    assert pool.num_blocks == 1024
    assert pool.block_for(ipaddress.ip_address("10.65.3.77")) == ipaddress.ip_network(
        "10.65.3.64/26"
    )


def test_block_walk_is_seeded_by_node_and_covers_the_pool_once() -> None:
    pool = Pool("p", ipaddress.ip_network("10.65.0.0/24"), 28)
    walk = list(block_walk(pool, "node-a"))
    assert sorted(walk, key=lambda n: int(n.network_address)) == [
        pool.block_at(i) for i in range(16)
    ]
    assert walk == list(block_walk(pool, "node-a"))
    starts = {next(block_walk(pool, f"node-{i}")) for i in range(8)}
    assert len(starts) > 1  # different nodes head for different blocks
    assert fnv32(b"") == 0x811C9DC5
    assert fnv32(b"a") == 0x050C5D7E  # Go's fnv.New32 ("FNV-1")


def test_selection_rules_and_messages() -> None:
    pools = [
        Pool("a", ipaddress.ip_network("10.1.0.0/16"), 26),
        Pool("b", ipaddress.ip_network("10.2.0.0/16"), 26, node_selector="zone == 'b'"),
        Pool("m", ipaddress.ip_network("10.3.0.0/16"), 26, assignment_mode="Manual"),
        Pool("lb", ipaddress.ip_network("10.4.0.0/16"), 26, allowed_uses=("LoadBalancer",)),
    ]
    assert [p.name for p in select_pools(pools, version=4)] == ["a"]
    assert [p.name for p in select_pools(pools, version=4, node_labels={"zone": "b"})] == [
        "a",
        "b",
    ]
    manual = select_pools(pools, version=4, requested=[ipaddress.ip_network("10.3.0.0/16")])
    assert [p.name for p in manual] == ["m"]
    with pytest.raises(PoolSelectionError, match="no pools match the required use"):
        select_pools(pools, version=4, requested=[ipaddress.ip_network("10.4.0.0/16")])
    with pytest.raises(PoolSelectionError, match="cannot find a qualified ippool"):
        select_pools(pools, version=6)
    assert resolve_requested(["a", "10.9.0.0/16"], pools, 4) == [
        ipaddress.ip_network("10.1.0.0/16"),
        ipaddress.ip_network("10.9.0.0/16"),
    ]
    with pytest.raises(PoolSelectionError, match="isn't a IPv6 address"):
        resolve_requested(["a"], pools, 6)


async def test_bad_handle_ids_are_refused_clearly() -> None:
    ipam = IPAM(MemoryKVStore())
    with pytest.raises(IPAMError, match="handle_id"):
        await ipam.auto_assign(AutoAssignRequest(node="n", handle_id="a/b"))


def test_ipam_keys_agree_with_the_datastore_layout() -> None:
    from pycalico.datastore import paths

    for cidr in (V4, V6, ipaddress.ip_network("192.168.0.0/16")):
        assert keys.block_key(cidr) == paths.block_key(str(cidr))
        assert keys.affinity_key("n-1", cidr) == paths.affinity_key("n-1", str(cidr))
        assert keys.affinity_key("lb", cidr, "virtual") == paths.affinity_key(
            "lb", str(cidr), "virtual"
        )
    with pytest.raises(ValueError):
        keys.affinity_key("a/b", V4)

"""Allocator behaviour on the in-memory KVStore: claims, borrowing, strict affinity, pools,
dual-stack all-or-nothing, given addresses, releases, cooldown, and concurrent callers."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from datetime import UTC, datetime, timedelta

import pytest

from pycalico.ipam import keys
from pycalico.ipam.allocator import (
    IPAM,
    AddressInUse,
    AddressNotInPool,
    AssignmentIncomplete,
    AutoAssignRequest,
    HandleNotFound,
    NodeNotFound,
    NoQualifiedPool,
    ReleaseConflict,
)
from pycalico.ipam.blocks import AllocationBlock, ReleaseOption
from pycalico.ipam.records import BlockAffinity, IPAMConfig
from pycalico.testing.ipam import ipam_keys, put_node, put_pool
from pycalico.testing.memory_kv import MemoryKVStore


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def setup(
    *nodes: str, pool: str = "10.65.0.0/16", block_size: int | None = None
) -> tuple[MemoryKVStore, IPAM, Clock]:
    kv = MemoryKVStore()
    await put_pool(kv, "default-ipv4-ippool", pool, block_size=block_size)
    for node in nodes or ("node-1",):
        await put_node(kv, node)
    clock = Clock()
    return kv, IPAM(kv, clock=clock), clock


def request(node: str = "node-1", handle: str = "net.c1", **kw: object) -> AutoAssignRequest:
    return AutoAssignRequest(node=node, handle_id=handle, attrs={"node": node}, **kw)  # type: ignore[arg-type]


async def block_of(kv: MemoryKVStore, address: ipaddress.IPv4Interface) -> AllocationBlock:
    kvp = await kv.get(keys.block_key(address.network))
    assert kvp is not None
    return AllocationBlock.from_json(kvp.value)


async def test_first_assignment_claims_a_block_two_phase() -> None:
    kv, ipam, _ = await setup()
    v4, v6 = await ipam.auto_assign(request())
    (address,) = v4.addresses
    assert v6.addresses == ()
    assert address.network.prefixlen == 26
    block = await block_of(kv, address)
    assert block.affinity == "host:node-1"
    affinity = await kv.get(keys.affinity_key("node-1", address.network))
    assert affinity is not None and BlockAffinity.from_json(affinity.value).confirmed
    handle = await kv.get(keys.handle_key("net.c1"))
    assert handle is not None
    assert json.loads(handle.value) == {"block": {str(address.network): 1}, "deleted": False}
    info = await ipam.allocation_info(address.ip)
    assert info is not None and info.handle_id == "net.c1" and info.attributes == {"node": "node-1"}


async def test_same_node_reuses_its_block_other_node_gets_another() -> None:
    _kv, ipam, _ = await setup("node-1", "node-2")
    a = (await ipam.auto_assign(request(handle="a")))[0].addresses[0]
    b = (await ipam.auto_assign(request(handle="b")))[0].addresses[0]
    c = (await ipam.auto_assign(request("node-2", handle="c")))[0].addresses[0]
    assert a.network == b.network != c.network
    assert a.ip != b.ip


async def test_unknown_node_is_refused() -> None:
    _, ipam, _ = await setup()
    with pytest.raises(NodeNotFound, match=r"Node\(ghost\)"):
        await ipam.auto_assign(request("ghost"))


async def test_small_pool_last_nodes_borrow_or_fail_with_strict_affinity() -> None:
    nodes = [f"node-{i}" for i in range(8)]
    kv, ipam, _ = await setup(*nodes, pool="10.70.0.0/28", block_size=30)
    got = {}
    for node in nodes:
        got[node] = (await ipam.auto_assign(request(node, handle=f"h-{node}")))[0].addresses[0]
    owners = {}
    for node, address in got.items():
        owners[node] = (await block_of(kv, address)).host
    affine = [n for n in nodes if owners[n] == n]
    borrowers = [n for n in nodes if owners[n] != n]
    assert len(affine) == 4 and len(borrowers) == 4
    assert len({a.ip for a in got.values()}) == 8

    kv, ipam, _ = await setup(*nodes, pool="10.70.0.0/28", block_size=30)
    await ipam.set_config(IPAMConfig(strict_affinity=True))
    for node in nodes[:4]:
        await ipam.auto_assign(request(node, handle=f"h-{node}"))
    before = await ipam_keys(kv)
    for node in nodes[4:]:
        with pytest.raises(AssignmentIncomplete) as info:
            await ipam.auto_assign(request(node, handle=f"h-{node}"))
        assert str(info.value) == (
            "Assigned 0 out of 1 requested IPv4 addresses; "
            "No more free affine blocks and strict affinity enabled"
        )
    assert await ipam_keys(kv) == before


async def test_exhausted_pool_uses_calicos_message_and_leaves_nothing() -> None:
    kv, ipam, _ = await setup(pool="10.70.0.0/30", block_size=30)
    await ipam.auto_assign(request(num4=4, handle="all"))
    before = await ipam_keys(kv)
    with pytest.raises(
        AssignmentIncomplete,
        match=r"Assigned 0 out of 1 requested IPv4 addresses; "
        r"No IPs available in pools: \[10.70.0.0/30\]",
    ):
        await ipam.auto_assign(request(handle="one-more"))
    assert await ipam_keys(kv) == before


async def test_dual_stack_without_ipv6_pool_allocates_nothing() -> None:
    kv, ipam, _ = await setup()
    with pytest.raises(NoQualifiedPool, match="cannot find a qualified ippool"):
        await ipam.auto_assign(request(num4=1, num6=1))
    assert await ipam_keys(kv) == {}


async def test_dual_stack_shortfall_in_ipv6_releases_the_ipv4_address() -> None:
    kv, ipam, _ = await setup()
    await put_pool(kv, "v6", "fd00::/126", block_size=126)
    await ipam.auto_assign(request(num4=0, num6=4, handle="fill"))
    before = await ipam.addresses_by_handle("fill")
    with pytest.raises(AssignmentIncomplete, match="requested IPv6"):
        await ipam.auto_assign(request(num4=1, num6=1, handle="dual"))
    with pytest.raises(HandleNotFound):
        await ipam.addresses_by_handle("dual")
    assert await ipam.addresses_by_handle("fill") == before
    v4, v6 = await ipam.auto_assign(request(num4=1, num6=0, handle="v4only"))
    assert len(v4.addresses) == 1 and v6.addresses == ()


async def test_dual_stack_success() -> None:
    kv, ipam, _ = await setup()
    await put_pool(kv, "v6", "fd00:10::/64")
    v4, v6 = await ipam.auto_assign(request(num4=1, num6=1))
    assert v4.addresses[0].version == 4 and v6.addresses[0].version == 6
    assert v6.addresses[0].network.prefixlen == 122


async def test_requested_pools_disabled_pools_and_node_selector() -> None:
    kv, ipam, _ = await setup()
    await put_pool(kv, "off", "10.99.0.0/16", disabled=True)
    await put_pool(kv, "zone-b", "10.98.0.0/16", node_selector="zone == 'b'")
    with pytest.raises(NoQualifiedPool, match=r"the given pool \(10.99.0.0/16\) does not exist"):
        await ipam.auto_assign(request(ipv4_pools=[ipaddress.ip_network("10.99.0.0/16")]))
    with pytest.raises(NoQualifiedPool, match=r"the given pool \(10.1.0.0/16\) does not exist"):
        await ipam.auto_assign(request(ipv4_pools=[ipaddress.ip_network("10.1.0.0/16")]))
    for i in range(5):
        got = (await ipam.auto_assign(request(handle=f"h{i}")))[0].addresses[0]
        assert got.ip in ipaddress.ip_network("10.65.0.0/16")
    # A requested pool is used even though its selector does not match the node.
    got = (
        await ipam.auto_assign(
            request(handle="b", ipv4_pools=[ipaddress.ip_network("10.98.0.0/16")])
        )
    )[0].addresses[0]
    assert got.ip in ipaddress.ip_network("10.98.0.0/16")
    await put_node(kv, "node-b", {"zone": "b"})
    await put_pool(kv, "default-ipv4-ippool", "10.65.0.0/16", disabled=True)
    got = (await ipam.auto_assign(request("node-b", handle="nb")))[0].addresses[0]
    assert got.ip in ipaddress.ip_network("10.98.0.0/16")
    with pytest.raises(NoQualifiedPool):
        await ipam.auto_assign(request("node-1", handle="n1"))


async def test_max_blocks_per_host() -> None:
    _kv, ipam, _ = await setup(pool="10.70.0.0/24", block_size=30)
    await ipam.set_config(IPAMConfig(strict_affinity=True, max_blocks_per_host=2))
    await ipam.auto_assign(request(num4=8, handle="eight"))
    with pytest.raises(AssignmentIncomplete, match="limit of 2 blocks reached for this node"):
        await ipam.auto_assign(request(handle="ninth"))


async def test_assign_given_address() -> None:
    kv, ipam, _ = await setup()
    got = await ipam.assign_ip(ipaddress.ip_address("10.65.3.7"), node="node-1", handle_id="h")
    assert str(got) == "10.65.3.7/26"
    assert (await block_of(kv, got)).host == "node-1"
    with pytest.raises(AddressInUse, match=r"10\.65\.3\.7 is already in use"):
        await ipam.assign_ip(ipaddress.ip_address("10.65.3.7"), node="node-1", handle_id="h2")
    with pytest.raises(AddressNotInPool, match="not in a configured pool"):
        await ipam.assign_ip(ipaddress.ip_address("192.168.1.1"), node="node-1", handle_id="h3")
    with pytest.raises(HandleNotFound):
        await ipam.addresses_by_handle("h2")


async def test_release_by_handle_then_again() -> None:
    kv, ipam, _ = await setup()
    v4, _ = await ipam.auto_assign(request(num4=3, handle="many"))
    assert await ipam.release_by_handle("many") == 3
    assert await kv.get(keys.handle_key("many")) is None
    block = await block_of(kv, v4.addresses[0])
    assert block.in_use_addresses() == [] and block.host == "node-1"  # affine blocks stay
    with pytest.raises(HandleNotFound):
        await ipam.release_by_handle("many")


async def test_release_ips_sequence_checked() -> None:
    kv, ipam, _ = await setup()
    address = (await ipam.auto_assign(request(handle="x")))[0].addresses[0]
    info = await ipam.allocation_info(address.ip)
    assert info is not None
    with pytest.raises(ReleaseConflict):
        await ipam.release_ips(
            [ReleaseOption(address.ip, sequence_number=info.sequence_number + 5)]
        )
    assert await ipam.allocation_info(address.ip) is not None
    left = await ipam.release_ips(
        [
            ReleaseOption(address.ip, sequence_number=info.sequence_number),
            ReleaseOption(ipaddress.ip_address("10.65.200.1")),
        ]
    )
    assert left == [ipaddress.ip_address("10.65.200.1")]
    assert await ipam.allocation_info(address.ip) is None
    assert await kv.get(keys.handle_key("x")) is None


async def test_borrowed_block_is_deleted_when_emptied_if_unaffine() -> None:
    kv, ipam, _ = await setup("node-1", "node-2", pool="10.70.0.0/30", block_size=30)
    a = (await ipam.auto_assign(request(handle="a")))[0].addresses[0]
    await ipam.release_block_affinity("node-1", a.network, require_empty=False)
    block = await block_of(kv, a)
    assert block.affinity is None and block.in_use_addresses() == [a.ip]
    await ipam.release_by_handle("a")
    assert await kv.get(keys.block_key(a.network)) is None


async def test_release_empty_block_affinity() -> None:
    kv, ipam, _ = await setup()
    a = (await ipam.auto_assign(request(handle="a")))[0].addresses[0]
    assert await ipam.release_host_affinities("node-1") == 0  # not empty
    await ipam.release_by_handle("a")
    assert await ipam.release_host_affinities("node-1") == 1
    assert await ipam_keys(kv) == {}
    assert a.network


async def test_cooldown_delays_reuse() -> None:
    _kv, ipam, clock = await setup(pool="10.70.0.0/30", block_size=30)
    await ipam.set_config(IPAMConfig(ip_cooldown_seconds=60))
    first = (await ipam.auto_assign(request(num4=4, handle="all")))[0].addresses
    await ipam.release_ips([ReleaseOption(first[0].ip)])
    with pytest.raises(AssignmentIncomplete):
        await ipam.auto_assign(request(handle="soon"))
    clock.now += timedelta(seconds=61)
    again = (await ipam.auto_assign(request(handle="later")))[0].addresses[0]
    assert again.ip == first[0].ip


async def test_empty_block_of_another_node_is_reclaimed_after_a_minute() -> None:
    kv, ipam, clock = await setup("node-1", "node-2", pool="10.70.0.0/30", block_size=30)
    await ipam.auto_assign(request(handle="a"))
    await ipam.release_by_handle("a")
    await ipam.set_config(IPAMConfig(strict_affinity=True))
    with pytest.raises(AssignmentIncomplete):
        await ipam.auto_assign(request("node-2", handle="b"))
    clock.now += timedelta(minutes=2)
    got = (await ipam.auto_assign(request("node-2", handle="b")))[0].addresses[0]
    assert (await block_of(kv, got)).host == "node-2"
    assert await kv.get(keys.affinity_key("node-1", got.network)) is None


class Crash(Exception):
    pass


def crash(cidr: ipaddress.IPv4Network | ipaddress.IPv6Network) -> None:
    raise Crash(str(cidr))


async def test_interrupted_claim_is_confirmed_by_the_next_assignment() -> None:
    kv, ipam, _ = await setup()
    with pytest.raises(Crash):
        await IPAM(kv, after_block_claimed=crash).auto_assign(request(handle="dead"))
    (affinity_key,) = [k for k in await ipam_keys(kv) if "/host/" in k]
    affinity = await kv.get(affinity_key)
    assert affinity is not None and BlockAffinity.from_json(affinity.value).state == "pending"
    got = (await ipam.auto_assign(request(handle="alive")))[0].addresses[0]
    assert keys.affinity_key("node-1", got.network) == affinity_key
    affinity = await kv.get(affinity_key)
    assert affinity is not None and BlockAffinity.from_json(affinity.value).confirmed


async def test_concurrent_assignments_are_distinct() -> None:
    nodes = [f"n{i}" for i in range(4)]
    kv, ipam, _ = await setup(*nodes)
    results = await asyncio.gather(
        *(ipam.auto_assign(request(nodes[i % 4], handle=f"c{i}")) for i in range(120))
    )
    addresses = [r[0].addresses[0] for r in results]
    assert len({a.ip for a in addresses}) == 120
    for i, address in enumerate(addresses):
        assert (await block_of(kv, address)).host == nodes[i % 4]
    await asyncio.gather(*(ipam.release_by_handle(f"c{i}") for i in range(120)))
    blocks = await ipam.list_blocks()
    assert all(b.in_use_addresses() == [] for _, b in blocks)
    assert [k for k in await ipam_keys(kv) if "/handle/" in k] == []


async def test_long_lived_allocator_batches_and_stays_consistent() -> None:
    nodes = [f"n{i}" for i in range(3)]
    kv, _, _ = await setup(*nodes, pool="10.66.0.0/22", block_size=28)
    agent = IPAM(kv, cache_seconds=60)
    results = await asyncio.gather(
        *(agent.auto_assign(request(nodes[i % 3], handle=f"b{i}")) for i in range(150))
    )
    addresses = [r[0].addresses[0] for r in results]
    assert len({a.ip for a in addresses}) == 150
    for i, address in enumerate(addresses):
        assert (await block_of(kv, address)).host == nodes[i % 3]
        info = await agent.allocation_info(address.ip)
        assert info is not None and info.handle_id == f"b{i}"
    from pycalico.ipam.check import check

    report = await check(kv)
    assert report.clean, report.findings
    assert report.allocations == 150


async def test_cancelled_waiter_gets_nothing_and_leaks_nothing() -> None:
    kv, _, _ = await setup()
    agent = IPAM(kv, cache_seconds=60)
    await agent.auto_assign(request(handle="warm"))  # makes the node's block hot
    tasks = [asyncio.create_task(agent.auto_assign(request(handle=f"w{i}"))) for i in range(6)]
    await asyncio.sleep(0)
    tasks[2].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[2], asyncio.CancelledError)
    for _ in range(50):  # let the leader finish giving the cancelled address back
        await asyncio.sleep(0)
    from pycalico.ipam.check import check

    report = await check(kv)
    assert report.clean, report.findings
    assert report.allocations == 6  # warm + five delivered
    assert await kv.get(keys.handle_key("w2")) is None


async def test_long_lived_allocator_notices_config_changes_it_makes() -> None:
    kv, _, _ = await setup("node-1", "node-2", pool="10.70.0.0/30", block_size=30)
    agent = IPAM(kv, cache_seconds=60)
    await agent.auto_assign(request(num4=4, handle="full"))
    await agent.set_config(IPAMConfig(strict_affinity=True))
    with pytest.raises(AssignmentIncomplete, match="strict affinity enabled"):
        await agent.auto_assign(request("node-2", handle="x"))


class YieldingKV:
    """The memory store, but every call yields to the event loop first, so concurrent
    allocators interleave between their reads and their compare-and-swaps."""

    def __init__(self, inner: MemoryKVStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        target = getattr(self.inner, name)
        if name not in ("get", "list", "create", "update", "put", "delete", "commit"):
            return target

        async def call(*args: object, **kwargs: object) -> object:
            await asyncio.sleep(0)
            return await target(*args, **kwargs)

        return call


async def test_separate_allocators_racing_on_one_node_stay_distinct() -> None:
    kv, _, _ = await setup("node-1", "node-2", pool="10.66.0.0/24", block_size=28)
    racing = [IPAM(YieldingKV(kv)) for _ in range(6)]  # type: ignore[arg-type]
    results = await asyncio.gather(
        *(
            racing[i % 6].auto_assign(request(("node-1", "node-2")[i % 2], handle=f"r{i}"))
            for i in range(90)
        )
    )
    addresses = [r[0].addresses[0].ip for r in results]
    assert len(set(addresses)) == 90
    from pycalico.ipam.check import check

    report = await check(kv)
    assert report.clean, report.findings
    assert report.allocations == 90


async def test_empty_blocks_of_pools_that_no_longer_select_the_node_are_released() -> None:
    kv = MemoryKVStore()
    await put_pool(kv, "a-zone", "10.80.0.0/24", block_size=28, node_selector="zone == 'a'")
    await put_pool(kv, "b-zone", "10.81.0.0/24", block_size=28, node_selector="zone == 'b'")
    await put_node(kv, "node-1", {"zone": "a"})
    ipam = IPAM(kv)
    first = (await ipam.auto_assign(request(handle="h1")))[0].addresses[0]
    await ipam.auto_assign(request(handle="h3"))
    assert first.ip in ipaddress.ip_network("10.80.0.0/24")
    affinity = keys.affinity_key("node-1", first.network)
    await put_node(kv, "node-1", {"zone": "b"})  # the node moves: "a-zone" no longer selects it
    got = (await ipam.auto_assign(request(handle="b1")))[0].addresses[0]
    assert got.ip in ipaddress.ip_network("10.81.0.0/24")
    assert await kv.get(affinity) is not None  # still holds h1 and h3: kept
    await ipam.release_by_handle("h1")
    await ipam.release_by_handle("h3")
    await ipam.auto_assign(request(handle="b2"))
    assert await kv.get(affinity) is None  # empty and unselected: given up
    assert await kv.get(keys.block_key(first.network)) is None


async def test_config_from_the_v3_resource_when_written_last() -> None:
    kv, ipam, _ = await setup()
    assert not (await ipam.get_config()).strict_affinity
    await ipam.set_config(IPAMConfig(ip_cooldown_seconds=5))
    resource = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "IPAMConfiguration",
        "metadata": {"name": "default"},
        "spec": {"strictAffinity": True, "maxBlocksPerHost": 3},
    }
    await kv.put(keys.IPAM_CONFIGURATION_KEY, json.dumps(resource).encode())
    config = await ipam.get_config()
    assert (config.strict_affinity, config.max_blocks_per_host) == (True, 3)
    assert config.auto_allocate_blocks and config.ip_cooldown_seconds == 0
    await ipam.set_config(IPAMConfig(strict_affinity=False))
    assert not (await ipam.get_config()).strict_affinity

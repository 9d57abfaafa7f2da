"""The node agent's allocator (``IPAM(cache_seconds > 0)``) works from cached blocks and handles
and writes handle and block in one transaction; these tests make the caches stale behind its
back (another allocator standing for another process) and check that nothing is lost."""

from __future__ import annotations

import ipaddress

from pycalico.ipam import keys
from pycalico.ipam.allocator import IPAM, AutoAssignRequest
from pycalico.ipam.check import check
from pycalico.ipam.records import IPAMHandle
from pycalico.testing.ipam import put_node, put_pool
from pycalico.testing.memory_kv import MemoryKVStore


def request(handle: str) -> AutoAssignRequest:
    return AutoAssignRequest(node="node-1", handle_id=handle, attrs={"node": "node-1"}, num4=1)


async def setup() -> tuple[MemoryKVStore, IPAM, IPAM]:
    kv = MemoryKVStore()
    await put_pool(kv, "default-ipv4-ippool", "10.65.0.0/16")
    await put_node(kv, "node-1")
    agent = IPAM(kv, cache_seconds=60)
    await agent.auto_assign(request("warm"))  # the node's block is now hot in the agent
    return kv, agent, IPAM(kv)


async def handle_counts(kv: MemoryKVStore, handle: str) -> dict[str, int] | None:
    stored = await kv.get(keys.handle_key(handle))
    return None if stored is None else dict(IPAMHandle.from_json(stored.value).block)


async def test_one_transaction_per_assignment_and_per_release() -> None:
    kv, agent, _ = await setup()
    before = kv.revision
    v4, _ = await agent.auto_assign(request("net.c1"))
    assert kv.revision == before + 1  # handle created and address taken at one revision
    assert await handle_counts(kv, "net.c1") == {str(v4.addresses[0].network): 1}
    assert await agent.release_by_handle("net.c1") == 1
    assert kv.revision == before + 2
    assert await kv.get(keys.handle_key("net.c1")) is None
    report = await check(kv)
    assert report.clean and report.allocations == 1, report.findings


async def test_a_handle_changed_by_another_process_is_released_in_full() -> None:
    kv, agent, other = await setup()
    await agent.auto_assign(request("net.c1"))  # the agent remembers this handle
    elsewhere = ipaddress.ip_address("10.65.200.7")
    await other.assign_ip(elsewhere, node="node-1", handle_id="net.c1")
    assert len(await handle_counts(kv, "net.c1") or {}) == 2
    assert await agent.release_by_handle("net.c1") == 2
    assert await kv.get(keys.handle_key("net.c1")) is None
    assert await agent.allocation_info(elsewhere) is None
    report = await check(kv)
    assert report.clean and report.allocations == 1, report.findings


async def test_a_stale_hot_block_does_not_hide_an_address_to_release() -> None:
    kv, agent, other = await setup()
    v4, _ = await other.auto_assign(request("net.c2"))  # same block, behind the agent's back
    assert await agent.release_by_handle("net.c2") == 1
    assert await agent.allocation_info(v4.addresses[0].ip) is None
    assert await kv.get(keys.handle_key("net.c2")) is None
    report = await check(kv)
    assert report.clean and report.allocations == 1, report.findings


async def test_a_batched_assignment_to_an_existing_handle_counts_it_up() -> None:
    kv, agent, other = await setup()
    await other.assign_ip(ipaddress.ip_address("10.65.200.7"), node="node-1", handle_id="h")
    v4, _ = await agent.auto_assign(request("h"))
    assert await handle_counts(kv, "h") == {"10.65.200.0/26": 1, str(v4.addresses[0].network): 1}
    v4, _ = await other.auto_assign(request("warm-2"))  # the hot block moves on again
    v4, _ = await agent.auto_assign(request("next"))
    report = await check(kv)
    assert report.clean and report.allocations == 5, report.findings
    assert await agent.release_by_handle("h") == 2
    report = await check(kv)
    assert report.clean and report.allocations == 3, report.findings

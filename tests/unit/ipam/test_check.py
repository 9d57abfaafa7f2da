"""``ipam check`` findings from hand-built snapshots (pure ``analyse``) and from the allocator."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

from pycalico.ipam.allocator import IPAM, AutoAssignRequest
from pycalico.ipam.blocks import AllocationBlock
from pycalico.ipam.check import AffinityEntry, Snapshot, analyse, check
from pycalico.ipam.pools import Pool
from pycalico.ipam.records import IPAMHandle
from pycalico.testing.ipam import put_node, put_pool
from pycalico.testing.memory_kv import MemoryKVStore

CIDR = ipaddress.ip_network("10.65.0.0/30")
POOL = Pool("p", ipaddress.ip_network("10.65.0.0/16"), 30)


def snapshot(**changes: object) -> Snapshot:
    block = AllocationBlock.new(
        CIDR, affinity="host:n1", claim_time=datetime(2026, 1, 1, tzinfo=UTC), sequence_number=1
    )
    block.auto_assign(1, "h", {"node": "n1"})
    base = Snapshot(
        blocks=[block],
        affinities=[AffinityEntry("n1", CIDR, "host", "confirmed")],
        handles={"h": IPAMHandle({str(CIDR): 1})},
        nodes={"n1"},
        pools=[POOL],
    )
    for name, value in changes.items():
        setattr(base, name, value)
    return base


def kinds(s: Snapshot) -> list[str]:
    return [f.kind for f in analyse(s).findings]


def test_consistent_snapshot_is_clean() -> None:
    report = analyse(snapshot())
    assert report.clean and report.allocations == 1 and report.blocks == 1


def test_each_kind_of_finding() -> None:
    assert kinds(snapshot(handles={})) == ["allocation-without-handle"]
    assert kinds(snapshot(handles={"h": IPAMHandle({str(CIDR): 3})})) == [
        "handle-without-addresses"
    ]
    assert sorted(kinds(snapshot(nodes=set()))) == [
        "affinity-for-missing-node",
        "block-affine-to-missing-node",
    ]
    assert kinds(snapshot(affinities=[AffinityEntry("n1", CIDR, "host", "pending")])) == [
        "pending-affinity"
    ]
    assert kinds(snapshot(affinities=[])) == ["block-without-affinity"]
    other = ipaddress.ip_network("10.65.0.4/30")
    extra = AffinityEntry("n1", other, "host", "pending")
    assert kinds(snapshot(affinities=[*snapshot().affinities, extra])) == ["affinity-without-block"]
    assert kinds(snapshot(pools=[Pool("q", ipaddress.ip_network("10.99.0.0/16"), 26)])) == [
        "allocation-outside-pools"
    ]
    overlapping = AllocationBlock.new(
        ipaddress.ip_network("10.65.0.0/29"), affinity=None, claim_time=None, sequence_number=1
    )
    overlapping.auto_assign(1, "h2", None)
    s = snapshot(handles={"h": IPAMHandle({str(CIDR): 1}), "h2": IPAMHandle({"10.65.0.0/29": 1})})
    s.blocks.append(overlapping)
    assert kinds(s) == ["address-with-two-owners"]
    assert kinds(snapshot(endpoint_addresses={"10.65.0.0": ["ns/a", "ns/b"]})) == [
        "address-with-two-owners"
    ]
    assert kinds(snapshot(endpoint_addresses={"10.65.0.1": ["ns/a"]})) == [
        "address-in-use-without-allocation"
    ]
    assert kinds(snapshot(endpoint_addresses={"192.168.9.9": ["ns/no-ipam"]})) == []


async def test_allocator_leaves_a_clean_store() -> None:
    kv = MemoryKVStore()
    await put_pool(kv, "p", "10.65.0.0/16")
    await put_node(kv, "n1")
    ipam = IPAM(kv)
    await ipam.auto_assign(AutoAssignRequest(node="n1", handle_id="a", num4=2))
    report = await check(kv)
    assert report.clean and report.allocations == 2 and report.handles == 1
    assert '"findings": []' in report.to_json()


async def test_dual_stack_store_checks_clean() -> None:
    # IPv4 and IPv6 addresses in one report must sort together without comparing across families.
    kv = MemoryKVStore()
    await put_pool(kv, "v4", "10.65.0.0/16")
    await put_pool(kv, "v6", "fd00:65::/112")
    await put_node(kv, "n1")
    ipam = IPAM(kv)
    await ipam.auto_assign(AutoAssignRequest(node="n1", handle_id="a", num4=1, num6=1))
    report = await check(kv)
    assert report.clean and report.allocations == 2


def test_dual_stack_findings_are_ordered_by_family() -> None:
    v6_block = AllocationBlock.new(
        ipaddress.ip_network("fd00::/126"), affinity=None, claim_time=None, sequence_number=1
    )
    v6_block.auto_assign(1, "h6", None)
    s = snapshot(endpoint_addresses={"fd00::3": ["ns/b"], "10.65.0.2": ["ns/a"]})
    s.blocks.append(v6_block)
    s.pools = [*s.pools, Pool("p6", ipaddress.ip_network("fd00::/64"), 126)]
    found = [
        f.address for f in analyse(s).findings if f.kind == "address-in-use-without-allocation"
    ]
    assert found == ["10.65.0.2", "fd00::3"]

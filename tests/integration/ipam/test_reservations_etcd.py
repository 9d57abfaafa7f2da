"""IPReservation honoured by IPAM on a real etcd: 200 auto-assigns (node agent's cached, batched
hot-block path and the cold per-request path) never return a reserved address; a reservation
written later reaches the hot block once the cache expires; a block exhausted by reservations
is passed over for a new one; an explicit assign_ip inside a reservation is allowed, as Calico;
and calicoctl apply/get/delete of the kind, with an invalid CIDR refused and nothing written."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from pycalico.datastore.api import KVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.ipam import keys
from pycalico.ipam.allocator import IPAM, AssignmentIncomplete, AutoAssignRequest
from pycalico.ipam.blocks import AllocationBlock
from pycalico.ipam.check import check
from pycalico.ipam.records import IPAMConfig
from pycalico.ipam.reservations import Reservations
from pycalico.model.codec import load_documents
from pycalico.testing.calicoctl import Calicoctl
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.ipam import put_node, put_pool

RESERVATIONS_ROOT = "/calico/resources/v3/projectcalico.org/ipreservations/"


def reservation(name: str, *cidrs: str) -> str:
    items = "".join(f"  - {c!r}\n" for c in cidrs)
    return (
        f"apiVersion: projectcalico.org/v3\nkind: IPReservation\nmetadata:\n  name: {name}\n"
        f"spec:\n  reservedCIDRs:\n{items}"
    )


async def reserve(store: ResourceStore, name: str, *cidrs: str) -> None:
    (resource,) = load_documents(reservation(name, *cidrs), name)
    await store.apply(resource)


def request(node: str, handle: str) -> AutoAssignRequest:
    return AutoAssignRequest(node=node, handle_id=handle, attrs={"node": node})


async def stored_blocks(kv: KVStore) -> dict[ipaddress.IPv4Network, AllocationBlock]:
    listed = await kv.list(keys.blocks_prefix(4))
    blocks = [AllocationBlock.from_json(item.value) for item in listed.items]
    return {b.cidr: b for b in blocks}  # type: ignore[misc]


def count_hot_batches(allocator: IPAM) -> list[int]:
    """Wrap the batcher's hot-block path and record how many requests each batch served."""
    batcher = allocator.allocator.batcher
    original = batcher._assign_batch_from_hot
    served: list[int] = []

    async def spy(node: str, version: int, items: list[Any]) -> bool:
        pending = sum(1 for w in items if not w.future.done())
        done = await original(node, version, items)
        if done and pending:
            served.append(pending)
        return done

    batcher._assign_batch_from_hot = spy  # type: ignore[method-assign]
    return served


# Pool 10.80.0.0/23 in /26 blocks: the first /30 of seven blocks reserved (written the ways
# Calico accepts: masked, unmasked, bare), two single addresses, and the eighth block whole.
RESERVED = {
    "block-heads": [
        "10.80.0.0/30",
        "10.80.0.65/30",
        "10.80.0.128/30",
        "10.80.0.192/30",
        "10.80.1.0/30",
        "10.80.1.64/30",
        "10.80.1.128/30",
        "fd00:80::/126",
    ],
    "singles": ["10.80.0.100", "10.80.1.10"],
    "whole-block": ["10.80.1.192/26"],
}
WHOLE_BLOCK = ipaddress.ip_network("10.80.1.192/26")


@pytest.mark.parametrize("path", ["agent", "cold"])
async def test_200_auto_assigns_never_return_a_reserved_address(
    kv: KVStore, store: ResourceStore, path: str
) -> None:
    await put_pool(kv, "pool", "10.80.0.0/23", block_size=26)
    await put_node(kv, "node-1")
    for name, cidrs in RESERVED.items():
        await reserve(store, name, *cidrs)
    reservations = Reservations.from_cidrs(c for cidrs in RESERVED.values() for c in cidrs)

    addresses: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = []
    served: list[int] = []
    concurrency = 20
    if path == "agent":
        # The node agent: one long-lived allocator, concurrent CNI requests combined into
        # hot-block transactions.
        agent = IPAM(kv, cache_seconds=60)
        served = count_hot_batches(agent)
        assign: Callable[[AutoAssignRequest], Awaitable[Any]] = agent.auto_assign
    else:
        # The in-process CNI plugin: a fresh allocator (nothing cached) per request, one at a
        # time as Calico's per-host IPAM lock makes them.
        concurrency = 1

        async def assign(req: AutoAssignRequest) -> Any:
            return await IPAM(kv).auto_assign(req)

    for wave in range(200 // concurrency):
        results = await asyncio.gather(
            *(assign(request("node-1", f"h-{wave}-{i}")) for i in range(concurrency))
        )
        addresses.extend(a for v4, _ in results for a in v4.addresses)

    assert len(addresses) == 200
    assert len({a.ip for a in addresses}) == 200
    assert [str(a) for a in addresses if reservations.matches_ip(a.ip)] == []
    if path == "agent":
        assert sum(served) > 100  # most requests really went through the batched hot path
    blocks = await stored_blocks(kv)
    assert WHOLE_BLOCK not in blocks  # a wholly reserved block is never claimed
    assert len(blocks) >= 4  # 200 addresses need at least four /26 blocks minus reservations
    for cidr, b in blocks.items():
        for address in reservations.reserved_in(cidr):
            ordinal = b.ordinal(address)
            assert b.allocations[ordinal] is None and ordinal in b.unallocated
    report = await check(kv)
    assert report.clean, report.findings


async def test_reservation_written_later_reaches_the_hot_block(
    kv: KVStore, store: ResourceStore
) -> None:
    await put_pool(kv, "pool", "10.82.0.0/24", block_size=26)
    await put_node(kv, "node-1")
    agent = IPAM(kv, cache_seconds=0.3)
    served = count_hot_batches(agent)
    (first, _) = await agent.auto_assign(request("node-1", "h-first"))
    cidr = first.addresses[0].network
    (b,) = [b for c, b in (await stored_blocks(kv)).items() if c == cidr]
    upcoming = [str(b.address(o)) for o in b.unallocated[:6]]
    await reserve(store, "later", *upcoming)
    await asyncio.sleep(0.35)  # the cached pools and reservations expire

    results = await asyncio.gather(
        *(agent.auto_assign(request("node-1", f"h{i}")) for i in range(10))
    )
    got = [str(v4.addresses[0].ip) for v4, _ in results]
    assert set(got).isdisjoint(upcoming)
    assert all(ipaddress.ip_address(a) in cidr for a in got)  # still served from the hot block
    assert sum(served) >= 5


@pytest.mark.parametrize("strict", [False, True])
async def test_block_exhausted_by_reservations_is_passed_over(
    kv: KVStore, store: ResourceStore, strict: bool
) -> None:
    await put_pool(kv, "small", "10.81.0.0/26", block_size=28)  # four blocks of 16
    await put_node(kv, "node-1")
    allocator = IPAM(kv)
    if strict:
        await allocator.set_config(IPAMConfig(strict_affinity=True))
    (first, _) = await allocator.auto_assign(request("node-1", "h-first"))
    affine = first.addresses[0].network
    # Everything else in the node's block is now reserved (the address in use stays in use).
    others = [str(a) for a in affine if a != first.addresses[0].ip]
    await reserve(store, "rest-of-block", *others)

    got = []
    for i in range(48):  # exactly the three other blocks
        (v4, _) = await allocator.auto_assign(request("node-1", f"h{i}"))
        got.append(v4.addresses[0])
    assert not any(a.ip in affine for a in got)
    assert len({a.network for a in got}) == 3
    blocks = await stored_blocks(kv)
    assert len(blocks) == 4 and all(b.host == "node-1" for b in blocks.values())
    assert blocks[affine].num_free() == 15  # reserved, still free: nothing was taken

    with pytest.raises(AssignmentIncomplete) as caught:
        await allocator.auto_assign(request("node-1", "h-one-too-many"))
    assert str(caught.value).startswith("Assigned 0 out of 1 requested IPv4 addresses")
    assert (await stored_blocks(kv))[affine].num_free() == 15


async def test_explicit_assign_inside_a_reservation_is_allowed(
    kv: KVStore, store: ResourceStore
) -> None:
    # Calico's AssignIP does not consult reservations (they only steer auto-assignment).
    await put_pool(kv, "pool", "10.83.0.0/24", block_size=26)
    await put_node(kv, "node-1")
    await reserve(store, "r", "10.83.0.0/29")
    allocator = IPAM(kv)
    assigned = await allocator.assign_ip(
        ipaddress.ip_address("10.83.0.3"), node="node-1", handle_id="explicit"
    )
    assert str(assigned) == "10.83.0.3/26"
    got = [
        (await allocator.auto_assign(request("node-1", f"h{i}")))[0].addresses[0] for i in range(8)
    ]
    assert [str(a.ip) for a in got] == [f"10.83.0.{i}" for i in range(8, 16)]
    # Releasing is unaffected by reservations.
    await allocator.release_by_handle("explicit")
    (b,) = (await stored_blocks(kv)).values()
    assert b.allocations[3] is None and 3 in b.unallocated


# --- calicoctl ---------------------------------------------------------------------------------


async def reservation_keys(kv: KVStore) -> dict[str, bytes]:
    listed = await kv.list(RESERVATIONS_ROOT)
    return {item.key: item.value for item in listed.items}


async def test_calicoctl_apply_get_delete(kv: KVStore, etcd: EtcdServer, tmp_path: Path) -> None:
    ctl = Calicoctl(etcd.endpoint, tmp_path)
    cidrs = ["10.90.0.5/30", "10.90.1.1", "cafe:f00d::/123"]
    path = ctl.manifest(reservation("my-reservation", *cidrs), "r.yaml")
    out = await asyncio.to_thread(ctl.ok, "apply", "-f", path)
    assert out == "Successfully applied 1 'IPReservation' resource(s)\n"
    stored = await reservation_keys(kv)
    assert list(stored) == [RESERVATIONS_ROOT + "my-reservation"]
    assert yaml.safe_load(stored[RESERVATIONS_ROOT + "my-reservation"])["spec"] == {
        "reservedCIDRs": cidrs
    }

    ps = (await asyncio.to_thread(ctl.ok, "get", "ipreservations")).splitlines()
    assert [line.split() for line in ps if line.strip()] == [["NAME"], ["my-reservation"]]
    wide = (await asyncio.to_thread(ctl.ok, "get", "reservation", "-o", "wide")).splitlines()
    assert wide[0].split() == ["NAME", "CIDRS"]
    assert wide[1].split() == ["my-reservation", ",".join(cidrs)]
    got = yaml.safe_load(
        await asyncio.to_thread(ctl.ok, "get", "ipreservation", "my-reservation", "-o", "yaml")
    )
    assert got["kind"] == "IPReservation" and got["spec"] == {"reservedCIDRs": cidrs}

    out = await asyncio.to_thread(ctl.ok, "delete", "ipreservation", "my-reservation")
    assert "Successfully deleted 1 'IPReservation' resource(s)" in out
    assert await reservation_keys(kv) == {}


async def test_calicoctl_refuses_an_invalid_cidr_and_writes_nothing(
    kv: KVStore, etcd: EtcdServer, tmp_path: Path
) -> None:
    ctl = Calicoctl(etcd.endpoint, tmp_path)
    text = (
        reservation("good", "10.91.0.0/30")
        + "---\n"
        + reservation("bad", "10.91.0.9", "10.91.0.0/33")
    )
    path = ctl.manifest(text, "bad.yaml")
    done = await asyncio.to_thread(ctl, "apply", "-f", path)
    assert done.returncode == 1 and done.stdout == ""
    assert "spec.reservedCIDRs[1]" in done.stderr and "10.91.0.0/33" in done.stderr
    assert "nothing was written" in done.stderr
    assert await reservation_keys(kv) == {}

"""ResourceSyncer: decoded resource updates over the raw syncer (in-memory store)."""

from __future__ import annotations

import asyncio

from pycalico.datastore.resource_syncer import ResourceBatch, ResourceSyncer, decode_update
from pycalico.datastore.resources import ResourceStore
from pycalico.datastore.syncer import SyncerUpdate
from pycalico.model.codec import decode_resource
from pycalico.model.meta import Resource
from pycalico.testing.memory_kv import MemoryKVStore


def pool(name: str, cidr: str) -> Resource:
    return decode_resource(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPPool",
            "metadata": {"name": name},
            "spec": {"cidr": cidr},
        }
    )


async def test_initial_state_then_changes_as_decoded_resources() -> None:
    kv = MemoryKVStore()
    store = ResourceStore(kv)
    first = await store.create(pool("p1", "10.65.0.0/16"))
    await kv.put("/calico/ipam/v2/config", b"{}")  # outside the watched kinds
    batches: list[ResourceBatch] = []

    async def consume() -> None:
        async for batch in ResourceSyncer(kv, ["IPPool", "tiers"]):
            batches.append(batch)
            if sum(len(b.updates) for b in batches) == 3:
                return

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.01)
    second = await store.create(pool("p2", "10.66.0.0/16"))
    await store.delete("IPPool", "p1")
    await asyncio.wait_for(task, 5)
    updates = [u for b in batches for u in b.updates]
    assert [(u.kind.kind, u.name, u.resource) for u in updates] == [
        ("IPPool", "p1", first),
        ("IPPool", "p2", second),
        ("IPPool", "p1", None),
    ]
    assert any(b.in_sync for b in batches)


def test_unreadable_values_become_deletes_with_an_error_and_foreign_keys_are_skipped() -> None:
    bad = decode_update(
        SyncerUpdate(
            "/calico/resources/v3/projectcalico.org/ippools/bad",
            b'{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"bad"},'
            b'"spec":{"cidr":"10.0.0.0/16","blockSize":"many"}}',
            7,
        )
    )
    assert bad is not None
    assert bad.resource is None and bad.error is not None and "spec.blockSize" in bad.error
    assert decode_update(SyncerUpdate("/calico/ipam/v2/config", b"{}", 3)) is None
    assert (
        decode_update(SyncerUpdate("/calico/resources/v3/projectcalico.org/unknowns/x", b"", 3))
        is None
    )

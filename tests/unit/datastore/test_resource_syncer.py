"""ResourceSyncer, the typed update stream, and its one decoder (in-memory store)."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest

from pycalico.datastore import paths
from pycalico.datastore.resource_syncer import ResourceBatch, ResourceSyncer
from pycalico.datastore.resources import ResourceStore
from pycalico.datastore.updates import BlockAffinity, ResourceKey, decode_update
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
    in_sync = asyncio.Event()

    async def consume() -> None:
        async for batch in ResourceSyncer(kv, ["IPPool", "tiers"]):
            batches.append(batch)
            if batch.in_sync:
                in_sync.set()
            if sum(len(b.updates) for b in batches) == 3:
                return

    task = asyncio.create_task(consume())
    await asyncio.wait_for(in_sync.wait(), 5)  # the snapshot is listed: changes come by watch
    second = await store.create(pool("p2", "10.66.0.0/16"))
    await store.delete("IPPool", "p1")
    await asyncio.wait_for(task, 5)
    updates = [u for b in batches for u in b.updates]
    assert [(u.key, u.resource) for u in updates] == [
        (ResourceKey("IPPool", "p1"), first),
        (ResourceKey("IPPool", "p2"), second),
        (ResourceKey("IPPool", "p1"), None),
    ]
    assert updates[1].resource is not None
    assert updates[1].resource.metadata.resource_version == str(updates[1].revision)
    assert any(b.in_sync for b in batches)


def test_unreadable_values_become_deletes_logged_once_and_foreign_keys_are_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = "/calico/resources/v3/projectcalico.org/ippools/bad"
    with caplog.at_level(logging.WARNING):
        bad = decode_update(
            key,
            b'{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"bad"},'
            b'"spec":{"cidr":"10.0.0.0/16","blockSize":"many"}}',
            7,
        )
    assert bad is not None and bad.key == ResourceKey("IPPool", "bad") and bad.resource is None
    (record,) = caplog.records
    assert key in record.getMessage() and "spec.blockSize" in record.getMessage()
    assert decode_update("/calico/ipam/v2/config", b"{}", 3) is None
    assert decode_update("/calico/resources/v3/projectcalico.org/unknowns/x", b"", 3) is None


def test_affinities_are_typed_and_a_deleted_mark_is_a_delete() -> None:
    key = paths.affinity_key("node1", "10.65.0.0/26")
    update = decode_update(key, json.dumps({"state": "pending"}).encode(), 4)
    assert update is not None
    assert update.key == paths.AffinityKey("host", "node1", "10.65.0.0/26")
    assert update.resource == BlockAffinity("pending")
    gone = decode_update(key, b'{"state":"confirmed","deleted":true}', 5)
    assert gone is not None and gone.resource is None
    legacy = decode_update(key, b"", 6)
    assert legacy is not None and legacy.resource == BlockAffinity("")


def test_resource_key_round_trips_to_the_etcd_path() -> None:
    key = ResourceKey("WorkloadEndpoint", "node1-k8s-pod-eth0", "ns1")
    typed = decode_update(key.path, None, 1)
    assert typed is not None and typed.key == key
    assert str(key) == "WorkloadEndpoint(ns1/node1-k8s-pod-eth0)"

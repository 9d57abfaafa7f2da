"""ResourceStore on real etcd: Calico's keys and values, CAS under contention, watch."""

from __future__ import annotations

import asyncio
import json

import pytest

from pycalico.datastore.api import KeyAlreadyExists, RevisionConflict, WatchEventType
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.model.codec import decode_resource
from pycalico.model.meta import Resource
from pycalico.testing.etcd_server import EtcdServer


def profile(name: str) -> Resource:
    return decode_resource(
        {"apiVersion": "projectcalico.org/v3", "kind": "Profile", "metadata": {"name": name}}
    )


async def test_written_values_are_calicos_json_at_calicos_keys(
    etcd: EtcdServer, store: ResourceStore
) -> None:
    created = await store.create(profile("web"))
    raw = await store.kv.get("/calico/resources/v3/projectcalico.org/profiles/web")
    assert raw is not None
    value = json.loads(raw.value)
    assert value["apiVersion"] == "projectcalico.org/v3" and value["kind"] == "Profile"
    assert value["metadata"]["uid"] == created.metadata.uid
    assert "resourceVersion" not in value["metadata"]
    assert created.metadata.resource_version == str(raw.revision)
    # A second client (a second process, in real life) sees the same object and loses the race.
    other = ResourceStore(EtcdKVStore([etcd.endpoint]))
    try:
        assert await other.get("Profile", "web") == created
        with pytest.raises(KeyAlreadyExists):
            await other.create(profile("web"))
        await other.update(created.with_metadata(labels={"by": "other"}))
        with pytest.raises(RevisionConflict) as caught:
            await store.update(created.with_metadata(labels={"by": "me"}))
        assert caught.value.current_resource is not None
        assert caught.value.current_resource.metadata.labels == {"by": "other"}
    finally:
        await other.kv.close()


async def test_twenty_concurrent_writers_updating_one_resource_lose_nothing(
    store: ResourceStore,
) -> None:
    await store.create(profile("shared"))
    writers, each = 20, 5
    conflicts = 0

    async def writer(index: int) -> None:
        nonlocal conflicts
        for step in range(each):
            while True:
                current = await store.get("Profile", "shared")
                labels = dict(current.metadata.labels or {})
                labels[f"w{index}-{step}"] = "x"
                try:
                    await store.update(current.with_metadata(labels=labels))
                    break
                except RevisionConflict:
                    conflicts += 1

    await asyncio.gather(*(writer(i) for i in range(writers)))
    final = await store.get("Profile", "shared")
    assert len(final.metadata.labels or {}) == writers * each
    assert conflicts > 0


async def test_concurrent_apply_of_one_resource_all_succeed(store: ResourceStore) -> None:
    results = await asyncio.gather(*(store.apply(profile("applied")) for _ in range(10)))
    versions = sorted(int(r.metadata.resource_version or 0) for r in results)
    assert len(set(versions)) == 10
    assert len({r.metadata.uid for r in results}) == 1


async def test_watch_reports_changes_in_order(store: ResourceStore) -> None:
    listed = await store.list("Profile")
    stream = store.watch("Profile", revision=listed.revision)
    created = await store.create(profile("a"))
    updated = await store.update(created.with_metadata(labels={"k": "v"}))
    deleted = await store.delete("Profile", "a")
    events = [await asyncio.wait_for(anext(stream), 5) for _ in range(3)]  # type: ignore[call-overload]
    assert [(e.type, e.resource.resource_version) for e in events[:2]] == [
        (WatchEventType.ADDED, created.resource_version),
        (WatchEventType.MODIFIED, updated.resource_version),
    ]
    # A DELETED event carries the last value, versioned at the delete (as Calico's watcher does);
    # delete() itself returns the object as it was stored.
    assert events[2].type is WatchEventType.DELETED
    assert events[2].resource.resource_version == str(events[2].revision)
    assert events[2].revision > int(deleted.resource_version or 0)
    assert deleted.resource_version == updated.resource_version
    assert events[2].resource.metadata.labels == {"k": "v"}
    await stream.aclose()  # type: ignore[attr-defined]

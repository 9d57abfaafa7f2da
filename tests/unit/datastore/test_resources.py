"""ResourceStore semantics over the in-memory store (Calico clientv3 rules)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from pycalico.datastore.api import (
    InvalidResource,
    KeyAlreadyExists,
    KeyNotFound,
    RevisionConflict,
    WatchEventType,
)
from pycalico.datastore.resources import DEFAULT_ALLOW_PROFILE, ResourceStore
from pycalico.model.codec import decode_resource
from pycalico.model.meta import Resource
from pycalico.testing.memory_kv import MemoryKVStore

POOLS = "/calico/resources/v3/projectcalico.org/ippools/"


def pool(name: str, cidr: str, **spec: Any) -> Resource:
    return decode_resource(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPPool",
            "metadata": {"name": name},
            "spec": {"cidr": cidr, **spec},
        }
    )


def policy(namespace: str, name: str, order: float = 100) -> Resource:
    return decode_resource(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"order": order, "selector": "all()", "ingress": [{"action": "Allow"}]},
        }
    )


def with_spec(resource: Resource, **changes: Any) -> Resource:
    spec = resource.spec  # type: ignore[attr-defined]
    return resource.model_copy(update={"spec": spec.model_copy(update=changes)})


@pytest.fixture
def store() -> ResourceStore:
    return ResourceStore(
        MemoryKVStore(), now=lambda: "2026-01-02T03:04:05Z", new_uid=lambda: "uid-1"
    )


async def test_create_fills_metadata_and_stores_at_calicos_key_without_version(
    store: ResourceStore,
) -> None:
    created = await store.create(pool("p1", "10.65.0.0/16"))
    assert created.metadata.uid == "uid-1"
    assert created.metadata.creation_timestamp == "2026-01-02T03:04:05Z"
    stored = await store.kv.get(POOLS + "p1")
    assert stored is not None
    assert created.metadata.resource_version == str(stored.revision)
    value = json.loads(stored.value)
    assert "resourceVersion" not in value["metadata"]
    assert value["kind"] == "IPPool" and value["spec"]["cidr"] == "10.65.0.0/16"
    assert value["spec"]["blockSize"] == 26  # defaults applied on write
    assert await store.get("IPPool", "p1") == created
    assert await store.get("ippools", "p1") == created  # plurals and aliases resolve


async def test_create_refuses_a_resource_version_and_duplicates(store: ResourceStore) -> None:
    with pytest.raises(InvalidResource) as caught:
        await store.create(pool("p1", "10.65.0.0/16").with_metadata(resource_version="7"))
    assert caught.value.field == "metadata.resourceVersion"
    first = await store.create(pool("p1", "10.65.0.0/16"))
    with pytest.raises(KeyAlreadyExists) as exists:
        await store.create(pool("p1", "10.65.0.0/16"))
    assert "IPPool(p1)" in str(exists.value)
    assert exists.value.current_resource == first


async def test_create_validates_through_the_model(store: ResourceStore) -> None:
    bad = pool("p1", "10.65.0.0/16").with_metadata(name="Not_A_Name")
    with pytest.raises(InvalidResource) as caught:
        await store.create(bad)
    assert caught.value.field == "metadata.name"
    assert await store.kv.list(POOLS) is not None
    assert (await store.list("IPPool")).items == []


async def test_update_is_compare_and_swap_and_keeps_identity(store: ResourceStore) -> None:
    created = await store.create(pool("p1", "10.65.0.0/16"))
    unversioned = with_spec(created, nat_outgoing=True).with_metadata(resource_version=None)
    with pytest.raises(InvalidResource) as missing:
        await store.update(unversioned)
    assert missing.value.field == "metadata.resourceVersion"
    # uid/creationTimestamp omitted: kept from the stored object.
    changed = with_spec(created, nat_outgoing=True).with_metadata(uid=None, creation_timestamp=None)
    updated = await store.update(changed)
    assert updated.spec.nat_outgoing is True  # type: ignore[attr-defined]
    assert updated.metadata.uid == "uid-1"
    assert int(updated.metadata.resource_version or 0) > int(created.metadata.resource_version or 0)
    with pytest.raises(RevisionConflict) as conflict:
        await store.update(with_spec(created, disabled=True))
    assert conflict.value.current_resource == updated
    with pytest.raises(InvalidResource) as uid_change:
        await store.update(updated.with_metadata(uid="someone-else"))
    assert uid_change.value.field == "metadata.uid"
    await store.delete("IPPool", "p1")
    with pytest.raises(KeyNotFound):
        await store.update(updated)


async def test_ippools_may_not_overlap_or_change_cidr_or_block_size(store: ResourceStore) -> None:
    created = await store.create(pool("p1", "10.65.0.0/16"))
    with pytest.raises(InvalidResource) as overlap:
        await store.create(pool("p2", "10.65.128.0/17"))
    assert overlap.value.field == "spec.cidr"
    await store.create(pool("p3", "10.66.0.0/16"))
    with pytest.raises(InvalidResource) as cidr:
        await store.update(with_spec(created, cidr="10.67.0.0/16"))
    assert cidr.value.field == "spec.cidr"
    with pytest.raises(InvalidResource) as block:
        await store.update(with_spec(created, block_size=28))
    assert block.value.field == "spec.blockSize"


async def test_apply_creates_then_updates_at_the_current_revision(store: ResourceStore) -> None:
    first = await store.apply(pool("p1", "10.65.0.0/16"))
    second = await store.apply(pool("p1", "10.65.0.0/16", natOutgoing=True))
    assert second.spec.nat_outgoing is True  # type: ignore[attr-defined]
    assert second.metadata.uid == first.metadata.uid
    assert second.metadata.creation_timestamp == first.metadata.creation_timestamp
    with pytest.raises(RevisionConflict):
        await store.apply(pool("p1", "10.65.0.0/16").with_metadata(resource_version="1"))


async def test_concurrent_apply_retries_lost_races(store: ResourceStore) -> None:
    results = await asyncio.gather(
        *(store.apply(pool("p1", "10.65.0.0/16", blockSize=26 + i % 1)) for i in range(10))
    )
    assert len({r.metadata.resource_version for r in results}) == 10


async def test_delete_guarded_by_revision_returns_the_deleted_object(store: ResourceStore) -> None:
    created = await store.create(pool("p1", "10.65.0.0/16"))
    with pytest.raises(RevisionConflict):
        await store.delete("IPPool", "p1", revision=int(created.metadata.resource_version or 0) + 5)
    deleted = await store.delete("IPPool", "p1", revision=created.metadata.resource_version)
    assert deleted == created
    with pytest.raises(KeyNotFound) as gone:
        await store.get("IPPool", "p1")
    assert "IPPool(p1)" in str(gone.value)
    with pytest.raises(KeyNotFound):
        await store.delete("IPPool", "p1")


async def test_namespaced_list_per_namespace_and_across_all(store: ResourceStore) -> None:
    await store.create(policy("ns1", "a"))
    await store.create(policy("ns2", "b"))
    await store.create(policy("ns1", "c"))
    everywhere = await store.list("NetworkPolicy")
    assert [(r.namespace, r.name) for r in everywhere.items] == [
        ("ns1", "a"),
        ("ns1", "c"),
        ("ns2", "b"),
    ]
    assert [r.name for r in (await store.list("networkpolicy", "ns2")).items] == ["b"]
    assert everywhere.revision == store.kv.revision  # type: ignore[attr-defined]
    assert (await store.get("NetworkPolicy", "a", "ns1")).namespace == "ns1"
    with pytest.raises(KeyNotFound) as missing:
        await store.get("NetworkPolicy", "a", "ns2")
    assert "NetworkPolicy(ns2/a)" in str(missing.value)


async def test_default_allow_profile_is_synthesised_and_protected(store: ResourceStore) -> None:
    profile = await store.get("Profile", DEFAULT_ALLOW_PROFILE)
    assert [rule.action for rule in profile.spec.ingress] == ["Allow"]  # type: ignore[attr-defined]
    assert [rule.action for rule in profile.spec.egress] == ["Allow"]  # type: ignore[attr-defined]
    assert [p.name for p in (await store.list("Profile")).items] == [DEFAULT_ALLOW_PROFILE]
    assert await store.kv.list("/calico/") is not None
    assert (await store.kv.list("/calico/")).items == []  # never stored
    with pytest.raises(InvalidResource):
        await store.delete("Profile", DEFAULT_ALLOW_PROFILE)
    with pytest.raises(InvalidResource):
        await store.update(profile)


async def test_watch_lists_first_then_reports_added_modified_deleted(
    store: ResourceStore,
) -> None:
    existing = await store.create(pool("p0", "10.64.0.0/16"))
    events: list[tuple[WatchEventType, str, str | None]] = []

    async def watch() -> None:
        async for event in store.watch("IPPool"):
            events.append((event.type, event.resource.name, event.resource.resource_version))
            if len(events) == 4:
                return

    task = asyncio.create_task(watch())
    await asyncio.sleep(0)
    created = await store.create(pool("p1", "10.65.0.0/16"))
    updated = await store.update(with_spec(created, disabled=True))
    await store.delete("IPPool", "p1")
    await asyncio.wait_for(task, 5)
    assert events[:3] == [
        (WatchEventType.ADDED, "p0", existing.resource_version),
        (WatchEventType.ADDED, "p1", created.resource_version),
        (WatchEventType.MODIFIED, "p1", updated.resource_version),
    ]
    assert events[3][:2] == (WatchEventType.DELETED, "p1")


async def test_watch_from_a_revision_reports_only_later_changes(store: ResourceStore) -> None:
    first = await store.create(pool("p0", "10.64.0.0/16"))
    await store.create(pool("p1", "10.65.0.0/16"))
    stream = store.watch("IPPool", revision=first.resource_version)
    event = await asyncio.wait_for(anext(stream), 5)  # type: ignore[call-overload]
    assert (event.type, event.resource.name) == (WatchEventType.ADDED, "p1")


@pytest.mark.parametrize(
    "value",
    [
        # Go's field order (kind first), as Calico itself writes values.
        b'{"kind":"Profile","apiVersion":"projectcalico.org/v3",'
        b'"metadata":{"name":"p","uid":"u1"},"spec":{}}',
        # Spaces, and spec before metadata: not the canonical shape, decoded the slow way.
        b'{"apiVersion": "projectcalico.org/v3", "kind": "Profile", "spec": {},'
        b' "metadata": {"name": "p", "uid": "u1"}}',
        # A stale resourceVersion stored by some other writer: the mod revision wins.
        b'{"apiVersion":"projectcalico.org/v3","kind":"Profile",'
        b'"metadata":{"name":"p","uid":"u1","resourceVersion":"999999"},"spec":{}}',
        # Rules carry their own "metadata" key after the object's.
        b'{"apiVersion":"projectcalico.org/v3","kind":"Profile",'
        b'"metadata":{"name":"p","uid":"u1"},'
        b'"spec":{"ingress":[{"action":"Allow","metadata":{"annotations":{"a":"b"}}}]}}',
    ],
)
async def test_any_stored_value_shape_reads_with_the_mod_revision(
    store: ResourceStore, value: bytes
) -> None:
    revision = await store.kv.put("/calico/resources/v3/projectcalico.org/profiles/p", value)
    got = await store.get("Profile", "p")
    assert (got.name, got.metadata.uid, got.resource_version) == ("p", "u1", str(revision))
    listed = await store.list("Profile")
    assert [(r.name, r.resource_version) for r in listed.items if r.name == "p"] == [
        ("p", str(revision))
    ]


async def test_an_empty_metadata_object_still_gets_its_version(store: ResourceStore) -> None:
    revision = await store.kv.put(
        "/calico/resources/v3/projectcalico.org/profiles/q",
        b'{"apiVersion":"projectcalico.org/v3","kind":"Profile","metadata":{},"spec":{}}',
    )
    listed = await store.list("Profile")
    assert [r.resource_version for r in listed.items if r.name == ""] == [str(revision)]


async def test_an_unreadable_stored_value_names_its_key_and_field(store: ResourceStore) -> None:
    await store.kv.put(
        "/calico/resources/v3/projectcalico.org/ippools/bad",
        b'{"apiVersion":"projectcalico.org/v3","kind":"IPPool","metadata":{"name":"bad"},'
        b'"spec":{"cidr":"10.0.0.0/16","blockSize":"many"}}',
    )
    with pytest.raises(InvalidResource) as caught:
        await store.get("IPPool", "bad")
    assert caught.value.field == "spec.blockSize"
    assert "ippools/bad" in str(caught.value)
    with pytest.raises(InvalidResource) as listed:
        await store.list("IPPool")
    assert listed.value.field == "spec.blockSize"
    assert "ippools/bad" in str(listed.value)


async def test_missing_namespace_or_a_slash_in_a_name_is_an_invalid_resource(
    store: ResourceStore,
) -> None:
    with pytest.raises(InvalidResource) as no_namespace:
        await store.get("NetworkPolicy", "a")
    assert no_namespace.value.field == "metadata.namespace"
    with pytest.raises(InvalidResource) as slash:
        await store.delete("IPPool", "a/b")
    assert slash.value.field == "metadata.name"
    with pytest.raises(InvalidResource):
        await store.list("NetworkPolicy", "ns/1")

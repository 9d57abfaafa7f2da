"""One contract suite for every KVStore: the real ``EtcdKVStore`` and the ``MemoryKVStore`` fake.

Running the same assertions against both keeps the fake honest: if it drifts from etcd's
behaviour, the memory variant of some test fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from pycalico.datastore.api import (
    CompactedError,
    DatastoreError,
    EventType,
    KeyAlreadyExists,
    KeyNotFound,
    KVEvent,
    RevisionConflict,
    TemporaryDatastoreError,
    TxnConflict,
    TxnDelete,
    TxnPut,
    ValueTooLarge,
)
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.testing.memory_kv import FakeClock, MemoryKVStore


@dataclass
class Subject:
    kv: Any
    # Lets a lease of ``ttl`` seconds run out (fake clock for memory, real time for etcd).
    expire: Callable[[int], Awaitable[None]]
    compact: Callable[[int], Awaitable[None]]


@pytest.fixture(params=["memory", "etcd"])
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    if request.param == "memory":
        clock = FakeClock()
        memory = MemoryKVStore(clock=clock)

        async def expire_memory(ttl: int) -> None:
            clock.advance(ttl + 0.1)
            memory.expire_leases()

        yield Subject(memory, expire_memory, memory.compact)
        await memory.close()
    else:
        etcd = request.getfixturevalue("etcd")
        kv = EtcdKVStore([etcd.endpoint])
        await kv.delete_prefix("")

        async def expire_etcd(ttl: int) -> None:
            # etcd checks expiry every 500 ms; give it a margin.
            await asyncio.sleep(ttl + 1.0)

        yield Subject(kv, expire_etcd, kv.compact)
        await kv.close()


async def collect(stream: AsyncIterator[KVEvent], count: int, timeout: float = 5) -> list[KVEvent]:
    events: list[KVEvent] = []

    async def run() -> None:
        async for event in stream:
            events.append(event)
            if len(events) == count:
                return

    await asyncio.wait_for(run(), timeout)
    return events


async def test_create_then_create_again_reports_the_existing_value(subject: Subject) -> None:
    kv = subject.kv
    revision = await kv.create("/calico/t/a", b"one")
    got = await kv.get("/calico/t/a")
    assert got is not None
    assert (got.value, got.revision, got.create_revision) == (b"one", revision, revision)
    with pytest.raises(KeyAlreadyExists) as caught:
        await kv.create("/calico/t/a", b"two")
    assert caught.value.current is not None
    assert caught.value.current.value == b"one"
    assert caught.value.current.revision == revision
    assert (await kv.get("/calico/t/a")).value == b"one"


async def test_update_is_a_compare_and_swap_on_the_mod_revision(subject: Subject) -> None:
    kv = subject.kv
    first = await kv.create("/calico/t/a", b"1")
    second = await kv.update("/calico/t/a", b"2", revision=first)
    assert second > first
    with pytest.raises(RevisionConflict) as caught:
        await kv.update("/calico/t/a", b"stale", revision=first)
    assert isinstance(caught.value, TemporaryDatastoreError)
    assert caught.value.expected == first
    assert caught.value.current is not None
    assert (caught.value.current.value, caught.value.current.revision) == (b"2", second)
    current = await kv.get("/calico/t/a")
    assert (current.value, current.revision, current.create_revision) == (b"2", second, first)
    with pytest.raises(KeyNotFound):
        await kv.update("/calico/t/missing", b"x", revision=first)


async def test_failed_writes_do_not_bump_the_revision(subject: Subject) -> None:
    kv = subject.kv
    revision = await kv.create("/calico/t/a", b"1")
    with pytest.raises(KeyAlreadyExists):
        await kv.create("/calico/t/a", b"1")
    with pytest.raises(RevisionConflict):
        await kv.update("/calico/t/a", b"1", revision=revision - 1)
    assert (await kv.put("/calico/t/b", b"x")) == revision + 1


async def test_delete_guarded_and_unguarded(subject: Subject) -> None:
    kv = subject.kv
    revision = await kv.create("/calico/t/a", b"1")
    with pytest.raises(RevisionConflict) as caught:
        await kv.delete("/calico/t/a", revision=revision + 100)
    assert caught.value.current.value == b"1"
    deleted = await kv.delete("/calico/t/a", revision=revision)
    assert (deleted.key, deleted.value, deleted.revision) == ("/calico/t/a", b"1", revision)
    assert await kv.get("/calico/t/a") is None
    with pytest.raises(KeyNotFound):
        await kv.delete("/calico/t/a")
    with pytest.raises(KeyNotFound):
        await kv.delete("/calico/t/a", revision=revision)
    await kv.put("/calico/t/b", b"2")
    assert (await kv.delete("/calico/t/b")).value == b"2"


async def test_commit_writes_every_key_at_one_revision_or_none(subject: Subject) -> None:
    kv = subject.kv
    a = await kv.create("/calico/t/a", b"1")
    b = await kv.create("/calico/t/b", b"1")
    events = kv.watch("/calico/t/", start_revision=b + 1)
    committed = await kv.commit(
        [
            TxnPut("/calico/t/a", b"2", a),  # compare-and-swap
            TxnPut("/calico/t/new", b"n", 0),  # create
            TxnDelete("/calico/t/b", b),  # guarded delete
        ]
    )
    assert committed == b + 1
    now_a = await kv.get("/calico/t/a")
    now_new = await kv.get("/calico/t/new")
    assert (now_a.value, now_a.revision, now_a.create_revision) == (b"2", committed, a)
    assert (now_new.value, now_new.revision, now_new.create_revision) == (
        b"n",
        committed,
        committed,
    )
    assert await kv.get("/calico/t/b") is None
    seen = await collect(events, 3)
    assert [(e.type, e.key, e.revision) for e in seen] == [
        (EventType.PUT, "/calico/t/a", committed),
        (EventType.PUT, "/calico/t/new", committed),
        (EventType.DELETE, "/calico/t/b", committed),
    ]
    # One stale key (a), one key that exists although it should not (new), one absent key
    # that should be there (b): nothing is written, and every key's current value comes back.
    with pytest.raises(TxnConflict) as caught:
        await kv.commit(
            [
                TxnPut("/calico/t/a", b"3", a),
                TxnPut("/calico/t/new", b"m", 0),
                TxnDelete("/calico/t/b", b),
                TxnPut("/calico/t/other", b"o", 0),
            ]
        )
    assert isinstance(caught.value, TemporaryDatastoreError)
    conflict = caught.value
    assert conflict.stale == ["/calico/t/a", "/calico/t/new", "/calico/t/b"]
    assert (conflict.current["/calico/t/a"].value, conflict.current["/calico/t/a"].revision) == (
        b"2",
        committed,
    )
    assert conflict.current["/calico/t/new"].value == b"n"
    assert conflict.current["/calico/t/b"] is None
    assert conflict.current["/calico/t/other"] is None
    assert await kv.get("/calico/t/other") is None
    assert (await kv.get("/calico/t/a")).value == b"2"
    assert await kv.put("/calico/t/x", b"x") == committed + 1  # the failed commit wrote nothing


async def test_commit_refuses_repeated_keys_and_empty_transactions(subject: Subject) -> None:
    kv = subject.kv
    with pytest.raises(DatastoreError, match="more than once"):
        await kv.commit([TxnPut("/calico/t/a", b"1", 0), TxnDelete("/calico/t/a", 5)])
    with pytest.raises(DatastoreError, match="no operations"):
        await kv.commit([])
    with pytest.raises(DatastoreError, match="not valid"):
        await kv.commit([TxnDelete("/calico/t/a", 0)])
    assert await kv.get("/calico/t/a") is None


async def test_list_by_prefix_sorted_and_at_a_revision(subject: Subject) -> None:
    kv = subject.kv
    await kv.put("/calico/t/b", b"2")
    await kv.put("/calico/t/a", b"1")
    await kv.put("/calico/tx/c", b"outside /calico/t/")
    before = await kv.list("/calico/t/")
    assert [(item.key, item.value) for item in before.items] == [
        ("/calico/t/a", b"1"),
        ("/calico/t/b", b"2"),
    ]
    await kv.put("/calico/t/a", b"1b")
    await kv.delete("/calico/t/b")
    await kv.put("/calico/t/c", b"3")
    now = await kv.list("/calico/t/")
    assert [(item.key, item.value) for item in now.items] == [
        ("/calico/t/a", b"1b"),
        ("/calico/t/c", b"3"),
    ]
    assert now.revision > before.revision
    past = await kv.list("/calico/t/", revision=before.revision)
    assert past.revision == before.revision
    assert [(i.key, i.value, i.revision) for i in past.items] == [
        (i.key, i.value, i.revision) for i in before.items
    ]


async def test_delete_prefix_counts_and_uses_one_revision(subject: Subject) -> None:
    kv = subject.kv
    for name in "abc":
        await kv.put(f"/calico/t/{name}", b"x")
    start = await kv.put("/calico/keep", b"x")
    stream = kv.watch("/calico/t/", start_revision=start + 1)
    assert await kv.delete_prefix("/calico/t/") == 3
    assert await kv.delete_prefix("/calico/t/") == 0
    assert (await kv.list("/calico/t/")).items == []
    assert (await kv.get("/calico/keep")) is not None
    events = await collect(stream, 3)
    assert {event.revision for event in events} == {start + 1}
    assert [event.type for event in events] == [EventType.DELETE] * 3


async def test_values_over_the_request_limit_are_refused(subject: Subject) -> None:
    with pytest.raises(ValueTooLarge) as caught:
        await subject.kv.put("/calico/t/big", b"x" * (2 * 1024 * 1024))
    assert caught.value.size == 2 * 1024 * 1024
    assert await subject.kv.get("/calico/t/big") is None


async def test_watch_sees_every_change_in_order_with_previous_values(subject: Subject) -> None:
    kv = subject.kv
    first = await kv.create("/calico/t/a", b"1")
    stream = kv.watch("/calico/t/", start_revision=first)
    second = await kv.update("/calico/t/a", b"2", revision=first)
    await kv.put("/calico/elsewhere", b"ignored")
    await kv.create("/calico/t/b", b"3")
    await kv.delete("/calico/t/a")
    events = await collect(stream, 4)
    assert [(e.type, e.key, e.value, e.previous) for e in events] == [
        (EventType.PUT, "/calico/t/a", b"1", None),
        (EventType.PUT, "/calico/t/a", b"2", b"1"),
        (EventType.PUT, "/calico/t/b", b"3", None),
        (EventType.DELETE, "/calico/t/a", None, b"2"),
    ]
    assert events[0].create_revision == events[0].revision == first
    assert events[1].revision == second and events[1].create_revision == first
    assert [e.revision for e in events] == sorted(e.revision for e in events)


async def test_watch_from_now_skips_history(subject: Subject) -> None:
    kv = subject.kv
    await kv.put("/calico/t/old", b"old")
    stream = kv.watch("/calico/t/", start_revision=0)
    task = asyncio.ensure_future(collect(stream, 1))
    await asyncio.sleep(0.2)  # let the watch be established before writing
    await kv.put("/calico/t/new", b"new")
    events = await task
    assert [e.key for e in events] == ["/calico/t/new"]


async def test_watch_from_a_compacted_revision_raises(subject: Subject) -> None:
    kv = subject.kv
    first = await kv.put("/calico/t/a", b"1")
    await kv.put("/calico/t/a", b"2")
    last = await kv.put("/calico/t/a", b"3")
    await subject.compact(last)
    with pytest.raises(CompactedError) as caught:
        await collect(kv.watch("/calico/t/", start_revision=first), 1)
    assert isinstance(caught.value, TemporaryDatastoreError)
    with pytest.raises(CompactedError):
        await kv.list("/calico/t/", revision=first)
    assert [e.value for e in await collect(kv.watch("/calico/t/", start_revision=last), 1)] == [
        b"3"
    ]


async def test_lease_keys_expire_and_refresh_keeps_them(subject: Subject) -> None:
    kv = subject.kv
    lease = await kv.grant_lease(1)
    assert lease.ttl >= 1
    await kv.put("/calico/t/leased", b"x", lease=lease)
    assert (await kv.get("/calico/t/leased")).lease == lease.id
    await kv.refresh_lease(lease)
    await subject.expire(lease.ttl)
    assert await kv.get("/calico/t/leased") is None
    with pytest.raises(KeyNotFound):
        await kv.refresh_lease(lease)


async def test_revoking_a_lease_deletes_its_keys(subject: Subject) -> None:
    kv = subject.kv
    lease = await kv.grant_lease(60)
    await kv.put("/calico/t/a", b"x", lease=lease)
    await kv.create("/calico/t/b", b"y", lease=lease)
    await kv.put("/calico/t/c", b"z")
    await kv.revoke_lease(lease)
    assert [item.key for item in (await kv.list("/calico/t/")).items] == ["/calico/t/c"]
    with pytest.raises(KeyNotFound):
        await kv.revoke_lease(lease)

"""Syncer logic over the in-memory store: list then watch, resync diffs, statuses, backoff."""

from __future__ import annotations

import asyncio

from pycalico.datastore.syncer import Syncer, SyncerUpdate, SyncStatus
from pycalico.testing.memory_kv import MemoryKVStore
from pycalico.testing.syncer_probe import SyncerProbe

FAST = {"initial_backoff": 0.01, "max_backoff": 0.05}


async def test_initial_list_then_in_sync_then_watch_updates_in_order() -> None:
    kv = MemoryKVStore()
    await kv.put("/calico/a/1", b"one")
    await kv.put("/calico/b/2", b"two")
    await kv.put("/calico/other", b"not synced")
    async with SyncerProbe(Syncer(kv, ["/calico/a/", "/calico/b/"], **FAST)) as probe:
        await probe.wait_in_sync()
        assert probe.state == {"/calico/a/1": b"one", "/calico/b/2": b"two"}
        assert probe.statuses == [
            SyncStatus.WAIT_FOR_DATASTORE,
            SyncStatus.RESYNC_IN_PROGRESS,
            SyncStatus.IN_SYNC,
        ]
        r1 = await kv.put("/calico/a/1", b"one-b")
        await kv.delete("/calico/b/2")
        await kv.put("/calico/other", b"outside the synced prefixes")
        r3 = await kv.put("/calico/a/3", b"three")
        await probe.wait_for(lambda: "/calico/a/3" in probe.state)
        assert probe.updates[2:] == [
            SyncerUpdate("/calico/a/1", b"one-b", r1),
            SyncerUpdate("/calico/b/2", None, r1 + 1),
            SyncerUpdate("/calico/a/3", b"three", r3),  # r3 == r1 + 3: /calico/other skipped
        ]
        assert probe.state == {"/calico/a/1": b"one-b", "/calico/a/3": b"three"}


async def test_nested_prefixes_are_watched_once() -> None:
    kv = MemoryKVStore()
    syncer = Syncer(kv, ["/calico/a/x/", "/calico/a/", "/calico/a/"])
    assert syncer.prefixes == ("/calico/a/",)
    assert Syncer(kv, ["/calico/ab/", "/calico/ac/"]).watch_prefix == "/calico/a"


async def test_reconnect_after_changes_and_compaction_resyncs_only_the_difference() -> None:
    kv = MemoryKVStore()
    for name in ("keep", "change", "gone"):
        await kv.put(f"/calico/t/{name}", name.encode())
    async with SyncerProbe(Syncer(kv, "/calico/t/", **FAST)) as probe:
        await probe.wait_in_sync()
        sent_before = len(probe.updates)
        kv.disconnect()
        await probe.wait_for(lambda: probe.statuses[-1] is SyncStatus.WAIT_FOR_DATASTORE)
        # The store moves on and compacts before the syncer gets a chance to look (memory calls
        # do not yield to the event loop, so the syncer cannot run in between).
        kv.reconnect()
        await kv.put("/calico/t/change", b"changed")
        await kv.delete("/calico/t/gone")
        await kv.put("/calico/t/new", b"new")
        await kv.compact(kv.revision)
        await probe.wait_for(lambda: "/calico/t/new" in probe.state and probe.in_sync)
        assert probe.state == {
            "/calico/t/keep": b"keep",
            "/calico/t/change": b"changed",
            "/calico/t/new": b"new",
        }
        # Only the difference is re-sent: the untouched key is not.
        resent = {u.key: u.value for u in probe.updates[sent_before:]}
        assert "/calico/t/keep" not in resent
        assert resent["/calico/t/gone"] is None


async def test_watch_compacted_under_a_live_syncer_triggers_a_relist() -> None:
    kv = MemoryKVStore()
    await kv.put("/calico/t/a", b"1")
    syncer = Syncer(kv, "/calico/t/", **FAST)
    async with SyncerProbe(syncer) as probe:
        await probe.wait_in_sync()
        # The parked watch falls behind: history it has not read yet is compacted away before
        # it runs again (memory calls do not yield to the event loop).
        await kv.put("/calico/t/a", b"2")
        await kv.put("/calico/t/b", b"3")
        await kv.compact(kv.revision)
        await probe.wait_for(lambda: probe.state.get("/calico/t/b") == b"3" and probe.in_sync)
        assert probe.state == {"/calico/t/a": b"2", "/calico/t/b": b"3"}
        assert syncer.stats.compactions == 1
        assert syncer.stats.lists == 2


async def test_unavailable_store_is_retried_with_backoff_until_it_returns() -> None:
    kv = MemoryKVStore()
    await kv.put("/calico/t/a", b"1")
    kv.unavailable = True
    syncer = Syncer(kv, "/calico/t/", initial_backoff=0.01, max_backoff=0.04)
    async with SyncerProbe(syncer) as probe:

        async def retried() -> None:
            while syncer.stats.reconnects < 4:  # kept trying, with backoff
                await asyncio.sleep(0.01)

        await asyncio.wait_for(retried(), 10)
        assert not probe.in_sync
        kv.unavailable = False
        await probe.wait_in_sync()
        assert probe.state == {"/calico/t/a": b"1"}


async def test_callback_form_delivers_updates_and_statuses() -> None:
    kv = MemoryKVStore()
    await kv.put("/calico/t/a", b"1")
    seen: list[object] = []
    done = asyncio.Event()

    def on_updates(updates: object) -> None:
        seen.extend(updates)  # type: ignore[call-overload]

    async def on_status(status: SyncStatus) -> None:
        seen.append(status)
        if status is SyncStatus.IN_SYNC:
            done.set()

    task = asyncio.create_task(Syncer(kv, "/calico/t/").run(on_updates, on_status))
    try:
        await asyncio.wait_for(done.wait(), 5)
    finally:
        task.cancel()
    assert seen == [
        SyncStatus.WAIT_FOR_DATASTORE,
        SyncStatus.RESYNC_IN_PROGRESS,
        SyncerUpdate("/calico/t/a", b"1", 2),
        SyncStatus.IN_SYNC,
    ]


async def test_large_initial_list_is_split_into_batches() -> None:
    kv = MemoryKVStore()
    for index in range(25):
        await kv.put(f"/calico/t/{index:03}", b"x")
    sizes: list[int] = []
    async for batch in Syncer(kv, "/calico/t/", max_batch=10):
        if batch.updates:
            sizes.append(len(batch.updates))
        if batch.in_sync:
            break
    assert sizes == [10, 10, 5]

"""The syncer and the etcd store against real etcd: order, partitions, compaction, restarts,
concurrent compare-and-swap writers, and a 3-member cluster losing a member."""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import urlsplit

from pycalico.datastore.api import EventType, RevisionConflict
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.datastore.syncer import Syncer, SyncerUpdate, SyncStatus
from pycalico.testing.etcd_server import EtcdCluster, EtcdServer
from pycalico.testing.syncer_probe import SyncerProbe
from pycalico.testing.tcp_proxy import TcpProxy

PREFIX = "/calico/resources/v3/projectcalico.org/"
FAST = {"initial_backoff": 0.05, "max_backoff": 0.5}


async def test_syncer_sees_every_change_in_order(kv: EtcdKVStore) -> None:
    await kv.put(PREFIX + "ippools/a", b"a0")
    async with SyncerProbe(Syncer(kv, [PREFIX + "ippools/", PREFIX + "nodes/"])) as probe:
        await probe.wait_in_sync()
        assert probe.state == {PREFIX + "ippools/a": b"a0"}
        expected = []
        for step in range(30):
            key = PREFIX + ("ippools/" if step % 2 else "nodes/") + f"k{step % 5}"
            if step % 7 == 6:
                with contextlib.suppress(Exception):
                    deleted = await kv.delete(key)
                    expected.append(SyncerUpdate(key, None, deleted.revision))
                    continue
            revision = await kv.put(key, f"v{step}".encode())
            expected.append(SyncerUpdate(key, f"v{step}".encode(), revision))
            await kv.put(PREFIX + "tiers/noise", b"not synced")
        last = expected[-1]
        await probe.wait_for(lambda: probe.updates[-1].revision >= last.revision)
        got = probe.updates[1:]
        # Deletes report the delete's revision, which the delete call cannot return: compare
        # them by order and key only.
        assert [(u.key, u.value) for u in got] == [(u.key, u.value) for u in expected]
        puts = [u for u in got if u.value is not None]
        assert puts == [u for u in expected if u.value is not None]
        assert [u.revision for u in got] == sorted(u.revision for u in got)


async def test_partition_then_compaction_relists_and_reports_what_was_missed(
    etcd: EtcdServer, kv: EtcdKVStore
) -> None:
    for name in ("keep", "change", "gone"):
        await kv.put(PREFIX + f"nodes/{name}", name.encode())
    host = urlsplit(etcd.endpoint)
    async with TcpProxy(host.hostname or "127.0.0.1", host.port or 2379) as proxy:
        # The syncer reaches etcd only through the proxy; the test writes directly.
        partitioned = EtcdKVStore([proxy.endpoint], retry_timeout=10.0)
        syncer = Syncer(partitioned, PREFIX, **FAST)
        try:
            async with SyncerProbe(syncer) as probe:
                await probe.wait_in_sync()
                sent_before = len(probe.updates)
                await proxy.cut()
                await kv.put(PREFIX + "nodes/change", b"changed")
                await kv.delete(PREFIX + "nodes/gone")
                await kv.put(PREFIX + "nodes/new", b"new")
                await kv.compact(await kv.current_revision())
                await asyncio.sleep(0.3)
                await proxy.restore()
                await probe.wait_for(lambda: PREFIX + "nodes/new" in probe.state and probe.in_sync)
                assert probe.state == {
                    PREFIX + "nodes/keep": b"keep",
                    PREFIX + "nodes/change": b"changed",
                    PREFIX + "nodes/new": b"new",
                }
                missed = {u.key: u.value for u in probe.updates[sent_before:]}
                assert missed == {
                    PREFIX + "nodes/change": b"changed",
                    PREFIX + "nodes/gone": None,
                    PREFIX + "nodes/new": b"new",
                }
                assert syncer.stats.compactions == 1
        finally:
            await partitioned.close()


async def test_etcd_restart_reconnects_and_resyncs(etcd: EtcdServer, kv: EtcdKVStore) -> None:
    await kv.put(PREFIX + "nodes/a", b"1")
    client = EtcdKVStore([etcd.endpoint], retry_timeout=0.5)
    syncer = Syncer(client, PREFIX, **FAST)
    try:
        async with SyncerProbe(syncer) as probe:
            await probe.wait_in_sync()
            etcd.kill()
            try:
                await probe.wait_for(
                    lambda: probe.statuses[-1] is SyncStatus.WAIT_FOR_DATASTORE, timeout=10
                )
                await asyncio.sleep(1.0)  # several failed attempts while etcd is down
            finally:
                etcd.start()
            await kv.put(PREFIX + "nodes/b", b"2")
            await kv.delete(PREFIX + "nodes/a")
            await probe.wait_for(
                lambda: probe.state == {PREFIX + "nodes/b": b"2"} and probe.in_sync, timeout=15
            )
            assert syncer.stats.reconnects >= 2
            assert probe.statuses.count(SyncStatus.IN_SYNC) >= 2
    finally:
        await client.close()


async def test_twenty_concurrent_read_modify_writers_lose_no_update(kv: EtcdKVStore) -> None:
    key = PREFIX + "felixconfigurations/counter"
    await kv.create(key, b"0")
    writers, increments = 20, 10
    conflicts = 0

    async def writer() -> None:
        nonlocal conflicts
        for _ in range(increments):
            while True:
                current = await kv.get(key)
                assert current is not None
                try:
                    await kv.update(
                        key, str(int(current.value) + 1).encode(), revision=current.revision
                    )
                    break
                except RevisionConflict:
                    conflicts += 1

    await asyncio.gather(*(writer() for _ in range(writers)))
    final = await kv.get(key)
    assert final is not None
    assert int(final.value) == writers * increments
    assert conflicts > 0  # the writers really raced


async def test_cluster_keeps_serving_reads_writes_and_watches_with_one_member_down(
    etcd_cluster: EtcdCluster,
) -> None:
    kv = EtcdKVStore(etcd_cluster.endpoints, retry_timeout=10.0)
    try:
        first = await kv.put(PREFIX + "nodes/a", b"1")
        stream = kv.watch(PREFIX, start_revision=first)
        events = [await anext(stream)]
        async with SyncerProbe(Syncer(kv, PREFIX, **FAST)) as probe:
            await probe.wait_in_sync()
            # Member 0 is the one the client is talking to; it goes away.
            etcd_cluster.stop_member(0)
            second = await kv.put(PREFIX + "nodes/b", b"2")
            got = await kv.get(PREFIX + "nodes/a")
            assert got is not None and got.value == b"1"
            third = await kv.update(PREFIX + "nodes/a", b"1b", revision=first)
            listed = await kv.list(PREFIX)
            assert [(i.key, i.value) for i in listed.items] == [
                (PREFIX + "nodes/a", b"1b"),
                (PREFIX + "nodes/b", b"2"),
            ]
            events += [await asyncio.wait_for(anext(stream), 10) for _ in range(2)]
            assert [(e.type, e.key, e.revision) for e in events] == [
                (EventType.PUT, PREFIX + "nodes/a", first),
                (EventType.PUT, PREFIX + "nodes/b", second),
                (EventType.PUT, PREFIX + "nodes/a", third),
            ]
            await probe.wait_for(lambda: probe.state.get(PREFIX + "nodes/a") == b"1b")
            assert probe.state == {PREFIX + "nodes/a": b"1b", PREFIX + "nodes/b": b"2"}
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        await kv.close()


async def test_cluster_survives_losing_its_leader_mid_stream(etcd_cluster: EtcdCluster) -> None:
    leader = etcd_cluster.leader_index()
    # The client talks to the leader first, so both the failover and the election are hit.
    ordered = [etcd_cluster.endpoints[leader]] + [
        endpoint for index, endpoint in enumerate(etcd_cluster.endpoints) if index != leader
    ]
    kv = EtcdKVStore(ordered, retry_timeout=15.0)
    try:
        async with SyncerProbe(Syncer(kv, PREFIX, **FAST)) as probe:
            await probe.wait_in_sync()
            writes = [await kv.put(PREFIX + f"nodes/n{index}", b"before") for index in range(5)]
            etcd_cluster.stop_member(leader)
            for index in range(5):
                writes.append(await kv.put(PREFIX + f"nodes/n{index}", b"after"))
            assert etcd_cluster.leader_index() != leader
            await probe.wait_for(
                lambda: all(
                    probe.state.get(PREFIX + f"nodes/n{index}") == b"after" for index in range(5)
                )
            )
            seen = [u.revision for u in probe.updates]
            assert seen == sorted(seen)
            assert set(writes) <= set(seen)  # nothing lost, nothing reordered
    finally:
        await kv.close()

"""``read_modify_write``: retries lost compare-and-swaps with bounded jittered backoff, a few
transient failures, and nothing else."""

from __future__ import annotations

import asyncio

import pytest

from pycalico.datastore.api import (
    DatastoreError,
    DatastoreUnavailable,
    KeyNotFound,
    KeyValue,
    RevisionConflict,
)
from pycalico.datastore.retry import MAX_DELAY, RetriesExhausted, backoff, read_modify_write
from pycalico.testing.memory_kv import MemoryKVStore


async def test_concurrent_increments_all_land() -> None:
    kv = MemoryKVStore()
    await kv.create("/n", b"0")

    async def increment(last: DatastoreError | None) -> int:
        current = last.current if isinstance(last, RevisionConflict) else None
        if current is None:
            current = await kv.get("/n")
        assert current is not None
        return await kv.update("/n", b"%d" % (int(current.value) + 1), revision=current.revision)

    async def racer() -> None:
        for _ in range(20):
            await read_modify_write(increment, what="counter", base_delay=0.0001)

    await asyncio.gather(*(racer() for _ in range(5)))
    got = await kv.get("/n")
    assert got is not None and int(got.value) == 100


async def test_gives_up_after_the_bound_naming_the_write() -> None:
    calls = []

    async def always_conflicts(last: DatastoreError | None) -> None:
        calls.append(last)
        raise RevisionConflict("/k", 1, KeyValue("/k", b"x", 2))

    with pytest.raises(RetriesExhausted, match=r"the thing: gave up after 4 attempts") as info:
        await read_modify_write(always_conflicts, what="the thing", attempts=4, base_delay=0)
    assert len(calls) == 4
    assert calls[0] is None and isinstance(calls[1], RevisionConflict)
    assert isinstance(info.value.__cause__, RevisionConflict)


async def test_transient_errors_are_retried_a_few_times_then_raised() -> None:
    calls = 0

    async def unavailable(last: DatastoreError | None) -> None:
        nonlocal calls
        calls += 1
        raise DatastoreUnavailable("no endpoint")

    with pytest.raises(DatastoreUnavailable):
        await read_modify_write(unavailable, what="x", base_delay=0, transient_attempts=3)
    assert calls == 3


async def test_other_errors_are_final_unless_named_a_conflict() -> None:
    calls = 0

    async def missing(last: DatastoreError | None) -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise KeyNotFound("/k")
        return "done"

    with pytest.raises(KeyNotFound):
        await read_modify_write(missing, what="x", base_delay=0)
    assert calls == 1
    assert await read_modify_write(missing, what="x", base_delay=0, conflicts=(KeyNotFound,)) == (
        "done"
    )


def test_backoff_is_jittered_and_bounded() -> None:
    waits = [backoff(n) for n in range(1, 200)]
    assert all(0 <= w <= MAX_DELAY for w in waits)
    assert len(set(waits)) > 100
    with pytest.raises(ValueError, match="attempts"):
        asyncio.run(read_modify_write(lambda last: asyncio.sleep(0), what="x", attempts=0))


async def test_first_retry_is_immediate_later_ones_back_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waits: list[float] = []

    async def fake_sleep(delay: float) -> None:
        waits.append(delay)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    calls = 0

    async def conflicts_three_times(last: DatastoreError | None) -> str:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise RevisionConflict("/k", 1)
        return "ok"

    assert await read_modify_write(conflicts_three_times, what="x", base_delay=1.0) == "ok"
    assert calls == 4 and len(waits) == 2  # no wait before the 2nd attempt
    assert 0 <= waits[0] <= 1.0 and 0 <= waits[1] <= 2.0

"""KeyedWorkers: one worker per key, coalescing, retries, concurrency across keys."""

from __future__ import annotations

import asyncio

from pycalico.kubecontrollers.workers import KeyedWorkers


async def test_a_key_marked_while_its_worker_runs_is_reconciled_once_more() -> None:
    calls: list[str] = []
    release = asyncio.Event()

    async def reconcile(key: str) -> None:
        calls.append(key)
        if len(calls) == 1:
            await release.wait()

    workers = KeyedWorkers(reconcile)
    workers.enqueue("a")
    await asyncio.sleep(0)
    for _ in range(5):  # five changes while the first reconcile runs: one more reconcile
        workers.enqueue("a")
    release.set()
    await workers.idle()
    assert calls == ["a", "a"]


async def test_never_two_reconciles_of_one_key_at_once_but_keys_run_concurrently() -> None:
    running: set[str] = set()
    overlap: list[str] = []
    both_running = asyncio.Event()

    async def reconcile(key: str) -> None:
        if key in running:
            overlap.append(key)
        running.add(key)
        if {"a", "b"} <= running:
            both_running.set()
        await asyncio.wait_for(both_running.wait(), 5)
        running.discard(key)

    workers = KeyedWorkers(reconcile)
    workers.enqueue("a")
    workers.enqueue("b")
    workers.enqueue("a")
    await asyncio.wait_for(workers.idle(), 5)
    assert overlap == []
    assert workers.reconciles >= 2


async def test_a_failing_reconcile_is_retried_until_it_succeeds() -> None:
    attempts = 0

    async def reconcile(key: str) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise RuntimeError("datastore down")

    workers = KeyedWorkers(reconcile, first_retry=0.001)
    workers.enqueue("a")
    await asyncio.wait_for(workers.idle(), 5)
    assert (attempts, workers.failures) == (3, 2)


async def test_close_cancels_workers() -> None:
    started = asyncio.Event()

    async def reconcile(key: str) -> None:
        started.set()
        await asyncio.Event().wait()

    workers = KeyedWorkers(reconcile)
    workers.enqueue_all(["a", "b"])
    await started.wait()
    await workers.close()
    assert workers.busy_keys == set()

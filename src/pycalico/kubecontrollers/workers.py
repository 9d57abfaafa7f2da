"""Level-triggered work: one worker per key, changes coalesced, failures retried.

``KeyedWorkers(reconcile).enqueue(key)`` marks ``key`` dirty.  A key has at most one worker
(an asyncio task) at a time, which calls ``reconcile(key)`` until the key stays clean; a key
marked dirty while its worker runs is reconciled once more afterwards, however many times it
was marked (the reconcile reads the current state, so only the last state matters).  Different
keys are reconciled concurrently, at most ``max_concurrent`` at a time -- the model of kopf,
and of client-go's work queue.

A reconcile that raises is retried for the same key with a capped exponential back-off; the key
is not dropped, so a datastore outage delays work but loses none.

This module is not a watcher and knows nothing of Kubernetes or Calico.  Invariants: never two
reconciles of one key at once; a key enqueued after ``idle()`` returned is reconciled again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable

log = logging.getLogger(__name__)

Reconcile = Callable[[str], Awaitable[None]]


class KeyedWorkers:
    def __init__(
        self,
        reconcile: Reconcile,
        *,
        first_retry: float = 0.1,
        max_retry: float = 10.0,
        max_concurrent: int = 64,
    ) -> None:
        self._reconcile = reconcile
        # At most this many reconciles in flight: a full reconcile of 10,000 keys then holds
        # 10,000 small waiting tasks, not 10,000 datastore requests with their buffers.
        self._slots = asyncio.Semaphore(max_concurrent)
        self._first_retry = first_retry
        self._max_retry = max_retry
        self._dirty: set[str] = set()
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self.reconciles = 0  # reconcile calls made (successful or not)
        self.failures = 0

    def enqueue(self, key: str) -> None:
        self._dirty.add(key)
        if key not in self._workers:
            self._idle.clear()
            self._workers[key] = asyncio.create_task(self._work(key), name=f"reconcile {key}")

    def enqueue_all(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.enqueue(key)

    @property
    def busy_keys(self) -> set[str]:
        return set(self._workers)

    async def idle(self) -> None:
        """Wait until no key is dirty and no worker runs."""
        await self._idle.wait()

    async def _work(self, key: str) -> None:
        delay = self._first_retry
        try:
            while key in self._dirty:
                self._dirty.discard(key)
                self.reconciles += 1
                try:
                    async with self._slots:
                        await self._reconcile(key)
                    delay = self._first_retry
                except Exception as error:  # a worker must survive any failure of one key
                    self.failures += 1
                    self._dirty.add(key)
                    log.warning("reconcile of %s failed, retrying in %.1fs: %s", key, delay, error)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self._max_retry)
        finally:
            del self._workers[key]
            if not self._workers:
                self._idle.set()

    async def close(self) -> None:
        """Cancel every worker and wait for them to end."""
        tasks = list(self._workers.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._dirty.clear()

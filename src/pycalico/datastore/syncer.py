"""``Syncer``: a never-ending, self-healing stream of ``(key, value | None)`` updates.

This is the datastore side of Felix's and confd's pipelines (DESIGN §4): list one or more key
prefixes, then watch them from the list's revision.  Consumers see the current state once,
then every change, and never have to handle a reconnect or a compaction themselves.

It is raw: keys and bytes, no decoding (the consumer's dispatcher knows the key types).  It is
not a cache of values: it remembers only each key's revision, to work out what changed across a
resync.

How to consume it (either form)::

    syncer = Syncer(kv, [paths.RESOURCE_ROOT, paths.IPAM_ROOT])
    async for batch in syncer:             # runs until cancelled
        for update in batch.updates:       # SyncerUpdate(key, value | None, revision)
            ...                            # value None: the key no longer exists
        if batch.status is SyncStatus.IN_SYNC:
            ...                            # everything up to now has been delivered

    await syncer.run(on_updates, on_status)  # callbacks, sync or async; runs until cancelled

Invariants:

* Status goes ``WAIT_FOR_DATASTORE`` → ``RESYNC_IN_PROGRESS`` → ``IN_SYNC``; after a lost
  connection or a compacted watch it goes back to ``RESYNC_IN_PROGRESS`` (or
  ``WAIT_FOR_DATASTORE`` while etcd is unreachable) and again to ``IN_SYNC``.  A batch's
  ``status`` applies after its updates.
* A resync re-lists and emits only the difference with what was already sent: changed or new
  keys, and ``None`` for keys that disappeared meanwhile.  A consumer applying the updates in
  order always holds exactly the store's state as of the last ``IN_SYNC``-or-later batch.
* Watch updates arrive in revision order, across all prefixes: there is one watch, on the
  prefixes' longest common prefix, and keys outside the requested prefixes are dropped.  Pick
  prefixes whose common prefix is not much wider than they are (``/calico/`` for Felix is fine).
* Unreachable etcd: retry with backoff from ``initial_backoff`` (0.1 s) doubling to
  ``max_backoff`` (2 s), forever.  Any other datastore error is retried the same way.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from pycalico.datastore.api import (
    CompactedError,
    DatastoreError,
    EventType,
    KeyValue,
    KVEvent,
    KVStore,
)

log = logging.getLogger(__name__)


class SyncStatus(Enum):
    WAIT_FOR_DATASTORE = "wait-for-datastore"
    RESYNC_IN_PROGRESS = "resync-in-progress"
    IN_SYNC = "in-sync"


@dataclass(frozen=True, slots=True)
class SyncerUpdate:
    key: str
    value: bytes | None  # None: the key does not exist (deleted)
    # The key's mod revision; for a delete, the revision of the delete (or of the re-list that
    # found the key gone).
    revision: int


@dataclass(frozen=True, slots=True)
class SyncerBatch:
    updates: tuple[SyncerUpdate, ...] = ()
    status: SyncStatus | None = None  # a status change that takes effect after ``updates``

    @property
    def in_sync(self) -> bool:
        return self.status is SyncStatus.IN_SYNC


@dataclass
class SyncerStats:
    lists: int = 0
    compactions: int = 0
    reconnects: int = 0
    updates: int = 0


def _normalise(prefixes: Sequence[str]) -> tuple[str, ...]:
    """Sorted prefixes with those inside another dropped (they would be watched twice)."""
    kept: list[str] = []
    for prefix in sorted(set(prefixes)):
        if not any(prefix.startswith(outer) for outer in kept):
            kept.append(prefix)
    return tuple(kept)


def _common_prefix(prefixes: Sequence[str]) -> str:
    """The longest string every prefix starts with (character-wise: keys are not paths)."""
    first, last = min(prefixes), max(prefixes)
    length = 0
    while length < min(len(first), len(last)) and first[length] == last[length]:
        length += 1
    return first[:length]


class _WatchFailed(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class Syncer:
    def __init__(
        self,
        kv: KVStore,
        prefixes: Sequence[str] | str,
        *,
        initial_backoff: float = 0.1,
        max_backoff: float = 2.0,
        max_batch: int = 1000,
    ) -> None:
        if isinstance(prefixes, str):
            prefixes = [prefixes]
        if not prefixes:
            raise ValueError("prefixes: the syncer needs at least one key prefix")
        self.kv = kv
        self.prefixes = _normalise(prefixes)
        # One watch on the prefixes' common prefix keeps every update in global revision order;
        # keys outside the requested prefixes are dropped on arrival.
        self.watch_prefix = _common_prefix(self.prefixes)
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.max_batch = max_batch
        self.stats = SyncerStats()
        self.status = SyncStatus.WAIT_FOR_DATASTORE
        self._known: dict[str, int] = {}  # key → mod revision, for everything sent as present

    def __aiter__(self) -> AsyncIterator[SyncerBatch]:
        return self.batches()

    async def run(
        self,
        on_updates: Callable[[Sequence[SyncerUpdate]], Awaitable[None] | None],
        on_status: Callable[[SyncStatus], Awaitable[None] | None] | None = None,
    ) -> None:
        """Callback form: ``on_updates`` gets each non-empty batch, ``on_status`` each change."""
        async for batch in self.batches():
            if batch.updates:
                result = on_updates(batch.updates)
                if inspect.isawaitable(result):
                    await result
            if batch.status is not None and on_status is not None:
                result = on_status(batch.status)
                if inspect.isawaitable(result):
                    await result

    async def batches(self) -> AsyncIterator[SyncerBatch]:
        """The stream itself; runs until the consumer stops iterating or is cancelled."""
        backoff = self.initial_backoff
        yield SyncerBatch(status=SyncStatus.WAIT_FOR_DATASTORE)
        while True:
            try:
                items, revision = await self._list_all()
                self.stats.lists += 1
                if self.status is not SyncStatus.RESYNC_IN_PROGRESS:
                    yield self._set_status(SyncStatus.RESYNC_IN_PROGRESS)
                changes = self._resync(items, revision)
                for start in range(0, len(changes), self.max_batch):
                    yield SyncerBatch(tuple(changes[start : start + self.max_batch]))
                yield self._set_status(SyncStatus.IN_SYNC)
                backoff = self.initial_backoff
                async for updates in self._watch_all(revision + 1):
                    yield SyncerBatch(updates)
            except CompactedError as error:
                # Fell too far behind: history is gone, so re-list at once and send the diff.
                self.stats.compactions += 1
                log.info("syncer: %s; re-listing", error)
                yield self._set_status(SyncStatus.RESYNC_IN_PROGRESS)
            except Exception as error:
                # Never give up: unreachable etcd is the expected case, anything else is logged
                # loudly but retried the same way, because a dead syncer is a frozen dataplane.
                self.stats.reconnects += 1
                if isinstance(error, DatastoreError):
                    log.warning("syncer: %s; retrying in %.1fs", error, backoff)
                else:
                    log.exception("syncer: unexpected error; retrying in %.1fs", backoff)
                if self.status is not SyncStatus.WAIT_FOR_DATASTORE:
                    yield self._set_status(SyncStatus.WAIT_FOR_DATASTORE)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff)

    # --- internals --------------------------------------------------------------------------

    def _set_status(self, status: SyncStatus) -> SyncerBatch:
        self.status = status
        return SyncerBatch(status=status)

    async def _list_all(self) -> tuple[list[KeyValue], int]:
        first = await self.kv.list(self.prefixes[0])
        items = list(first.items)
        for prefix in self.prefixes[1:]:
            # One snapshot: the other prefixes at the first list's revision.
            items.extend((await self.kv.list(prefix, revision=first.revision)).items)
        return items, first.revision

    def _resync(self, items: list[KeyValue], revision: int) -> list[SyncerUpdate]:
        changes: list[SyncerUpdate] = []
        present: dict[str, int] = {}
        for item in items:
            present[item.key] = item.revision
            if self._known.get(item.key) != item.revision:
                changes.append(SyncerUpdate(item.key, item.value, item.revision))
        for key in sorted(self._known.keys() - present.keys()):
            changes.append(SyncerUpdate(key, None, revision))
        self._known = present
        self.stats.updates += len(changes)
        return changes

    async def _watch_all(self, start_revision: int) -> AsyncIterator[tuple[SyncerUpdate, ...]]:
        queue: asyncio.Queue[KVEvent | _WatchFailed] = asyncio.Queue()
        wanted = self.prefixes

        async def pump() -> None:
            try:
                async for event in self.kv.watch(self.watch_prefix, start_revision=start_revision):
                    if event.key.startswith(wanted):
                        queue.put_nowait(event)
                queue.put_nowait(_WatchFailed(DatastoreError("watch ended")))
            except Exception as error:
                queue.put_nowait(_WatchFailed(error))

        # The pump runs as its own task so that a slow consumer never stalls the gRPC stream,
        # and so that whatever has arrived meanwhile is handed over as one batch.
        task = asyncio.create_task(pump())
        try:
            while True:
                item: Any = await queue.get()
                updates: list[SyncerUpdate] = []
                while True:
                    if isinstance(item, _WatchFailed):
                        if updates:
                            yield tuple(updates)
                        raise item.error
                    updates.append(self._apply(item))
                    if len(updates) >= self.max_batch or queue.empty():
                        break
                    item = queue.get_nowait()
                self.stats.updates += len(updates)
                yield tuple(updates)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _apply(self, event: KVEvent) -> SyncerUpdate:
        if event.type is EventType.DELETE:
            self._known.pop(event.key, None)
            return SyncerUpdate(event.key, None, event.revision)
        self._known[event.key] = event.revision
        return SyncerUpdate(event.key, event.value, event.revision)

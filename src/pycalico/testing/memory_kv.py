"""``MemoryKVStore``: an in-memory ``KVStore`` with etcd's revision semantics, for unit tests.

It exists so that the layers above the datastore (IPAM, the resource layer, the syncer) can be
unit-tested without an etcd process.  It is not a cache and not a production store.  The same
contract test suite runs against it and against ``EtcdKVStore``
(``tests/integration/datastore/test_kv_contract.py``), so the two cannot drift apart.

Invariants (the etcd ones):

* The store revision starts at 1 and every successful write transaction adds exactly one,
  whatever the number of keys it touches (``delete_prefix``, a lease expiring); failed
  compare-and-swaps and reads add nothing.
* A key's revision is its mod revision; ``create_revision`` is kept until the key is deleted.
* A watch delivers every event with revision >= its start revision, in revision order; a start
  revision below the compaction revision raises ``CompactedError``.
* Leases expire against ``clock`` (default ``time.monotonic``), lazily: on any store call or on
  ``expire_leases()``; a test drives a fake clock by passing ``clock=`` and advancing it.
"""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from pycalico.datastore.api import (
    CompactedError,
    DatastoreError,
    DatastoreUnavailable,
    EventType,
    KeyAlreadyExists,
    KeyNotFound,
    KeyValue,
    KVEvent,
    Lease,
    ListResult,
    RevisionConflict,
    TxnConflict,
    TxnDelete,
    TxnOp,
    ValueTooLarge,
    check_commit,
)

# etcd's default --max-request-bytes: a bigger put is refused the same way.
DEFAULT_MAX_VALUE_BYTES = 1536 * 1024


@dataclass
class _LeaseState:
    ttl: int
    expires_at: float
    keys: set[str] = field(default_factory=set)


class FakeClock:
    """A monotonic clock a test advances by hand: ``clock.advance(30)``."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class MemoryKVStore:
    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        self.clock = clock
        self.max_value_bytes = max_value_bytes
        self._data: dict[str, KeyValue] = {}
        self._revision = 1
        self._compact_revision = 0
        self._history: list[KVEvent] = []
        self._history_base = 0  # sequence number of _history[0]
        self._leases: dict[int, _LeaseState] = {}
        self._next_lease = 0x1000
        self._wakeups: list[asyncio.Future[None]] = []
        self._closed = False
        self.unavailable = False  # set by a test to simulate an unreachable store

    # --- internals --------------------------------------------------------------------------

    def _check(self) -> None:
        if self._closed:
            raise DatastoreError("the memory store is closed")
        if self.unavailable:
            raise DatastoreUnavailable("memory store marked unavailable")
        self.expire_leases()

    def _commit(self, events: list[KVEvent]) -> None:
        self._history.extend(events)
        wakeups, self._wakeups = self._wakeups, []
        for future in wakeups:
            if not future.done():
                future.set_result(None)

    def _write(self, key: str, value: bytes, lease: Lease | None) -> int:
        if len(value) + len(key) > self.max_value_bytes:
            raise ValueTooLarge(key, len(value))
        if lease is not None and lease.id not in self._leases:
            raise KeyNotFound(f"lease {lease.id:x}")
        self._revision += 1
        previous = self._data.get(key)
        if previous is not None and previous.lease in self._leases:
            self._leases[previous.lease].keys.discard(key)
        kv = KeyValue(
            key=key,
            value=value,
            revision=self._revision,
            create_revision=previous.create_revision if previous else self._revision,
            lease=lease.id if lease else 0,
        )
        self._data[key] = kv
        if lease is not None:
            self._leases[lease.id].keys.add(key)
        self._commit(
            [
                KVEvent(
                    type=EventType.PUT,
                    key=key,
                    value=value,
                    revision=self._revision,
                    previous=previous.value if previous else None,
                    create_revision=kv.create_revision,
                )
            ]
        )
        return self._revision

    def _remove(self, keys: list[str]) -> list[KeyValue]:
        """Delete ``keys`` (all present) in one revision."""
        self._revision += 1
        removed = []
        events = []
        for key in keys:
            kv = self._data.pop(key)
            if kv.lease in self._leases:
                self._leases[kv.lease].keys.discard(key)
            removed.append(kv)
            events.append(
                KVEvent(
                    type=EventType.DELETE,
                    key=key,
                    value=None,
                    revision=self._revision,
                    previous=kv.value,
                )
            )
        self._commit(events)
        return removed

    def expire_leases(self) -> None:
        now = self.clock()
        for lease_id, state in list(self._leases.items()):
            if state.expires_at <= now:
                del self._leases[lease_id]
                if state.keys:
                    self._remove(sorted(state.keys))

    # --- test helpers -----------------------------------------------------------------------

    @property
    def revision(self) -> int:
        return self._revision

    async def current_revision(self) -> int:
        self._check()
        return self._revision

    async def compact(self, revision: int) -> None:
        self._check()
        if revision > self._revision:
            raise DatastoreError(f"compact: revision {revision} is in the future")
        self._compact_revision = max(self._compact_revision, revision)
        keep = [event for event in self._history if event.revision >= self._compact_revision]
        self._history_base += len(self._history) - len(keep)
        self._history = keep

    # --- KVStore ----------------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        self._check()
        return self._data.get(key)

    async def list(self, prefix: str, *, revision: int | None = None) -> ListResult:
        self._check()
        if revision is None or revision == 0 or revision >= self._revision:
            items = sorted(
                (kv for key, kv in self._data.items() if key.startswith(prefix)),
                key=lambda kv: kv.key,
            )
            return ListResult(items=items, revision=revision or self._revision)
        return ListResult(items=self._list_at(prefix, revision), revision=revision)

    def _list_at(self, prefix: str, revision: int) -> builtins.list[KeyValue]:
        if revision < self._compact_revision:
            raise CompactedError(revision, self._compact_revision)
        # Roll the present back by undoing the events after ``revision``.
        state = {key: kv for key, kv in self._data.items() if key.startswith(prefix)}
        for event in reversed(self._history):
            if event.revision <= revision:
                break
            if not event.key.startswith(prefix):
                continue
            if event.previous is None:
                state.pop(event.key, None)
            else:
                state[event.key] = self._previous_kv(event)
        return sorted(state.values(), key=lambda kv: kv.key)

    def _previous_kv(self, event: KVEvent) -> KeyValue:
        # The mod revision of the value before ``event``: the latest earlier event on that key.
        for earlier in reversed(self._history):
            if earlier.revision < event.revision and earlier.key == event.key:
                assert earlier.value is not None
                return KeyValue(event.key, earlier.value, earlier.revision, earlier.create_revision)
        raise CompactedError(event.revision, self._compact_revision)

    async def create(self, key: str, value: bytes, *, lease: Lease | None = None) -> int:
        self._check()
        current = self._data.get(key)
        if current is not None:
            raise KeyAlreadyExists(key, current)
        return self._write(key, value, lease)

    async def update(
        self, key: str, value: bytes, *, revision: int, lease: Lease | None = None
    ) -> int:
        self._check()
        current = self._data.get(key)
        if current is None:
            raise KeyNotFound(key)
        if current.revision != revision:
            raise RevisionConflict(key, revision, current)
        return self._write(key, value, lease)

    async def put(self, key: str, value: bytes, *, lease: Lease | None = None) -> int:
        self._check()
        return self._write(key, value, lease)

    async def delete(self, key: str, *, revision: int | None = None) -> KeyValue:
        self._check()
        current = self._data.get(key)
        if current is None:
            raise KeyNotFound(key)
        if revision is not None and current.revision != revision:
            raise RevisionConflict(key, revision, current)
        return self._remove([key])[0]

    async def commit(self, ops: Sequence[TxnOp]) -> int:
        self._check()
        check_commit(ops)
        current = {op.key: self._data.get(op.key) for op in ops}
        expected = {op.key: op.revision for op in ops}
        for key, revision in expected.items():
            now = current[key]
            if (now.revision if now is not None else 0) != revision:
                raise TxnConflict(expected, current)
        for op in ops:
            if not isinstance(op, TxnDelete) and len(op.value) + len(op.key) > self.max_value_bytes:
                raise ValueTooLarge(op.key, len(op.value))
        # Every change at one revision, as etcd applies a transaction.
        self._revision += 1
        events = []
        for op in ops:
            previous = current[op.key]
            if previous is not None and previous.lease in self._leases:
                self._leases[previous.lease].keys.discard(op.key)
            if isinstance(op, TxnDelete):
                assert previous is not None  # its revision matched a positive one
                del self._data[op.key]
                events.append(
                    KVEvent(
                        type=EventType.DELETE,
                        key=op.key,
                        value=None,
                        revision=self._revision,
                        previous=previous.value,
                    )
                )
                continue
            kv = KeyValue(
                key=op.key,
                value=op.value,
                revision=self._revision,
                create_revision=previous.create_revision if previous else self._revision,
            )
            self._data[op.key] = kv
            events.append(
                KVEvent(
                    type=EventType.PUT,
                    key=op.key,
                    value=op.value,
                    revision=self._revision,
                    previous=previous.value if previous else None,
                    create_revision=kv.create_revision,
                )
            )
        self._commit(events)
        return self._revision

    async def delete_prefix(self, prefix: str) -> int:
        self._check()
        keys = sorted(key for key in self._data if key.startswith(prefix))
        if keys:
            self._remove(keys)
        return len(keys)

    async def grant_lease(self, ttl: int) -> Lease:
        self._check()
        self._next_lease += 1
        self._leases[self._next_lease] = _LeaseState(ttl=ttl, expires_at=self.clock() + ttl)
        return Lease(id=self._next_lease, ttl=ttl)

    async def refresh_lease(self, lease: Lease) -> None:
        self._check()
        state = self._leases.get(lease.id)
        if state is None:
            raise KeyNotFound(f"lease {lease.id:x}")
        state.expires_at = self.clock() + state.ttl

    async def revoke_lease(self, lease: Lease) -> None:
        self._check()
        state = self._leases.pop(lease.id, None)
        if state is None:
            raise KeyNotFound(f"lease {lease.id:x}")
        if state.keys:
            self._remove(sorted(state.keys))

    def watch(self, prefix: str, *, start_revision: int) -> AsyncIterator[KVEvent]:
        return self._watch(prefix, start_revision)

    async def _watch(self, prefix: str, start_revision: int) -> AsyncIterator[KVEvent]:
        self._check()
        next_revision = start_revision or self._revision + 1
        if next_revision < self._compact_revision:
            raise CompactedError(next_revision, self._compact_revision)
        # Position by sequence number so compaction (which drops old entries) cannot shift us.
        sequence = self._history_base
        for event in self._history:
            if event.revision >= next_revision:
                break
            sequence += 1
        while True:
            self._check()
            if sequence < self._history_base:
                raise CompactedError(next_revision, self._compact_revision)
            while sequence - self._history_base < len(self._history):
                event = self._history[sequence - self._history_base]
                sequence += 1
                if event.key.startswith(prefix):
                    next_revision = event.revision + 1
                    yield event
            wakeup: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._wakeups.append(wakeup)
            await wakeup

    def disconnect(self) -> None:
        """Simulate losing etcd: open watches fail and every call raises DatastoreUnavailable
        until ``reconnect()``."""
        self.unavailable = True
        wakeups, self._wakeups = self._wakeups, []
        for future in wakeups:
            if not future.done():
                future.set_exception(DatastoreUnavailable("memory store disconnected"))

    def reconnect(self) -> None:
        self.unavailable = False

    async def close(self) -> None:
        self._closed = True
        for future in self._wakeups:
            if not future.done():
                future.set_exception(DatastoreError("the memory store is closed"))
        self._wakeups = []

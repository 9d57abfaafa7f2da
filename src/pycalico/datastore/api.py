"""The datastore boundary: the error tree and the two interfaces everything above codes against.

Pure: no I/O and no etcd imports here.  ``KVStore`` is the raw key/value layer (bytes in, bytes
out, every write optionally a compare-and-swap on the key's mod revision); IPAM and the status
reporter use it directly with Calico's literal key layout.  ``ResourceStore`` is the v3 resource
layer built on top of a ``KVStore``.  The only implementation that talks to etcd is
``pycalico.datastore.etcd``; ``pycalico.testing`` ships an in-memory ``KVStore`` for pure unit
tests.

Invariants:

* Every error raised across this boundary is a ``DatastoreError``; the underlying client
  exception is chained as ``__cause__`` and never escapes untranslated.
* Revisions are etcd revisions: a value's revision is its key's mod revision; a write returns
  the revision of the transaction that made it.
* ``TemporaryDatastoreError`` subclasses are worth retrying; the others are permanent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pycalico.model.meta import Resource


# --- errors -------------------------------------------------------------------------------


class DatastoreError(Exception):
    """Root of every error raised by the datastore layer."""


class TemporaryDatastoreError(DatastoreError):
    """A failure that may go away on retry."""


class DatastoreUnavailable(TemporaryDatastoreError):
    """No etcd endpoint answered (after failing over between all configured endpoints)."""


class KeyNotFound(DatastoreError):
    def __init__(self, key: str) -> None:
        super().__init__(f"resource does not exist: {key}")
        self.key = key


class KeyAlreadyExists(DatastoreError):
    # Set by the resource layer: the existing object, decoded.
    current_resource: Resource | None = None

    def __init__(self, key: str, current: KeyValue | None = None) -> None:
        super().__init__(f"resource already exists: {key}")
        self.key = key
        self.current = current


class RevisionConflict(TemporaryDatastoreError):
    """A compare-and-swap lost: ``current`` is what the store holds now (None if deleted)."""

    # Set by the resource layer: ``current``, decoded.
    current_resource: Resource | None = None

    def __init__(self, key: str, expected: int, current: KeyValue | None = None) -> None:
        now = current.revision if current is not None else "absent"
        super().__init__(f"update conflict on {key}: expected revision {expected}, store has {now}")
        self.key = key
        self.expected = expected
        self.current = current


class ValueTooLarge(DatastoreError):
    def __init__(self, key: str, size: int) -> None:
        super().__init__(f"value for {key} is too large ({size} bytes)")
        self.key = key
        self.size = size


class DatastoreFull(DatastoreError):
    """etcd refuses writes: its space quota is used up (the NOSPACE alarm).  Permanent until an
    operator frees space, compacts, defragments and disarms the alarm; reads still work."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"etcd is out of space (database space exceeded, NOSPACE alarm): write of {key} "
            "refused; free space, compact and defragment etcd, then `etcdctl alarm disarm`"
        )
        self.key = key


class InvalidResource(DatastoreError):
    """A resource that fails validation or cannot be decoded; ``field`` names what is wrong."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field


class CompactedError(TemporaryDatastoreError):
    """A watch asked for a revision etcd has already compacted away; re-list and resume."""

    def __init__(self, revision: int, compact_revision: int) -> None:
        super().__init__(f"revision {revision} compacted (oldest available {compact_revision})")
        self.revision = revision
        self.compact_revision = compact_revision


class TxnConflict(TemporaryDatastoreError):
    """A ``KVStore.commit`` lost: some key's mod revision was not the expected one, so nothing
    was written.  ``current`` holds what the store has now for every key of the commit (None
    where the key is absent), read in the same transaction."""

    def __init__(self, expected: Mapping[str, int], current: Mapping[str, KeyValue | None]) -> None:
        stale = []
        for key, revision in expected.items():
            now = current.get(key)
            if (now.revision if now is not None else 0) != revision:
                stale.append(key)
        super().__init__(f"transaction conflict on {', '.join(stale) or 'no key'}")
        self.expected = dict(expected)
        self.current = dict(current)
        self.stale = stale


# Domain-level names for the resource layer (same classes: a resource is a key).
ResourceNotFound = KeyNotFound
ResourceAlreadyExists = KeyAlreadyExists


# --- key/value layer ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    revision: int  # the key's mod revision
    create_revision: int = 0
    lease: int = 0


@dataclass(frozen=True, slots=True)
class ListResult:
    items: Sequence[KeyValue]
    revision: int  # store revision at which the list was taken


class EventType(Enum):
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class KVEvent:
    type: EventType
    key: str
    value: bytes | None  # None for deletes
    revision: int  # mod revision of the change
    previous: bytes | None = None
    create_revision: int = 0  # for PUT: equals ``revision`` when the put created the key


@dataclass(frozen=True, slots=True)
class Lease:
    id: int
    ttl: int


@dataclass(frozen=True, slots=True)
class TxnPut:
    """In a ``KVStore.commit``: write ``value`` at ``key`` if the key's mod revision is
    ``revision``; 0 means the key must not exist."""

    key: str
    value: bytes
    revision: int


@dataclass(frozen=True, slots=True)
class TxnDelete:
    """In a ``KVStore.commit``: delete ``key`` if its mod revision is ``revision`` (> 0)."""

    key: str
    revision: int


TxnOp = TxnPut | TxnDelete


def check_commit(ops: Sequence[TxnOp]) -> None:
    """What every ``commit`` refuses before talking to the store."""
    if not ops:
        raise DatastoreError("commit: no operations given")
    seen: set[str] = set()
    for op in ops:
        if op.key in seen:
            raise DatastoreError(f"commit: key {op.key} appears more than once")
        seen.add(op.key)
        if op.revision < 0 or (isinstance(op, TxnDelete) and op.revision == 0):
            raise DatastoreError(f"commit: revision {op.revision} for {op.key} is not valid")


class KVStore(Protocol):
    """Raw etcd-shaped key/value store. Keys are text; values are bytes."""

    async def get(self, key: str) -> KeyValue | None: ...

    async def list(self, prefix: str, *, revision: int | None = None) -> ListResult: ...

    async def create(self, key: str, value: bytes, *, lease: Lease | None = None) -> int:
        """Put only if the key does not exist; return the new revision or raise KeyAlreadyExists."""
        ...

    async def update(
        self, key: str, value: bytes, *, revision: int, lease: Lease | None = None
    ) -> int:
        """Put only if the key's mod revision equals ``revision``; raise RevisionConflict or
        KeyNotFound otherwise."""
        ...

    async def put(self, key: str, value: bytes, *, lease: Lease | None = None) -> int:
        """Unconditional put; returns the new revision."""
        ...

    async def delete(self, key: str, *, revision: int | None = None) -> KeyValue:
        """Delete (guarded by ``revision`` when given); return the deleted value."""
        ...

    async def delete_prefix(self, prefix: str) -> int: ...

    async def commit(self, ops: Sequence[TxnOp]) -> int:
        """Several compare-and-swap writes as one transaction: every op's key must be at its
        revision, then all are written at one new revision (returned); otherwise nothing is
        written and TxnConflict reports every key's current value.  Keys must be distinct."""
        ...

    async def grant_lease(self, ttl: int) -> Lease: ...

    async def refresh_lease(self, lease: Lease) -> None: ...

    async def revoke_lease(self, lease: Lease) -> None: ...

    def watch(self, prefix: str, *, start_revision: int) -> AsyncIterator[KVEvent]:
        """Events for keys under ``prefix`` from ``start_revision`` (inclusive), in order.
        Raises CompactedError when that revision has been compacted."""
        ...

    async def close(self) -> None: ...


# --- resource layer -----------------------------------------------------------------------


class WatchEventType(Enum):
    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class ResourceEvent:
    type: WatchEventType
    key: str
    resource: Resource  # for DELETED: the last known value
    revision: int


@dataclass(frozen=True, slots=True)
class ResourceList:
    items: list[Resource] = field(default_factory=list)
    revision: int = 0

"""``ResourceSyncer``: THE update stream — the raw ``Syncer`` with every update typed.

Every consumer of the datastore's state (Felix's calculation graph, confd, and controllers to
come) reads this stream: batches of ``ResourceUpdate(key, resource, revision)``
(``datastore.updates``) with the raw syncer's statuses, ordering and self-healing.  The raw
updates are decoded here and nowhere else (``decode_update``).

It is not a cache: it keeps nothing but what the raw syncer keeps (each key's revision).

Invariants (beyond ``datastore.syncer``'s, which all hold):

* Updates whose key no consumer reads (not a v3 resource of a known kind, not a block
  affinity) are dropped; a batch left empty with no status is not delivered.
* A value that does not decode is logged once, here, and delivered as a delete
  (``datastore.updates``).
* A batch is decoded with the cyclic garbage collector paused: a snapshot of thousands of
  resources allocates many objects and no cyclic garbage, and a running collector rescans the
  growing heap again and again (see ``bench.felix_calc``).  It is restored even on error.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass

from pycalico.datastore import paths
from pycalico.datastore.api import KVStore
from pycalico.datastore.resources import resolve_kind
from pycalico.datastore.syncer import Syncer, SyncerBatch, SyncerUpdate, SyncStatus
from pycalico.datastore.updates import ResourceUpdate, decode_update
from pycalico.model.kinds import KindInfo


@dataclass(frozen=True, slots=True)
class ResourceBatch:
    updates: tuple[ResourceUpdate, ...] = ()
    status: SyncStatus | None = None  # takes effect after ``updates``

    @property
    def in_sync(self) -> bool:
        return self.status is SyncStatus.IN_SYNC


def decode_updates(updates: Sequence[SyncerUpdate]) -> tuple[ResourceUpdate, ...]:
    """Raw updates typed (see the module's invariants), collector paused."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        decoded = (decode_update(u.key, u.value, u.revision) for u in updates)
        return tuple(update for update in decoded if update is not None)
    finally:
        if paused:
            gc.enable()


def decode_batch(batch: SyncerBatch) -> ResourceBatch:
    return ResourceBatch(decode_updates(batch.updates), batch.status)


class ResourceSyncer:
    """``async for batch in ResourceSyncer(kv, ["IPPool", "Node"]): ...``

    ``kinds``: the resource kinds to follow (Kind, plural or alias); ``affinities_of``: also
    follow that node's block affinities (``all_affinities``: every node's, as Felix does for
    its overlay routes).  Options go to the raw ``Syncer``.
    """

    def __init__(
        self,
        kv: KVStore,
        kinds: Iterable[str | KindInfo],
        *,
        affinities_of: str | None = None,
        all_affinities: bool = False,
        initial_backoff: float = 0.1,
        max_backoff: float = 2.0,
        max_batch: int = 1000,
    ) -> None:
        self.kinds: Sequence[KindInfo] = [resolve_kind(kind) for kind in kinds]
        prefixes = [paths.resource_prefix(info) for info in self.kinds]
        if all_affinities:
            prefixes.append(paths.affinity_prefix(None))
        elif affinities_of is not None:
            prefixes.append(paths.affinity_prefix(affinities_of))
        self.syncer = Syncer(
            kv,
            prefixes,
            initial_backoff=initial_backoff,
            max_backoff=max_backoff,
            max_batch=max_batch,
        )

    @property
    def status(self) -> SyncStatus:
        return self.syncer.status

    def __aiter__(self) -> AsyncIterator[ResourceBatch]:
        return self.batches()

    async def batches(self) -> AsyncIterator[ResourceBatch]:
        async for raw in self.syncer:
            batch = decode_batch(raw)
            if batch.updates or batch.status is not None:
                yield batch

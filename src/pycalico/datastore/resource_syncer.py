"""``ResourceSyncer``: the ``Syncer`` for consumers that want decoded v3 resources.

It watches the keys of the kinds asked for and turns each raw ``SyncerUpdate`` into a
``ResourceUpdate`` (kind, name, namespace, decoded resource or ``None`` for a delete), with the
same statuses, ordering and self-healing as the raw syncer.  calicoctl-style watchers and
controllers use it; Felix and confd may use it or decode raw updates themselves with ``decode_update``.

It is not a cache: it keeps nothing but what the raw syncer keeps (each key's revision).

Invariants:

* A stored value that cannot be decoded is reported as ``resource=None`` with ``error`` set,
  like a delete (Calico's syncer validation filter does the same): a consumer never holds an
  object the model rejects, and the bad key is logged.
* ``resource.metadata.resourceVersion`` is the update's revision.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass

from pycalico.datastore import paths
from pycalico.datastore.api import DatastoreError, KVStore
from pycalico.datastore.resources import decode_stored, resolve_kind
from pycalico.datastore.syncer import Syncer, SyncerUpdate, SyncStatus
from pycalico.model.kinds import KINDS, KindInfo
from pycalico.model.meta import Resource

log = logging.getLogger(__name__)

_BY_PLURAL = {info.plural: info for info in KINDS.values()}


@dataclass(frozen=True, slots=True)
class ResourceUpdate:
    key: str
    kind: KindInfo
    name: str
    namespace: str | None
    resource: Resource | None  # None: deleted (or unreadable, see ``error``)
    revision: int
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ResourceBatch:
    updates: tuple[ResourceUpdate, ...] = ()
    status: SyncStatus | None = None

    @property
    def in_sync(self) -> bool:
        return self.status is SyncStatus.IN_SYNC


def decode_update(update: SyncerUpdate) -> ResourceUpdate | None:
    """A raw syncer update as a resource update; None for keys that are not v3 resources of a
    kind the model knows."""
    try:
        plural, namespace, name = paths.parse_resource_key(update.key)
    except paths.InvalidKey:
        return None
    info = _BY_PLURAL.get(plural)
    if info is None:
        return None
    if update.value is None:
        return ResourceUpdate(update.key, info, name, namespace, None, update.revision)
    try:
        resource = decode_stored(info, update.key, update.value, update.revision)
    except DatastoreError as error:
        log.warning("ignoring unreadable %s: %s", update.key, error)
        return ResourceUpdate(
            update.key, info, name, namespace, None, update.revision, error=str(error)
        )
    return ResourceUpdate(update.key, info, name, namespace, resource, update.revision)


class ResourceSyncer:
    """``async for batch in ResourceSyncer(kv, ["IPPool", "Node"]): ...``"""

    def __init__(
        self, kv: KVStore, kinds: Iterable[str | KindInfo], **syncer_options: float
    ) -> None:
        self.kinds: Sequence[KindInfo] = [resolve_kind(kind) for kind in kinds]
        prefixes = [paths.resource_prefix(info) for info in self.kinds]
        self.syncer = Syncer(kv, prefixes, **syncer_options)  # type: ignore[arg-type]

    def __aiter__(self) -> AsyncIterator[ResourceBatch]:
        return self.batches()

    async def batches(self) -> AsyncIterator[ResourceBatch]:
        async for batch in self.syncer:
            updates = tuple(
                decoded for decoded in map(decode_update, batch.updates) if decoded is not None
            )
            if updates or batch.status is not None:
                yield ResourceBatch(updates, batch.status)

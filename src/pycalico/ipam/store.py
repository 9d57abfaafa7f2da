"""IPAM's block store: datastore primitives and Calico's block claim protocol, over a ``KVStore``.

One part of ``pycalico.ipam.allocator.IPAM``, shared by its allocator, releaser and batcher:
reading IPAM config, pools and node labels;
reading and compare-and-swap writing blocks, affinities and handles; claiming a block
(two-phase) and releasing a block affinity.  Not here: choosing which block serves a request
(``allocator``) or the per-block algorithms (``blocks``).

Invariants:

* A block claim is two-phase: affinity ``pending`` -> create the block (which carries the
  affinity) -> affinity ``confirmed``.  A claimant killed in between leaves a pending affinity
  that the next assignment on that node confirms, or that is found stale and deleted; a block
  only ever belongs to the node named in the block itself.
* Releasing an affinity is ``pendingDeletion`` -> clear the block's affinity (or delete the
  block if empty) -> delete the affinity, each step a compare-and-swap.
* Every write bumps the block's ``sequenceNumber``; the hot-block cache only ever holds a block
  object nobody else references, with the revision it was written at.
* Cached blocks and handles are hints: they are only ever written back by a compare-and-swap on
  the revision they were read or written at, so a stale one costs a failed transaction (which
  reports the current value), never a lost update.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from pycalico.datastore.api import (
    DatastoreError,
    KeyAlreadyExists,
    KeyNotFound,
    KeyValue,
    KVStore,
    RevisionConflict,
    TxnConflict,
    TxnDelete,
    TxnOp,
    TxnPut,
)
from pycalico.datastore.retry import RetriesExhausted, read_modify_write
from pycalico.ipam import keys
from pycalico.ipam.api import (
    IPAMError,
    NodeNotFound,
    TooManyRetries,
    _ClaimConflict,
    _NoFreeBlocks,
    _StaleAffinity,
)
from pycalico.ipam.blocks import AllocationBlock
from pycalico.ipam.planner import NO_RESERVATIONS
from pycalico.ipam.pools import Pool, block_walk
from pycalico.ipam.records import (
    AFFINITY_TYPE_HOST,
    STATE_CONFIRMED,
    STATE_PENDING,
    STATE_PENDING_DELETION,
    BlockAffinity,
    BlockSummary,
    IPAMConfig,
    IPAMHandle,
    IPNetwork,
    affinity_string,
    parse_time,
    sanitize_handle,
)
from pycalico.ipam.reservations import Reservations

log = logging.getLogger(__name__)
T = TypeVar("T")

RETRIES = 100
EMPTY_BLOCK_MIN_RECLAIM_AGE = timedelta(minutes=1)
# Handles a long-lived allocator remembers (about 200 bytes each): more than a node's pods.
HANDLE_CACHE_SIZE = 4096


def handle_counted(handle_id: str, current: KeyValue | None, cidr: IPNetwork, count: int) -> TxnPut:
    """The compare-and-swap that adds ``count`` to a handle whose value is ``current``."""
    key = keys.handle_key(handle_id)
    if current is None:
        return TxnPut(key, IPAMHandle({str(cidr): count}).to_json(), 0)
    counted = IPAMHandle.from_json(current.value).incremented(str(cidr), count)
    return TxnPut(key, counted.to_json(), current.revision)


class BlockStore:
    """Datastore access, the caches of a long-lived allocator, and the claim protocol."""

    def __init__(
        self,
        kv: KVStore,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        retries: int = RETRIES,
        cache_seconds: float = 0.0,
        after_block_claimed: Callable[[IPNetwork], None] = lambda cidr: None,
    ) -> None:
        self.kv = kv
        # Called between creating a claimed block and confirming its affinity: tests kill the
        # process at exactly this point.
        self.after_block_claimed = after_block_claimed
        self.clock = clock
        self.retries = retries
        # A long-lived caller (the node agent) may reuse config, pools, reservations and node
        # labels for ``cache_seconds``; 0 (the default) reads them on every request, as Calico does.
        self.cache_seconds = cache_seconds
        self._inputs: dict[
            str, tuple[float, IPAMConfig, list[Pool], dict[str, str], Reservations]
        ] = {}
        # Last written value of each node's most recent block: the next assignment on that node
        # tries a compare-and-swap on it directly.  A stale entry only costs a failed CAS
        # (which returns the current value); a block that changed owner fails the CAS.
        self._hot: dict[tuple[str, int, str], tuple[int, AllocationBlock]] = {}
        # Assignments for one node are serialised in this process (Calico serialises them per
        # host with a file lock): they would only collide on the node's block.
        self._node_locks: dict[str, asyncio.Lock] = {}
        # Handles this allocator wrote in a block transaction, as written (long-lived callers
        # only): a release starts from this instead of reading the handle.  Only ever trusted
        # inside a transaction that also checks the handle's revision.
        self._handles: dict[str, KeyValue] = {}

    def _remember_handles(self, ops: Sequence[TxnOp], revision: int) -> None:
        if self.cache_seconds <= 0:
            return
        for op in ops:
            if isinstance(op, TxnPut) and op.key.startswith(keys.HANDLES_PREFIX):
                handle_id = op.key[len(keys.HANDLES_PREFIX) :]
                self._handles.pop(handle_id, None)  # re-insert: the dict stays oldest-first
                self._handles[handle_id] = KeyValue(op.key, op.value, revision)
        while len(self._handles) > HANDLE_CACHE_SIZE:
            del self._handles[next(iter(self._handles))]

    def wrote_handle(self, handle_id: str) -> bool:
        """Whether this allocator itself last wrote ``handle_id`` (it is in the handle cache): then
        the addresses a CNI DEL must free are under this handle, not under a legacy one."""
        return sanitize_handle(handle_id) in self._handles

    def forget_handle(self, handle_id: str) -> KeyValue | None:
        """Take ``handle_id`` out of the handle cache: the handle as last written, if cached."""
        return self._handles.pop(handle_id, None)

    def node_lock(self, node: str) -> asyncio.Lock:
        """Assignments for one node are serialised in this process under this lock."""
        return self._node_locks.setdefault(node, asyncio.Lock())

    def take_node_block(
        self, host: str, version: int, affinity_type: str
    ) -> tuple[int, AllocationBlock] | None:
        """Take the node's most recently written block out of the hot cache (None if there is
        none): out of the cache while in use, so nothing else sees a half-changed block."""
        return self._hot.pop((host, version, affinity_type), None)

    # -- reads of config, pools and nodes --

    async def get_config(self) -> IPAMConfig:
        """IPAM configuration: ``/calico/ipam/v2/config`` (what ``calicoctl ipam configure``
        writes) or the v3 ``IPAMConfiguration`` ``default`` resource (what ``calicoctl apply``
        writes), whichever was written last; Calico's defaults when neither exists."""
        v1, v3 = await asyncio.gather(
            self.kv.get(keys.CONFIG_KEY), self.kv.get(keys.IPAM_CONFIGURATION_KEY)
        )
        if v3 is not None and (v1 is None or v3.revision > v1.revision):
            return IPAMConfig.from_resource_json(v3.value)
        return IPAMConfig() if v1 is None else IPAMConfig.from_json(v1.value)

    async def set_config(self, config: IPAMConfig) -> None:
        problems = config.validate()
        if problems:
            raise IPAMError("; ".join(problems))
        await self.kv.put(keys.CONFIG_KEY, config.to_json())
        self._inputs.clear()

    async def list_pools(self) -> list[Pool]:
        listed = await self.kv.list(keys.IPPOOLS_PREFIX)
        pools = []
        for item in sorted(listed.items, key=lambda i: i.key):
            try:
                pools.append(Pool.from_resource_json(item.value))
            except (ValueError, KeyError) as exc:
                raise IPAMError(f"IPPool at {item.key} is unreadable: {exc}") from exc
        return pools

    async def list_reservations(self) -> Reservations:
        """Every IPReservation's networks (Calico lists them on every auto-assign)."""
        listed = await self.kv.list(keys.IPRESERVATIONS_PREFIX)
        try:
            return Reservations.from_resource_json(item.value for item in listed.items)
        except ValueError as exc:
            raise IPAMError(f"an IPReservation is unreadable: {exc}") from exc

    async def node_labels(self, node: str) -> dict[str, str]:
        kv = await self.kv.get(keys.node_key(node))
        if kv is None:
            raise NodeNotFound(node)
        metadata = json.loads(kv.value).get("metadata") or {}
        return dict(metadata.get("labels") or {})

    async def plan_inputs(
        self, node: str, virtual: bool
    ) -> tuple[IPAMConfig, list[Pool], dict[str, str], Reservations]:
        """Config, pools, node labels (none for a virtual, load-balancer, request) and
        reservations: read afresh, or reused for ``cache_seconds`` by a long-lived allocator."""
        now = time.monotonic()
        cached = self._inputs.get(node)
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1], cached[2], cached[3], cached[4]
        # Reservations are read with the pools (Calico lists them on every auto-assign), so a
        # cached allocator sees a new IPReservation at most ``cache_seconds`` late.
        config, pools, labels, reservations = await asyncio.gather(
            self.get_config(),
            self.list_pools(),
            self._labels_for(node, virtual),
            self.list_reservations(),
        )
        if self.cache_seconds > 0:
            self._inputs[node] = (now, config, pools, labels, reservations)
        return config, pools, labels, reservations

    async def _labels_for(self, node: str, virtual: bool) -> dict[str, str]:
        return {} if virtual else await self.node_labels(node)

    async def config_for_release(self) -> IPAMConfig:
        """The IPAM config, from the assignment inputs' cache while it is fresh."""
        cached = next(iter(self._inputs.values()), None)
        if cached is not None and time.monotonic() - cached[0] < self.cache_seconds:
            return cached[1]
        return await self.get_config()

    # -- low-level block, affinity and handle access --

    async def get_block(self, cidr: IPNetwork) -> tuple[int, AllocationBlock] | None:
        kv = await self.kv.get(keys.block_key(cidr))
        if kv is None:
            return None
        return kv.revision, AllocationBlock.from_json(kv.value)

    async def write_block(
        self, revision: int, block: AllocationBlock, *, remember: bool = False
    ) -> int:
        """CAS-write a block.  ``remember`` hands the object to the hot cache: only for callers
        that never touch it again."""
        hot_key = None
        if block.affinity:
            affinity_type, _, host = block.affinity.partition(":")
            hot_key = (host, block.version, affinity_type)
            self._hot.pop(hot_key, None)
        # Every write bumps the sequence number (after allocations recorded the old one).
        block.sequence_number += 1
        data = block.to_json()
        new_revision = await self.kv.update(keys.block_key(block.cidr), data, revision=revision)
        if remember and hot_key is not None:
            self._hot[hot_key] = (new_revision, block)
        return new_revision

    async def commit_block(
        self,
        revision: int,
        block: AllocationBlock,
        others: Sequence[TxnOp],
        *,
        delete: bool = False,
        remember: bool = False,
    ) -> int:
        """CAS-write (or with ``delete``, CAS-delete) a block together with ``others`` (handle
        writes) in one transaction: one etcd round trip instead of one per key, and the
        handle and its addresses change together.  TxnConflict if any key moved; then nothing
        was written and ``block`` must be thrown away (its sequence number was bumped).
        ``remember`` as for ``write_block``."""
        hot_key = None
        if block.affinity:
            affinity_type, _, host = block.affinity.partition(":")
            hot_key = (host, block.version, affinity_type)
            self._hot.pop(hot_key, None)
        key = keys.block_key(block.cidr)
        first: TxnOp
        if delete:
            first = TxnDelete(key, revision)
        else:
            block.sequence_number += 1
            first = TxnPut(key, block.to_json(), revision)
        new_revision = await self.kv.commit([first, *others])
        if remember and hot_key is not None and not delete:
            self._hot[hot_key] = (new_revision, block)
        self._remember_handles(others, new_revision)
        return new_revision

    def take_hot_block(self, cidr: IPNetwork) -> tuple[int, AllocationBlock] | None:
        """Take ``cidr``'s block out of the hot cache (None if it is not there).  The revision
        may be stale: a compare-and-swap on it fails and returns the current value, and a
        caller that finds nothing to do in it must read the block before concluding so."""
        for hot_key, (revision, block) in self._hot.items():
            if block.cidr == cidr:
                del self._hot[hot_key]
                return revision, block
        return None

    async def reread_block(
        self, cidr: IPNetwork, conflict: RevisionConflict | None
    ) -> tuple[int, AllocationBlock] | None:
        if conflict is not None and conflict.current is not None:
            return conflict.current.revision, AllocationBlock.from_json(conflict.current.value)
        return await self.get_block(cidr)

    async def block_after(
        self, cidr: IPNetwork, lost: DatastoreError
    ) -> tuple[int, AllocationBlock] | None:
        """The block as it is after a write of it was lost (None if it is gone): from the
        failed transaction or compare-and-swap when it reports the value, else read."""
        if isinstance(lost, TxnConflict):
            stored = lost.current.get(keys.block_key(cidr))
            return (
                None
                if stored is None
                else (stored.revision, AllocationBlock.from_json(stored.value))
            )
        if isinstance(lost, KeyNotFound):
            return None
        return await self.reread_block(cidr, lost if isinstance(lost, RevisionConflict) else None)

    async def block_summaries(self, version: int | None = None) -> list[BlockSummary]:
        listed = await self.kv.list(keys.blocks_prefix(version))
        return [BlockSummary.from_json(kv.value) for kv in listed.items]

    async def list_blocks(self, version: int | None = None) -> list[tuple[int, AllocationBlock]]:
        listed = await self.kv.list(keys.blocks_prefix(version))
        return [(kv.revision, AllocationBlock.from_json(kv.value)) for kv in listed.items]

    async def adjust_handle(self, handle_id: str, cidr: IPNetwork, delta: int) -> None:
        """Add ``delta`` to the handle's count for ``cidr`` (CAS; the handle goes at zero)."""
        if delta == 0:
            return
        key = keys.handle_key(handle_id)

        async def step(last: DatastoreError | None) -> None:
            # A lost write reports the current value; a new handle (delta > 0) is just created.
            current = (
                last.current if isinstance(last, (RevisionConflict, KeyAlreadyExists)) else None
            )
            if current is None and (last is not None or delta < 0):
                current = await self.kv.get(key)
            if current is None:
                if delta > 0:
                    await self.kv.create(key, IPAMHandle({str(cidr): delta}).to_json())
                return
            handle = IPAMHandle.from_json(current.value)
            changed = (
                handle.incremented(str(cidr), delta)
                if delta > 0
                else handle.decremented(str(cidr), -delta)
            )
            if changed.empty:
                await self.kv.delete(key, revision=current.revision)
            else:
                await self.kv.update(key, changed.to_json(), revision=current.revision)

        await self.retried(
            step, f"handle {handle_id}", (RevisionConflict, KeyAlreadyExists, KeyNotFound)
        )

    async def retried(
        self,
        step: Callable[[DatastoreError | None], Awaitable[T]],
        what: str,
        conflicts: tuple[type[DatastoreError], ...] = (RevisionConflict, KeyNotFound),
    ) -> T:
        """``read_modify_write`` with IPAM's bound (``retries``, Calico's 100) and IPAM's error
        (``TooManyRetries``) when every attempt lost."""
        try:
            return await read_modify_write(
                step, what=what, attempts=self.retries, conflicts=conflicts
            )
        except RetriesExhausted:
            raise TooManyRetries() from None

    async def delete_quietly(self, key: str, revision: int) -> None:
        with contextlib.suppress(KeyNotFound, RevisionConflict):
            await self.kv.delete(key, revision=revision)

    # -- the block claim protocol --

    async def pending_affinity(self, host: str, cidr: IPNetwork, affinity_type: str) -> KeyValue:
        """Create our affinity as ``pending``; an existing unconfirmed one is marked pending."""
        key = keys.affinity_key(host, cidr, affinity_type)
        pending = BlockAffinity(state=STATE_PENDING).to_json()
        try:
            revision = await self.kv.create(key, pending)
            return KeyValue(key, pending, revision)
        except KeyAlreadyExists as exc:
            current = exc.current or await self.kv.get(key)
        if current is None:
            raise RevisionConflict(key, 0, None)
        if BlockAffinity.from_json(current.value).confirmed:
            return current
        revision = await self.kv.update(key, pending, revision=current.revision)
        return KeyValue(key, pending, revision)

    async def _confirm_affinity(self, affinity: KeyValue) -> None:
        confirmed = BlockAffinity(state=STATE_CONFIRMED).to_json()
        try:
            await self.kv.update(affinity.key, confirmed, revision=affinity.revision)
        except (RevisionConflict, KeyNotFound):
            # Another process on this node may have confirmed it already: that is fine.
            now = await self.kv.get(affinity.key)
            if now is None or not BlockAffinity.from_json(now.value).confirmed:
                raise

    async def claim_block(
        self, affinity: KeyValue, host: str, cidr: IPNetwork, affinity_type: str
    ) -> tuple[int, AllocationBlock]:
        """Create the block for a pending affinity, then confirm the affinity."""
        block = AllocationBlock.new(
            cidr,
            affinity=affinity_string(host, affinity_type),
            claim_time=self.clock(),
            sequence_number=time.time_ns(),
        )
        key = keys.block_key(cidr)
        try:
            revision = await self.kv.create(key, block.to_json())
        except KeyAlreadyExists as exc:
            current = exc.current or await self.kv.get(key)
            if current is not None:
                existing = AllocationBlock.from_json(current.value)
                if existing.affine_to(host, affinity_type):
                    await self._confirm_affinity(affinity)
                    return current.revision, existing
            await self.delete_quietly(affinity.key, affinity.revision)
            raise _ClaimConflict() from None
        self.after_block_claimed(cidr)
        await self._confirm_affinity(affinity)
        log.debug("%s claimed block %s (%s)", host, cidr, affinity_type)
        return revision, block

    async def block_from_affinity(
        self, affinity: KeyValue, host: str, cidr: IPNetwork, affinity_type: str
    ) -> tuple[int, AllocationBlock]:
        """The block an affinity of ours names, creating or confirming as needed."""
        state = BlockAffinity.from_json(affinity.value)
        got = await self.get_block(cidr)
        if got is None:
            if state.state != STATE_PENDING:
                pending = BlockAffinity(state=STATE_PENDING).to_json()
                revision = await self.kv.update(affinity.key, pending, revision=affinity.revision)
                affinity = KeyValue(affinity.key, pending, revision)
            return await self.claim_block(affinity, host, cidr, affinity_type)
        revision, block = got
        if not block.affine_to(host, affinity_type):
            await self.delete_quietly(affinity.key, affinity.revision)
            raise _StaleAffinity()
        if not state.confirmed:
            pending = BlockAffinity(state=STATE_PENDING).to_json()
            aff_revision = await self.kv.update(affinity.key, pending, revision=affinity.revision)
            # A write to the block invalidates any other process working from an older read.
            revision = await self.write_block(revision, block)
            await self._confirm_affinity(KeyValue(affinity.key, pending, aff_revision))
        return revision, block

    async def find_usable_block(
        self,
        host: str,
        version: int,
        pools: Sequence[Pool],
        affinity_type: str,
        reservations: Reservations = NO_RESERVATIONS,
    ) -> IPNetwork:
        """A block CIDR that does not exist yet, or ours with room, or an old empty one;
        wholly reserved CIDRs are passed over and reserved addresses are not room."""
        existing = {s.cidr: s for s in await self.block_summaries(version)}
        ours = affinity_string(host, affinity_type)
        now = self.clock()
        empty_candidates: list[BlockSummary] = []
        for pool in pools:
            for cidr in block_walk(pool, host):
                if reservations and reservations.matches_whole(cidr):
                    continue
                found = existing.get(cidr)
                if found is None:
                    return cidr
                free = found.free_excluding(reservations.reserved_in(cidr))
                if found.affinity == ours and free > 0:
                    return cidr
                if found.empty and free > 0:
                    empty_candidates.append(found)
        for block in empty_candidates:
            claimed = parse_time(block.affinity_claim_time)
            if claimed is not None and now - claimed < EMPTY_BLOCK_MIN_RECLAIM_AGE:
                continue
            owner = block.affinity or ""
            owner_type, _, owner_host = owner.partition(":")
            try:
                if owner_host:
                    await self.release_block_affinity(
                        owner_host,
                        block.cidr,
                        require_empty=True,
                        required_sequence=block.sequence_number,
                        affinity_type=owner_type,
                    )
            except (IPAMError, RevisionConflict, KeyNotFound):
                continue
            return block.cidr
        raise _NoFreeBlocks()

    async def affine_blocks(
        self, host: str, version: int, affinity_type: str
    ) -> dict[IPNetwork, KeyValue]:
        listed = await self.kv.list(keys.host_affinities_prefix(host, version, affinity_type))
        out = {}
        for item in listed.items:
            parsed = keys.parse_affinity_key(item.key)
            if parsed is not None:
                out[parsed.cidr] = item
        return out

    def collect(self, block: AllocationBlock, config: IPAMConfig) -> None:
        block.collect_cooled(cooldown_seconds=config.ip_cooldown_seconds, now=self.clock())

    async def release_block_affinity(
        self,
        host: str,
        cidr: IPNetwork,
        *,
        require_empty: bool = True,
        required_sequence: int | None = None,
        affinity_type: str = AFFINITY_TYPE_HOST,
    ) -> None:
        """Give up ``host``'s claim on a block: pendingDeletion -> clear/delete -> delete.

        With ``require_empty`` a block that still holds addresses keeps its affinity
        (IPAMError).  ``required_sequence`` aborts if the block changed since it was read.
        """
        if not host:
            raise IPAMError("Hostname must be specified to release block affinity")
        key = keys.affinity_key(host, cidr, affinity_type)
        affinity = await self.kv.get(key)
        if affinity is None:
            raise IPAMError(f"no affinity for {host} on block {cidr}")
        got = await self.get_block(cidr)
        if got is None:
            await self.delete_quietly(key, affinity.revision)
            return
        revision, block = got
        if required_sequence is not None and block.sequence_number != required_sequence:
            raise IPAMError("IPAM block updated since we last read it")
        if block.affinity is not None and not block.affine_to(host, affinity_type):
            await self.delete_quietly(key, affinity.revision)
            raise IPAMError(f"block {cidr} is claimed by {block.affinity}, not {host}")
        if require_empty and not block.empty():
            raise IPAMError(f"block {cidr} is not empty; refusing to release its affinity")
        marked = BlockAffinity(state=STATE_PENDING_DELETION).to_json()
        aff_revision = await self.kv.update(key, marked, revision=affinity.revision)
        if block.empty():
            with contextlib.suppress(KeyNotFound):
                await self.kv.delete(keys.block_key(cidr), revision=revision)
        else:
            block.affinity = None
            block.affinity_claim_time = None
            await self.write_block(revision, block)
        await self.delete_quietly(key, aff_revision)
        log.debug("%s released its affinity for block %s", host, cidr)

    async def release_host_affinities(self, host: str, *, require_empty: bool = True) -> int:
        """Release ``host``'s affinity for all its (empty, by default) blocks; returns how many."""
        released = 0
        for version in (4, 6):
            for cidr in list(await self.affine_blocks(host, version, AFFINITY_TYPE_HOST)):

                async def step(last: DatastoreError | None, cidr: IPNetwork = cidr) -> None:
                    await self.release_block_affinity(host, cidr, require_empty=require_empty)

                try:
                    await self.retried(step, f"affinity of {host} for {cidr}")
                    released += 1
                except IPAMError:
                    pass  # not empty, or claimed by another node meanwhile: keep going
        return released

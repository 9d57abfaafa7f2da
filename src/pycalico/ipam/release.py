"""Releasing IPAM addresses (by address or by handle) and the read-only queries by address and
handle: the ``Releaser`` part of ``pycalico.ipam.allocator.IPAM``, over its ``BlockStore``.

libcalico-go's ``ReleaseIPs``, ``ReleaseByHandle``, ``GetAssignmentAttributes`` and
``IPsByHandle`` (reference §5) over ``BlockStore``'s compare-and-swap primitives, retried a bounded
number of times (``RETRIES``).  It is not the assignment side (``pycalico.ipam.allocator``), not
the per-block algorithm (``AllocationBlock.release`` in ``pycalico.ipam.blocks``) and not a
public entry point: callers use ``IPAM``, which delegates to this.

Invariants:

* A release that quotes a sequence number or handle that no longer matches raises
  ReleaseConflict and leaves that block untouched; one that quotes a sequence number frees
  nothing if the address was since reused.
* A handle's count for a block is lowered only after the block write lands, or is deleted in the
  same etcd transaction as the block, so a crash can leave a handle count without an address,
  never an address without its handle.
* A block left empty and without affinity is deleted, not written back.
* Released addresses cool down for the configured ``ipCooldownSeconds`` before reuse.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence

from pycalico.datastore.api import (
    DatastoreError,
    KeyNotFound,
    KeyValue,
    RevisionConflict,
    TxnConflict,
    TxnDelete,
)
from pycalico.ipam import keys
from pycalico.ipam.api import AllocationInfo, HandleNotFound, ReleaseConflict
from pycalico.ipam.blocks import AllocationAttribute, ReleaseOption, StaleRelease
from pycalico.ipam.pools import Pool, pool_for_address
from pycalico.ipam.records import IPAddress, IPAMConfig, IPAMHandle, IPNetwork, sanitize_handle
from pycalico.ipam.store import BlockStore

log = logging.getLogger(__name__)


class Releaser:
    """Releasing addresses, and the queries by address and handle, over a ``BlockStore``."""

    def __init__(self, store: BlockStore) -> None:
        self.store = store

    # -- release --

    async def _block_cidr_for(
        self, address: IPAddress, pools: Sequence[Pool], cache: list[list[IPNetwork]]
    ) -> IPNetwork | None:
        pool = pool_for_address(pools, address)
        if pool is not None:
            return pool.block_for(address)
        # Not in any pool (deleted?): find the block by a full scan, once per call.
        if not cache:
            cache.append([summary.cidr for summary in await self.store.block_summaries()])
        return next((c for c in cache[0] if address.version == c.version and address in c), None)

    async def release_ips(self, options: Sequence[ReleaseOption]) -> list[IPAddress]:
        """Release addresses (sequence- and handle-checked when the options say so).

        Returns the addresses that were not allocated.  ReleaseConflict if any quoted sequence
        number or handle no longer matches (that block is left untouched).
        """
        pools = await self.store.list_pools()
        by_block: dict[IPNetwork, list[ReleaseOption]] = {}
        not_allocated: list[IPAddress] = []
        cache: list[list[IPNetwork]] = []
        for option in options:
            cidr = await self._block_cidr_for(option.address, pools, cache)
            if cidr is None:
                not_allocated.append(option.address)
            else:
                by_block.setdefault(cidr, []).append(option)
        config = await self.store.get_config()
        for cidr, block_options in by_block.items():
            not_allocated.extend(await self._release_in_block(cidr, block_options, config))
        return not_allocated

    async def _release_in_block(
        self, cidr: IPNetwork, options: list[ReleaseOption], config: IPAMConfig
    ) -> list[IPAddress]:
        got = await self.store.get_block(cidr)

        async def step(last: DatastoreError | None) -> list[IPAddress]:
            nonlocal got
            if last is not None:
                got = await self.store.block_after(cidr, last)
            if got is None:
                return [o.address for o in options]
            revision, block = got
            now = self.store.clock()
            block.collect_cooled(cooldown_seconds=config.ip_cooldown_seconds, now=now)
            try:
                outcome = block.release(
                    options, cooldown_seconds=config.ip_cooldown_seconds, now=now
                )
            except StaleRelease as exc:
                raise ReleaseConflict(str(exc)) from None
            if not outcome.released:
                return list(outcome.not_allocated)
            if block.empty() and block.affinity is None:
                await self.store.kv.delete(keys.block_key(cidr), revision=revision)
            else:
                await self.store.write_block(revision, block)
            log.debug("released %d addresses in block %s", len(outcome.released), cidr)
            for handle_id, count in outcome.released_by_handle.items():
                await self.store.adjust_handle(handle_id, cidr, -count)
            return list(outcome.not_allocated)

        return await self.store.retried(step, f"release in block {cidr}")

    async def release_by_handle(self, handle_id: str, *, sequence_number: int | None = None) -> int:
        """Release every address held by ``handle_id``; HandleNotFound if there is none.

        Returns how many addresses were released.  The handle is removed even when its counts
        were left over by a crash and the blocks hold nothing for it.
        """
        handle_id = sanitize_handle(handle_id)
        released = 0
        cached = self.store.forget_handle(handle_id)
        if cached is not None and sequence_number is None:
            # The handle as this allocator last wrote it, which saves reading it.  The block's
            # transaction deletes it only at that revision; if it moved on, whatever the
            # block held for it is released and the handle is read and settled below.
            remembered = IPAMHandle.from_json(cached.value)
            if len(remembered.block) == 1:
                cidr = ipaddress.ip_network(next(iter(remembered.block)))
                released, handle_gone = await self._release_handle_in_block(
                    cidr, handle_id, None, await self.store.config_for_release(), cached
                )
                if handle_gone:
                    return released
        kv = await self.store.kv.get(keys.handle_key(handle_id))
        if kv is None:
            if released:
                return released
            raise HandleNotFound(handle_id)
        handle = IPAMHandle.from_json(kv.value)
        config = await self.store.config_for_release()
        for cidr_text, count in handle.block.items():
            cidr = ipaddress.ip_network(cidr_text)
            # The usual case: one block, all of it released; the handle goes in the block's
            # transaction unless it changed meanwhile (then it is counted down properly).
            whole = kv if len(handle.block) == 1 and sequence_number is None else None
            count_released, handle_gone = await self._release_handle_in_block(
                cidr, handle_id, sequence_number, config, whole
            )
            released += count_released
            if handle_gone:
                continue
            if whole is not None:
                try:
                    await self.store.kv.delete(kv.key, revision=kv.revision)
                    continue
                except (RevisionConflict, KeyNotFound):
                    pass
            await self.store.adjust_handle(handle_id, cidr, -count)
        return released

    async def _release_handle_in_block(
        self,
        cidr: IPNetwork,
        handle_id: str,
        sequence_number: int | None,
        config: IPAMConfig,
        handle: KeyValue | None = None,
    ) -> tuple[int, bool]:
        """Release the handle's addresses in one block: (how many, whether ``handle`` was
        deleted with the block write).  ``handle`` is deleted only at its revision."""
        # The node's hot block saves a read; it may be stale (another process wrote the block
        # since), which a failed compare-and-swap reveals, and finding nothing to release in it
        # proves nothing, so then the block is read.
        got = self.store.take_hot_block(cidr)
        cached = got is not None
        if got is None:
            got = await self.store.get_block(cidr)

        async def step(last: DatastoreError | None) -> tuple[int, bool]:
            nonlocal got, cached, handle
            if last is not None:
                if (
                    isinstance(last, TxnConflict)
                    and handle is not None
                    and handle.key in last.stale
                ):
                    handle = None  # changed meanwhile: the caller counts it down
                # ``block`` was changed in memory: start again from the stored one.
                got = await self.store.block_after(cidr, last)
            while True:
                if got is None:
                    return 0, False
                revision, block = got
                now = self.store.clock()
                block.collect_cooled(cooldown_seconds=config.ip_cooldown_seconds, now=now)
                released = block.release_by_handle(
                    handle_id,
                    sequence_number=sequence_number,
                    cooldown_seconds=config.ip_cooldown_seconds,
                    now=now,
                )
                if released:
                    break
                if not cached:
                    return 0, False
                cached = False
                got = await self.store.get_block(cidr)
            cached = False
            drop_block = block.empty() and block.affinity is None
            if handle is not None:
                others = [TxnDelete(handle.key, handle.revision)]
                await self.store.commit_block(
                    revision, block, others, delete=drop_block, remember=True
                )
            elif drop_block:
                await self.store.kv.delete(keys.block_key(cidr), revision=revision)
            else:
                # Back into the hot cache: the node's next assignment needs no read.
                await self.store.write_block(revision, block, remember=True)
            log.debug("released %d addresses of %s in block %s", len(released), handle_id, cidr)
            return len(released), handle is not None

        return await self.store.retried(
            step,
            f"release of {handle_id} in block {cidr}",
            (TxnConflict, RevisionConflict, KeyNotFound),
        )

    # -- queries --

    async def allocation_info(self, address: IPAddress) -> AllocationInfo | None:
        """Who holds ``address``, or None when it is not allocated."""
        pools = await self.store.list_pools()
        cidr = await self._block_cidr_for(address, pools, [])
        if cidr is None:
            return None
        got = await self.store.get_block(cidr)
        if got is None:
            return None
        _, block = got
        attribute: AllocationAttribute | None = block.attribute_for(address)
        if attribute is None:
            return None
        handle = sanitize_handle(attribute.handle_id) if attribute.handle_id else None
        return AllocationInfo(
            address=address,
            block=cidr,
            handle_id=handle,
            attributes=dict(attribute.secondary or {}),
            sequence_number=block.sequence_for(block.ordinal(address)),
        )

    async def addresses_by_handle(self, handle_id: str) -> list[IPAddress]:
        kv = await self.store.kv.get(keys.handle_key(handle_id))
        if kv is None:
            raise HandleNotFound(handle_id)
        out: list[IPAddress] = []
        for cidr_text in IPAMHandle.from_json(kv.value).block:
            got = await self.store.get_block(ipaddress.ip_network(cidr_text))
            if got is not None:
                out.extend(got[1].addresses_by_handle(handle_id))
        return out

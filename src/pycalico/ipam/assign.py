"""The IPAM allocator: auto-assigning and assigning addresses over a ``BlockStore``.

libcalico-go's ``AutoAssign`` and ``AssignIP`` (reference §5): the node's hot block first, then
its affine blocks, then a new claim, then borrowing from any block unless strict affinity.  The
decisions (well-formed request, which pools, block limit) are ``planner``'s; datastore access
and the claim protocol are the ``BlockStore``'s; rolling back a partial assignment is the
``Releaser``'s; combining a long-lived allocator's concurrent single-address requests is the
``NodeBatcher``'s, reached through ``NodeBatcher.submit`` only.  Public callers use
``pycalico.ipam.allocator.IPAM``.

Invariants kept across crashes and races:

* A handle's count for a block is raised before the block write and lowered if the write never
  lands (Calico's order), or written in the same etcd transaction as the block (the node
  agent's batched assignments), so a crash can leave a handle count without an address, never
  an address without its handle.
* Auto-assignment never hands out an address an ``IPReservation`` covers (affine blocks, new
  claims, borrowing and the batched hot block alike): a wholly reserved block CIDR is never
  claimed or borrowed from, and reserved ordinals stay free in place.  ``assign_ip`` of a given
  address ignores reservations, as Calico's.
* ``auto_assign`` with IPv4 and IPv6 is all or nothing: pools for both families are resolved
  before anything is written, and on a shortfall every address taken by the call is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence

from pycalico.datastore.api import DatastoreError, KeyNotFound, KeyValue, RevisionConflict
from pycalico.ipam import keys
from pycalico.ipam.api import (
    AddressInUse,
    AddressNotInPool,
    AssignmentIncomplete,
    Assignments,
    AutoAssignRequest,
    IPAMError,
    TooManyRetries,
    _BlockLimit,
    _ClaimConflict,
    _NoFreeBlocks,
    _StaleAffinity,
)
from pycalico.ipam.batching import NodeBatcher, batchable
from pycalico.ipam.blocks import AllocationBlock, BlockError, ReleaseOption
from pycalico.ipam.planner import (
    NO_RESERVATIONS,
    FamilyPlan,
    affinity_type_for,
    check_handle_id,
    check_request,
    max_blocks,
    plan_family,
)
from pycalico.ipam.pools import (
    USE_LOAD_BALANCER,
    USE_WORKLOAD,
    Pool,
    block_walk,
    pool_for_address,
    selector_matches,
)
from pycalico.ipam.records import (
    AFFINITY_TYPE_HOST,
    BlockSummary,
    IPAddress,
    IPAMConfig,
    IPInterface,
    IPNetwork,
)
from pycalico.ipam.release import Releaser
from pycalico.ipam.reservations import Reservations
from pycalico.ipam.store import BlockStore

log = logging.getLogger(__name__)


class Allocator:
    """Assignment over a ``BlockStore``; safe for many concurrent callers and processes."""

    def __init__(self, store: BlockStore, releaser: Releaser) -> None:
        self.store = store
        self.releaser = releaser
        # Only a long-lived allocator (``cache_seconds > 0``) combines requests.
        self.batcher = NodeBatcher(store, self._auto_assign_locked, releaser.release_ips)

    async def auto_assign(self, request: AutoAssignRequest) -> tuple[Assignments, Assignments]:
        """Assign ``num4`` IPv4 and ``num6`` IPv6 addresses to ``node``, all or nothing."""
        check_request(request)
        if self.store.cache_seconds > 0 and batchable(request):
            return await self.batcher.submit(request)
        async with self.store.node_lock(request.node):
            return await self._auto_assign_locked(request)

    async def _auto_assign_locked(
        self, request: AutoAssignRequest
    ) -> tuple[Assignments, Assignments]:
        virtual = request.use == USE_LOAD_BALANCER
        config, pools, labels, reserved = await self.store.plan_inputs(request.node, virtual)
        plans = []
        if request.num4:
            plans.append(plan_family(request, 4, request.num4, pools, labels, reserved))
        if request.num6:
            plans.append(plan_family(request, 6, request.num6, pools, labels, reserved))
        results: dict[int, Assignments] = {
            4: Assignments(version=4, requested=request.num4),
            6: Assignments(version=6, requested=request.num6),
        }
        try:
            for plan in plans:
                results[plan.version] = await self._auto_assign_family(request, plan, config)
                message = results[plan.version].shortfall_message()
                if message is not None:
                    raise AssignmentIncomplete(message)
        except BaseException:
            taken = [ReleaseOption(address=a.ip) for r in results.values() for a in r.addresses]
            if taken:
                log.debug("rolling back %d addresses of %s", len(taken), request.handle_id)
                await asyncio.shield(self.releaser.release_ips(taken))
            raise
        return results[4], results[6]

    async def _auto_assign_family(
        self, request: AutoAssignRequest, plan: FamilyPlan, config: IPAMConfig
    ) -> Assignments:
        host = request.node
        affinity_type = affinity_type_for(request.use)
        strict_host = host if config.strict_affinity else None
        addresses: list[IPInterface] = await self._assign_from_hot_block(
            host, plan, request, strict_host, config, affinity_type
        )
        if len(addresses) == plan.num:
            return Assignments(plan.version, plan.num, tuple(addresses))
        affine = await self.store.affine_blocks(host, plan.version, affinity_type)
        listed = {
            c: kv for c, kv in affine.items() if pool_for_address(plan.pools, c.network_address)
        }
        if affinity_type == AFFINITY_TYPE_HOST:
            await self._release_unselected(host, plan, [c for c in affine if c not in listed])
        remaining_affine = list(listed)
        owned = len(remaining_affine)
        limit = max_blocks(request, config)
        messages: list[str] = []
        budget = plan.num + self.store.retries
        while len(addresses) < plan.num and budget > 0:
            budget -= 1
            try:
                revision, block, newly = await self._find_or_claim_block(
                    host, plan, remaining_affine, listed, owned < limit, config, affinity_type
                )
            except _NoFreeBlocks:
                if config.strict_affinity:
                    messages.append("No more free affine blocks and strict affinity enabled")
                break
            except _BlockLimit:
                messages.append(
                    "Need to allocate an IPAM block but could not - limit of "
                    f"{limit} blocks reached for this node"
                )
                return Assignments(plan.version, plan.num, tuple(addresses), tuple(messages))
            if newly:
                owned += 1
            addresses.extend(
                await self._assign_from_block(
                    revision,
                    block,
                    plan.num - len(addresses),
                    request,
                    strict_host,
                    config,
                    affinity_type,
                    plan.reservations,
                )
            )
        if len(addresses) < plan.num and not config.strict_affinity:
            messages.extend(
                await self._borrow_from_pools(plan, addresses, request, config, affinity_type)
            )
        return Assignments(plan.version, plan.num, tuple(addresses), tuple(dict.fromkeys(messages)))

    async def _borrow_from_pools(
        self,
        plan: FamilyPlan,
        addresses: list[IPInterface],
        request: AutoAssignRequest,
        config: IPAMConfig,
        affinity_type: str,
    ) -> list[str]:
        """Borrow into ``addresses`` pool by pool until the plan is met; the shortfall message."""
        exhausted = []
        for pool in plan.pools:
            got = await self._borrow(
                pool, plan.num - len(addresses), request, config, affinity_type, plan.reservations
            )
            addresses.extend(got)
            if len(addresses) >= plan.num:
                return []
            exhausted.append(str(pool.cidr))
        return [f"No IPs available in pools: [{' '.join(exhausted)}]"] if exhausted else []

    async def _release_unselected(
        self, host: str, plan: FamilyPlan, cidrs: Sequence[IPNetwork]
    ) -> None:
        """Give up empty affine blocks whose pool no longer selects this node (Calico does
        this on every assignment); blocks still holding addresses keep their affinity."""
        for cidr in cidrs:
            pool = pool_for_address(plan.all_pools, cidr.network_address)
            if pool is None or selector_matches(pool.node_selector, plan.node_labels):
                continue
            with contextlib.suppress(IPAMError, RevisionConflict, KeyNotFound):
                await self.store.release_block_affinity(host, cidr, require_empty=True)

    async def _assign_from_hot_block(
        self,
        host: str,
        plan: FamilyPlan,
        request: AutoAssignRequest,
        strict_host: str | None,
        config: IPAMConfig,
        affinity_type: str,
    ) -> list[IPInterface]:
        """Try the node's most recently written block straight away (no listing)."""
        hot = self.store.take_node_block(host, plan.version, affinity_type)
        if hot is None:
            return []
        revision, block = hot
        if not block.affine_to(host, affinity_type):
            return []
        if pool_for_address(plan.pools, block.cidr.network_address) is None:
            return []
        self.store.collect(block, config)
        if block.num_free(plan.reservations.reserved_in(block.cidr)) == 0:
            return []
        return await self._assign_from_block(
            revision,
            block,
            plan.num,
            request,
            strict_host,
            config,
            affinity_type,
            plan.reservations,
        )

    async def _find_or_claim_block(
        self,
        host: str,
        plan: FamilyPlan,
        remaining_affine: list[IPNetwork],
        listed: Mapping[IPNetwork, KeyValue],
        allow_claim: bool,
        config: IPAMConfig,
        affinity_type: str,
    ) -> tuple[int, AllocationBlock, bool]:
        reservations = plan.reservations
        while remaining_affine:
            cidr = remaining_affine.pop(0)
            if reservations and reservations.matches_whole(cidr):
                continue
            found = await self._affine_block(
                host, cidr, listed.get(cidr), config, affinity_type, plan
            )
            if found is not None:
                return found[0], found[1], False
        if not allow_claim:
            raise _BlockLimit()
        if not config.auto_allocate_blocks:
            raise _NoFreeBlocks()
        # Each round finds another candidate block: one claimed by another node meanwhile,
        # or whose free addresses are all reserved, sends us to the next.
        for _ in range(self.store.retries):
            cidr = await self.store.find_usable_block(
                host, plan.version, plan.pools, affinity_type, reservations
            )
            found = await self._claim(host, cidr, config, affinity_type, plan)
            if found is not None:
                return found[0], found[1], True
        raise TooManyRetries()

    async def _affine_block(
        self,
        host: str,
        cidr: IPNetwork,
        affinity: KeyValue | None,
        config: IPAMConfig,
        affinity_type: str,
        plan: FamilyPlan,
    ) -> tuple[int, AllocationBlock] | None:
        """The block of one of our affinities, if it has room (None: try the next one)."""

        async def step(last: DatastoreError | None) -> tuple[int, AllocationBlock] | None:
            nonlocal affinity
            if last is not None or affinity is None:
                affinity = await self.store.kv.get(keys.affinity_key(host, cidr, affinity_type))
            if affinity is None:
                return None
            try:
                got = await self.store.block_from_affinity(affinity, host, cidr, affinity_type)
            except (_StaleAffinity, _ClaimConflict):
                return None
            return self._with_room(got, config, plan)

        try:
            return await self.store.retried(step, f"affine block {cidr} of {host}")
        except TooManyRetries:
            return None  # kept changing under us: the next affine block, as Calico

    async def _claim(
        self, host: str, cidr: IPNetwork, config: IPAMConfig, affinity_type: str, plan: FamilyPlan
    ) -> tuple[int, AllocationBlock] | None:
        """Claim ``cidr`` for ``host`` (two-phase, in the store); None if another node won it,
        or it has no unreserved room (possible only when it already existed)."""

        async def step(last: DatastoreError | None) -> tuple[int, AllocationBlock] | None:
            affinity = await self.store.pending_affinity(host, cidr, affinity_type)
            try:
                got = await self.store.block_from_affinity(affinity, host, cidr, affinity_type)
            except (_StaleAffinity, _ClaimConflict):
                return None
            return self._with_room(got, config, plan)

        try:
            return await self.store.retried(step, f"claim of block {cidr} by {host}")
        except TooManyRetries:
            return None

    def _with_room(
        self, got: tuple[int, AllocationBlock], config: IPAMConfig, plan: FamilyPlan
    ) -> tuple[int, AllocationBlock] | None:
        self.store.collect(got[1], config)
        return got if got[1].num_free(plan.reservations.reserved_in(got[1].cidr)) > 0 else None

    async def _assign_from_block(
        self,
        revision: int,
        block: AllocationBlock,
        num: int,
        request: AutoAssignRequest,
        strict_host: str | None,
        config: IPAMConfig,
        affinity_type: str,
        reservations: Reservations = NO_RESERVATIONS,
    ) -> list[IPInterface]:
        """Take up to ``num`` addresses from ``block`` with CAS retries; [] if it fills up.
        Reserved addresses are never taken (they stay free, in place)."""
        handle = request.handle_id
        counted = 0
        committed = False
        cidr = block.cidr
        reserved = reservations.reserved_in(cidr)
        got: tuple[int, AllocationBlock] | None = (revision, block)

        async def step(last: DatastoreError | None) -> list[IPInterface]:
            nonlocal got, counted, committed
            if last is not None:
                got = await self.store.block_after(cidr, last)
            if got is None:
                return []
            revision, block = got
            self.store.collect(block, config)
            try:
                taken = block.auto_assign(
                    num,
                    handle,
                    request.attrs,
                    strict_host=strict_host,
                    affinity_type=affinity_type,
                    reserved=reserved,
                )
            except BlockError:
                return []
            if not taken:
                return []
            if handle is not None and counted != len(taken):
                await self.store.adjust_handle(handle, cidr, len(taken) - counted)
                counted = len(taken)
            await self.store.write_block(revision, block, remember=True)
            committed = True
            return taken

        try:
            return await self.store.retried(step, f"assignment in block {cidr}")
        finally:
            if not committed and counted and handle is not None:
                await asyncio.shield(self.store.adjust_handle(handle, cidr, -counted))

    async def _borrow(
        self,
        pool: Pool,
        num: int,
        request: AutoAssignRequest,
        config: IPAMConfig,
        affinity_type: str,
        reservations: Reservations = NO_RESERVATIONS,
    ) -> list[IPInterface]:
        """Take addresses from existing blocks of any owner (non-strict affinity only),
        passing over wholly reserved block CIDRs and reserved addresses."""
        listed = await self.store.kv.list(keys.blocks_prefix(pool.version))
        existing = {}
        for item in listed.items:
            summary = BlockSummary.from_json(item.value)
            if summary.maybe_free:
                existing[summary.cidr] = item
        out: list[IPInterface] = []
        for cidr in block_walk(pool, request.node):
            if len(out) >= num:
                break
            found = existing.get(cidr)
            if found is None or (reservations and reservations.matches_whole(cidr)):
                continue
            revision, block = found.revision, AllocationBlock.from_json(found.value)
            self.store.collect(block, config)
            if block.num_free(reservations.reserved_in(cidr)) == 0:
                continue
            owner = block.affinity
            got = await self._assign_from_block(
                revision, block, num - len(out), request, None, config, affinity_type, reservations
            )
            if got:
                log.debug("%s borrowed %d from block %s (%s)", request.node, len(got), cidr, owner)
            out.extend(got)
        return out

    # -- assign a given address --

    async def assign_ip(
        self,
        address: IPAddress,
        *,
        node: str,
        handle_id: str | None = None,
        attrs: Mapping[str, str] | None = None,
        use: str = USE_WORKLOAD,
    ) -> IPInterface:
        """Assign exactly ``address`` (claiming its block for ``node`` if it has no block)."""
        affinity_type = affinity_type_for(use)
        if handle_id is not None:
            check_handle_id(handle_id)
        pools = [p for p in await self.store.list_pools() if not p.disabled]
        pool = pool_for_address(pools, address)
        if pool is None:
            raise AddressNotInPool(f"The provided IP address {address} is not in a configured pool")
        config = await self.store.get_config()
        strict_host = node if config.strict_affinity else None
        cidr = pool.block_for(address)
        counted = False
        committed = False

        async def step(last: DatastoreError | None) -> IPInterface:
            nonlocal counted, committed
            got = await self.store.get_block(cidr)
            if got is None:
                affinity = await self.store.pending_affinity(node, cidr, affinity_type)
                got = await self.store.claim_block(affinity, node, cidr, affinity_type)
            revision, block = got
            self.store.collect(block, config)
            try:
                block.assign(
                    address, handle_id, attrs, strict_host=strict_host, affinity_type=affinity_type
                )
            except BlockError as exc:
                if "already assigned" in str(exc):
                    raise AddressInUse(f"IP address {address} is already in use") from None
                raise IPAMError(str(exc)) from None
            if handle_id is not None and not counted:
                await self.store.adjust_handle(handle_id, cidr, 1)
                counted = True
            await self.store.write_block(revision, block)
            committed = True
            return block.interface(block.ordinal(address))

        try:
            return await self.store.retried(
                step, f"assignment of {address}", (RevisionConflict, KeyNotFound, _ClaimConflict)
            )
        finally:
            if counted and not committed and handle_id is not None:
                await asyncio.shield(self.store.adjust_handle(handle_id, cidr, -1))

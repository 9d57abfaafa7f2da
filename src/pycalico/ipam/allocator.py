"""The IPAM allocator: block-affinity address assignment over a ``KVStore`` with Calico's layout.

This is libcalico-go's ``ipamClient`` behaviour (reference §5) on our datastore boundary:
auto-assign (affine blocks first, then a new claim, then borrowing unless strict affinity),
assigning a given address, releasing by address or handle, and the queries ``calicoctl ipam``
needs.  Every block, affinity and handle write is a compare-and-swap on the key's mod revision,
retried a bounded number of times (``RETRIES``, Calico's 100).  The datastore primitives and the
claim protocol are in ``pycalico.ipam.store``, releasing and the queries in
``pycalico.ipam.release`` (a base class of ``IPAM``), per-block algorithms in
``pycalico.ipam.blocks``, request combining for long-lived allocators in
``pycalico.ipam.batching``.  It is not the CNI plugin (``pycalico.cni``) and not ``calicoctl``
(``pycalico.ctl.ipam``).

Invariants kept across crashes and races:

* A block claim is two-phase (``store``): a block only ever belongs to the node named in it.
* A handle's count for a block is raised before the block write and lowered if the write never
  lands (Calico's order), or written in the same etcd transaction as the block (the node
  agent's batched assignments and the usual release), so a crash can leave a handle count
  without an address, never an address without its handle.
* A release that quotes a sequence number frees nothing if the address was since reused.
* Auto-assignment never hands out an address an ``IPReservation`` covers (affine blocks, new
  claims, borrowing and the node agent's batched hot block alike): a wholly reserved block CIDR
  is never claimed or borrowed from, and reserved ordinals stay free in place.  ``assign_ip`` of
  a given address and releasing ignore reservations, as Calico's.
* ``auto_assign`` with IPv4 and IPv6 is all or nothing: pools for both families are resolved
  before anything is written, and on a shortfall every address taken by the call is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pycalico.datastore.api import KeyNotFound, KeyValue, RevisionConflict
from pycalico.ipam import keys
from pycalico.ipam.api import (
    AddressInUse,
    AddressNotInPool,
    AllocationInfo,
    AssignmentIncomplete,
    Assignments,
    AutoAssignRequest,
    HandleNotFound,
    IPAMError,
    NodeNotFound,
    NoQualifiedPool,
    ReleaseConflict,
    TooManyRetries,
    _BlockLimit,
    _ClaimConflict,
    _NoFreeBlocks,
    _StaleAffinity,
)
from pycalico.ipam.batching import NodeBatcher, batchable
from pycalico.ipam.blocks import AllocationBlock, BlockError, ReleaseOption
from pycalico.ipam.pools import (
    USE_LOAD_BALANCER,
    USE_WORKLOAD,
    Pool,
    PoolSelectionError,
    block_walk,
    pool_for_address,
    select_pools,
    selector_matches,
)
from pycalico.ipam.records import (
    AFFINITY_TYPE_HOST,
    AFFINITY_TYPE_VIRTUAL,
    DEFAULT_MAX_BLOCKS_PER_HOST,
    BlockSummary,
    IPAddress,
    IPAMConfig,
    IPInterface,
    IPNetwork,
)
from pycalico.ipam.release import IPAMRelease
from pycalico.ipam.reservations import Reservations
from pycalico.ipam.store import NO_RESERVATIONS, RETRIES

__all__ = [
    "IPAM",
    "RETRIES",
    "AddressInUse",
    "AddressNotInPool",
    "AllocationInfo",
    "AssignmentIncomplete",
    "Assignments",
    "AutoAssignRequest",
    "HandleNotFound",
    "IPAMError",
    "NoQualifiedPool",
    "NodeNotFound",
    "ReleaseConflict",
    "TooManyRetries",
]


def check_handle_id(handle_id: str) -> None:
    """A handle id becomes an etcd key segment: it must be non-empty and free of ``/``."""
    try:
        keys.handle_key(handle_id)
    except ValueError as exc:
        raise IPAMError(f"handle_id: {exc}") from None


@dataclass(slots=True)
class _FamilyPlan:
    version: int
    num: int
    pools: list[Pool]
    all_pools: list[Pool]
    node_labels: Mapping[str, str]
    reservations: Reservations = NO_RESERVATIONS


class IPAM(IPAMRelease):
    """Calico IPAM over a ``KVStore``.  Safe for many concurrent callers and processes.

    ``cache_seconds > 0`` is for long-lived callers (the node agent): IPAM config, pools,
    IP reservations and node labels are reused for that long, and concurrent single-address requests of a node
    are combined (``NodeBatcher``).
    """

    @property
    def _batcher(self) -> NodeBatcher:
        batcher = self.__dict__.get("_node_batcher")
        if batcher is None:
            batcher = self.__dict__["_node_batcher"] = NodeBatcher(self)
        return batcher

    # -- auto-assign --

    async def _plan(
        self,
        request: AutoAssignRequest,
        version: int,
        num: int,
        pools: list[Pool],
        node_labels: Mapping[str, str],
        reservations: Reservations = NO_RESERVATIONS,
    ) -> _FamilyPlan:
        requested = request.ipv4_pools if version == 4 else request.ipv6_pools
        for cidr in requested:
            if cidr.version != version:
                raise IPAMError(
                    f"provided IPv{version} IPPools list contains one or more "
                    f"IPv{10 - version} IPPools"
                )
        try:
            chosen = select_pools(
                pools,
                version=version,
                requested=requested,
                node_labels=node_labels,
                namespace_labels=request.namespace_labels,
                use=request.use,
            )
        except PoolSelectionError as exc:
            raise NoQualifiedPool(str(exc)) from None
        return _FamilyPlan(
            version=version,
            num=num,
            pools=chosen,
            all_pools=pools,
            node_labels=node_labels,
            reservations=reservations,
        )

    async def auto_assign(self, request: AutoAssignRequest) -> tuple[Assignments, Assignments]:
        """Assign ``num4`` IPv4 and ``num6`` IPv6 addresses to ``node``, all or nothing."""
        if not request.node:
            raise IPAMError("node: a node name is required to assign addresses")
        if request.num4 < 0 or request.num6 < 0:
            raise IPAMError("num4/num6: address counts must not be negative")
        if request.num4 == 0 and request.num6 == 0:
            raise IPAMError("num4/num6: nothing to assign (both IPv4 and IPv6 are off)")
        if request.handle_id is not None:
            check_handle_id(request.handle_id)
        if self.cache_seconds > 0 and batchable(request):
            return await self._batcher.submit(request)
        lock = self._node_locks.setdefault(request.node, asyncio.Lock())
        async with lock:
            return await self._auto_assign_locked(request)

    async def _plan_inputs(
        self, node: str, virtual: bool
    ) -> tuple[IPAMConfig, list[Pool], dict[str, str], Reservations]:
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

    async def _auto_assign_locked(
        self, request: AutoAssignRequest
    ) -> tuple[Assignments, Assignments]:
        virtual = request.use == USE_LOAD_BALANCER
        config, pools, labels, reserved = await self._plan_inputs(request.node, virtual)
        plans = []
        if request.num4:
            plans.append(await self._plan(request, 4, request.num4, pools, labels, reserved))
        if request.num6:
            plans.append(await self._plan(request, 6, request.num6, pools, labels, reserved))
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
            taken = [a for r in results.values() for a in r.addresses]
            if taken:
                await asyncio.shield(self.release_ips([ReleaseOption(address=a.ip) for a in taken]))
            raise
        return results[4], results[6]

    async def _labels_for(self, node: str, virtual: bool) -> dict[str, str]:
        return {} if virtual else await self.node_labels(node)

    async def _auto_assign_family(
        self, request: AutoAssignRequest, plan: _FamilyPlan, config: IPAMConfig
    ) -> Assignments:
        host = request.node
        affinity_type = (
            AFFINITY_TYPE_VIRTUAL if request.use == USE_LOAD_BALANCER else AFFINITY_TYPE_HOST
        )
        strict_host = host if config.strict_affinity else None
        addresses: list[IPInterface] = await self._assign_from_hot_block(
            host, plan, request, strict_host, config, affinity_type
        )
        if len(addresses) == plan.num:
            return Assignments(plan.version, plan.num, tuple(addresses))
        affine = await self._affine_blocks(host, plan.version, affinity_type)
        listed = {
            c: kv for c, kv in affine.items() if pool_for_address(plan.pools, c.network_address)
        }
        if affinity_type == AFFINITY_TYPE_HOST:
            await self._release_unselected(host, plan, [c for c in affine if c not in listed])
        remaining_affine = list(listed)
        owned = len(remaining_affine)
        max_blocks = request.max_blocks_per_host
        if config.max_blocks_per_host > 0 and (
            max_blocks == 0 or max_blocks > config.max_blocks_per_host
        ):
            max_blocks = config.max_blocks_per_host
        if max_blocks == 0:
            max_blocks = DEFAULT_MAX_BLOCKS_PER_HOST
        messages: list[str] = []
        budget = plan.num + self.retries
        while len(addresses) < plan.num and budget > 0:
            budget -= 1
            try:
                revision, block, newly = await self._find_or_claim_block(
                    host, plan, remaining_affine, listed, owned < max_blocks, config, affinity_type
                )
            except _NoFreeBlocks:
                if config.strict_affinity:
                    messages.append("No more free affine blocks and strict affinity enabled")
                break
            except _BlockLimit:
                messages.append(
                    "Need to allocate an IPAM block but could not - limit of "
                    f"{max_blocks} blocks reached for this node"
                )
                return Assignments(plan.version, plan.num, tuple(addresses), tuple(messages))
            if newly:
                owned += 1
            taken = await self._assign_from_block(
                revision,
                block,
                plan.num - len(addresses),
                request,
                strict_host,
                config,
                affinity_type,
                plan.reservations,
            )
            addresses.extend(taken)
        if len(addresses) < plan.num and not config.strict_affinity:
            exhausted = []
            for pool in plan.pools:
                got = await self._borrow(
                    pool,
                    plan.num - len(addresses),
                    request,
                    config,
                    affinity_type,
                    plan.reservations,
                )
                addresses.extend(got)
                if len(addresses) >= plan.num:
                    break
                exhausted.append(str(pool.cidr))
            if exhausted and len(addresses) < plan.num:
                messages.append(f"No IPs available in pools: [{' '.join(exhausted)}]")
        return Assignments(plan.version, plan.num, tuple(addresses), tuple(dict.fromkeys(messages)))

    async def _release_unselected(
        self, host: str, plan: _FamilyPlan, cidrs: Sequence[IPNetwork]
    ) -> None:
        """Give up empty affine blocks whose pool no longer selects this node (Calico does
        this on every assignment); blocks still holding addresses keep their affinity."""
        for cidr in cidrs:
            pool = pool_for_address(plan.all_pools, cidr.network_address)
            if pool is None or selector_matches(pool.node_selector, plan.node_labels):
                continue
            with contextlib.suppress(IPAMError, RevisionConflict, KeyNotFound):
                await self.release_block_affinity(host, cidr, require_empty=True)

    async def _assign_from_hot_block(
        self,
        host: str,
        plan: _FamilyPlan,
        request: AutoAssignRequest,
        strict_host: str | None,
        config: IPAMConfig,
        affinity_type: str,
    ) -> list[IPInterface]:
        """Try the node's most recently written block straight away (no listing)."""
        # Taken out of the cache while in use: nothing else may see a half-changed block.
        hot = self._hot.pop((host, plan.version, affinity_type), None)
        if hot is None:
            return []
        revision, block = hot
        if not block.affine_to(host, affinity_type):
            return []
        if pool_for_address(plan.pools, block.cidr.network_address) is None:
            return []
        self._collect(block, config)
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
        plan: _FamilyPlan,
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
            affinity: KeyValue | None = listed.get(cidr)
            for attempt in range(self.retries):
                if attempt > 0 or affinity is None:
                    affinity = await self.kv.get(keys.affinity_key(host, cidr, affinity_type))
                if affinity is None:
                    break
                try:
                    revision, block = await self._block_from_affinity(
                        affinity, host, cidr, affinity_type
                    )
                except (RevisionConflict, KeyNotFound):
                    continue
                except (_StaleAffinity, _ClaimConflict):
                    break
                self._collect(block, config)
                if block.num_free(reservations.reserved_in(cidr)) > 0:
                    return revision, block, False
                break
        if not allow_claim:
            raise _BlockLimit()
        if not config.auto_allocate_blocks:
            raise _NoFreeBlocks()
        for _ in range(self.retries):
            cidr = await self._find_usable_block(
                host, plan.version, plan.pools, affinity_type, reservations
            )
            for _ in range(self.retries):
                try:
                    affinity = await self._pending_affinity(host, cidr, affinity_type)
                    revision, block = await self._block_from_affinity(
                        affinity, host, cidr, affinity_type
                    )
                except (RevisionConflict, KeyNotFound):
                    continue
                except (_StaleAffinity, _ClaimConflict):
                    break
                self._collect(block, config)
                if block.num_free(reservations.reserved_in(cidr)) > 0:
                    return revision, block, True
                # Every free address is reserved (possible only when the block already
                # existed): like Calico, look for another block.
                break
        raise TooManyRetries()

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
        try:
            for _ in range(self.retries):
                self._collect(block, config)
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
                    await self._adjust_handle(handle, cidr, len(taken) - counted)
                    counted = len(taken)
                try:
                    await self._write_block(revision, block, remember=True)
                    committed = True
                    return taken
                except RevisionConflict as exc:
                    got = await self._reread_block(cidr, exc)
                except KeyNotFound:
                    got = None
                if got is None:
                    return []
                revision, block = got
            raise TooManyRetries()
        finally:
            if not committed and counted and handle is not None:
                await asyncio.shield(self._adjust_handle(handle, cidr, -counted))

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
        listed = await self.kv.list(keys.blocks_prefix(pool.version))
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
            self._collect(block, config)
            if block.num_free(reservations.reserved_in(cidr)) == 0:
                continue
            out.extend(
                await self._assign_from_block(
                    revision,
                    block,
                    num - len(out),
                    request,
                    None,
                    config,
                    affinity_type,
                    reservations,
                )
            )
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
        affinity_type = AFFINITY_TYPE_VIRTUAL if use == USE_LOAD_BALANCER else AFFINITY_TYPE_HOST
        if handle_id is not None:
            check_handle_id(handle_id)
        pools = [p for p in await self.list_pools() if not p.disabled]
        pool = pool_for_address(pools, address)
        if pool is None:
            raise AddressNotInPool(f"The provided IP address {address} is not in a configured pool")
        config = await self.get_config()
        strict_host = node if config.strict_affinity else None
        cidr = pool.block_for(address)
        counted = False
        committed = False
        try:
            for _ in range(self.retries):
                got = await self._get_block(cidr)
                if got is None:
                    try:
                        affinity = await self._pending_affinity(node, cidr, affinity_type)
                        got = await self._claim_block(affinity, node, cidr, affinity_type)
                    except (RevisionConflict, KeyNotFound, _ClaimConflict):
                        continue
                revision, block = got
                self._collect(block, config)
                try:
                    block.assign(
                        address,
                        handle_id,
                        attrs,
                        strict_host=strict_host,
                        affinity_type=affinity_type,
                    )
                except BlockError as exc:
                    if "already assigned" in str(exc):
                        raise AddressInUse(f"IP address {address} is already in use") from None
                    raise IPAMError(str(exc)) from None
                if handle_id is not None and not counted:
                    await self._adjust_handle(handle_id, cidr, 1)
                    counted = True
                try:
                    await self._write_block(revision, block)
                    committed = True
                    return block.interface(block.ordinal(address))
                except (RevisionConflict, KeyNotFound):
                    continue
            raise TooManyRetries()
        finally:
            if counted and not committed and handle_id is not None:
                await asyncio.shield(self._adjust_handle(handle_id, cidr, -1))

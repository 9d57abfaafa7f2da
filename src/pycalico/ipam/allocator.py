"""The IPAM allocator: block-affinity address assignment over a ``KVStore`` with Calico's layout.

This is libcalico-go's ``ipamClient`` behaviour (reference §5) on our datastore boundary: every
block, affinity and handle write is a compare-and-swap on the key's mod revision, retried a bounded
number of times (``RETRIES``, Calico's 100).  It is not the CNI plugin (``pycalico.cni``) and not
``calicoctl`` (``pycalico.ctl.ipam``); the per-block algorithms live in ``pycalico.ipam.blocks``.

Invariants kept across crashes and races:

* A block claim is two-phase: affinity ``pending`` -> create the block (which carries the
  affinity) -> affinity ``confirmed``.  A claimant killed in between leaves a pending affinity
  that the next assignment on that node confirms, or that is found stale and deleted; a block
  only ever belongs to the node named in the block itself.
* A handle's count for a block is raised before the block write and lowered if the write never
  lands (Calico's order), so a crash can leave a handle count without an address, never an
  address without its handle.
* A release that quotes a sequence number frees nothing if the address was since reused.
* ``auto_assign`` with IPv4 and IPv6 is all or nothing: pools for both families are resolved
  before anything is written, and on a shortfall every address taken by the call is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from pycalico.datastore.api import (
    KeyAlreadyExists,
    KeyNotFound,
    KeyValue,
    KVStore,
    RevisionConflict,
)
from pycalico.ipam import keys
from pycalico.ipam.blocks import (
    AFFINITY_TYPE_HOST,
    AFFINITY_TYPE_VIRTUAL,
    DEFAULT_MAX_BLOCKS_PER_HOST,
    STATE_CONFIRMED,
    STATE_PENDING,
    STATE_PENDING_DELETION,
    AllocationAttribute,
    AllocationBlock,
    BlockAffinity,
    BlockError,
    BlockSummary,
    IPAddress,
    IPAMConfig,
    IPAMHandle,
    IPInterface,
    IPNetwork,
    ReleaseOption,
    StaleRelease,
    affinity_string,
    parse_time,
    sanitize_handle,
)
from pycalico.ipam.pools import (
    USE_LOAD_BALANCER,
    USE_WORKLOAD,
    Pool,
    PoolSelectionError,
    block_walk,
    pool_for_address,
    select_pools,
)

RETRIES = 100
EMPTY_BLOCK_MIN_RECLAIM_AGE = timedelta(minutes=1)
TOO_MANY_RETRIES = "Max retries hit - excessive concurrent IPAM requests"


# --- errors -----------------------------------------------------------------------------------


class IPAMError(Exception):
    """Root of the allocator's errors; ``str(error)`` is the message a user should see."""


class NoQualifiedPool(IPAMError):
    pass


class NodeNotFound(IPAMError):
    def __init__(self, node: str) -> None:
        super().__init__(
            f"resource does not exist: Node({node}); IPAM assigns addresses only to nodes "
            "registered in the datastore (calico-node registers them)"
        )
        self.node = node


class AssignmentIncomplete(IPAMError):
    """Fewer addresses than requested; nothing stays allocated (all-or-nothing)."""


class AddressNotInPool(IPAMError):
    pass


class AddressInUse(IPAMError):
    pass


class HandleNotFound(IPAMError):
    def __init__(self, handle_id: str) -> None:
        super().__init__(f"resource does not exist: IPAMHandle({handle_id})")
        self.handle_id = handle_id


class ReleaseConflict(IPAMError):
    """A sequence-checked release found the address reused; nothing was released."""


class TooManyRetries(IPAMError):
    def __init__(self) -> None:
        super().__init__(TOO_MANY_RETRIES)


class _NoFreeBlocks(Exception):
    pass


class _BlockLimit(Exception):
    pass


class _ClaimConflict(Exception):
    pass


class _StaleAffinity(Exception):
    pass


# --- requests and results -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AutoAssignRequest:
    num4: int = 1
    num6: int = 0
    handle_id: str | None = None
    attrs: Mapping[str, str] = field(default_factory=dict)
    node: str = ""
    ipv4_pools: Sequence[IPNetwork] = ()
    ipv6_pools: Sequence[IPNetwork] = ()
    max_blocks_per_host: int = 0
    use: str = USE_WORKLOAD
    namespace_labels: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Assignments:
    version: int
    requested: int
    addresses: tuple[IPInterface, ...] = ()
    messages: tuple[str, ...] = ()

    def shortfall_message(self) -> str | None:
        """Calico's ``PartialFulfillmentError`` text, or None when the request was met."""
        if len(self.addresses) >= self.requested:
            return None
        text = (
            f"Assigned {len(self.addresses)} out of {self.requested} requested "
            f"IPv{self.version} addresses"
        )
        return "".join([text, *(f"; {m}" for m in self.messages)])


@dataclass(frozen=True, slots=True)
class AllocationInfo:
    """Who holds an address (``calicoctl ipam show --ip``)."""

    address: IPAddress
    block: IPNetwork
    handle_id: str | None
    attributes: Mapping[str, str]
    sequence_number: int


@dataclass(slots=True)
class _FamilyPlan:
    version: int
    num: int
    pools: list[Pool]
    all_pools: list[Pool]


@dataclass(slots=True)
class _Waiter:
    request: AutoAssignRequest
    future: asyncio.Future[tuple[Assignments, Assignments]]
    counted: IPNetwork | None = None  # block the handle was already counted against


def _batchable(request: AutoAssignRequest) -> bool:
    """One address of one family for a workload with a handle: the common CNI request."""
    return (
        request.handle_id is not None
        and request.use != USE_LOAD_BALANCER
        and (request.num4, request.num6) in ((1, 0), (0, 1))
    )


# --- the allocator -------------------------------------------------------------------------------


class IPAM:
    """Calico IPAM over a ``KVStore``.  Safe for many concurrent callers and processes."""

    def __init__(
        self,
        kv: KVStore,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        retries: int = RETRIES,
        cache_seconds: float = 0.0,
    ) -> None:
        self.kv = kv
        self.clock = clock
        self.retries = retries
        # A long-lived caller (the node agent) may reuse config, pools and node labels for
        # ``cache_seconds``; 0 (the default) reads them on every request, as Calico does.
        self.cache_seconds = cache_seconds
        self._inputs: dict[str, tuple[float, IPAMConfig, list[Pool], dict[str, str]]] = {}
        # Last written value of each node's most recent block: the next assignment on that node
        # tries a compare-and-swap on it directly.  A stale entry only costs a failed CAS
        # (which returns the current value); a block that changed owner fails the CAS.
        self._hot: dict[tuple[str, int, str], tuple[int, AllocationBlock]] = {}
        # Assignments for one node are serialised in this process (Calico serialises them per
        # host with a file lock): they would only collide on the node's block.
        self._node_locks: dict[str, asyncio.Lock] = {}
        self._queues: dict[str, list[_Waiter]] = {}
        self._leaders: dict[str, asyncio.Task[None]] = {}

    # -- reads of config, pools and nodes --

    async def get_config(self) -> IPAMConfig:
        kv = await self.kv.get(keys.CONFIG_KEY)
        return IPAMConfig() if kv is None else IPAMConfig.from_json(kv.value)

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

    async def node_labels(self, node: str) -> dict[str, str]:
        kv = await self.kv.get(keys.node_key(node))
        if kv is None:
            raise NodeNotFound(node)
        metadata = json.loads(kv.value).get("metadata") or {}
        return dict(metadata.get("labels") or {})

    # -- low-level block, affinity and handle access --

    async def _get_block(self, cidr: IPNetwork) -> tuple[int, AllocationBlock] | None:
        kv = await self.kv.get(keys.block_key(cidr))
        if kv is None:
            return None
        return kv.revision, AllocationBlock.from_json(kv.value)

    async def _write_block(
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

    async def _reread_block(
        self, cidr: IPNetwork, conflict: RevisionConflict | None
    ) -> tuple[int, AllocationBlock] | None:
        if conflict is not None and conflict.current is not None:
            return conflict.current.revision, AllocationBlock.from_json(conflict.current.value)
        return await self._get_block(cidr)

    async def _block_summaries(self, version: int | None = None) -> list[BlockSummary]:
        listed = await self.kv.list(keys.blocks_prefix(version))
        return [BlockSummary.from_json(kv.value) for kv in listed.items]

    async def list_blocks(self, version: int | None = None) -> list[tuple[int, AllocationBlock]]:
        listed = await self.kv.list(keys.blocks_prefix(version))
        return [(kv.revision, AllocationBlock.from_json(kv.value)) for kv in listed.items]

    async def _adjust_handle(self, handle_id: str, cidr: IPNetwork, delta: int) -> None:
        """Add ``delta`` to the handle's count for ``cidr`` (CAS; the handle goes at zero)."""
        if delta == 0:
            return
        key = keys.handle_key(handle_id)
        current: KeyValue | None = None
        if delta > 0:
            try:
                await self.kv.create(key, IPAMHandle({str(cidr): delta}).to_json())
                return
            except KeyAlreadyExists as exc:
                current = exc.current
        for _ in range(self.retries):
            if current is None:
                current = await self.kv.get(key)
            if current is None:
                if delta < 0:
                    return
                try:
                    await self.kv.create(key, IPAMHandle({str(cidr): delta}).to_json())
                    return
                except KeyAlreadyExists as exc:
                    current = exc.current
                    continue
            handle = IPAMHandle.from_json(current.value)
            changed = (
                handle.incremented(str(cidr), delta)
                if delta > 0
                else handle.decremented(str(cidr), -delta)
            )
            try:
                if changed.empty:
                    await self.kv.delete(key, revision=current.revision)
                else:
                    await self.kv.update(key, changed.to_json(), revision=current.revision)
                return
            except RevisionConflict as exc:
                current = exc.current
            except KeyNotFound:
                current = None
        raise TooManyRetries()

    async def _delete_quietly(self, key: str, revision: int) -> None:
        with contextlib.suppress(KeyNotFound, RevisionConflict):
            await self.kv.delete(key, revision=revision)

    # -- the block claim protocol --

    def _after_block_claimed(self, cidr: IPNetwork) -> None:
        """Called between creating a claimed block and confirming its affinity.

        A no-op; tests override it to kill the process at exactly this point.
        """

    async def _pending_affinity(self, host: str, cidr: IPNetwork, affinity_type: str) -> KeyValue:
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

    async def _claim_block(
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
            await self._delete_quietly(affinity.key, affinity.revision)
            raise _ClaimConflict() from None
        self._after_block_claimed(cidr)
        await self._confirm_affinity(affinity)
        return revision, block

    async def _block_from_affinity(
        self, affinity: KeyValue, host: str, cidr: IPNetwork, affinity_type: str
    ) -> tuple[int, AllocationBlock]:
        """The block an affinity of ours names, creating or confirming as needed."""
        state = BlockAffinity.from_json(affinity.value)
        got = await self._get_block(cidr)
        if got is None:
            if state.state != STATE_PENDING:
                pending = BlockAffinity(state=STATE_PENDING).to_json()
                revision = await self.kv.update(affinity.key, pending, revision=affinity.revision)
                affinity = KeyValue(affinity.key, pending, revision)
            return await self._claim_block(affinity, host, cidr, affinity_type)
        revision, block = got
        if not block.affine_to(host, affinity_type):
            await self._delete_quietly(affinity.key, affinity.revision)
            raise _StaleAffinity()
        if not state.confirmed:
            pending = BlockAffinity(state=STATE_PENDING).to_json()
            aff_revision = await self.kv.update(affinity.key, pending, revision=affinity.revision)
            # A write to the block invalidates any other process working from an older read.
            revision = await self._write_block(revision, block)
            await self._confirm_affinity(KeyValue(affinity.key, pending, aff_revision))
        return revision, block

    async def _find_usable_block(
        self, host: str, version: int, pools: Sequence[Pool], affinity_type: str
    ) -> IPNetwork:
        """A block CIDR that does not exist yet, or ours with room, or an old empty one."""
        existing = {s.cidr: s for s in await self._block_summaries(version)}
        ours = affinity_string(host, affinity_type)
        now = self.clock()
        empty_candidates: list[BlockSummary] = []
        for pool in pools:
            for cidr in block_walk(pool, host):
                found = existing.get(cidr)
                if found is None:
                    return cidr
                if found.affinity == ours and found.free > 0:
                    return cidr
                if found.empty and found.free > 0:
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

    # -- auto-assign --

    async def _plan(
        self,
        request: AutoAssignRequest,
        version: int,
        num: int,
        pools: list[Pool],
        node_labels: Mapping[str, str],
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
        return _FamilyPlan(version=version, num=num, pools=chosen, all_pools=pools)

    async def auto_assign(self, request: AutoAssignRequest) -> tuple[Assignments, Assignments]:
        """Assign ``num4`` IPv4 and ``num6`` IPv6 addresses to ``node``, all or nothing."""
        if not request.node:
            raise IPAMError("node: a node name is required to assign addresses")
        if request.num4 < 0 or request.num6 < 0:
            raise IPAMError("num4/num6: address counts must not be negative")
        if request.num4 == 0 and request.num6 == 0:
            raise IPAMError("num4/num6: nothing to assign (both IPv4 and IPv6 are off)")
        if self.cache_seconds > 0 and _batchable(request):
            return await self._auto_assign_batched(request)
        lock = self._node_locks.setdefault(request.node, asyncio.Lock())
        async with lock:
            return await self._auto_assign_locked(request)

    # -- combining concurrent single-address requests of one node (long-lived allocators) --

    async def _auto_assign_batched(
        self, request: AutoAssignRequest
    ) -> tuple[Assignments, Assignments]:
        """Queue the request; one leader task per node serves the queue in batches.

        The request's handle is counted against the node's hot block straight away, outside
        the node's lock, so it overlaps the previous batch's block write.  The leader then
        takes an address for every waiting request in one block compare-and-swap.  The
        handle-before-address order holds for each request; a request the hot block cannot
        serve has its count moved back and goes through the ordinary path.
        """
        loop = asyncio.get_running_loop()
        waiter = _Waiter(request, loop.create_future())
        version = 4 if request.num4 else 6
        hot = self._hot.get((request.node, version, AFFINITY_TYPE_HOST))
        if hot is not None and request.handle_id is not None:
            await self._adjust_handle(request.handle_id, hot[1].cidr, 1)
            waiter.counted = hot[1].cidr
        self._queues.setdefault(request.node, []).append(waiter)
        if request.node not in self._leaders:
            self._leaders[request.node] = asyncio.create_task(self._lead(request.node))
        return await waiter.future

    async def _lead(self, node: str) -> None:
        queue = self._queues[node]
        lock = self._node_locks.setdefault(node, asyncio.Lock())
        try:
            while queue:
                batch = list(queue)
                queue.clear()
                async with lock:
                    await self._serve_batch(node, batch)
        finally:
            del self._leaders[node]

    async def _uncount(self, waiter: _Waiter) -> None:
        if waiter.counted is not None and waiter.request.handle_id is not None:
            counted, waiter.counted = waiter.counted, None
            await asyncio.shield(self._adjust_handle(waiter.request.handle_id, counted, -1))

    async def _serve_batch(self, node: str, batch: list[_Waiter]) -> None:
        for version in (4, 6):
            items = [w for w in batch if (w.request.num4 if version == 4 else w.request.num6)]
            if not items:
                continue
            try:
                served = await self._assign_batch_from_hot(node, version, items)
            except Exception as exc:
                for waiter in items:
                    await self._uncount(waiter)
                    if not waiter.future.done():
                        waiter.future.set_exception(exc)
                continue
            if served:
                continue
            for waiter in items:
                await self._uncount(waiter)
                if waiter.future.done():
                    continue
                try:
                    result = await self._auto_assign_locked(waiter.request)
                except Exception as exc:
                    waiter.future.set_exception(exc)
                    continue
                await self._deliver(waiter.future, result)

    async def _deliver(
        self,
        future: asyncio.Future[tuple[Assignments, Assignments]],
        result: tuple[Assignments, Assignments],
    ) -> None:
        if not future.done():
            future.set_result(result)
            return
        # The caller gave up while we worked: give its addresses back rather than leak them.
        taken = [a for r in result for a in r.addresses]
        if taken:
            await self.release_ips([ReleaseOption(address=a.ip) for a in taken])

    async def _assign_batch_from_hot(self, node: str, version: int, items: list[_Waiter]) -> bool:
        """Serve every waiting request from the node's hot block in one write; False if the
        hot block cannot (the caller then serves them one by one)."""
        for waiter in [w for w in items if w.future.done()]:
            await self._uncount(waiter)
        items = [w for w in items if not w.future.done()]
        if not items:
            return True
        config, pools, labels = await self._plan_inputs(node, False)
        hot = self._hot.pop((node, version, AFFINITY_TYPE_HOST), None)
        if hot is None:
            return False
        revision, block = hot
        for waiter in items:
            try:
                plan = await self._plan(waiter.request, version, 1, pools, labels)
            except IPAMError:
                return False
            if pool_for_address(plan.pools, block.cidr.network_address) is None:
                return False
        cidr = block.cidr
        for waiter in items:
            if waiter.counted != cidr:
                await self._uncount(waiter)
        late = [w for w in items if w.counted is None and w.request.handle_id is not None]
        committed = False
        try:
            for _ in range(self.retries):
                self._collect(block, config)
                if not block.affine_to(node) or block.num_free() < len(items):
                    return False
                taken = [
                    block.auto_assign(1, w.request.handle_id, w.request.attrs)[0] for w in items
                ]
                if late:
                    await asyncio.gather(
                        *(self._adjust_handle(w.request.handle_id or "", cidr, 1) for w in late)
                    )
                    for waiter in late:
                        waiter.counted = cidr
                    late = []
                try:
                    await self._write_block(revision, block, remember=True)
                    committed = True
                    break
                except RevisionConflict as exc:
                    got = await self._reread_block(cidr, exc)
                except KeyNotFound:
                    got = None
                if got is None:
                    return False
                revision, block = got
            else:
                raise TooManyRetries()
        finally:
            if not committed:
                for waiter in items:
                    await self._uncount(waiter)
        for waiter, address in zip(items, taken, strict=True):
            waiter.counted = None  # the count now belongs to the allocated address
            empty = Assignments(version=10 - version, requested=0)
            mine = Assignments(version=version, requested=1, addresses=(address,))
            await self._deliver(waiter.future, (mine, empty) if version == 4 else (empty, mine))
        return True

    async def _plan_inputs(
        self, node: str, virtual: bool
    ) -> tuple[IPAMConfig, list[Pool], dict[str, str]]:
        now = time.monotonic()
        cached = self._inputs.get(node)
        if cached is not None and now - cached[0] < self.cache_seconds:
            return cached[1], cached[2], cached[3]
        config, pools, labels = await asyncio.gather(
            self.get_config(), self.list_pools(), self._labels_for(node, virtual)
        )
        if self.cache_seconds > 0:
            self._inputs[node] = (now, config, pools, labels)
        return config, pools, labels

    async def _auto_assign_locked(
        self, request: AutoAssignRequest
    ) -> tuple[Assignments, Assignments]:
        virtual = request.use == USE_LOAD_BALANCER
        config, pools, labels = await self._plan_inputs(request.node, virtual)
        plans = []
        if request.num4:
            plans.append(await self._plan(request, 4, request.num4, pools, labels))
        if request.num6:
            plans.append(await self._plan(request, 6, request.num6, pools, labels))
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
            )
            addresses.extend(taken)
        if len(addresses) < plan.num and not config.strict_affinity:
            exhausted = []
            for pool in plan.pools:
                got = await self._borrow(
                    pool, plan.num - len(addresses), request, config, affinity_type
                )
                addresses.extend(got)
                if len(addresses) >= plan.num:
                    break
                exhausted.append(str(pool.cidr))
            if exhausted and len(addresses) < plan.num:
                messages.append(f"No IPs available in pools: [{' '.join(exhausted)}]")
        return Assignments(plan.version, plan.num, tuple(addresses), tuple(dict.fromkeys(messages)))

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
        if block.num_free() == 0:
            return []
        return await self._assign_from_block(
            revision, block, plan.num, request, strict_host, config, affinity_type
        )

    async def _affine_blocks(
        self, host: str, version: int, affinity_type: str
    ) -> dict[IPNetwork, KeyValue]:
        listed = await self.kv.list(keys.host_affinities_prefix(host, version, affinity_type))
        out = {}
        for item in listed.items:
            parsed = keys.parse_affinity_key(item.key)
            if parsed is not None:
                out[parsed.cidr] = item
        return out

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
        while remaining_affine:
            cidr = remaining_affine.pop(0)
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
                if block.num_free() > 0:
                    return revision, block, False
                break
        if not allow_claim:
            raise _BlockLimit()
        if not config.auto_allocate_blocks:
            raise _NoFreeBlocks()
        for _ in range(self.retries):
            cidr = await self._find_usable_block(host, plan.version, plan.pools, affinity_type)
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
                if block.num_free() > 0:
                    return revision, block, True
                break
        raise TooManyRetries()

    def _collect(self, block: AllocationBlock, config: IPAMConfig) -> None:
        block.collect_cooled(cooldown_seconds=config.ip_cooldown_seconds, now=self.clock())

    async def _assign_from_block(
        self,
        revision: int,
        block: AllocationBlock,
        num: int,
        request: AutoAssignRequest,
        strict_host: str | None,
        config: IPAMConfig,
        affinity_type: str,
    ) -> list[IPInterface]:
        """Take up to ``num`` addresses from ``block`` with CAS retries; [] if it fills up."""
        handle = request.handle_id
        counted = 0
        committed = False
        cidr = block.cidr
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
    ) -> list[IPInterface]:
        """Take addresses from existing blocks of any owner (non-strict affinity only)."""
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
            if found is None:
                continue
            revision, block = found.revision, AllocationBlock.from_json(found.value)
            self._collect(block, config)
            if block.num_free() == 0:
                continue
            out.extend(
                await self._assign_from_block(
                    revision, block, num - len(out), request, None, config, affinity_type
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

    # -- release --

    async def _block_cidr_for(
        self, address: IPAddress, pools: Sequence[Pool], cache: list[list[IPNetwork]]
    ) -> IPNetwork | None:
        pool = pool_for_address(pools, address)
        if pool is not None:
            return pool.block_for(address)
        # Not in any pool (deleted?): find the block by a full scan, once per call.
        if not cache:
            cache.append([summary.cidr for summary in await self._block_summaries()])
        return next((c for c in cache[0] if address.version == c.version and address in c), None)

    async def release_ips(self, options: Sequence[ReleaseOption]) -> list[IPAddress]:
        """Release addresses (sequence- and handle-checked when the options say so).

        Returns the addresses that were not allocated.  ReleaseConflict if any quoted sequence
        number or handle no longer matches (that block is left untouched).
        """
        pools = await self.list_pools()
        by_block: dict[IPNetwork, list[ReleaseOption]] = {}
        not_allocated: list[IPAddress] = []
        cache: list[list[IPNetwork]] = []
        for option in options:
            cidr = await self._block_cidr_for(option.address, pools, cache)
            if cidr is None:
                not_allocated.append(option.address)
            else:
                by_block.setdefault(cidr, []).append(option)
        config = await self.get_config()
        for cidr, block_options in by_block.items():
            not_allocated.extend(await self._release_in_block(cidr, block_options, config))
        return not_allocated

    async def _release_in_block(
        self, cidr: IPNetwork, options: list[ReleaseOption], config: IPAMConfig
    ) -> list[IPAddress]:
        got = await self._get_block(cidr)
        for _ in range(self.retries):
            if got is None:
                return [o.address for o in options]
            revision, block = got
            now = self.clock()
            block.collect_cooled(cooldown_seconds=config.ip_cooldown_seconds, now=now)
            try:
                outcome = block.release(
                    options, cooldown_seconds=config.ip_cooldown_seconds, now=now
                )
            except StaleRelease as exc:
                raise ReleaseConflict(str(exc)) from None
            if not outcome.released:
                return list(outcome.not_allocated)
            try:
                if block.empty() and block.affinity is None:
                    await self.kv.delete(keys.block_key(cidr), revision=revision)
                else:
                    await self._write_block(revision, block)
            except RevisionConflict as exc:
                got = await self._reread_block(cidr, exc)
                continue
            except KeyNotFound:
                got = None
                continue
            for handle_id, count in outcome.released_by_handle.items():
                await self._adjust_handle(handle_id, cidr, -count)
            return list(outcome.not_allocated)
        raise TooManyRetries()

    async def release_by_handle(self, handle_id: str, *, sequence_number: int | None = None) -> int:
        """Release every address held by ``handle_id``; HandleNotFound if there is none.

        Returns how many addresses were released.  The handle is removed even when its counts
        were left over by a crash and the blocks hold nothing for it.
        """
        handle_id = sanitize_handle(handle_id)
        kv = await self.kv.get(keys.handle_key(handle_id))
        if kv is None:
            raise HandleNotFound(handle_id)
        handle = IPAMHandle.from_json(kv.value)
        config = await self._config_for_release()
        released = 0
        for cidr_text, count in handle.block.items():
            cidr = ipaddress.ip_network(cidr_text)
            released += await self._release_handle_in_block(
                cidr, handle_id, sequence_number, config
            )
            if len(handle.block) == 1 and sequence_number is None:
                # The usual case: one block, all of it released; the handle goes unless it
                # changed meanwhile (then count it down properly).
                try:
                    await self.kv.delete(kv.key, revision=kv.revision)
                    continue
                except (RevisionConflict, KeyNotFound):
                    pass
            await self._adjust_handle(handle_id, cidr, -count)
        return released

    async def _config_for_release(self) -> IPAMConfig:
        cached = next(iter(self._inputs.values()), None)
        if cached is not None and time.monotonic() - cached[0] < self.cache_seconds:
            return cached[1]
        return await self.get_config()

    async def _release_handle_in_block(
        self, cidr: IPNetwork, handle_id: str, sequence_number: int | None, config: IPAMConfig
    ) -> int:
        got = await self._get_block(cidr)
        for _ in range(self.retries):
            if got is None:
                return 0
            revision, block = got
            now = self.clock()
            block.collect_cooled(cooldown_seconds=config.ip_cooldown_seconds, now=now)
            released = block.release_by_handle(
                handle_id,
                sequence_number=sequence_number,
                cooldown_seconds=config.ip_cooldown_seconds,
                now=now,
            )
            if not released:
                return 0
            try:
                if block.empty() and block.affinity is None:
                    await self.kv.delete(keys.block_key(cidr), revision=revision)
                else:
                    await self._write_block(revision, block)
                return len(released)
            except RevisionConflict as exc:
                got = await self._reread_block(cidr, exc)
            except KeyNotFound:
                got = None
        raise TooManyRetries()

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
        got = await self._get_block(cidr)
        if got is None:
            await self._delete_quietly(key, affinity.revision)
            return
        revision, block = got
        if required_sequence is not None and block.sequence_number != required_sequence:
            raise IPAMError("IPAM block updated since we last read it")
        if block.affinity is not None and not block.affine_to(host, affinity_type):
            await self._delete_quietly(key, affinity.revision)
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
            await self._write_block(revision, block)
        await self._delete_quietly(key, aff_revision)

    async def release_host_affinities(self, host: str, *, require_empty: bool = True) -> int:
        """Release ``host``'s affinity for all its (empty, by default) blocks; returns how many."""
        released = 0
        for version in (4, 6):
            for cidr in list(await self._affine_blocks(host, version, AFFINITY_TYPE_HOST)):
                for _ in range(self.retries):
                    try:
                        await self.release_block_affinity(host, cidr, require_empty=require_empty)
                        released += 1
                    except (RevisionConflict, KeyNotFound):
                        continue
                    except IPAMError:
                        pass
                    break
        return released

    # -- queries --

    async def allocation_info(self, address: IPAddress) -> AllocationInfo | None:
        """Who holds ``address``, or None when it is not allocated."""
        pools = await self.list_pools()
        cidr = await self._block_cidr_for(address, pools, [])
        if cidr is None:
            return None
        got = await self._get_block(cidr)
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
        kv = await self.kv.get(keys.handle_key(handle_id))
        if kv is None:
            raise HandleNotFound(handle_id)
        out: list[IPAddress] = []
        for cidr_text in IPAMHandle.from_json(kv.value).block:
            got = await self._get_block(ipaddress.ip_network(cidr_text))
            if got is not None:
                out.extend(got[1].addresses_by_handle(handle_id))
        return out

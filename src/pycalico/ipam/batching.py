"""Combining concurrent single-address requests of one node into one block write.

Used by long-lived allocators (``IPAM(cache_seconds > 0)``, i.e. the node agent), through one
method: ``submit``.  Requests for
one node queue up; one leader task per node serves the queue: one etcd transaction
compare-and-swaps the node's hot block (an address for every waiting request) together with
each request's handle (created, or its count raised), so a request costs one etcd round trip
and its handle and address are written together.  Anything the hot block cannot serve goes
through the allocator's ordinary path (``serve_one``), one request at a time.  Not used by the in-process CNI path,
where each process makes one request.

Invariant: a caller that gives up (cancellation) while its request is being served never leaks
its address: the leader releases what it cannot deliver.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from pycalico.datastore.api import DatastoreError, KeyValue, TxnConflict
from pycalico.ipam import keys
from pycalico.ipam.api import Assignments, AutoAssignRequest, IPAMError
from pycalico.ipam.blocks import AllocationBlock, ReleaseOption
from pycalico.ipam.planner import plan_family
from pycalico.ipam.pools import USE_LOAD_BALANCER, pool_for_address
from pycalico.ipam.records import AFFINITY_TYPE_HOST, IPAddress, IPInterface
from pycalico.ipam.store import BlockStore, handle_counted

Pair = tuple[Assignments, Assignments]


@dataclass(slots=True)
class _Waiter:
    request: AutoAssignRequest
    future: asyncio.Future[Pair]


def batchable(request: AutoAssignRequest) -> bool:
    """One address of one family for a workload with a handle: the common CNI request."""
    return (
        request.handle_id is not None
        and request.use != USE_LOAD_BALANCER
        and (request.num4, request.num6) in ((1, 0), (0, 1))
    )


class NodeBatcher:
    """Per-node request queues served by one leader task each, over a ``BlockStore``."""

    def __init__(
        self,
        store: BlockStore,
        serve_one: Callable[[AutoAssignRequest], Awaitable[Pair]],
        release: Callable[[Sequence[ReleaseOption]], Awaitable[list[IPAddress]]],
    ) -> None:
        """``serve_one`` assigns one request the ordinary way (called under the node's lock);
        ``release`` gives back what a caller that gave up cannot take."""
        self.store = store
        self.serve_one = serve_one
        self.release = release
        self._queues: dict[str, list[_Waiter]] = {}
        self._leaders: dict[str, asyncio.Task[None]] = {}

    async def submit(self, request: AutoAssignRequest) -> Pair:
        """Queue the request; one leader task per node serves the queue in batches."""
        loop = asyncio.get_running_loop()
        waiter = _Waiter(request, loop.create_future())
        self._queues.setdefault(request.node, []).append(waiter)
        if request.node not in self._leaders:
            self._leaders[request.node] = asyncio.create_task(self._lead(request.node))
        return await waiter.future

    async def _lead(self, node: str) -> None:
        queue = self._queues[node]
        lock = self.store.node_lock(node)
        try:
            while queue:
                # Let callers just answered by the previous batch submit their next request.
                await asyncio.sleep(0)
                batch = list(queue)
                queue.clear()
                async with lock:
                    await self._serve_batch(node, batch)
        finally:
            del self._leaders[node]

    async def _serve_batch(self, node: str, batch: list[_Waiter]) -> None:
        for version in (4, 6):
            items = [w for w in batch if (w.request.num4 if version == 4 else w.request.num6)]
            if not items:
                continue
            try:
                served = await self._assign_batch_from_hot(node, version, items)
            except Exception as exc:
                for waiter in items:
                    if not waiter.future.done():
                        waiter.future.set_exception(exc)
                continue
            if served:
                continue
            for waiter in items:
                if waiter.future.done():
                    continue
                try:
                    result = await self.serve_one(waiter.request)
                except Exception as exc:
                    waiter.future.set_exception(exc)
                    continue
                await self._deliver(waiter.future, result)

    async def _deliver(
        self,
        future: asyncio.Future[Pair],
        result: Pair,
    ) -> None:
        if not future.done():
            future.set_result(result)
            return
        # The caller gave up while we worked: give its addresses back rather than leak them.
        taken = [a for r in result for a in r.addresses]
        if taken:
            await self.release([ReleaseOption(address=a.ip) for a in taken])

    async def _assign_batch_from_hot(self, node: str, version: int, items: list[_Waiter]) -> bool:
        """Serve every waiting request from the node's hot block in one transaction; False if
        the hot block cannot (the caller then serves them one by one)."""
        items = [w for w in items if not w.future.done()]
        if not items:
            return True
        config, pools, labels, reservations = await self.store.plan_inputs(node, False)
        hot = self.store.take_node_block(node, version, AFFINITY_TYPE_HOST)
        if hot is None:
            return False
        cidr = hot[1].cidr
        for waiter in items:
            try:
                plan = plan_family(waiter.request, version, 1, pools, labels)
            except IPAMError:
                return False
            if pool_for_address(plan.pools, cidr.network_address) is None:
                return False
        # The hot path must skip reserved addresses exactly as the ordinary path does.
        reserved = reservations.reserved_in(cidr)
        wanted: dict[str, int] = {}  # addresses per handle (a handle may come twice)
        for waiter in items:
            handle_id = waiter.request.handle_id or ""
            wanted[handle_id] = wanted.get(handle_id, 0) + 1
        # What each handle holds now, as far as we know: new handles are the usual case, and a
        # wrong guess only costs a failed transaction that reports the real value.
        handles: dict[str, KeyValue | None] = dict.fromkeys(wanted)
        current: tuple[int, AllocationBlock] | None = hot

        async def step(last: DatastoreError | None) -> list[IPInterface] | None:
            nonlocal current
            if isinstance(last, TxnConflict):
                for handle_id in wanted:
                    handles[handle_id] = last.current.get(keys.handle_key(handle_id))
                # ``block`` was changed in memory: start again from the stored one.
                current = await self.store.block_after(cidr, last)
            if current is None:
                return None
            revision, block = current
            self.store.collect(block, config)
            if not block.affine_to(node) or block.num_free(reserved) < len(items):
                return None
            taken = [
                block.auto_assign(1, w.request.handle_id, w.request.attrs, reserved=reserved)[0]
                for w in items
            ]
            counts = [
                handle_counted(handle_id, handles[handle_id], cidr, count)
                for handle_id, count in wanted.items()
            ]
            await self.store.commit_block(revision, block, counts, remember=True)
            return taken

        taken = await self.store.retried(step, f"batch in block {cidr}", (TxnConflict,))
        if taken is None:
            return False
        for waiter, address in zip(items, taken, strict=True):
            empty = Assignments(version=10 - version, requested=0)
            mine = Assignments(version=version, requested=1, addresses=(address,))
            await self._deliver(waiter.future, (mine, empty) if version == 4 else (empty, mine))
        return True

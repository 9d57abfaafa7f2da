"""Combining concurrent single-address requests of one node into one block write.

Used by long-lived allocators (``IPAM(cache_seconds > 0)``, i.e. the node agent).  Requests for
one node queue up; one leader task per node serves the queue: each waiting request's handle is
counted first (the handle-before-address order holds for each), then one compare-and-swap of
the node's hot block takes an address for every one of them.  Anything the hot block cannot
serve goes through ``IPAM``'s ordinary path, one request at a time.  Not used by the
in-process CNI path, where each process makes one request.

Invariant: a caller that gives up (cancellation) while its request is being served never leaks
its address: the leader releases what it cannot deliver.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pycalico.datastore.api import KeyNotFound, RevisionConflict
from pycalico.ipam.api import Assignments, AutoAssignRequest, IPAMError, TooManyRetries
from pycalico.ipam.blocks import AFFINITY_TYPE_HOST, IPNetwork, ReleaseOption
from pycalico.ipam.pools import USE_LOAD_BALANCER, pool_for_address

if TYPE_CHECKING:
    from pycalico.ipam.allocator import IPAM


@dataclass(slots=True)
class _Waiter:
    request: AutoAssignRequest
    future: asyncio.Future[tuple[Assignments, Assignments]]
    counted: IPNetwork | None = None  # block the handle was already counted against


def batchable(request: AutoAssignRequest) -> bool:
    """One address of one family for a workload with a handle: the common CNI request."""
    return (
        request.handle_id is not None
        and request.use != USE_LOAD_BALANCER
        and (request.num4, request.num6) in ((1, 0), (0, 1))
    )


class NodeBatcher:
    def __init__(self, ipam: IPAM) -> None:
        self.ipam = ipam
        self._queues: dict[str, list[_Waiter]] = {}
        self._leaders: dict[str, asyncio.Task[None]] = {}
        self._counting: dict[str, int] = {}  # handle counts in flight, per node
        self._counted: dict[str, asyncio.Event] = {}

    def _counted_event(self, node: str) -> asyncio.Event:
        event = self._counted.get(node)
        if event is None:
            event = self._counted[node] = asyncio.Event()
        return event

    async def submit(self, request: AutoAssignRequest) -> tuple[Assignments, Assignments]:
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
        hot = self.ipam._hot.get((request.node, version, AFFINITY_TYPE_HOST))
        if hot is not None and request.handle_id is not None:
            node = request.node
            self._counting[node] = self._counting.get(node, 0) + 1
            try:
                await self.ipam._adjust_handle(request.handle_id, hot[1].cidr, 1)
                waiter.counted = hot[1].cidr
            finally:
                self._counting[node] -= 1
                self._counted_event(node).set()
        self._queues.setdefault(request.node, []).append(waiter)
        if request.node not in self._leaders:
            self._leaders[request.node] = asyncio.create_task(self._lead(request.node))
        return await waiter.future

    async def _lead(self, node: str) -> None:
        queue = self._queues[node]
        lock = self.ipam._node_locks.setdefault(node, asyncio.Lock())
        try:
            while queue:
                # Let callers just answered by the previous batch submit their next request.
                await asyncio.sleep(0)
                if self._counting.get(node):
                    # Requests whose handles are being counted right now join this batch:
                    # waiting one handle write saves them a block write each.
                    # No timeout: a count always finishes (or fails) within one etcd call.
                    event = self._counted_event(node)
                    event.clear()
                    await event.wait()
                batch = list(queue)
                queue.clear()
                async with lock:
                    await self._serve_batch(node, batch)
        finally:
            del self._leaders[node]

    async def _uncount(self, waiter: _Waiter) -> None:
        if waiter.counted is not None and waiter.request.handle_id is not None:
            counted, waiter.counted = waiter.counted, None
            await asyncio.shield(self.ipam._adjust_handle(waiter.request.handle_id, counted, -1))

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
                    result = await self.ipam._auto_assign_locked(waiter.request)
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
            await self.ipam.release_ips([ReleaseOption(address=a.ip) for a in taken])

    async def _assign_batch_from_hot(self, node: str, version: int, items: list[_Waiter]) -> bool:
        """Serve every waiting request from the node's hot block in one write; False if the
        hot block cannot (the caller then serves them one by one)."""
        for waiter in [w for w in items if w.future.done()]:
            await self._uncount(waiter)
        items = [w for w in items if not w.future.done()]
        if not items:
            return True
        config, pools, labels = await self.ipam._plan_inputs(node, False)
        hot = self.ipam._hot.pop((node, version, AFFINITY_TYPE_HOST), None)
        if hot is None:
            return False
        revision, block = hot
        for waiter in items:
            try:
                plan = await self.ipam._plan(waiter.request, version, 1, pools, labels)
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
            for _ in range(self.ipam.retries):
                self.ipam._collect(block, config)
                if not block.affine_to(node) or block.num_free() < len(items):
                    return False
                taken = [
                    block.auto_assign(1, w.request.handle_id, w.request.attrs)[0] for w in items
                ]
                if late:
                    await asyncio.gather(
                        *(
                            self.ipam._adjust_handle(w.request.handle_id or "", cidr, 1)
                            for w in late
                        )
                    )
                    for waiter in late:
                        waiter.counted = cidr
                    late = []
                try:
                    await self.ipam._write_block(revision, block, remember=True)
                    committed = True
                    break
                except RevisionConflict as exc:
                    got = await self.ipam._reread_block(cidr, exc)
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

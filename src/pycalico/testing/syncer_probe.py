"""``SyncerProbe``: runs a ``Syncer`` in a task and mirrors what it emitted, for tests.

It applies every update to a dict (the consumer's view of the store), records each update and
status change in order, and lets a test wait for a condition.  Not for production consumers:
they apply updates to their own structures.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType

from pycalico.datastore.syncer import Syncer, SyncerUpdate, SyncStatus


class SyncerProbe:
    def __init__(self, syncer: Syncer) -> None:
        self.syncer = syncer
        self.state: dict[str, bytes] = {}
        self.updates: list[SyncerUpdate] = []
        self.statuses: list[SyncStatus] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _consume(self) -> None:
        async for batch in self.syncer:
            for update in batch.updates:
                self.updates.append(update)
                if update.value is None:
                    self.state.pop(update.key, None)
                else:
                    self.state[update.key] = update.value
            if batch.status is not None:
                self.statuses.append(batch.status)
            self._changed.set()

    def start(self) -> SyncerProbe:
        self._task = asyncio.create_task(self._consume())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def in_sync(self) -> bool:
        return bool(self.statuses) and self.statuses[-1] is SyncStatus.IN_SYNC

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        async def loop() -> None:
            while not condition():
                if self._task is not None and self._task.done():
                    self._task.result()  # surface the syncer's crash
                    raise AssertionError("syncer stopped")
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), timeout)

    async def wait_in_sync(self, timeout: float = 10.0) -> None:
        await self.wait_for(lambda: self.in_sync, timeout)

    async def __aenter__(self) -> SyncerProbe:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

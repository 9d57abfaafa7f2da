"""The leader's work: the enabled controllers, restarted when the configuration changes.

What it is: ``Supervisor.apply(config)`` starts one task per enabled controller from the
registry (``registry.CONTROLLERS``), each restarted after a pause if it ever fails, and stops
them all first if the controllers' part of the configuration changed (Calico restarts the
whole process then; the effect is the same).  ``compact(kv, period)`` is Calico's etcd
compactor: every ``etcdV3CompactionPeriod`` it compacts etcd to the revision it saw one period
earlier, so watchers never lose history younger than a period.

What it is not: leader election (``pycalico.k8s.lease``) or configuration (``runconfig``).
Invariants: after ``stop()`` no controller task is left; an enabled name nobody registered is
logged once per configuration and skipped, never fatal; a request the API server refuses (401,
403: missing RBAC rules) is logged as an error quoting the server, which names the verb and the
resource, and retried like any failure.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from pycalico.datastore.api import DatastoreError, KVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.k8s.client import KubeClient, KubeError
from pycalico.kubecontrollers.config import RunConfig
from pycalico.kubecontrollers.metrics import COLLECTOR
from pycalico.kubecontrollers.registry import CONTROLLERS, ControllerContext, Runnable

log = logging.getLogger(__name__)

RESTART_DELAY = 5.0


class Supervisor:
    def __init__(self, kube: KubeClient, kv: KVStore, store: ResourceStore) -> None:
        self.kube = kube
        self.kv = kv
        self.store = store
        self.running: dict[str, Runnable] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._key: Any = None
        self.starts = 0  # how many times the controllers were (re)started

    async def apply(self, config: RunConfig) -> None:
        """Run the controllers ``config`` enables (restarting them if their settings changed)."""
        key = (dict(config.controllers), config.node)
        if key == self._key:
            return
        await self.stop()
        self._key = key
        self.starts += 1
        context = ControllerContext(self.kube, self.kv, self.store, config)
        for name in config.enabled:
            factory = CONTROLLERS.get(name)
            if factory is None:
                log.warning("controller %r is enabled but not available in pycalico", name)
                continue
            self._tasks[name] = asyncio.create_task(
                self._supervise(name, context), name=f"controller {name}"
            )
        log.info("controllers running: %s", ", ".join(sorted(self._tasks)) or "none")

    async def _supervise(self, name: str, context: ControllerContext) -> None:
        while True:
            runnable = CONTROLLERS[name](context)
            self.running[name] = runnable
            COLLECTOR.set_running(self.running)
            try:
                await runnable.run()
                log.error("controller %s stopped by itself; restarting", name)
            except asyncio.CancelledError:
                raise
            except KubeError as error:
                if error.status not in (401, 403):
                    log.exception("controller %s failed; restarting in %.0fs", name, RESTART_DELAY)
                else:  # the server's message names the verb and the resource refused
                    log.error("controller %s: not allowed by the API server (check the RBAC "
                              "rules bound to this identity): %s; retrying in %.0fs",
                              name, error, RESTART_DELAY)  # fmt: skip
            except Exception:
                log.exception("controller %s failed; restarting in %.0fs", name, RESTART_DELAY)
            await asyncio.sleep(RESTART_DELAY)

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self.running.clear()
        COLLECTOR.set_running({})
        self._key = None


class Compactable(Protocol):
    async def current_revision(self) -> int: ...

    async def compact(self, revision: int) -> None: ...


async def compact(kv: Compactable, period: float) -> None:
    """Compact etcd every ``period`` seconds to the revision of one period before (0: never)."""
    if period <= 0:
        log.info("periodic etcd compaction disabled")
        return
    previous: int | None = None
    while True:
        try:
            revision = await kv.current_revision()
            if previous is not None and previous > 0:
                await kv.compact(previous)
                log.info("compacted etcd to revision %d", previous)
            previous = revision
        except DatastoreError as error:  # the next period tries again
            log.warning("etcd compaction failed: %s", error)
        await asyncio.sleep(period)

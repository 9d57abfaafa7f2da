"""Leader election on a ``coordination.k8s.io/v1`` Lease (client-go ``leaderelection``'s model).

``await LeaderElector(kube, namespace=..., name=..., identity=...).run(lead)`` campaigns for the
Lease; while it holds it, ``lead()`` runs.  Of any number of copies campaigning for one Lease,
at most one runs ``lead()`` at a time (while clocks advance at the same rate):

* A candidate tries every ``retry_period`` to create the Lease or to take it over once it has
  expired -- ``lease_duration`` after the candidate last *saw the record change*
  (``lease_record.next_record``).  Every write is a compare-and-swap on the Lease's
  resourceVersion, so of two candidates racing for it one gets a conflict and stays follower.
* The leader renews every ``retry_period``.  If it has not renewed for ``renew_deadline``
  (shorter than ``lease_duration``) it cancels ``lead()`` and campaigns again: it stops before
  anyone else can have taken over, however long the API server is unreachable.
* Cancelling ``run`` (shutdown) cancels ``lead()`` and releases the Lease (empty holder), so a
  follower takes over within one ``retry_period`` instead of a whole ``lease_duration``.
  A leader that is killed cannot release: then a follower takes over at most
  ``lease_duration + retry_period`` after the last renewal.

What it is not: what the leader does (``lead``), nor the configuration of the durations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio.client.exceptions import ApiException

from pycalico.k8s.client import KubeClient, kube_error
from pycalico.k8s.lease_record import LeaseRecord, next_record, released

log = logging.getLogger(__name__)

_FAILURES = (ApiException, aiohttp.ClientError, OSError, asyncio.TimeoutError)


class LeaderElector:
    def __init__(
        self,
        kube: KubeClient,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        on_change: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not retry_period < renew_deadline < lease_duration:
            raise ValueError(
                "leader election: need retryPeriod < renewDeadline < leaseDuration "
                f"(got {retry_period}, {renew_deadline}, {lease_duration})"
            )
        self._api: Any = k8s_client.CoordinationV1Api(kube.api_client)
        self._kube = kube
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._on_change = on_change
        self._clock = clock
        self._observed: LeaseRecord | None = None
        self._observed_at = clock()
        self._version: str | None = None
        self.is_leader = False
        self.terms = 0  # how many times this elector became leader

    async def run(self, lead: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Campaign and lead until cancelled (or until ``lead()`` raises, which is re-raised)."""
        log.info("%s campaigning for lease %s/%s", self.identity, self.namespace, self.name)
        try:
            while True:
                await self._acquire()
                await self._lead(lead)
        finally:
            if self.is_leader:
                await self._release()

    async def _lead(self, lead: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``lead()`` while the lease is renewed; return when it is lost."""
        leading = asyncio.create_task(lead(), name="leader")
        renewing = asyncio.create_task(self._renew(), name="lease renewal")
        try:
            done, _ = await asyncio.wait({leading, renewing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (leading, renewing):
                task.cancel()
            await asyncio.gather(leading, renewing, return_exceptions=True)
        if leading in done and not leading.cancelled():
            error = leading.exception()
            if error is not None:
                raise error
            raise RuntimeError("leader election: the leader's work ended by itself")
        self._set_leader(False)
        log.warning("%s lost the lease %s/%s", self.identity, self.namespace, self.name)

    def _set_leader(self, leading: bool) -> None:
        if leading != self.is_leader:
            self.is_leader = leading
            if leading:
                self.terms += 1
            if self._on_change is not None:
                self._on_change(leading)

    async def _acquire(self) -> None:
        while not await self._try():
            await asyncio.sleep(self.retry_period)
        log.info("%s became leader (lease %s/%s)", self.identity, self.namespace, self.name)
        self._set_leader(True)

    async def _renew(self) -> None:
        """Renew every retry period; return once renewals have failed for renew_deadline."""
        last = self._clock()
        while True:
            await asyncio.sleep(self.retry_period)
            if await self._try():
                last = self._clock()
                continue
            if self._observed is not None and self._observed.holder not in ("", self.identity):
                return  # someone else holds it now
            if self._clock() - last >= self.renew_deadline:
                return

    async def _read(self) -> LeaseRecord | None:
        try:
            lease = await self._api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self.retry_period
            )
        except ApiException as error:
            if error.status == 404:
                self._version = None
                return None
            raise
        wire = self._kube.to_wire(lease)
        self._version = str(wire["metadata"]["resourceVersion"])
        return LeaseRecord.from_wire(wire)

    def _observe(self, record: LeaseRecord | None) -> None:
        if record != self._observed:
            self._observed = record
            self._observed_at = self._clock()

    async def _try(self) -> bool:
        """One tryAcquireOrRenew: True if we hold the lease now."""
        try:
            current = await self._read()
            self._observe(current)
            desired = next_record(
                current,
                self.identity,
                now=datetime.now(UTC),
                observed_for=self._clock() - self._observed_at,
                duration_seconds=max(1, round(self.lease_duration)),
            )
            if desired is None:
                return False
            await self._write(current is None, desired)
        except _FAILURES as error:
            refused = isinstance(error, ApiException) and error.status in (401, 403)
            # A refusal (missing RBAC rules for leases) never goes away by itself: an error.
            log.log(logging.ERROR if refused else logging.INFO, "lease %s/%s: %s",
                    self.namespace, self.name, _describe(error))  # fmt: skip
            return False
        self._observe(desired)
        return True

    async def _write(self, create: bool, record: LeaseRecord) -> None:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if not create:
            metadata["resourceVersion"] = self._version
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": record.to_spec(),
        }
        timeout = self.retry_period
        if create:
            await self._api.create_namespaced_lease(self.namespace, body, _request_timeout=timeout)
        else:
            await self._api.replace_namespaced_lease(
                self.name, self.namespace, body, _request_timeout=timeout
            )

    async def _release(self) -> None:
        """Best effort: hand the lease back (a killed process cannot; its lease expires)."""
        self._set_leader(False)
        with contextlib.suppress(*_FAILURES, asyncio.CancelledError):
            current = await self._read()
            if current is not None and current.holder == self.identity:
                await self._write(False, released(current))
                log.info("%s released the lease %s/%s", self.identity, self.namespace, self.name)


def _describe(error: BaseException) -> str:
    try:
        return str(kube_error("lease", error))
    except TypeError:
        return repr(error)

"""Leader election's decisions on a ``coordination.k8s.io/v1`` Lease, as client-go makes them.

What it is: the pure half of ``pycalico.k8s.lease``.  ``LeaseRecord`` is a Lease's spec
(holder, duration, acquire/renew times, transitions) read from and written to its wire form;
``next_record`` is client-go's ``tryAcquireOrRenew`` decision: given the record in the API
server, who we are and how long ago we saw it change, the record to write (we acquire or renew)
or ``None`` (someone else holds a lease that has not expired).

Rules (client-go ``tools/leaderelection``):

* Expiry is judged on our own clock: a lease held by another is expired once ``duration`` has
  passed since we *observed* its record change -- never by comparing its renewTime with our
  wall clock, so clock skew between hosts cannot make two leaders.
* A renewal by the holder keeps ``acquireTime`` and ``leaseTransitions``; a take-over sets
  ``acquireTime`` to now and adds one transition.
* An empty holder (a leader that released on shutdown) is free at once.

What it is not: the loop, the API calls or the timing (``lease``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True)
class LeaseRecord:
    holder: str = ""
    duration_seconds: int = 15
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> LeaseRecord:
        spec = wire.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.duration_seconds,
            "leaseTransitions": self.transitions,
        }
        if self.acquire_time:
            spec["acquireTime"] = self.acquire_time
        if self.renew_time:
            spec["renewTime"] = self.renew_time
        return spec


def micro_time(moment: datetime) -> str:
    """A Kubernetes MicroTime: RFC 3339 in UTC with exactly six fractional digits."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def next_record(
    current: LeaseRecord | None,
    identity: str,
    *,
    now: datetime,
    observed_for: float,
    duration_seconds: int,
) -> LeaseRecord | None:
    """The record to write to acquire or renew, or None if another holder's lease is live.

    ``observed_for`` is how long (seconds, our monotonic clock) the record has been unchanged
    since we first saw it as it is now."""
    stamp = micro_time(now)
    if current is None:
        return LeaseRecord(identity, duration_seconds, stamp, stamp, 0)
    held_by_other = current.holder not in ("", identity)
    if held_by_other and observed_for < current.duration_seconds:
        return None
    if current.holder == identity:
        return replace(current, duration_seconds=duration_seconds, renew_time=stamp)
    return LeaseRecord(identity, duration_seconds, stamp, stamp, current.transitions + 1)


def released(current: LeaseRecord) -> LeaseRecord:
    """What a leader writes on a clean shutdown so that another copy takes over at once
    (client-go's ReleaseOnCancel: no holder, a one-second lease)."""
    return replace(current, holder="", duration_seconds=1)

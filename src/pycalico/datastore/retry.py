"""One rule for compare-and-swap writers: ``read_modify_write`` retries a read-modify-write step.

Every writer that reads a value, changes it and writes it back at the revision it read (IPAM's
blocks, affinities and handles; calicoctl's updates; calico-node's Node and ClusterInformation;
the CNI plugin's endpoint delete) runs its step through this helper instead of a loop of its own.
It is not a general retry decorator: only a lost compare-and-swap or transaction (or another
error the caller names as a conflict, e.g. ``KeyNotFound`` for a value deleted meanwhile) and a
``TemporaryDatastoreError`` (no etcd endpoint answered) are retried; any other error is final.

Invariants:

* The step is called at most ``attempts`` times; then ``RetriesExhausted`` (a
  ``DatastoreError``) is raised, naming ``what`` and chaining the last error.  A transient
  error ends the retries after ``transient_attempts`` of them, re-raised as it is.
* The first retry is immediate: a lost compare-and-swap usually reports the value that beat
  it, and the next attempt on that value usually lands (the node agent's hot block goes stale
  whenever another process writes the block; sleeping there cost about 1 ms per pod).  Before
  each later retry the caller waits a random time in [0, min(max_delay, base_delay * 2**n)]
  ("full jitter"), so writers that keep colliding spread out instead of meeting in lockstep.
* The step receives the error that ended the previous attempt (None the first time): a
  ``RevisionConflict``/``TxnConflict`` carries the value the store holds now, which saves a read.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pycalico.datastore.api import (
    DatastoreError,
    RevisionConflict,
    TemporaryDatastoreError,
    TxnConflict,
)

T = TypeVar("T")

# Calico's IPAM retries a block write 100 times; other writers use the same bound.
DEFAULT_ATTEMPTS = 100
# A transient failure (no endpoint answered) was already retried by the etcd client for its
# retry timeout: try the whole step a few more times, not a hundred.
TRANSIENT_ATTEMPTS = 3
CONFLICTS: tuple[type[DatastoreError], ...] = (RevisionConflict, TxnConflict)
BASE_DELAY = 0.001
MAX_DELAY = 0.1


class RetriesExhausted(DatastoreError):
    """Every attempt of a read-modify-write lost to a concurrent writer or a transient error."""

    def __init__(self, what: str, attempts: int, last: BaseException) -> None:
        super().__init__(f"{what}: gave up after {attempts} attempts ({last})")
        self.what = what
        self.attempts = attempts
        self.last = last


def backoff(attempt: int, *, base: float = BASE_DELAY, cap: float = MAX_DELAY) -> float:
    """The wait before retry number ``attempt`` (1-based): full jitter, bounded by ``cap``."""
    return random.uniform(0.0, min(cap, base * (2 ** min(attempt - 1, 30))))


async def read_modify_write(
    step: Callable[[DatastoreError | None], Awaitable[T]],
    *,
    what: str,
    attempts: int = DEFAULT_ATTEMPTS,
    conflicts: tuple[type[DatastoreError], ...] = CONFLICTS,
    transient_attempts: int = TRANSIENT_ATTEMPTS,
    base_delay: float = BASE_DELAY,
    max_delay: float = MAX_DELAY,
) -> T:
    """Run ``step`` until it returns, retrying it with jittered backoff.

    ``step`` reads what it needs (or uses the error it is given), computes the change and
    writes it with a compare-and-swap; it returns the result or raises.  A ``conflicts`` error
    is retried up to ``attempts`` times in all (then ``RetriesExhausted``, naming ``what``);
    any other ``TemporaryDatastoreError`` up to ``transient_attempts`` times (then it is
    raised as it is: the etcd client has already retried it for its own timeout).
    """
    if attempts < 1:
        raise ValueError("attempts: must be at least 1")
    last: DatastoreError | None = None
    transient = 0
    for attempt in range(attempts):
        if attempt > 1:
            await asyncio.sleep(backoff(attempt - 1, base=base_delay, cap=max_delay))
        try:
            return await step(last)
        except conflicts as error:
            last = error
        except TemporaryDatastoreError as error:
            if isinstance(error, (RevisionConflict, TxnConflict)):
                raise  # a conflict the caller did not name: final for it
            transient += 1
            if transient >= transient_attempts:
                raise
            last = error
    assert last is not None
    raise RetriesExhausted(what, attempts, last) from last

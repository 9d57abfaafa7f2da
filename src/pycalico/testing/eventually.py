"""``eventually``: retry an async check until it passes, for tests that wait on controllers.

What it is: the one polling helper of the kube-controllers integration tests: a check raises
``AssertionError`` (or ``KeyNotFound``: the key is not written yet) until the state it waits
for exists, and the last failure is raised at the deadline, so the test fails naming what was
still wrong.  What it is not: a fixed sleep; it returns as soon as the check passes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pycalico.datastore.api import KeyNotFound

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T]], timeout: float = 20.0, interval: float = 0.05
) -> T:
    """The first result of ``check`` that does not raise AssertionError/KeyNotFound."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await check()
        except (AssertionError, KeyNotFound):
            if asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(interval)

"""calicoctl's connection to the datastore: one ``ResourceStore`` per command, one event loop.

``run(config_file, work)`` loads the datastore configuration (``--config`` file, else
``/etc/calico/calicoctl.cfg`` when present, else ``DATASTORE_TYPE``/``ETCD_*`` from the
environment), opens an ``EtcdKVStore`` over it, runs ``work(store)`` in a fresh ``asyncio.run``,
and closes the store whatever happens.  A bad configuration becomes a ``CommandError`` naming the
problem; an unreachable etcd surfaces as ``DatastoreUnavailable`` from the first call.

Not here: the commands themselves (``pycalico.ctl.actions``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pycalico.ctl.results import CommandError
from pycalico.datastore.config import DatastoreConfig, DatastoreConfigError
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.datastore.resources import ResourceStore

T = TypeVar("T")

# A command is interactive: give up on an unreachable etcd after a few seconds, not minutes.
RETRY_TIMEOUT = 5.0
CALL_TIMEOUT = 10.0


def load_config(config_file: str | None) -> DatastoreConfig:
    try:
        return DatastoreConfig.load(config_file)
    except DatastoreConfigError as error:
        raise CommandError(f"Failed to create Calico API client: {error}") from error


def run(config_file: str | None, work: Callable[[ResourceStore], Awaitable[T]]) -> T:
    """Run ``work`` against the configured datastore and return its result."""
    config = load_config(config_file)

    async def main() -> T:
        kv = EtcdKVStore.from_config(config, timeout=CALL_TIMEOUT, retry_timeout=RETRY_TIMEOUT)
        try:
            return await work(ResourceStore(kv))
        finally:
            await kv.close()

    return asyncio.run(main())

"""The running configuration from the datastore: KubeControllersConfiguration ``default``.

What it is: Calico's ``RunConfigController`` (``kube-controllers/pkg/config/runconfig.go``).
``RunConfigSource.configs()`` reads ``default`` -- creating it with Calico's defaults if it is
absent -- merges it with the environment (``config.merge_config``), writes the result back to
its ``status`` (``runningConfig`` and ``environmentVars``), and yields the running
configuration; then it watches the resource and yields again whenever the merge changes
(a deleted resource is recreated).  ``peek()`` is the same merge without any write, for a copy
that is not the leader.

What it is not: the merge rules (``config``) nor what a change restarts (``main``).
Invariants: the status is written only when it differs from what is stored (so our own write
does not loop), as a compare-and-swap; every datastore failure is retried after a second,
never raised, so an etcd outage delays configuration but does not end the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from pycalico.datastore.api import DatastoreError, KeyAlreadyExists, KeyNotFound, WatchEventType
from pycalico.datastore.resources import ResourceStore
from pycalico.kubecontrollers.config import (
    DEFAULT_NAME,
    EnvConfig,
    RunConfig,
    default_configuration,
    merge_config,
)
from pycalico.model.node import KubeControllersConfiguration

log = logging.getLogger(__name__)

KIND = "KubeControllersConfiguration"
RETRY = 1.0  # Calico's datastoreBackoff


def _spec(resource: KubeControllersConfiguration) -> dict[str, Any]:
    spec: dict[str, Any] = resource.spec.model_dump(by_alias=True, exclude_none=True)
    return spec


class RunConfigSource:
    def __init__(self, store: ResourceStore, env: EnvConfig) -> None:
        self.store = store
        self.env = env
        self.status_writes = 0

    def merge(self, resource: KubeControllersConfiguration) -> tuple[RunConfig, dict[str, Any]]:
        return merge_config(
            self.env.overrides, _spec(resource), datastore_type=self.env.datastore_type
        )

    async def peek(self) -> RunConfig:
        """The running configuration as the stored resource (or the default) gives it."""
        try:
            resource = await self.store.get(KIND, DEFAULT_NAME)
        except KeyNotFound:
            resource = default_configuration()
        assert isinstance(resource, KubeControllersConfiguration)
        return self.merge(resource)[0]

    async def _get_or_create(self) -> KubeControllersConfiguration:
        try:
            resource = await self.store.get(KIND, DEFAULT_NAME)
        except KeyNotFound:
            with contextlib.suppress(KeyAlreadyExists):  # created meanwhile: read it
                resource = await self.store.create(default_configuration())
                log.info("created KubeControllersConfiguration default with Calico's defaults")
            resource = await self.store.get(KIND, DEFAULT_NAME)
        assert isinstance(resource, KubeControllersConfiguration)
        return resource

    async def _with_status(
        self, resource: KubeControllersConfiguration
    ) -> tuple[RunConfig, KubeControllersConfiguration]:
        config, status = self.merge(resource)
        if resource.status == status:
            return config, resource
        written = await self.store.update(resource.model_copy(update={"status": status}))
        self.status_writes += 1
        assert isinstance(written, KubeControllersConfiguration)
        return config, written

    async def configs(self) -> AsyncIterator[RunConfig]:
        """The running configuration now and after every change, until cancelled."""
        current: RunConfig | None = None
        while True:
            try:
                config, resource = await self._with_status(await self._get_or_create())
                if config != current:
                    current = config
                    yield config
                revision = resource.metadata.resource_version
                async for event in self.store.watch(KIND, revision=revision):
                    changed = event.resource
                    if changed.metadata.name != DEFAULT_NAME:
                        log.warning(
                            "ignoring KubeControllersConfiguration %s", changed.metadata.name
                        )
                        continue
                    if event.type is WatchEventType.DELETED:
                        break  # recreate it with the defaults
                    assert isinstance(changed, KubeControllersConfiguration)
                    config, _ = await self._with_status(changed)
                    if config != current:
                        current = config
                        yield config
            except DatastoreError as error:
                log.warning("KubeControllersConfiguration default: %s; retrying", error)
                await asyncio.sleep(RETRY)

"""The policy, namespace and service-account controllers: Kubernetes objects -> Calico resources, level-triggered.

Each controller keeps the latest wire form of every object of one Kubernetes collection (list +
watch through ``pycalico.k8s.watch``) and reconciles one key at a time (``workers``): it converts
the object (``pycalico.k8s.conversion``), reads the Calico resource, and creates, updates or
deletes it so that the datastore matches.  What a reconcile does depends only on the current
state, never on the event that triggered it, so a missed or repeated event costs nothing.

* **policy**: NetworkPolicy ``<ns>/<name>`` -> Calico NetworkPolicy ``knp.default.<name>`` in
  ``<ns>``.  **namespace**: Namespace ``<ns>`` -> Profile ``kns.<ns>``.  **serviceaccount**:
  ServiceAccount ``<ns>/<sa>`` -> Profile ``ksa.<ns>.<sa>``.
* Full reconcile at start, after every re-list and every ``reconciler_period`` (Calico: 5
  minutes): every key Kubernetes has plus every key of a Calico resource this controller owns
  (name prefix ``knp.default.`` / ``kns.`` / ``ksa.``), so a resource whose object was deleted while the
  controller was down is removed.  Calico resources without the prefix are never touched.
* An update keeps the stored metadata (uid, creation time) and is a compare-and-swap on the
  stored revision; a lost race is retried by the worker.  An unchanged spec is not written.
* An object that cannot be converted is logged and left alone (retrying cannot help until the
  object changes, which enqueues it again).

This module is not the executable (configuration, health, leader election come with issue 14's
later parts).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pycalico.datastore.api import KeyNotFound
from pycalico.datastore.resources import ResourceStore
from pycalico.k8s.client import KubeClient
from pycalico.k8s.conversion.network_policy import (
    convert_network_policy,
    kubernetes_name,
    policy_name,
)
from pycalico.k8s.conversion.objects import ConversionError, KubeObject
from pycalico.k8s.conversion.profiles import (
    namespace_profile,
    namespace_profile_name,
    profile_namespace,
    profile_service_account,
    service_account_profile,
    service_account_profile_name,
)
from pycalico.k8s.watch import Bookmark, Changed, Listed, ListMethod, ListWatcher
from pycalico.kubecontrollers.workers import KeyedWorkers
from pycalico.model.codec import apply_defaults, encode_resource
from pycalico.model.meta import Resource

log = logging.getLogger(__name__)

RECONCILER_PERIOD = 300.0  # Calico's default reconcilerPeriod: 5m


@dataclass(frozen=True)
class Source:
    """The Kubernetes collection a controller watches."""

    name: str  # the controller's name (Calico's ENABLED_CONTROLLERS spelling)
    namespaced: bool  # keys are "<ns>/<name>" if so, else "<name>"
    list_method: Callable[[KubeClient], ListMethod]
    trim: Callable[[KubeObject], KubeObject] | None = None  # the fields the controller reads


class Reconciling(Protocol):
    """What the watch loop drives: the latest objects by key, and the reconcile of one key."""

    objects: dict[str, KubeObject]

    async def owned_keys(self) -> set[str]: ...

    async def reconcile(self, key: str) -> None: ...


@dataclass(frozen=True)
class Binding:
    """How one controller maps Kubernetes keys to Calico resources of one kind."""

    source: Source
    kind: str  # the Calico kind written
    convert: Callable[[KubeObject], Resource]
    calico_id: Callable[[str], tuple[str, str | None]]  # key -> (name, namespace)
    owned_key: Callable[[Resource], str | None]  # Calico resource -> key; None: not ours


def _policy_id(key: str) -> tuple[str, str | None]:
    namespace, _, name = key.partition("/")
    return policy_name(name), namespace


def _policy_key(resource: Resource) -> str | None:
    name = kubernetes_name(resource.metadata.name)
    return None if name is None else f"{resource.metadata.namespace}/{name}"


POLICY = Binding(
    source=Source(
        "policy", True, lambda kube: kube.networking.list_network_policy_for_all_namespaces
    ),
    kind="NetworkPolicy",
    convert=lambda obj: convert_network_policy(obj).policy,
    calico_id=_policy_id,
    owned_key=_policy_key,
)

NAMESPACE = Binding(
    source=Source("namespace", False, lambda kube: kube.core.list_namespace),
    kind="Profile",
    convert=namespace_profile,
    calico_id=lambda key: (namespace_profile_name(key), None),
    owned_key=lambda resource: profile_namespace(resource.metadata.name),
)


def _account_id(key: str) -> tuple[str, str | None]:
    namespace, _, name = key.partition("/")
    return service_account_profile_name(namespace, name), None


def _account_key(resource: Resource) -> str | None:
    owner = profile_service_account(resource.metadata.name)
    return None if owner is None else "/".join(owner)


SERVICE_ACCOUNT = Binding(
    source=Source(
        "serviceaccount", True, lambda kube: kube.core.list_service_account_for_all_namespaces
    ),
    kind="Profile",
    convert=service_account_profile,
    calico_id=_account_id,
    owned_key=_account_key,
)


def _key(source: Source, wire: KubeObject) -> str:
    metadata: dict[str, Any] = wire.get("metadata") or {}
    if source.namespaced:
        return f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"
    return str(metadata.get("name", ""))


def wire_spec(resource: Resource) -> Any:
    """The spec as it is stored (Go's omitempty applied: an empty ``destination`` of a rule
    without ports is absent), so a converted resource equals its stored copy."""
    return encode_resource(resource).get("spec")


class Reconciler:
    """The datastore half of a controller: the latest Kubernetes objects by key, and the
    reconcile that makes one key's Calico resource match."""

    def __init__(self, store: ResourceStore, binding: Binding) -> None:
        self.store = store
        self.binding = binding
        self.objects: dict[str, KubeObject] = {}
        self.writes = 0  # creates, updates and deletes made
        # What the last full listing said each key's resource was (None: absent); used once
        # by that key's next reconcile instead of a read.
        self._hints: dict[str, Resource | None] = {}

    async def owned_keys(self) -> set[str]:
        """The keys of the Calico resources this controller owns (by name prefix).  The
        listing also becomes a one-use hint per key, so a full reconcile reads etcd once
        instead of once per key; a stale hint only costs a failed compare-and-swap (the
        worker's retry reads the resource afresh)."""
        listed = await self.store.list(self.binding.kind)
        owned = {key: item for item in listed.items if (key := self.binding.owned_key(item))}
        self._hints = {key: owned.get(key) for key in set(self.objects) | set(owned)}
        return set(owned)

    async def _current(self, key: str, name: str, namespace: str | None) -> Resource | None:
        if key in self._hints:
            return self._hints.pop(key)
        try:
            return await self.store.get(self.binding.kind, name, namespace)
        except KeyNotFound:
            return None

    async def _delete(self, current: Resource, name: str, namespace: str | None) -> None:
        with contextlib.suppress(KeyNotFound):  # someone else deleted it: done
            revision = current.metadata.resource_version
            await self.store.delete(self.binding.kind, name, namespace, revision=revision)
            self.writes += 1
            log.info(
                "%s controller: deleted %s %s", self.binding.source.name, self.binding.kind, name
            )

    async def reconcile(self, key: str) -> None:
        """Make the Calico resource of ``key`` match the Kubernetes object (or its absence)."""
        name, namespace = self.binding.calico_id(key)
        current = await self._current(key, name, namespace)
        wire = self.objects.get(key)
        if wire is None:
            if current is not None:
                await self._delete(current, name, namespace)
            return
        try:
            desired = apply_defaults(self.binding.convert(wire))
        except ConversionError as error:
            log.error("%s controller: cannot convert %s: %s", self.binding.source.name, key, error)
            return
        if current is None:
            await self.store.create(desired)
        elif wire_spec(current) == wire_spec(desired):
            return
        else:
            await self.store.update(desired.model_copy(update={"metadata": current.metadata}))
        self.writes += 1
        log.info("%s controller: wrote %s %s", self.binding.source.name, self.binding.kind, name)


class Controller:
    """``await Controller(kube, source, reconciler).run()`` until cancelled; ``controller()``
    builds one for a Binding."""

    def __init__(
        self,
        kube: KubeClient,
        source: Source,
        reconciler: Reconciling,
        *,
        reconciler_period: float = RECONCILER_PERIOD,
    ) -> None:
        self.kube = kube
        self.source = source
        self.reconciler = reconciler
        self.reconciler_period = reconciler_period
        self.workers = KeyedWorkers(self.reconciler.reconcile)
        self.synced = asyncio.Event()  # set once the first full reconcile is enqueued
        self.in_sync = asyncio.Event()  # set once the first full reconcile is done

    async def run(self) -> None:
        resync = asyncio.create_task(self._periodic_resync(), name=f"{self.source.name} resync")
        report = asyncio.create_task(self._report_in_sync(), name=f"{self.source.name} in sync")
        try:
            watcher = ListWatcher(self.source.list_method(self.kube))
            async for event in watcher.events():
                if isinstance(event, Listed):
                    wires = [self._wire(item) for item in event.items]
                    del event  # the listed objects: only the (trimmed) wire forms are kept
                    self.reconciler.objects = {_key(self.source, w): w for w in wires}
                    del wires
                    await self.resync()
                    self.synced.set()
                elif isinstance(event, Changed):
                    wire = self._wire(event.object)
                    key = _key(self.source, wire)
                    if event.type == "DELETED":
                        self.reconciler.objects.pop(key, None)
                    else:
                        self.reconciler.objects[key] = wire
                    self.workers.enqueue(key)
                else:
                    assert isinstance(event, Bookmark)
        finally:
            for task in (resync, report):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await self.workers.close()

    def _wire(self, item: Any) -> KubeObject:
        wire = self.kube.to_wire(item)
        return self.source.trim(wire) if self.source.trim is not None else wire

    async def resync(self) -> None:
        """Enqueue every key Kubernetes has and every key of a Calico resource we own."""
        owned = await self.reconciler.owned_keys()
        self.workers.enqueue_all(set(self.reconciler.objects) | owned)

    async def _report_in_sync(self) -> None:
        started = asyncio.get_running_loop().time()
        await self.synced.wait()
        await self.workers.idle()
        self.in_sync.set()
        log.info(
            "%s controller: in sync (%d objects, %.1fs)",
            self.source.name,
            len(self.reconciler.objects),
            asyncio.get_running_loop().time() - started,
        )

    async def _periodic_resync(self) -> None:
        await self.synced.wait()
        while True:
            await asyncio.sleep(self.reconciler_period)
            try:
                await self.resync()
            except Exception as error:  # the next period tries again
                log.warning("%s controller: periodic resync failed: %s", self.source.name, error)


def controller(
    kube: KubeClient,
    store: ResourceStore,
    binding: Binding,
    *,
    reconciler_period: float = RECONCILER_PERIOD,
) -> Controller:
    """The controller that keeps ``binding``'s Calico resources in step with Kubernetes."""
    return Controller(
        kube, binding.source, Reconciler(store, binding), reconciler_period=reconciler_period
    )

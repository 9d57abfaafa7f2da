"""``ResourceStore``: Calico's v3 client semantics (libcalico-go ``clientv3``) over any KVStore.

What it is: create/update/apply/delete/get/list/watch of ``projectcalico.org/v3`` resources at
Calico's etcd keys, with Calico's rules for metadata and revisions.  What it is not: the codec
or the validation rules (``pycalico.model``), the key layout (``paths``), or calicoctl's own
policies (such as refusing ClusterInformation writes).

Invariants:

* ``metadata.resourceVersion`` is the key's etcd mod revision as a decimal string, set on every
  read and returned by every write; it is never stored in the value.
* ``create`` refuses a set resourceVersion, assigns a new ``uid`` (UUID4) and
  ``creationTimestamp`` (RFC 3339, UTC); ``update`` needs a resourceVersion, is a
  compare-and-swap on it, and keeps ``uid``/``creationTimestamp`` as stored (omitted ones are
  filled in, different ones are refused).
* Every write is defaulted and validated by the model first; IPPools may not overlap another
  pool nor change ``cidr``/``blockSize``.
* The ``projectcalico-default-allow`` Profile exists on every read and is never stored; it
  cannot be created, updated or deleted.
* A lost race raises ``RevisionConflict``/``KeyAlreadyExists`` with the stored object decoded as
  ``.current_resource``.  Errors name the resource as Calico does: ``IPPool(pool-1)``,
  ``NetworkPolicy(ns/name)``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from pycalico.datastore import paths
from pycalico.datastore.api import (
    DatastoreError,
    EventType,
    InvalidResource,
    KeyAlreadyExists,
    KeyNotFound,
    KeyValue,
    KVStore,
    ResourceEvent,
    ResourceList,
    RevisionConflict,
    WatchEventType,
)
from pycalico.datastore.retry import RetriesExhausted, read_modify_write
from pycalico.model.codec import (
    ValidationFailure,
    apply_defaults,
    decode_value,
    decode_versioned_value,
    decode_versioned_values,
    encode_value,
    immutable_field_changes,
    pool_overlaps,
    validate_resource,
)
from pycalico.model.ipam import IPPool
from pycalico.model.kinds import KINDS, KindInfo, UnknownKind, lookup_kind
from pycalico.model.meta import Resource

DEFAULT_ALLOW_PROFILE = "projectcalico-default-allow"
_DEFAULT_ALLOW_VALUE = (
    b'{"apiVersion":"projectcalico.org/v3","kind":"Profile",'
    b'"metadata":{"name":"projectcalico-default-allow","resourceVersion":"1"},'
    b'"spec":{"ingress":[{"action":"Allow"}],"egress":[{"action":"Allow"}]}}'
)
# Calico's calicoctl retries a replace 5 times; apply without a version races only with other
# writers of the same object, so allow a few more, with a little jitter between attempts.
APPLY_ATTEMPTS = 10

KindRef = str | KindInfo | type[Resource]


def _unreadable(key: str, error: ValidationFailure) -> InvalidResource:
    problem = error.problems[0] if error.problems else None
    return InvalidResource(
        f"stored value at {key} cannot be read: {error}",
        field=problem.field if problem else None,
    )


def decode_stored(info: KindInfo, key: str, value: bytes, revision: int) -> Resource:
    """A stored value as a resource whose resourceVersion is ``revision``; raises
    ``InvalidResource`` naming ``key`` and the bad field."""
    try:
        return decode_versioned_value(value, revision, kind=info.model)
    except ValidationFailure as error:
        raise _unreadable(key, error) from error


def _resource_key(info: KindInfo, name: str, namespace: str | None) -> str:
    try:
        return paths.resource_key(info, name, namespace)
    except paths.InvalidKey as error:
        raise InvalidResource(str(error).partition(": ")[2] or str(error), error.field) from error


def _resource_prefix(info: KindInfo, namespace: str | None) -> str:
    try:
        return paths.resource_prefix(info, namespace)
    except paths.InvalidKey as error:
        raise InvalidResource(str(error).partition(": ")[2] or str(error), error.field) from error


def resolve_kind(kind: KindRef) -> KindInfo:
    """A KindInfo from a Kind, plural, calicoctl alias, KindInfo or model class."""
    if isinstance(kind, KindInfo):
        return kind
    if isinstance(kind, type):
        return KINDS[kind.KIND]
    info = KINDS.get(kind)
    if info is not None:
        return info
    try:
        return lookup_kind(kind)
    except UnknownKind as error:
        raise InvalidResource(str(error), field="kind") from error


def identify(info: KindInfo, name: str, namespace: str | None) -> str:
    """Calico's way to name a resource in errors: ``Kind(name)`` or ``Kind(namespace/name)``."""
    return f"{info.kind}({namespace}/{name})" if info.namespaced else f"{info.kind}({name})"


def rfc3339_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_revision(value: int | str | None, *, required: bool) -> int | None:
    if value is None or value == "":
        if required:
            raise InvalidResource("is required for an update", field="metadata.resourceVersion")
        return None
    try:
        revision = int(value)
    except ValueError:
        revision = 0
    if revision <= 0:
        raise InvalidResource(
            f"{value!r} is not a revision (a positive decimal number)",
            field="metadata.resourceVersion",
        )
    return revision


class ResourceStore:
    def __init__(
        self,
        kv: KVStore,
        *,
        now: Callable[[], str] = rfc3339_now,
        new_uid: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.kv = kv
        self._now = now
        self._new_uid = new_uid

    # --- decoding ---------------------------------------------------------------------------

    def _decode(self, info: KindInfo, kv: KeyValue) -> Resource:
        return decode_stored(info, kv.key, kv.value, kv.revision)

    def _decode_many(
        self,
        info: KindInfo,
        values: Sequence[bytes],
        revisions: Sequence[int],
        key_of: Callable[[int], str],
    ) -> list[Resource]:
        """Decode a range read in one batch (the fast path); if any value does not fit, decode
        each on its own so that the error names the bad one's key, as a single read would."""
        try:
            return decode_versioned_values(values, revisions, kind=info.model)
        except ValidationFailure:
            pass
        return [
            decode_stored(info, key_of(index), value, revision)
            for index, (value, revision) in enumerate(zip(values, revisions, strict=True))
        ]

    def _decode_current(self, info: KindInfo, kv: KeyValue | None) -> Resource | None:
        if kv is None:
            return None
        try:
            return self._decode(info, kv)
        except DatastoreError:
            return None

    # --- checks -----------------------------------------------------------------------------

    def _prepare(self, resource: Resource) -> tuple[KindInfo, Resource]:
        info = resolve_kind(resource.kind or type(resource).KIND)
        if not isinstance(resource, info.model):
            raise InvalidResource(
                f"a {type(resource).__name__} object cannot be stored as a {info.kind}",
                field="kind",
            )
        resource = apply_defaults(resource)
        issues = validate_resource(resource)
        if issues:
            (field, message), rest = issues[0], issues[1:]
            error = InvalidResource(
                message + "".join(f"; {f}: {m}" for f, m in rest), field=field or None
            )
            error.issues = issues  # type: ignore[attr-defined]
            raise error
        return info, resource

    def _refuse_default_allow(self, info: KindInfo, name: str, operation: str) -> None:
        if info.kind == "Profile" and name == DEFAULT_ALLOW_PROFILE:
            raise InvalidResource(
                f"{operation} is not supported on {DEFAULT_ALLOW_PROFILE}: it is built in",
                field="metadata.name",
            )

    async def _check_pool_overlap(self, pool: Resource) -> None:
        if not isinstance(pool, IPPool):
            return
        existing = await self.list(IPPool)
        message = pool_overlaps(pool, [p for p in existing.items if isinstance(p, IPPool)])
        if message:
            raise InvalidResource(message, field="spec.cidr")

    # --- writes -----------------------------------------------------------------------------

    async def create(self, resource: Resource) -> Resource:
        if resource.metadata.resource_version:
            raise InvalidResource("must not be set on create", field="metadata.resourceVersion")
        info, resource = self._prepare(resource)
        name, namespace = resource.metadata.name, resource.metadata.namespace
        self._refuse_default_allow(info, name, "Create")
        await self._check_pool_overlap(resource)
        resource = resource.with_metadata(
            uid=self._new_uid(), creation_timestamp=self._now(), resource_version=None
        )
        key = _resource_key(info, name, namespace)
        try:
            revision = await self.kv.create(key, encode_value(resource))
        except KeyAlreadyExists as error:
            raise self._exists(info, name, namespace, error.current) from error
        return resource.with_metadata(resource_version=str(revision))

    async def update(self, resource: Resource) -> Resource:
        revision = _parse_revision(resource.metadata.resource_version, required=True)
        assert revision is not None
        info, resource = self._prepare(resource)
        name, namespace = resource.metadata.name, resource.metadata.namespace
        self._refuse_default_allow(info, name, "Update")
        key = _resource_key(info, name, namespace)
        current_kv = await self.kv.get(key)
        if current_kv is None:
            raise KeyNotFound(identify(info, name, namespace))
        if current_kv.revision != revision:
            raise self._conflict(info, name, namespace, revision, current_kv)
        current = self._decode(info, current_kv)
        resource = self._keep_identity(resource, current)
        changed = immutable_field_changes(current, resource)
        if changed:
            raise InvalidResource(
                "cannot be changed after the resource is created"
                + "".join(f"; {path}: cannot be changed" for path in changed[1:]),
                field=changed[0],
            )
        try:
            new_revision = await self.kv.update(
                key, encode_value(resource.with_metadata(resource_version=None)), revision=revision
            )
        except RevisionConflict as error:
            raise self._conflict(info, name, namespace, revision, error.current) from error
        except KeyNotFound as error:
            raise KeyNotFound(identify(info, name, namespace)) from error
        return resource.with_metadata(resource_version=str(new_revision))

    def _keep_identity(self, resource: Resource, current: Resource) -> Resource:
        changes: dict[str, Any] = {}
        for field, wire in (("uid", "uid"), ("creation_timestamp", "creationTimestamp")):
            given = getattr(resource.metadata, field)
            stored = getattr(current.metadata, field)
            if given is None:
                changes[field] = stored
            elif stored is not None and given != stored:
                raise InvalidResource(
                    f"cannot be changed (stored {stored!r}, given {given!r})",
                    field=f"metadata.{wire}",
                )
        return resource.with_metadata(**changes) if changes else resource

    async def apply(self, resource: Resource) -> Resource:
        """Create, or update the existing object.  Without a resourceVersion the update is made
        at the current revision and retried on a lost race; with one, that revision is used
        (a stale one raises ``RevisionConflict``)."""
        given = resource.metadata.resource_version
        unversioned = resource.with_metadata(resource_version=None)

        async def step(last: DatastoreError | None) -> Resource:
            try:
                return await self.create(unversioned)
            except KeyAlreadyExists as error:
                current = error.current_resource
                if current is None:
                    raise
            return await self.update(
                unversioned.with_metadata(
                    resource_version=given or current.metadata.resource_version,
                    uid=current.metadata.uid,
                    creation_timestamp=current.metadata.creation_timestamp,
                )
            )

        # A stale resourceVersion the caller gave is final; a lost race is retried.
        conflicts: tuple[type[DatastoreError], ...] = (KeyAlreadyExists, KeyNotFound)
        try:
            return await read_modify_write(
                step,
                what=f"apply {resource.kind}({resource.name})",
                attempts=APPLY_ATTEMPTS,
                conflicts=conflicts if given else (*conflicts, RevisionConflict),
                max_delay=0.01,
            )
        except RetriesExhausted as exc:
            raise exc.last from None

    async def delete(
        self,
        kind: KindRef,
        name: str,
        namespace: str | None = None,
        *,
        revision: int | str | None = None,
    ) -> Resource:
        info = resolve_kind(kind)
        self._refuse_default_allow(info, name, "Delete")
        expected = _parse_revision(revision, required=False)
        key = _resource_key(info, name, namespace)
        try:
            deleted = await self.kv.delete(key, revision=expected)
        except KeyNotFound as error:
            raise KeyNotFound(identify(info, name, namespace)) from error
        except RevisionConflict as error:
            assert expected is not None
            raise self._conflict(info, name, namespace, expected, error.current) from error
        return self._decode(info, deleted)

    # --- reads ------------------------------------------------------------------------------

    async def get(self, kind: KindRef, name: str, namespace: str | None = None) -> Resource:
        info = resolve_kind(kind)
        if info.kind == "Profile" and name == DEFAULT_ALLOW_PROFILE:
            return self.default_allow_profile()
        key = _resource_key(info, name, namespace)
        found = await self.kv.get(key)
        if found is None:
            raise KeyNotFound(identify(info, name, namespace))
        return self._decode(info, found)

    async def list(self, kind: KindRef, namespace: str | None = None) -> ResourceList:
        """Every object of a kind, sorted by key; ``namespace=None`` means all namespaces."""
        info = resolve_kind(kind)
        prefix = _resource_prefix(info, namespace)
        list_raw = getattr(self.kv, "list_raw", None)
        raw_items: Any
        if list_raw is not None:
            # EtcdKVStore hands over the protobuf key-values: no KeyValue per item.
            raw_items, revision = await list_raw(prefix)
        else:
            listed = await self.kv.list(prefix)
            raw_items, revision = listed.items, listed.revision
        # The codec pauses the cyclic collector while it decodes (see ``decode_values``).
        if list_raw is not None:
            # Each ``.value`` is a copy out of the protobuf message: take it once.
            values = [item.value for item in raw_items]
            revisions = [item.mod_revision for item in raw_items]
            items = self._decode_many(info, values, revisions, lambda i: raw_items[i].key.decode())
        else:
            values = [item.value for item in raw_items]
            revisions = [item.revision for item in raw_items]
            items = self._decode_many(info, values, revisions, lambda i: raw_items[i].key)
        if info.kind == "Profile":
            items.append(self.default_allow_profile())
            items.sort(key=lambda resource: resource.metadata.name)
        return ResourceList(items=items, revision=revision)

    def default_allow_profile(self) -> Resource:
        return decode_value(_DEFAULT_ALLOW_VALUE, kind="Profile")

    def watch(
        self, kind: KindRef, namespace: str | None = None, *, revision: int | str | None = None
    ) -> AsyncIterator[ResourceEvent]:
        """Changes to a kind.  Without ``revision`` the current objects come first as ADDED
        events (Calico's etcd watcher lists first); with one, the changes after it.  Raises
        ``CompactedError`` when that revision is gone: list again and watch from the list."""
        return self._watch(resolve_kind(kind), namespace, _parse_revision(revision, required=False))

    async def _watch(
        self, info: KindInfo, namespace: str | None, revision: int | None
    ) -> AsyncIterator[ResourceEvent]:
        prefix = _resource_prefix(info, namespace)
        if revision is None:
            listed = await self.kv.list(prefix)
            for item in listed.items:
                yield ResourceEvent(
                    WatchEventType.ADDED, item.key, self._decode(info, item), item.revision
                )
            revision = listed.revision
        async for event in self.kv.watch(prefix, start_revision=revision + 1):
            if event.type is EventType.DELETE:
                resource = self._deleted_resource(info, event.key, event.previous, event.revision)
                yield ResourceEvent(WatchEventType.DELETED, event.key, resource, event.revision)
                continue
            kv = KeyValue(event.key, event.value or b"", event.revision)
            kind = (
                WatchEventType.ADDED
                if event.create_revision == event.revision
                else WatchEventType.MODIFIED
            )
            yield ResourceEvent(kind, event.key, self._decode(info, kv), event.revision)

    def _deleted_resource(
        self, info: KindInfo, key: str, previous: bytes | None, revision: int
    ) -> Resource:
        if previous is not None:
            return self._decode(info, KeyValue(key, previous, revision))
        # History no longer holds the old value: name the object, nothing more.
        _, namespace, name = paths.parse_resource_key(key)
        metadata = {"name": name, "resourceVersion": str(revision)}
        if namespace is not None:
            metadata["namespace"] = namespace
        resource: Resource = info.model.model_construct(kind=info.kind)
        return resource.model_copy(update={"metadata": resource.metadata.model_validate(metadata)})

    # --- errors -----------------------------------------------------------------------------

    def _exists(
        self, info: KindInfo, name: str, namespace: str | None, current: KeyValue | None
    ) -> KeyAlreadyExists:
        error = KeyAlreadyExists(identify(info, name, namespace), current)
        error.current_resource = self._decode_current(info, current)
        return error

    def _conflict(
        self,
        info: KindInfo,
        name: str,
        namespace: str | None,
        expected: int,
        current: KeyValue | None,
    ) -> RevisionConflict:
        error = RevisionConflict(identify(info, name, namespace), expected, current)
        error.current_resource = self._decode_current(info, current)
        return error

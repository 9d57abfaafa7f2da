"""The calicoctl resource commands, as async functions over a ``ResourceStore``.

Each function does one command's datastore work and returns plain results (``CommandResults``,
``ResultSet``s, message text); it prints nothing and never exits, so ``pycalico.ctl.main`` stays
a thin shell and the commands are testable with any store.

Semantics follow calicoctl's resource manager:

* ``create`` keeps only name, namespace, labels and annotations of the given metadata (the store
  fills uid and creationTimestamp).
* ``apply`` tries a create and falls back to an update when the resource exists.
* An update (``replace``, and ``apply`` of an existing resource) with a resourceVersion succeeds
  only if that is still the stored version; without one it reads the latest and retries up to 5
  times on a conflict.  The stored metadata is kept, with the given labels and annotations
  merged over the stored ones (calicoctl's ``mergeMetadataForUpdate``).
* create/apply/delete go on after a failed resource and report each failure; replace stops at
  the first.
* Before writing, the whole input is checked (``pycalico.ctl.preflight``); one refusal means
  nothing is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pycalico.ctl.columns import TableContext
from pycalico.ctl.loading import format_problems, settle_namespace
from pycalico.ctl.output import ResultSet
from pycalico.ctl.preflight import readonly_problem, write_problems
from pycalico.ctl.results import (
    APPLY,
    CREATE,
    DELETE,
    REPLACE,
    CommandError,
    CommandResults,
    Verb,
    describe_error,
)
from pycalico.datastore.api import (
    DatastoreError,
    DatastoreUnavailable,
    KeyAlreadyExists,
    KeyNotFound,
    RevisionConflict,
)
from pycalico.datastore.resources import ResourceStore
from pycalico.datastore.retry import RetriesExhausted, read_modify_write
from pycalico.model.codec import encode_resource
from pycalico.model.kinds import KindInfo
from pycalico.model.meta import Resource
from pycalico.model.validation import Problem

UPDATE_ATTEMPTS = 5
CONFLICT_BACKOFF = 1.0  # seconds: calicoctl waits this long between update attempts (at most)


def _single_kind(resources: Sequence[Resource]) -> str:
    kinds = {r.kind for r in resources}
    return kinds.pop() if len(kinds) == 1 else ""


def _describe(error: BaseException, resource: Resource) -> str:
    return describe_error(error, resource.kind, resource.name, resource.namespace)


def _refusal(verb: Verb, kinds: Sequence[str], problems: Sequence[Problem]) -> CommandError:
    distinct = set(kinds)
    kind = distinct.pop() if len(distinct) == 1 else ""
    if len(kinds) == 1:
        what = f"'{kind}' resource"
    else:
        what = f"any '{kind}' resources" if kind else "any resources"
    return CommandError(
        f"Failed to {verb.name} {what}, nothing was written: {format_problems(problems)}"
    )


async def check_before_write(
    store: ResourceStore, verb: Verb, resources: Sequence[Resource]
) -> None:
    """Raise ``CommandError`` (and write nothing) if any resource of the input is refused."""
    stored_pools: list[Resource] = []
    if any(r.kind == "IPPool" for r in resources):
        stored_pools = list((await store.list("IPPool")).items)
    problems = write_problems(verb, resources, stored_pools)
    if problems:
        raise _refusal(verb, [r.kind for r in resources], problems)


# --- writes -------------------------------------------------------------------------------------


def _for_create(resource: Resource) -> Resource:
    meta = resource.metadata
    return resource.model_copy(
        update={
            "metadata": type(meta)(
                name=meta.name,
                namespace=meta.namespace,
                labels=meta.labels,
                annotations=meta.annotations,
                resource_version=meta.resource_version,
            )
        }
    )


def _merged(stored: Resource, given: Resource) -> Resource:
    """The given resource with the stored metadata, its labels/annotations merged over them."""
    labels = {**(stored.metadata.labels or {}), **(given.metadata.labels or {})}
    annotations = {**(stored.metadata.annotations or {}), **(given.metadata.annotations or {})}
    metadata = stored.metadata.model_copy(
        update={"labels": labels or None, "annotations": annotations or None}
    )
    return given.model_copy(update={"metadata": metadata})


async def create_one(store: ResourceStore, resource: Resource) -> Resource:
    prepared = _for_create(resource)
    if prepared.metadata.resource_version:
        raise DatastoreError(
            f"error with field Metadata.ResourceVersion = "
            f"'{prepared.metadata.resource_version}' (field must not be set for a Create request)"
        )
    return await store.create(prepared)


async def update_one(store: ResourceStore, resource: Resource) -> Resource:
    """calicoctl's update: honour a given resourceVersion, else get-latest and retry."""
    wanted = resource.metadata.resource_version
    if wanted:
        stored = await store.get(resource.kind, resource.name, namespace=resource.namespace)
        if stored.metadata.resource_version != wanted:
            raise RevisionConflict(resource.name, int(wanted) if wanted.isdigit() else 0)
        return await store.update(_merged(stored, resource))

    async def step(last: DatastoreError | None) -> Resource:
        stored = await store.get(resource.kind, resource.name, namespace=resource.namespace)
        return await store.update(_merged(stored, resource))

    try:
        return await read_modify_write(
            step,
            what=f"update {resource.kind}({resource.name})",
            attempts=UPDATE_ATTEMPTS,
            base_delay=CONFLICT_BACKOFF,
            max_delay=CONFLICT_BACKOFF,
        )
    except RetriesExhausted as exc:
        raise DatastoreError(
            f"failed to update the resource: too many conflicting updates of "
            f"{resource.kind}({resource.name})"
        ) from exc


async def apply_one(store: ResourceStore, resource: Resource) -> Resource:
    original_version = resource.metadata.resource_version
    try:
        return await create_one(store, resource.with_metadata(resource_version=None))
    except KeyAlreadyExists:
        return await update_one(store, resource.with_metadata(resource_version=original_version))


async def write_all(
    store: ResourceStore,
    verb: Verb,
    resources: Sequence[Resource],
    *,
    skip_exists: bool = False,
) -> CommandResults:
    """create/apply/replace every resource, in order, after checking the whole input.

    An unreachable datastore ends the command at once: every further resource would only wait
    out the same retry timeout.
    """
    results = CommandResults(num_resources=len(resources), single_kind=_single_kind(resources))
    try:
        await check_before_write(store, verb, resources)
    except DatastoreError as error:
        results.errors.append(str(error))
        results.stopped = True
        return results
    for resource in resources:
        try:
            if verb is CREATE:
                await create_one(store, resource)
            elif verb is APPLY:
                await apply_one(store, resource)
            elif verb is REPLACE:
                await update_one(store, resource)
            results.handled += 1
        except KeyAlreadyExists as error:
            if skip_exists:
                results.handled += 1
                continue
            results.errors.append(_describe(error, resource))
        except DatastoreError as error:
            results.errors.append(_describe(error, resource))
            if verb is REPLACE or isinstance(error, DatastoreUnavailable):
                results.stopped = True
                break
    return results


@dataclass(frozen=True, slots=True)
class Target:
    """What a delete names: a resource's identity and, optionally, the version it must have."""

    kind: str
    name: str
    namespace: str | None = None
    resource_version: str | None = None

    @classmethod
    def of(cls, resource: Resource) -> Target:
        meta = resource.metadata
        return cls(resource.kind, meta.name, meta.namespace, meta.resource_version)


async def delete_all(
    store: ResourceStore,
    targets: Sequence[Target],
    *,
    single_kind: str = "",
    skip_not_exists: bool = False,
) -> CommandResults:
    """Delete each target (guarded by its resourceVersion when it carries one)."""
    refused = [
        Problem(f"ClusterInformation '{t.name}'", "", readonly_problem(DELETE))
        for t in targets
        if t.kind == "ClusterInformation"
    ]
    if refused:
        raise _refusal(DELETE, [t.kind for t in targets], refused)
    kinds = {t.kind for t in targets}
    results = CommandResults(
        num_resources=len(targets),
        single_kind=single_kind or (kinds.pop() if len(kinds) == 1 else ""),
    )
    for target in targets:
        try:
            await store.delete(
                target.kind,
                target.name,
                namespace=target.namespace,
                revision=target.resource_version or None,
            )
            results.handled += 1
        except KeyNotFound as error:
            if skip_not_exists:
                results.handled += 1
                continue
            results.errors.append(describe_error(error, target.kind, target.name, target.namespace))
        except DatastoreError as error:
            results.errors.append(describe_error(error, target.kind, target.name, target.namespace))
    return results


# --- reads ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GetAnswer:
    results: list[ResultSet]
    errors: list[str]
    context: TableContext


def _wire(resource: Resource) -> dict[str, Any]:
    return dict(encode_resource(resource))


def _tier_order_key(item: dict[str, Any]) -> tuple[int, float]:
    order = (item.get("spec") or {}).get("order")
    return (1, 0.0) if order is None else (0, float(order))


async def get_by_names(
    store: ResourceStore,
    info: KindInfo,
    names: Sequence[str],
    *,
    namespace: str | None,
    all_namespaces: bool,
) -> GetAnswer:
    """``get KIND [NAME...]``: a list when no name is given, else one answer per name."""
    results: list[ResultSet] = []
    errors: list[str] = []
    if not names:
        if info.namespaced:
            if all_namespaces and namespace:
                raise CommandError(
                    "cannot use both --namespace and --all-namespaces flags at the same time"
                )
            listed_namespace = None if all_namespaces else (namespace or "default")
        else:
            if all_namespaces or namespace:
                raise CommandError(f"{info.kind} is not namespaced")
            listed_namespace = None
        listed = await store.list(info.kind, namespace=listed_namespace)
        items = [_wire(r) for r in listed.items]
        if info.kind == "Tier":
            items.sort(key=_tier_order_key)
        results.append(ResultSet(info.kind, tuple(items), True, listed.revision, info.namespaced))
    for name in names:
        if info.namespaced and all_namespaces:
            raise CommandError("cannot use --all-namespace flag for getting a single resource")
        if not info.namespaced and (namespace or all_namespaces):
            raise CommandError(f"{info.kind} is not namespaced")
        item_namespace = (namespace or "default") if info.namespaced else None
        try:
            found = await store.get(info.kind, name, namespace=item_namespace)
        except KeyNotFound as error:
            errors.append(describe_error(error, info.kind, name, item_namespace))
            continue
        results.append(ResultSet(info.kind, (_wire(found),), False, 0, info.namespaced))
    return GetAnswer(results, errors, await table_context(store, results))


async def get_resources(store: ResourceStore, resources: Sequence[Resource]) -> GetAnswer:
    """``get -f FILE``: fetch each resource the file names."""
    results: list[ResultSet] = []
    errors: list[str] = []
    for resource in resources:
        try:
            found = await store.get(resource.kind, resource.name, namespace=resource.namespace)
        except KeyNotFound as error:
            errors.append(_describe(error, resource))
            continue
        namespaced = resource.namespace is not None
        results.append(ResultSet(resource.kind, (_wire(found),), False, 0, namespaced))
    return GetAnswer(results, errors, await table_context(store, results))


async def table_context(store: ResourceStore, results: Sequence[ResultSet]) -> TableContext:
    """Fetch the cluster AS number only when a Node row will show it."""
    needs_as_number = any(
        r.kind == "Node"
        and any(
            isinstance((i.get("spec") or {}).get("bgp"), dict)
            and not (i["spec"]["bgp"].get("asNumber"))
            for i in r.items
        )
        for r in results
    )
    if not needs_as_number:
        return TableContext()
    try:
        config = await store.get("BGPConfiguration", "default")
    except KeyNotFound:
        return TableContext("64512")
    except DatastoreError:
        return TableContext("unknown")
    as_number = (_wire(config).get("spec") or {}).get("asNumber")
    return TableContext(str(as_number) if as_number not in (None, "") else "64512")


# --- label and version --------------------------------------------------------------------------


async def label(
    store: ResourceStore,
    info: KindInfo,
    typed_kind: str,
    name: str,
    *,
    namespace: str | None,
    key: str,
    value: str | None,
    overwrite: bool,
) -> str:
    """Add, change or (``value is None``) remove one label; return the success message."""
    item_namespace = (namespace or "default") if info.namespaced else None
    if namespace and not info.namespaced:
        raise CommandError(
            f"failed to get {typed_kind} {name}, error {info.kind} is not namespaced"
        )
    try:
        resource = await store.get(info.kind, name, namespace=item_namespace)
    except KeyNotFound as error:
        detail = describe_error(error, info.kind, name, item_namespace)
        raise CommandError(f"failed to get {typed_kind} {name}, error {detail}") from error
    labels = dict(resource.metadata.labels or {})
    updated = False
    if value is None:
        if key not in labels:
            raise CommandError(
                f"cannot remove label of {typed_kind} {name}, key {key} does not exist"
            )
        del labels[key]
    elif key in labels:
        if not overwrite and labels[key] != value:
            raise CommandError(
                f"failed to update label of {typed_kind} {name}, key {key} is already present. "
                "please use '--overwrite' to set a new value."
            )
        labels[key] = value
        updated = True
    else:
        labels[key] = value
    try:
        # The version read above guards the write: a concurrent change makes it fail, not merge.
        await store.update(resource.with_metadata(labels=labels or None))
    except DatastoreError as error:
        raise CommandError(
            f"failed to update {typed_kind} {name}, label not changed: {error}"
        ) from error
    if value is None:
        return f"Successfully removed label {key} from {typed_kind} {name}"
    if updated:
        return f"Successfully updated label {key} on {typed_kind} {name}"
    return f"Successfully set label {key} on {typed_kind} {name}"


async def cluster_version(store: ResourceStore) -> tuple[str, str]:
    """``(calicoVersion, clusterType)`` of ClusterInformation ``default``, ``unknown`` if unset."""
    info = _wire(await store.get("ClusterInformation", "default"))
    spec = info.get("spec") or {}
    return (spec.get("calicoVersion") or "unknown", spec.get("clusterType") or "unknown")


__all__ = [
    "GetAnswer",
    "apply_one",
    "check_before_write",
    "cluster_version",
    "create_one",
    "delete_all",
    "get_by_names",
    "get_resources",
    "label",
    "settle_namespace",
    "update_one",
    "write_all",
]

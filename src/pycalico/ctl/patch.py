"""``calicoctl patch KIND NAME -p PATCH [-t strategic|merge|json] [-n NS]``: change in place.

A click command registered lazily by ``pycalico.ctl.main`` (``LAZY_GROUPS``).  As Calico's
calicoctl does (``resourcemgr.Patch``), one resource is read, the patch is applied to its wire
form, and the result is written back as an update guarded by the resourceVersion that was read
(a compare-and-swap).  Calico makes that write once and does not retry: a resource changed by
someone else between the read and the write fails with ``update conflict: Kind(name)``, and
nothing is written.  This command does the same.

Unlike Calico (which leaves validation to the write), the patched resource is decoded and
validated by the model exactly as ``apply`` input is (``pycalico.model.codec.decode_resource``:
shape, Calico's defaults, every semantic rule) before anything is written, so an invalid result
is refused naming each bad field.  A patch that changes the resource's identity (apiVersion,
kind, metadata.name, metadata.namespace) is refused.  Calico's help says only JSON is accepted
for ``--patch``; YAML is accepted here too, as a convenience.  Calico accepts ``--type`` but
always runs a strategic merge patch; here ``merge`` (RFC 7386) and ``json`` (RFC 6902) are
applied as named (``pycalico.ctl.patching``).

Messages are calicoctl's: ``Successfully patched 1 'Node' resource`` on stdout; failures on
stderr as ``Hit error: <reason>`` (``resource does not exist: Node(n1) with error: <nil>``,
``updating existing resource: update conflict: Node(n1)``), exit status 1.  An unknown kind is
``resource type 'x' is not supported``.

Not here: patch parsing and application (``pycalico.ctl.patching``), storage rules
(``pycalico.datastore.resources``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import click

from pycalico.ctl import client
from pycalico.ctl.main import _config, _config_options
from pycalico.ctl.patching import (
    DEFAULT_PATCH_TYPE,
    PATCH_TYPES,
    PatchError,
    apply_patch,
    describe,
    identity_changes,
    parse_patch,
)
from pycalico.ctl.preflight import readonly_problem
from pycalico.ctl.results import REPLACE, CommandError, describe_error, identity
from pycalico.datastore.api import DatastoreError, KeyNotFound
from pycalico.datastore.resources import ResourceStore
from pycalico.model.codec import decode_resource, encode_resource
from pycalico.model.kinds import KindInfo, UnknownKind, lookup_kind
from pycalico.model.meta import Resource
from pycalico.model.validation import ValidationFailure

# calicoctl's failure prefix for the write (resourcemgr: "updating existing resource: %v").
UPDATING = "updating existing resource: "


class PatchFailure(click.ClickException):
    """A failed patch: its message goes to stderr as it is, exit status 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(self.message, file=file or sys.stderr)


@dataclass(frozen=True, slots=True)
class PatchTarget:
    """The one resource a patch names: its kind, name and (for namespaced kinds) namespace."""

    info: KindInfo
    name: str
    namespace: str | None

    @property
    def identity(self) -> str:
        return identity(self.info.kind, self.name, self.namespace)


def resolve_target(kind: str, name: str, namespace: str | None) -> PatchTarget:
    """calicoctl's rules: a namespaced kind defaults to ``default``; a cluster-scoped kind may
    not be given ``-n``.  Raises ``CommandError`` with calicoctl's wording."""
    try:
        info = lookup_kind(kind)
    except UnknownKind as error:
        raise CommandError(f"resource type '{kind}' is not supported") from error
    if not info.namespaced:
        if namespace:
            raise CommandError(f"Hit error: {info.kind} is not namespaced")
        return PatchTarget(info, name, None)
    return PatchTarget(info, name, namespace or "default")


def patched_resource(
    stored: Resource, patch: Any, patch_type: str, target: PatchTarget
) -> Resource:
    """``stored`` with the patch applied, validated as ``apply`` input is; ``CommandError``
    naming every problem if the patch cannot apply or the result is not a valid resource."""
    document = encode_resource(stored)
    try:
        patched = apply_patch(document, patch, patch_type)
    except PatchError as error:
        raise CommandError(f"Hit error: performing {describe(patch_type)}: {error}") from error
    changes = identity_changes(document, patched)
    if changes:
        raise CommandError(
            "Hit error: the patch may not change which resource it is, nothing was written: "
            + "; ".join(changes)
        )
    try:
        resource = decode_resource(patched, document="patched")
    except ValidationFailure as failure:
        details = "; ".join(
            f"{p.field}: {p.message}" if p.field else p.message for p in failure.problems
        )
        raise CommandError(
            f"Hit error: the patched {target.identity} is invalid, nothing was written: {details}"
        ) from failure
    read_version = stored.metadata.resource_version
    given_version = resource.metadata.resource_version
    if given_version and given_version != read_version:
        # The patch names the version it was written against; anything else is a lost race.
        raise CommandError(
            f"Hit error: {UPDATING}update conflict: {target.identity}: the patch gives "
            f"resourceVersion '{given_version}' but the stored one is '{read_version}'"
        )
    return resource.with_metadata(resource_version=read_version)


async def patch_one(
    store: ResourceStore, target: PatchTarget, patch: Any, patch_type: str
) -> Resource:
    """Read, patch, validate, and write once guarded by the version read; the written resource.

    Raises ``CommandError`` with the text calicoctl prints on failure.
    """
    try:
        stored = await store.get(target.info.kind, target.name, namespace=target.namespace)
    except KeyNotFound as error:
        detail = describe_error(error, target.info.kind, target.name, target.namespace)
        raise CommandError(f"Hit error: {detail}") from error
    except DatastoreError as error:
        raise CommandError(f"Hit error: {error}") from error
    if target.info.kind == "ClusterInformation":  # calico/node owns it
        raise CommandError(f"Hit error: {UPDATING}{readonly_problem(REPLACE)}")
    resource = patched_resource(stored, patch, patch_type, target)
    try:
        return await store.update(resource)
    except DatastoreError as error:
        detail = describe_error(error, target.info.kind, target.name, target.namespace)
        raise CommandError(f"Hit error: {UPDATING}{detail}") from error


def run_patch(
    config_file: str | None,
    kind: str,
    name: str,
    patch_text: str,
    patch_type: str,
    namespace: str | None,
) -> str:
    """The whole command: the success line, or ``CommandError`` with the failure text."""
    if name == "":
        raise CommandError("resource name may not be empty")
    target = resolve_target(kind, name, namespace)
    try:
        patch = parse_patch(patch_text, patch_type)
    except PatchError as error:
        raise CommandError(f"Hit error: performing {describe(patch_type)}: {error}") from error

    async def work(store: ResourceStore) -> Resource:
        return await patch_one(store, target, patch, patch_type)

    try:
        client.run(config_file, work)
    except DatastoreError as error:  # e.g. etcd unreachable before the first read answered
        raise CommandError(f"Hit error: {error}") from error
    return f"Successfully patched 1 '{target.info.kind}' resource"


@click.command("patch")
@click.argument("kind")
@click.argument("name")
@click.option(
    "-p",
    "--patch",
    "patch_text",
    required=True,
    help="The patch, as JSON (or YAML): an object for strategic/merge, a list for json.",
)
@click.option(
    "-t",
    "--type",
    "patch_type",
    type=click.Choice(PATCH_TYPES),
    default=DEFAULT_PATCH_TYPE,
    show_default=True,
    help="strategic: strategic merge patch (on Calico resources: merge objects, replace "
    "lists); merge: JSON merge patch, RFC 7386; json: JSON patch, RFC 6902.",
)
@click.option(
    "-n",
    "--namespace",
    default=None,
    help="Namespace of a namespaced resource (NetworkPolicy, NetworkSet, WorkloadEndpoint); "
    "default: default.",
)
@_config_options
@click.pass_context
def patch(
    ctx: click.Context,
    /,
    kind: str,
    name: str,
    patch_text: str,
    patch_type: str,
    namespace: str | None,
    config_file: str | None,
    **_: Any,
) -> None:
    """Patch one resource, named by KIND and NAME, in place.

    The stored resource is read, patched, validated, and written back only if it has not
    changed since it was read.
    """
    try:
        message = run_patch(
            _config(ctx, config_file), kind, name, patch_text, patch_type, namespace
        )
    except CommandError as error:
        raise PatchFailure(str(error)) from error
    click.echo(message)


__all__ = [
    "PatchTarget",
    "patch",
    "patch_one",
    "patched_resource",
    "resolve_target",
    "run_patch",
]

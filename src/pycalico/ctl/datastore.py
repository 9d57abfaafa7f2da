"""``calicoctl datastore migrate lock|unlock``: mark the datastore not ready, or ready again.

A click group ``datastore`` registered by ``pycalico.ctl.main``.  As in Calico, the lock is the
``datastoreReady`` flag of the ClusterInformation ``default``: ``lock`` sets it to false
(creating the resource first if calico-node never did, as Calico's ``EnsureInitialized`` does)
and prints "Datastore locked."; ``unlock`` sets it to true and prints "Datastore unlocked.".
``calicoctl ipam release --from-report`` refuses to run on an unlocked datastore unless forced,
so an operator locks, checks, releases and unlocks.  Felix, as Calico's, stops and waits while
the flag is false (``pycalico.felix.calc.ready``): no datastore change reaches the kernel until
the datastore is unlocked.

Not here: ``export``/``import`` (a migration to the Kubernetes datastore, which pycalico does not
have).  Invariant: the flag is written by a compare-and-swap on the revision that was read, so a
concurrent change (calico-node updating the version) is retried, never overwritten.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Any

import click

from pycalico.datastore.api import DatastoreError, KeyAlreadyExists, KeyNotFound, RevisionConflict
from pycalico.datastore.resources import ResourceStore
from pycalico.datastore.retry import RetriesExhausted, read_modify_write
from pycalico.model.node import ClusterInformation

WRITE_ATTEMPTS = 5


class DatastoreFailure(click.ClickException):
    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(self.message, file=file or sys.stderr)


async def set_datastore_ready(store: ResourceStore, ready: bool) -> ClusterInformation:
    """Set ``datastoreReady`` on the ClusterInformation ``default``; create it when missing."""

    async def step(last: DatastoreError | None) -> ClusterInformation:
        try:
            current = await store.get(ClusterInformation, "default")
        except KeyNotFound:
            fresh = ClusterInformation.model_validate(
                {
                    "metadata": {"name": "default"},
                    "spec": {"clusterGUID": uuid.uuid4().hex, "datastoreReady": ready},
                }
            )
            created = await store.create(fresh)
            assert isinstance(created, ClusterInformation)
            return created
        assert isinstance(current, ClusterInformation)
        if current.spec.datastore_ready is ready:
            return current
        changed = current.model_copy(
            update={"spec": current.spec.model_copy(update={"datastore_ready": ready})}
        )
        updated = await store.update(changed)
        assert isinstance(updated, ClusterInformation)
        return updated

    try:
        return await read_modify_write(
            step,
            what="ClusterInformation default",
            attempts=WRITE_ATTEMPTS,
            conflicts=(RevisionConflict, KeyAlreadyExists),
        )
    except RetriesExhausted as exc:
        raise DatastoreError(
            f"ClusterInformation default kept changing: gave up after {WRITE_ATTEMPTS} attempts"
        ) from exc


def _run_ready(ctx: click.Context, config_file: str | None, ready: bool) -> None:
    from pycalico.datastore.config import DatastoreConfig, DatastoreConfigError
    from pycalico.datastore.etcd import EtcdKVStore

    own = config_file
    if own is None:
        root = ctx.find_root().obj
        value = root.get("config_file") if isinstance(root, dict) else None
        own = value if isinstance(value, str) else None
    try:
        config = DatastoreConfig.load(own)
    except DatastoreConfigError as exc:
        raise DatastoreFailure(f"Failed to create Calico API client: {exc}") from exc

    async def main() -> None:
        kv = EtcdKVStore.from_config(config, timeout=10.0, retry_timeout=5.0)
        try:
            await set_datastore_ready(ResourceStore(kv), ready)
        finally:
            await kv.close()

    action = "unlocking" if ready else "locking"
    try:
        asyncio.run(main())
    except DatastoreError as exc:
        raise DatastoreFailure(f"Error updating ClusterInformation for {action}: {exc}") from exc


_config_option = click.option(
    "-c", "--config", "config_file", default=None, help="Path to a CalicoAPIConfig file."
)


@click.group()
def datastore() -> None:
    """Datastore specific commands."""


@datastore.group()
def migrate() -> None:
    """Lock or unlock the datastore (export/import to Kubernetes: not in pycalico)."""


@migrate.command("lock")
@_config_option
@click.pass_context
def lock(ctx: click.Context, config_file: str | None) -> None:
    """Lock the datastore (ClusterInformation datastoreReady=false) for maintenance."""
    _run_ready(ctx, config_file, False)
    click.echo("Datastore locked.")


@migrate.command("unlock")
@_config_option
@click.pass_context
def unlock(ctx: click.Context, config_file: str | None) -> None:
    """Unlock the datastore (ClusterInformation datastoreReady=true)."""
    _run_ready(ctx, config_file, True)
    click.echo("Datastore unlocked.")

"""``calicoctl``: the command line (click), with Calico's command names, flags and messages.

This module only parses arguments, calls one async command function per invocation through
``pycalico.ctl.client.run`` (a single ``asyncio.run``), and prints what comes back: results on
stdout, errors on stderr, exit status 1 on any failure (also for a bad option, as calicoctl).

Commands: ``create``, ``apply``, ``replace``, ``delete``, ``get``, ``label``, ``validate``,
``version``, and subcommand groups loaded lazily from other modules (``ipam`` from
``pycalico.ctl.ipam``, ``node`` from ``pycalico.ctl.node``, ``patch`` from
``pycalico.ctl.patch``, ``datastore`` from ``pycalico.ctl.datastore``, the ``explain``
command from ``pycalico.ctl.explain``), imported only when
used; a group that fails to import fails loudly.

Not here: datastore logic (``actions``), formatting (``output``, ``columns``, ``results``),
reading manifests (``loading``).
"""

from __future__ import annotations

import importlib
import logging
import subprocess
import sys
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

import click

from pycalico.ctl import actions, client
from pycalico.ctl.loading import load_resources
from pycalico.ctl.output import OutputFormatError, parse_output, render
from pycalico.ctl.results import (
    APPLY,
    CREATE,
    REPLACE,
    VALIDATE,
    CommandError,
    CommandResults,
    Report,
    Verb,
    delete_report,
    report,
)
from pycalico.datastore.api import DatastoreError
from pycalico.model.kinds import KindInfo, UnknownKind, lookup_kind
from pycalico.model.meta import Resource

T = TypeVar("T")

# Subcommand groups other modules provide: name -> "module:attribute".  Imported on first use.
LAZY_GROUPS = {
    "datastore": "pycalico.ctl.datastore:datastore",
    "explain": "pycalico.ctl.explain:explain",
    "flows": "pycalico.ctl.flows:flows",
    "ipam": "pycalico.ctl.ipam:ipam",
    "node": "pycalico.ctl.node:node",
    "patch": "pycalico.ctl.patch:patch",
}

LOG_LEVELS = {
    "panic": logging.CRITICAL + 10,
    "fatal": logging.CRITICAL,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}


class Failure(click.ClickException):
    """A command failure: its message goes to stderr as it is, and the exit status is 1."""

    exit_code = 1

    def show(self, file: Any = None) -> None:
        click.echo(self.message, file=file or sys.stderr, nl=not self.message.endswith("\n"))


class CalicoctlUsageError(click.UsageError):
    """calicoctl answers a bad option with exit status 1, naming what was typed."""

    exit_code = 1


def _calicoctl_usage(error: click.UsageError, typed_args: Sequence[str]) -> CalicoctlUsageError:
    if isinstance(error, CalicoctlUsageError):
        return error
    typed = " ".join(typed_args)
    return CalicoctlUsageError(
        f"Invalid option: 'calicoctl {typed}'. Use flag '--help' to read about a specific "
        f"subcommand.\n{error.format_message()}",
        error.ctx,
    )


class CalicoctlGroup(click.Group):
    """A group that loads its subcommand groups lazily and exits 1 on usage errors."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_GROUPS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in LAZY_GROUPS:
            return _load_lazy(LAZY_GROUPS[cmd_name])
        return command

    typed_args: tuple[str, ...] = ()

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        self.typed_args = tuple(args)
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as error:
            raise _calicoctl_usage(error, self.typed_args) from error

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as error:
            raise _calicoctl_usage(error, self.typed_args) from error


def _load_lazy(target: str) -> click.Command:
    """Import a subcommand group when it is first used (keeps ``calicoctl get`` from importing
    IPAM).  Every group ships with calicoctl: a failed import is a bug and raises."""
    module_name, _, attribute = target.partition(":")
    command = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{target} is not a click command")
    return command


# --- shared options -------------------------------------------------------------------------


def _config_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """Options every datastore command accepts (calicoctl takes them after the command)."""
    function = click.option(
        "-c",
        "--config",
        "config_file",
        default=None,
        help="Path to a CalicoAPIConfig file (default /etc/calico/calicoctl.cfg, else the "
        "DATASTORE_TYPE/ETCD_* environment).",
    )(function)
    function = click.option(
        "--allow-version-mismatch", is_flag=True, help="Accepted for compatibility."
    )(function)
    function = click.option("--context", "kube_context", default=None, hidden=True)(function)
    return function


def _config(ctx: click.Context, config_file: str | None) -> str | None:
    """The command's ``-c``, else the one given before the command."""
    if config_file is not None:
        return config_file
    root = ctx.find_root().obj or {}
    value = root.get("config_file")
    return value if isinstance(value, str) else None


def _fail(text: str) -> Failure:
    return Failure(text)


def _run(ctx: click.Context, config_file: str | None, work: Callable[[Any], Any]) -> Any:
    try:
        return client.run(_config(ctx, config_file), work)
    except (CommandError, DatastoreError) as error:
        raise _fail(str(error)) from error


def _emit(result: Report) -> None:
    if result.stdout:
        click.echo(result.stdout, nl=False)
    if result.failed or result.stderr:
        if result.failed:
            raise _fail(result.stderr)
        click.echo(result.stderr, nl=False, err=True)


def _lookup(kind: str) -> KindInfo:
    try:
        return lookup_kind(kind)
    except UnknownKind as error:
        raise CommandError(f"resource type '{kind}' is not supported") from error


def _check_names(names: Sequence[str]) -> None:
    if any(name == "" for name in names):
        raise _fail("resource name may not be empty")


def _load(
    filename: str, namespace: str | None, recursive: bool, skip_empty: bool
) -> list[Resource]:
    try:
        return load_resources(
            filename, namespace=namespace, recursive=recursive, skip_empty=skip_empty
        )
    except CommandError as error:
        raise _fail(str(error)) from error


# --- the group ------------------------------------------------------------------------------


@click.group(cls=CalicoctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-l",
    "--log-level",
    default="panic",
    show_default=True,
    help="One of panic, fatal, error, warn, info, debug.",
)
@click.option("-c", "--config", "config_file", default=None, help="CalicoAPIConfig file.")
@click.option("--context", "kube_context", default=None, hidden=True)
@click.option("--allow-version-mismatch", is_flag=True, help="Accepted for compatibility.")
@click.pass_context
def cli(
    ctx: click.Context,
    log_level: str,
    config_file: str | None,
    kube_context: str | None,
    allow_version_mismatch: bool,
) -> None:
    """calicoctl manages Calico network and security policy, endpoint configuration and IPAM
    in a pycalico (etcd v3) datastore."""
    level = LOG_LEVELS.get(log_level.lower())
    if level is None:
        raise _fail(
            f"Unknown log level: {log_level}, expected one of: \n"
            "panic, fatal, error, warn, info, debug."
        )
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s [%(levelname)s][%(name)s] %(message)s"
    )
    ctx.obj = {"config_file": config_file}


# --- create / apply / replace / validate ----------------------------------------------------------


def _file_options(function: Callable[..., Any]) -> Callable[..., Any]:
    function = click.option(
        "-f",
        "--filename",
        required=True,
        help='File, directory or "-" for stdin, holding YAML or JSON resources.',
    )(function)
    function = click.option("-R", "--recursive", is_flag=True, help="Recurse into directories.")(
        function
    )
    function = click.option(
        "--skip-empty", is_flag=True, help="Do not fail on files with no resources."
    )(function)
    function = click.option(
        "-n", "--namespace", default=None, help="Namespace for namespaced resources."
    )(function)
    return _config_options(function)


def _write_command(verb: Verb, help_text: str) -> click.Command:
    @click.pass_context
    def command(
        ctx: click.Context,
        /,
        filename: str,
        recursive: bool,
        skip_empty: bool,
        namespace: str | None,
        config_file: str | None,
        skip_exists: bool = False,
        **_: Any,
    ) -> None:
        resources = _load(filename, namespace, recursive, skip_empty)
        if verb is VALIDATE:
            single = {r.kind for r in resources}
            results = CommandResults(
                num_resources=len(resources),
                single_kind=single.pop() if len(single) == 1 else "",
                handled=len(resources),
            )
            _emit(report(verb, results))
            return
        if not resources:
            click.echo("No resources specified")
            return

        async def work(store: Any) -> CommandResults:
            return await actions.write_all(store, verb, resources, skip_exists=skip_exists)

        _emit(report(verb, _run(ctx, config_file, work)))

    command.__doc__ = help_text
    decorated = _file_options(command)
    if verb is CREATE:
        decorated = click.option(
            "--skip-exists", is_flag=True, help="Skip resources that already exist."
        )(decorated)
    return click.command(verb.name)(decorated)


cli.add_command(
    _write_command(CREATE, "Create resources from a file, directory or stdin (fail if they exist).")
)
cli.add_command(
    _write_command(APPLY, "Create resources, or replace them where they already exist.")
)
cli.add_command(_write_command(REPLACE, "Replace existing resources with the given ones."))
cli.add_command(_write_command(VALIDATE, "Validate resources without writing them."))


# --- delete -----------------------------------------------------------------------------------


@cli.command()
@click.argument("kind", required=False)
@click.argument("names", nargs=-1)
@click.option("-f", "--filename", default=None, help='File, directory or "-" (stdin).')
@click.option("-R", "--recursive", is_flag=True)
@click.option("--skip-empty", is_flag=True)
@click.option("-n", "--namespace", default=None)
@click.option("--skip-not-exists", is_flag=True, help="Count missing resources as deleted.")
@_config_options
@click.pass_context
def delete(
    ctx: click.Context,
    /,
    kind: str | None,
    names: tuple[str, ...],
    filename: str | None,
    recursive: bool,
    skip_empty: bool,
    namespace: str | None,
    skip_not_exists: bool,
    config_file: str | None,
    **_: Any,
) -> None:
    """Delete resources named in a file, or by KIND and NAME."""
    single_kind = ""
    if filename is not None:
        if kind is not None:
            raise click.UsageError("give either -f FILE or KIND NAME..., not both")
        targets = [actions.Target.of(r) for r in _load(filename, namespace, recursive, skip_empty)]
    else:
        if kind is None or not names:
            raise click.UsageError("delete needs -f FILE, or a KIND and at least one NAME")
        _check_names(names)
        try:
            info = _lookup(kind)
        except CommandError as error:
            raise _fail(str(error)) from error
        if namespace and not info.namespaced:
            raise _fail(f"{info.kind} is not namespaced")
        item_namespace = (namespace or "default") if info.namespaced else None
        targets = [actions.Target(info.kind, n, item_namespace) for n in names]
        single_kind = info.kind

    async def work(store: Any) -> CommandResults:
        return await actions.delete_all(
            store, targets, single_kind=single_kind, skip_not_exists=skip_not_exists
        )

    _emit(delete_report(_run(ctx, config_file, work)))


# --- get --------------------------------------------------------------------------------------


@cli.command()
@click.argument("kind", required=False)
@click.argument("names", nargs=-1)
@click.option("-f", "--filename", default=None, help='File, directory or "-" (stdin).')
@click.option("-R", "--recursive", is_flag=True)
@click.option("--skip-empty", is_flag=True)
@click.option(
    "-o",
    "--output",
    default="ps",
    show_default=True,
    help="ps, wide, yaml, json, name, or custom-columns=COL,COL.",
)
@click.option("-n", "--namespace", default=None)
@click.option("-A", "-a", "--all-namespaces", is_flag=True, help="List across all namespaces.")
@click.option("--export", is_flag=True, help="Strip cluster-specific metadata (with a NAME).")
@_config_options
@click.pass_context
def get(
    ctx: click.Context,
    /,
    kind: str | None,
    names: tuple[str, ...],
    filename: str | None,
    recursive: bool,
    skip_empty: bool,
    output: str,
    namespace: str | None,
    all_namespaces: bool,
    export: bool,
    config_file: str | None,
    **_: Any,
) -> None:
    """Show resources of a KIND (all, or the NAMEs given), or those named in a file."""
    try:
        spec = parse_output(output)
    except OutputFormatError as error:
        raise _fail(str(error)) from error
    _check_names(names)
    work: Callable[[Any], Any]
    if filename is not None:
        resources = _load(filename, namespace, recursive, skip_empty)

        async def work(store: Any) -> actions.GetAnswer:
            return await actions.get_resources(store, resources)

    elif kind is None:
        # One message (not click's plus calicoctl's): what is missing, and where help is.
        raise CalicoctlUsageError(
            "Invalid option: 'calicoctl get' needs a KIND (e.g. `calicoctl get ippools`) or "
            "-f FILE. Use flag '--help' to read about a specific subcommand."
        )
    else:
        try:
            info = _lookup(kind)
        except CommandError as error:
            raise _fail(f"Failed to get resources: {error}") from error

        async def work(store: Any) -> actions.GetAnswer:
            return await actions.get_by_names(
                store, info, names, namespace=namespace, all_namespaces=all_namespaces
            )

    try:
        answer = _run(ctx, config_file, work)
    except Failure as error:
        raise _fail(f"Failed to get resources: {error.message}") from error
    results = answer.results
    if export and names:
        results = [_exported(r) for r in results]
    try:
        text = render(
            results,
            spec,
            print_namespace=all_namespaces or bool(namespace),
            context=answer.context,
        )
    except ValueError as error:
        raise _fail(str(error)) from error
    click.echo(text, nl=False)
    if answer.errors:
        raise _fail("\n".join(answer.errors))


def _exported(result: Any) -> Any:
    """``--export``: drop the metadata the cluster set (namespace, uid, version, timestamps)."""
    from dataclasses import replace

    stripped = []
    for item in result.items:
        meta = {
            k: v
            for k, v in (item.get("metadata") or {}).items()
            if k
            not in ("namespace", "uid", "resourceVersion", "creationTimestamp", "deletionTimestamp")
        }
        stripped.append({**item, "metadata": meta})
    return replace(result, items=tuple(stripped))


# --- label ------------------------------------------------------------------------------------


@cli.command()
@click.argument("kind")
@click.argument("name")
@click.argument("label_text", metavar="KEY=VALUE|KEY")
@click.option("--overwrite", is_flag=True, help="Replace the value of an existing key.")
@click.option("--remove", is_flag=True, help="Remove the key.")
@click.option("-n", "--namespace", default=None)
@_config_options
@click.pass_context
def label(
    ctx: click.Context,
    /,
    kind: str,
    name: str,
    label_text: str,
    overwrite: bool,
    remove: bool,
    namespace: str | None,
    config_file: str | None,
    **_: Any,
) -> None:
    """Add, update (--overwrite) or remove (--remove) a label on one resource."""
    if overwrite and remove:
        raise click.UsageError("--overwrite and --remove cannot be used together")
    _check_names([name])
    value: str | None
    if remove:
        key, value = label_text, None
    else:
        parts = label_text.split("=")
        if len(parts) != 2:
            raise _fail(f"invalid label {label_text}")
        key, value = parts
    try:
        info = _lookup(kind)
    except CommandError as error:
        raise _fail(f"failed to get {kind} {name}, error {error}") from error

    async def work(store: Any) -> str:
        return await actions.label(
            store,
            info,
            kind,
            name,
            namespace=namespace,
            key=key,
            value=value,
            overwrite=overwrite,
        )

    click.echo(_run(ctx, config_file, work))


# --- version ----------------------------------------------------------------------------------


def client_version() -> str:
    try:
        return "v" + metadata.version("pycalico")
    except metadata.PackageNotFoundError:
        return "unknown"


def git_commit() -> str:
    """The source tree's commit, when calicoctl runs from a git checkout."""
    try:
        done = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


@cli.command()
@_config_options
@click.pass_context
def version(ctx: click.Context, /, config_file: str | None, **_: Any) -> None:
    """Show the client version and, when the datastore answers, the cluster's."""
    click.echo(f"Client Version:    {client_version()}")
    click.echo(f"Git commit:        {git_commit()}")
    try:
        cluster_version, cluster_type = _run(ctx, config_file, actions.cluster_version)
    except Failure as error:
        raise _fail(f"Unable to retrieve Cluster Version or Type: {error.message}") from error
    click.echo(f"Cluster Version:   {cluster_version}")
    click.echo(f"Cluster Type:      {cluster_type}")


# --- entry point ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """The ``calicoctl`` console script."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="calicoctl")
    except DatastoreError as error:  # a failure no command translated: still one line, exit 1
        click.echo(str(error), err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()

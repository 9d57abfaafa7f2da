"""Reading ``-f`` input: files, directories and stdin, decoded and validated as a whole.

Every document of every file is decoded and validated before the caller writes anything: the
result is either the complete list of resources, or a ``CommandError`` that lists every problem
(document, field path, message) and nothing is written.  Namespaces are settled here too, with
calicoctl's rules (``-n`` fills a missing namespace, a namespaced resource defaults to
``default``, a cluster-scoped resource must not carry one), so a namespace mistake also stops
the whole input.

Not here: talking to the datastore.  Reads files and stdin only.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from pycalico.ctl.results import CommandError
from pycalico.model.codec import load_documents
from pycalico.model.kinds import lookup_kind
from pycalico.model.meta import Resource
from pycalico.model.validation import Problem, ValidationFailure

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")


def _files_of(filename: str, recursive: bool) -> list[Path]:
    path = Path(filename)
    if not path.is_dir():
        return [path]
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in path.glob(pattern) if p.is_file() and p.suffix in MANIFEST_SUFFIXES)


def read_sources(filename: str, recursive: bool = False) -> list[tuple[str, str]]:
    """``(source name, text)`` of each input: ``-`` is stdin, a directory its manifests."""
    if filename == "-":
        return [("stdin", sys.stdin.read())]
    sources = []
    for path in _files_of(filename, recursive):
        try:
            sources.append((str(path), path.read_text()))
        except OSError as error:
            raise CommandError(
                f"Failed to execute command: open {path}: {error.strerror or error}"
            ) from error
    if not sources:
        raise CommandError(f"No resources specified in directory {filename}")
    return sources


def format_problems(problems: Sequence[Problem]) -> str:
    """Every problem on its own line, as ``<document>: <field>: <message>``."""
    if len(problems) == 1:
        return str(problems[0])
    lines = "".join(f"\n  {p}" for p in problems)
    return f"{len(problems)} problems:{lines}"


def settle_namespace(
    resource: Resource,
    namespace: str | None,
    all_namespaces: bool = False,
    *,
    listing: bool = False,
) -> Resource:
    """Apply calicoctl's namespace rules to one resource (raises ``ValueError`` with its text).

    ``listing`` is for ``get``: there ``-A`` clears the namespace so every namespace is listed.
    """
    info = lookup_kind(resource.kind)
    own = resource.metadata.namespace or ""
    cli = namespace or ""
    if info.namespaced:
        if all_namespaces and cli:
            raise ValueError(
                "cannot use both --namespace and --all-namespaces flags at the same time"
            )
        if all_namespaces:
            return resource.with_metadata(namespace=None) if listing else resource
        if not own:
            return resource.with_metadata(namespace=cli or "default")
        if cli and own != cli:
            raise ValueError(f"resource namespace does not match client namespace. {own} != {cli}")
        return resource
    if own:
        raise ValueError(
            "namespace should not be specified for a non-namespaced resource. "
            f"{resource.kind} is not a namespaced resource"
        )
    if all_namespaces or cli:
        raise ValueError(f"{resource.kind} is not namespaced")
    return resource


def load_resources(
    filename: str,
    *,
    namespace: str | None = None,
    recursive: bool = False,
    skip_empty: bool = False,
) -> list[Resource]:
    """All resources of ``filename``, validated and with namespaces settled, or CommandError."""
    resources: list[Resource] = []
    problems: list[Problem] = []
    for source, text in read_sources(filename, recursive):
        try:
            loaded = load_documents(text, source, default_namespace=namespace or "default")
        except ValidationFailure as failure:
            problems.extend(failure.problems)
            continue
        if not loaded and not skip_empty:
            raise CommandError(f"No resources specified in file {source}")
        for index, resource in enumerate(loaded):
            try:
                resources.append(settle_namespace(resource, namespace))
            except ValueError as error:
                label = f"{source} document {index + 1} ({resource.kind} '{resource.name}')"
                problems.append(Problem(label, "metadata.namespace", str(error)))
    if problems:
        raise CommandError(
            f"Failed to execute command, nothing was written: {format_problems(problems)}"
        )
    return resources

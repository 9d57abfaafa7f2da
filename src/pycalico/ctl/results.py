"""What a resource command reports: calicoctl's success, partial-success and failure messages.

Pure.  A command gathers a ``CommandResults`` (how many resources it was given, which it handled,
what went wrong for which) and ``report`` turns it into the text calicoctl prints on stdout and on
stderr, and whether the command failed (exit code 1).  The wording is calicoctl's:
``Successfully applied 3 'IPPool' resource(s)``, ``Partial success: applied the first 1 out of
2 resources:``, ``Failed to create any 'BGPPeer' resources: [...]``, ``Hit error(s): [...]``.

Also here: the Go-style identity of a resource (``IPPool(pool-a)``, ``NetworkPolicy(ns/name)``)
and the translation of datastore errors into calicoctl's error texts.

Not here: running commands (``pycalico.ctl.actions``) or printing (``pycalico.ctl.main``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pycalico.datastore.api import (
    DatastoreError,
    KeyAlreadyExists,
    KeyNotFound,
    RevisionConflict,
)


class CommandError(Exception):
    """A failure that ends a command; its text is printed on stderr as it is."""


@dataclass(frozen=True, slots=True)
class Verb:
    """``apply``/``applied``: the command's name in the two forms its messages use."""

    name: str
    past: str


APPLY = Verb("apply", "applied")
CREATE = Verb("create", "created")
REPLACE = Verb("replace", "replaced")
DELETE = Verb("delete", "deleted")
VALIDATE = Verb("validate", "validated")


@dataclass(slots=True)
class CommandResults:
    """The outcome of a write command over a set of resources.

    ``single_kind`` is the kind when all resources are of one kind (or the kind was named on the
    command line), else empty.  ``handled`` counts successes; ``errors`` are the per-resource
    failures, in order; ``stopped`` is set when a failure ended the command early (replace).
    """

    num_resources: int = 0
    single_kind: str = ""
    handled: int = 0
    errors: list[str] = field(default_factory=list)
    stopped: bool = False


@dataclass(frozen=True, slots=True)
class Report:
    stdout: str = ""
    stderr: str = ""
    failed: bool = False


def identity(kind: str, name: str, namespace: str | None = None) -> str:
    """libcalico-go's resource key as its errors print it."""
    return f"{kind}({namespace}/{name})" if namespace else f"{kind}({name})"


def describe_error(error: BaseException, kind: str, name: str, namespace: str | None) -> str:
    """A datastore error as calicoctl words it for this resource."""
    ident = identity(kind, name, namespace)
    if isinstance(error, KeyNotFound):
        return f"resource does not exist: {ident} with error: <nil>"
    if isinstance(error, KeyAlreadyExists):
        return f"resource already exists: {ident}"
    if isinstance(error, RevisionConflict):
        return f"update conflict: {ident}"
    if isinstance(error, DatastoreError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def go_errors(errors: Sequence[str]) -> str:
    """A Go ``[]error`` printed with ``%v``."""
    return "[" + " ".join(errors) + "]"


def _kind_phrase(results: CommandResults, plural: bool) -> str:
    if not results.single_kind:
        return "resources" if plural else "resource"
    return f"'{results.single_kind}' " + ("resources" if plural else "resource")


def report(verb: Verb, results: CommandResults) -> Report:
    """The messages and exit status of create/apply/replace/validate."""
    if results.num_resources == 0:
        return Report(stdout="No resources specified\n")
    errors = go_errors(results.errors) if verb is not REPLACE else "; ".join(results.errors)
    if results.handled == 0:
        if results.num_resources == 1:
            what = _kind_phrase(results, plural=False)
        else:
            what = "any " + _kind_phrase(results, plural=True)
        return Report(stderr=f"Failed to {verb.name} {what}: {errors}\n", failed=True)
    if not results.errors:
        what = f"'{results.single_kind}' resource(s)" if results.single_kind else "resource(s)"
        return Report(stdout=f"Successfully {verb.past} {results.handled} {what}\n")
    what = f"'{results.single_kind}' resources" if results.single_kind else "resources"
    partial = (
        f"Partial success: {verb.past} the first {results.handled} out of "
        f"{results.num_resources} {what}:\n"
    )
    hit = "Hit error(s)" if verb in (APPLY, VALIDATE) else "Hit error"
    return Report(stdout=partial, stderr=f"{hit}: {errors}\n", failed=True)


def delete_report(results: CommandResults) -> Report:
    """``delete`` reports its successes and then each failure on its own line."""
    if results.num_resources == 0:
        return Report(stdout="No resources specified\n")
    stdout = ""
    if results.handled > 0:
        what = f"'{results.single_kind}' resource(s)" if results.single_kind else "resource(s)"
        stdout = f"Successfully deleted {results.handled} {what}\n"
    if not results.errors:
        return Report(stdout=stdout)
    prefix = (
        f"Failed to delete '{results.single_kind}' resource: "
        if results.single_kind
        else "Failed to delete resource: "
    )
    stderr = "".join(f"{prefix}{e}\n" for e in results.errors)
    return Report(stdout=stdout, stderr=stderr, failed=True)

"""Validation plumbing shared by every kind: problems, the failure that carries them, the base class.

This module is the vocabulary of validation, not the rules (those live with each kind, in
``issues()`` methods) and not the decoding (``pycalico.model.codec``).  Invariants:

* A rule reports an *issue*: a ``(field path, message)`` pair.  Paths use Calico's wire names,
  dotted, with list indexes in brackets: ``spec.ingress[0].destination.ports[1]``.
* ``issues()`` never raises for bad data: it yields every problem it finds, so one pass reports
  all of them.  It may assume the pydantic shape checks passed (types are right).
* A ``Problem`` adds the document it came from; ``ValidationFailure`` lists problems one per line as
  ``<document>: <field.path>: <message>``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Self

from pydantic import ValidationError

from pycalico.model.fields import label_value_problem, name_problem, qualified_name_problem
from pycalico.model.meta import CalicoModel, Resource

Issue = tuple[str, str]
"""``(field path, message)``: one thing wrong with one value."""


@dataclass(frozen=True)
class Problem:
    document: str
    field: str
    message: str

    def __str__(self) -> str:
        if self.field:
            return f"{self.document}: {self.field}: {self.message}"
        return f"{self.document}: {self.message}"


class ValidationFailure(ValueError):
    """One or more resources are invalid; ``problems`` lists every one found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class Checked(CalicoModel):
    """A wire object that can report semantic problems beyond its pydantic shape."""

    def issues(self, path: str) -> Iterator[Issue]:
        """Every problem with this object, its field paths prefixed by ``path``."""
        return iter(())


def join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def child_issues(path: str, name: str, value: Checked | None) -> Iterator[Issue]:
    if value is not None:
        yield from value.issues(join(path, name))


def list_issues(path: str, name: str, values: Iterable[Checked] | None) -> Iterator[Issue]:
    for index, value in enumerate(values or ()):
        yield from value.issues(f"{join(path, name)}[{index}]")


_PYDANTIC_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "unknown field",
    "frozen_instance": "cannot be changed",
}


def issues_from_pydantic(error: ValidationError, prefix: str = "") -> list[Issue]:
    """Turn pydantic's shape errors into issues with wire-name paths."""
    out: list[tuple[str, str, str]] = []
    for item in error.errors(include_url=False):
        path = prefix
        for part in item["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif _is_union_branch(str(part)):
                # pydantic names the union member it tried ("int", "str", "function-after[...]");
                # that is noise to a user who wrote a manifest.
                continue
            else:
                path = join(path, str(part))
        message = _PYDANTIC_MESSAGES.get(item["type"], item["msg"])
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        elif message.startswith("Assertion failed, "):
            message = message[len("Assertion failed, ") :]
        value = item.get("input")
        shown = repr(value)
        if (
            item["type"] not in _PYDANTIC_MESSAGES
            and _short(value)
            and shown not in message
            and str(value) not in message
        ):
            message = f"{message} (got {shown})"
        out.append((path, message, item["type"]))
    # A value that fits no branch of a union fails every branch; our own normaliser's message
    # (a value_error) is the one that says what is wrong, so keep only it for that path.
    explained = {path for path, _, kind in out if kind == "value_error"}
    return _dedupe(
        [
            (path, message)
            for path, message, kind in out
            if kind == "value_error" or path not in explained
        ]
    )


def _is_union_branch(part: str) -> bool:
    return (
        part in {"int", "str", "float", "bool"}
        or part.startswith(("constrained-", "function-", "literal[", "union[", "list[", "dict["))
        or "[" in part
    )


def _short(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and len(repr(value)) <= 60


def _dedupe(issues: list[Issue]) -> list[Issue]:
    seen: set[Issue] = set()
    out: list[Issue] = []
    for issue in issues:
        if issue not in seen:
            seen.add(issue)
            out.append(issue)
    return out


def wire_name(field: str) -> str:
    """The camelCase wire name of a snake_case field (for fields without a special alias)."""
    head, *rest = field.split("_")
    return head + "".join(part.capitalize() for part in rest)


# --- the resource base with checks and defaults ----------------------------------------------

_ANNOTATIONS_LIMIT = 256 * 1024


class CheckedResource(Resource):
    """A v3 kind: ``issues()`` reports semantic problems, ``with_defaults()`` fills write defaults."""

    def name_issue(self) -> str | None:
        """Most kinds use a DNS-1123 subdomain; kinds with other rules override this."""
        return name_problem(self.metadata.name)

    def spec_issues(self) -> Iterator[Issue]:
        return iter(())

    def issues(self) -> Iterator[Issue]:
        problem = self.name_issue()
        if problem:
            yield "metadata.name", problem
        namespace = self.metadata.namespace
        if self.NAMESPACED:
            if not namespace:
                yield "metadata.namespace", f"is required for a {self.KIND}"
            else:
                problem = name_problem(namespace, max_length=63)
                if problem:
                    yield "metadata.namespace", problem
        elif namespace:
            yield "metadata.namespace", f"must not be set: {self.KIND} is not namespaced"
        for key, value in (self.metadata.labels or {}).items():
            problem = qualified_name_problem(key) or label_value_problem(value)
            if problem:
                yield "metadata.labels", problem
        annotations = self.metadata.annotations or {}
        for key in annotations:
            problem = qualified_name_problem(key.lower())
            if problem:
                yield "metadata.annotations", problem
        size = sum(len(k) + len(v) for k, v in annotations.items())
        if size > _ANNOTATIONS_LIMIT:
            yield (
                "metadata.annotations",
                f"total size is too large by {size - _ANNOTATIONS_LIMIT} bytes",
            )
        yield from self.spec_issues()

    def with_defaults(self, *, namespace: str = "default") -> Self:
        """A copy with the defaults Calico fills in on write (see each kind)."""
        if self.NAMESPACED and not self.metadata.namespace:
            return self.model_copy(
                update={"metadata": self.metadata.model_copy(update={"namespace": namespace})}
            )
        return self

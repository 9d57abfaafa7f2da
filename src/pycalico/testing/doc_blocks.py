"""The fenced blocks of the project's Markdown docs, read as a test runs them.

What it is: a parser for README.md and docs/*.md that turns each fenced block into a
``DocBlock`` (the file, the line, its language, its text and the ``doc-test`` markers before it)
and the pure rules the docs test (``tests/e2e/test_docs.py``) applies to them:

* a block whose language is ``sh`` is a **command block**: every command in it is run (lines
  ending in ``\\`` continue; ``#`` lines are comments) and must exit 0, or the status its own
  trailing comment names (``# ... exit status 1``);
* ``<!-- doc-test: skip: REASON -->`` just before a block keeps it from running; the reason is
  what the test reports, so a skipped block is visible, never silently ignored;
* ``<!-- doc-test: output -->`` just before a block makes it the expected output of the command
  block above it: each of its lines must appear, in order, in what those commands printed, where
  ``<anything>`` matches any text, spaces any run of spaces (other lines may come between; a
  line ``...`` says so);
* ``<!-- doc-test: last: REASON -->`` runs a command block after every other one (the README's
  ``calico-lab down``, which removes the lab the other blocks use);
* every fenced block has a language, so a command block cannot hide as an unmarked one.

Placeholders in commands (``<db's address>``) are filled by the runner; a placeholder it does
not know fails the block.  What it is not: the runner (no processes here).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MARKER = re.compile(r"^<!--\s*doc-test:\s*(skip|output|last)\b:?\s*(.*?)\s*-->$")
FENCE = re.compile(r"^(\s*)(```+)\s*([\w+-]*)\s*$")
PLACEHOLDER = re.compile(r"<([A-Za-z][^<>]*)>")
EXIT_STATUS = re.compile(r"#.*\bexit status (\d+)")
COMMAND_LANGUAGES = frozenset({"sh"})


class DocFormatError(ValueError):
    """A doc breaks the rules above (an unlabelled fence, an unclosed one, a stray marker)."""


@dataclass(frozen=True)
class DocBlock:
    path: str
    line: int  # 1-based line of the opening fence
    language: str
    text: str
    markers: tuple[tuple[str, str], ...] = ()  # (kind, reason)

    @property
    def name(self) -> str:
        return f"{self.path}:{self.line}"

    def marker(self, kind: str) -> str | None:
        for found, reason in self.markers:
            if found == kind:
                return reason
        return None

    @property
    def runs(self) -> bool:
        return self.language in COMMAND_LANGUAGES and self.marker("skip") is None


@dataclass(frozen=True)
class Command:
    text: str
    line: int
    exit_status: int = 0


def parse(path: str, text: str) -> list[DocBlock]:
    """Every fenced block of one Markdown file, with the markers just before it."""
    blocks: list[DocBlock] = []
    lines = text.splitlines()
    pending: list[tuple[str, str]] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        marker = MARKER.match(line.strip())
        fence = FENCE.match(line)
        if marker:
            kind, reason = marker.group(1), marker.group(2)
            if kind in ("skip", "last") and not reason:
                raise DocFormatError(f"{path}:{index + 1}: doc-test {kind} needs a reason")
            pending.append((kind, reason))
        elif fence:
            indent, ticks, language = fence.groups()
            if not language:
                raise DocFormatError(
                    f"{path}:{index + 1}: a fenced block needs a language "
                    "(sh for commands the docs test runs; text, json, yaml, ... otherwise)"
                )
            end = index + 1
            while end < len(lines) and lines[end].strip() != ticks:
                end += 1
            if end == len(lines):
                raise DocFormatError(f"{path}:{index + 1}: the fenced block is never closed")
            body = "\n".join(
                item[len(indent) :] if item.startswith(indent) else item
                for item in lines[index + 1 : end]
            )
            blocks.append(DocBlock(path, index + 1, language, body, tuple(pending)))
            pending = []
            index = end
        elif line.strip() and pending:
            raise DocFormatError(f"{path}:{index + 1}: a doc-test marker must precede a block")
        index += 1
    if pending:
        raise DocFormatError(f"{path}: a doc-test marker at the end, before no block")
    return blocks


def commands(block: DocBlock) -> list[Command]:
    """The commands of a command block: continuation lines joined, comments dropped."""
    found: list[Command] = []
    current: list[str] = []
    start = 0
    for offset, line in enumerate(block.text.splitlines(), start=1):
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if not current:
            start = block.line + offset
        current.append(line.rstrip())
        if line.rstrip().endswith("\\"):
            continue
        text = "\n".join(current)
        status = EXIT_STATUS.search(current[-1])
        found.append(Command(text, start, int(status.group(1)) if status else 0))
        current = []
    if current:
        found.append(Command("\n".join(current), start))
    return found


def placeholders(text: str) -> list[str]:
    """The ``<name>`` placeholders in a command (not ``<`` redirections, which need a space)."""
    return [match.group(0) for match in PLACEHOLDER.finditer(text)]


def expected_output(blocks: Sequence[DocBlock]) -> dict[str, DocBlock]:
    """command block name -> the block marked as its output (the next marked block)."""
    found: dict[str, DocBlock] = {}
    last_command: DocBlock | None = None
    for block in blocks:
        if block.marker("output") is not None:
            if last_command is None:
                raise DocFormatError(f"{block.name}: an output block with no command block above")
            found[last_command.name] = block
        elif block.language in COMMAND_LANGUAGES:
            last_command = block
    return found


def _line_pattern(line: str) -> re.Pattern[str]:
    """``<...>`` matches any text and a run of spaces any run of spaces (table columns widen
    with their longest cell)."""
    pattern = []
    for part in re.split(r"(<[^<>]+>|\s+)", line.strip()):
        if part.startswith("<") and part.endswith(">"):
            pattern.append(".*?")
        elif part.isspace():
            pattern.append(r"\s+")
        else:
            pattern.append(re.escape(part))
    return re.compile("".join(pattern))


def output_mismatch(expected: str, actual: str) -> str | None:
    """None when every expected line appears in order in ``actual`` (other lines may come
    between them: ``...`` only says so to the reader); else the first line that does not."""
    got = [line.rstrip() for line in actual.splitlines()]
    position = 0
    for line in expected.splitlines():
        if not line.strip() or line.strip() == "...":
            continue
        pattern = _line_pattern(line)
        for index in range(position, len(got)):
            if pattern.search(got[index]):
                position = index + 1
                break
        else:
            return f"expected output line not found (after output line {position}): {line!r}"
    return None


def run_order(blocks: Iterable[DocBlock]) -> list[DocBlock]:
    """Blocks in reading order, those marked ``last`` moved to the end."""
    items = list(blocks)
    return [b for b in items if b.marker("last") is None] + [
        b for b in items if b.marker("last") is not None
    ]

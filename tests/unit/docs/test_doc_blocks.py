"""The rules by which the docs test reads the Markdown docs, and the docs themselves obeying
them: every fence labelled, markers before blocks, no reference a reader cannot follow."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pycalico.testing import doc_blocks
from pycalico.testing.doc_blocks import DocFormatError

REPO = Path(__file__).resolve().parents[3]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

SAMPLE = """# Title

<!-- doc-test: skip: it needs a GPU -->
```sh
make gpu
```

```sh
export A=1 \\
  B=2
# a comment
false   # fails on purpose; exit status 1
```

<!-- doc-test: output -->
```text
hello <name>
...
bye
```

<!-- doc-test: last: it removes everything -->
```sh
cleanup
```
"""


def test_blocks_markers_and_commands_are_read() -> None:
    blocks = doc_blocks.parse("x.md", SAMPLE)
    assert [(b.line, b.language) for b in blocks] == [
        (4, "sh"),
        (8, "sh"),
        (16, "text"),
        (23, "sh"),
    ]
    skipped, main, output, last = blocks
    assert skipped.marker("skip") == "it needs a GPU" and not skipped.runs
    assert main.runs and main.marker("skip") is None
    assert [(c.text, c.exit_status) for c in doc_blocks.commands(main)] == [
        ("export A=1 \\\n  B=2", 0),
        ("false   # fails on purpose; exit status 1", 1),
    ]
    assert doc_blocks.expected_output(blocks) == {main.name: output}
    assert doc_blocks.run_order(blocks)[-1] == last


def test_output_lines_match_in_order_with_wildcards_and_any_spacing() -> None:
    expected = "hello <name>\n...\n| a | b |\nbye"
    assert (
        doc_blocks.output_mismatch(expected, "x\nhello world\nmore\n| a     | b   |\nbye\n") is None
    )
    problem = doc_blocks.output_mismatch(expected, "bye\nhello you\n| a | b |\n")
    assert problem is not None and "'bye'" in problem


def test_placeholders_are_not_redirections() -> None:
    assert doc_blocks.placeholders("ping -c1 <db's address> < input") == ["<db's address>"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("```\nls\n```\n", "needs a language"),
        ("```sh\nls\n", "never closed"),
        ("<!-- doc-test: skip -->\n```sh\nls\n```\n", "needs a reason"),
        ("<!-- doc-test: output -->\nprose\n```text\nx\n```\n", "must precede a block"),
        ("<!-- doc-test: output -->\n```text\nx\n```\n", "no command block above"),
    ],
)
def test_malformed_docs_are_refused(text: str, problem: str) -> None:
    with pytest.raises(DocFormatError, match=problem):
        doc_blocks.expected_output(doc_blocks.parse("bad.md", text))


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_the_docs_follow_the_rules(path: Path) -> None:
    blocks = doc_blocks.parse(path.name, path.read_text())
    doc_blocks.expected_output(blocks)


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_the_docs_cite_nothing_a_reader_cannot_open(path: Path) -> None:
    text = path.read_text()
    assert not re.search(r"reference §|§\s*\d", text), "cites the unpublished reference"
    assert "the IPAM docs" not in text, "say docs/ipam.md"
    # README's pointer to the architecture is the layers change's (docs/architecture.md).
    if path.name != "README.md":
        assert "DESIGN.md" not in text, "DESIGN.md is not in the repository"
    for link in re.findall(r"\]\(([^)#]+\.md)(?:#[^)]*)?\)", text):
        assert (path.parent / link).exists(), f"link to {link}, which does not exist"

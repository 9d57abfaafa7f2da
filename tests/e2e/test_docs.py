"""Every command block of README.md and docs/*.md, run as a reader would, so the docs cannot drift.

Each ``sh`` block runs command by command in ``bash`` from the repository's root, with the
virtualenv's ``bin`` first on ``PATH``; the environment a command leaves (``export``, ``eval
$(calico-lab env)``) carries on to the next command of the same file.  A command must exit 0 (or
the status its comment names), and a block marked as its output must match what the commands
printed (rules: ``pycalico.testing.doc_blocks``).  Blocks marked ``skip`` are reported skipped
with their reason.

What the blocks run against, all private to this test and removed at its end: one lab (the
README's ``calico-lab up`` builds it under a private ``CALICO_LAB_DIR``/``CALICO_LAB_PREFIX``,
its ``down`` runs last, and the fixture runs ``down`` again whatever happened), and one scratch
etcd standing in for the docs' ``http://127.0.0.1:2379``.  Placeholders are filled from the lab
(``<db's address>``); the docs' ``clab-`` namespace prefix and ``/tmp/n1`` become the test's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pycalico.lab import state as lab_state
from pycalico.testing import doc_blocks
from pycalico.testing.doc_blocks import DocBlock
from pycalico.testing.etcd_server import EtcdServer
from tests.e2e.conftest import LabRunner

pytestmark = [pytest.mark.root, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _all_blocks() -> list[DocBlock]:
    blocks = []
    for path in DOCS:
        blocks += doc_blocks.parse(str(path.relative_to(REPO)), path.read_text())
    return blocks


BLOCKS = _all_blocks()
OUTPUTS = {
    name: block
    for path in DOCS
    for name, block in doc_blocks.expected_output(
        [b for b in BLOCKS if b.path == str(path.relative_to(REPO))]
    ).items()
}
COMMAND_BLOCKS = [b for b in doc_blocks.run_order(BLOCKS) if b.language == "sh"]


@dataclass
class DocSession:
    lab: LabRunner
    etcd: EtcdServer
    scratch: Path
    envs: dict[str, dict[str, str]] = field(default_factory=dict)

    def literals(self) -> dict[str, str]:
        """What the docs write literally, and what it is in this test."""
        return {
            "http://127.0.0.1:2379": self.etcd.endpoint,
            "clab-": f"{self.lab.prefix}-",
            "/tmp/n1": str(self.scratch / "n1"),
        }

    def placeholders(self) -> dict[str, Callable[[], str]]:
        def address(pod: str) -> Callable[[], str]:
            def find() -> str:
                state = lab_state.load(self.lab.state_dir)
                found = [p.ipv4 for p in (state.pods if state else ()) if p.name == pod]
                assert found, f"placeholder <{pod}'s address>: no pod {pod} in the lab"
                return found[0]

            return find

        return {"<db's address>": address("db"), "<web's address>": address("web")}

    def literal(self, text: str) -> str:
        for literal, value in self.literals().items():
            text = text.replace(literal, value)
        return text

    def fill(self, text: str) -> str:
        text = self.literal(text)
        known = self.placeholders()
        for placeholder in doc_blocks.placeholders(text):
            assert placeholder in known, f"unknown placeholder {placeholder} (add it to the test)"
            text = text.replace(placeholder, known[placeholder]())
        return text

    def env_for(self, path: str) -> dict[str, str]:
        if path not in self.envs:
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("ETCD_", "CALICO_", "DATASTORE_"))
            }
            env.update(
                self.lab.env,
                PATH=f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                COLUMNS="200",
            )
            self.envs[path] = env
        return self.envs[path]

    def run(self, block: DocBlock, command: doc_blocks.Command) -> str:
        env = self.env_for(block.path)
        saved = self.scratch / "env.out"
        script = f"{self.fill(command.text)}\n__rc=$?\nenv -0 > {saved}\nexit $__rc\n"
        done = subprocess.run(
            ["bash", "-c", script],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        output = done.stdout + done.stderr
        if done.returncode != command.exit_status:
            pytest.fail(
                f"{block.path}:{command.line}: `{command.text}` exited {done.returncode}, "
                f"the doc says {command.exit_status}:\n{output}{self.lab.logs()}"
            )
        if saved.exists():
            items = saved.read_bytes().split(b"\0")
            fresh = dict(i.decode().split("=", 1) for i in items if b"=" in i)
            env.clear()
            env.update({k: v for k, v in fresh.items() if k not in ("__rc", "_", "SHLVL")})
            saved.unlink()
        return output


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocSession]:
    scratch = tmp_path_factory.mktemp("docs")
    lab = LabRunner(scratch)
    try:
        with EtcdServer() as etcd:
            yield DocSession(lab, etcd, scratch)
    finally:
        lab.run("down", check=False)
        assert lab.leftovers() == []


@pytest.mark.parametrize("block", COMMAND_BLOCKS, ids=[b.name for b in COMMAND_BLOCKS])
def test_doc_block(block: DocBlock, session: DocSession) -> None:
    reason = block.marker("skip")
    if reason is not None:
        pytest.skip(f"{block.name}: {reason}")
    printed = "".join(session.run(block, command) for command in doc_blocks.commands(block))
    expected = OUTPUTS.get(block.name)
    if expected is not None:
        problem = doc_blocks.output_mismatch(session.literal(expected.text), printed)
        assert problem is None, f"{expected.name}: {problem}\n--- printed:\n{printed}"

"""The lab for end-to-end tests: ``LabRunner`` drives the real ``calico-lab`` executable with a
private state directory and namespace prefix (so a test never touches a user's lab), and always
runs ``down`` afterwards, also when the test fails."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycalico.lab import kernel
from pycalico.lab import state as lab_state

BIN = Path(sys.executable).parent


class LabRunner:
    def __init__(self, tmp: Path) -> None:
        self.prefix = "e" + uuid.uuid4().hex[:5]
        self.state_dir = str(tmp / "lab")
        self.env = {
            **os.environ,
            "CALICO_LAB_DIR": self.state_dir,
            "CALICO_LAB_PREFIX": self.prefix,
            "COLUMNS": "200",  # rich tables unwrapped
        }

    def run(
        self, *args: str, check: bool = True, timeout: float = 240
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(BIN / "calico-lab"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(
                f"calico-lab {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
                + self.logs()
            )
        return done

    def state(self) -> lab_state.LabState:
        lab = lab_state.load(self.state_dir)
        assert lab is not None, "no lab state"
        return lab

    def logs(self) -> str:
        parts = []
        for path in sorted(Path(self.state_dir).glob("nodes/*/log/*.log")):
            text = path.read_text(errors="replace")[-1500:]
            parts.append(f"\n--- {path}\n{text}")
        return "".join(parts)

    def leftovers(self) -> list[str]:
        """Whatever of this lab is still there: namespaces, processes, files."""
        found = [f"namespace {name}" for name in kernel.list_namespaces(self.prefix)]
        found += [f"process {pid}" for pid in kernel.pids_naming(self.state_dir)]
        if Path(self.state_dir).exists():
            found.append(f"directory {self.state_dir}")
        return found


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[LabRunner]:
    runner = LabRunner(tmp_path)
    try:
        yield runner
    finally:
        runner.run("down", check=False)

"""``python -m bench --help`` prints the usage and runs no benchmark (issue 19.5)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def run_bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_help_prints_usage_and_runs_nothing() -> None:
    for flag in ("--help", "-h"):
        done = run_bench(flag)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("usage: python -m bench")
        assert "bgp_convergence" in done.stdout
        assert "===" not in done.stdout  # no benchmark started


def test_unknown_name_is_refused_naming_it() -> None:
    done = run_bench("no_such_bench")
    assert done.returncode == 2
    assert "no benchmark named no_such_bench" in done.stdout

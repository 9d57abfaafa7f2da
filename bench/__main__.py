"""Runs every benchmark in this directory, one process each, and says which failed.

``python -m bench`` runs them all; ``python -m bench NAME...`` runs some; ``--quick`` is passed on
to each for a short smoke run.  Each benchmark prints its own figures, its reference ratio and the
command that reproduces it; docs/benchmarks.md records the latest full-size figures.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    flags = [arg for arg in argv if arg.startswith("-")]
    names = [arg for arg in argv if not arg.startswith("-")] or sorted(
        path.stem for path in HERE.glob("*.py") if not path.stem.startswith("_")
    )
    failed = []
    for name in names:
        print(f"\n=== bench.{name} ===", flush=True)
        result = subprocess.run([sys.executable, "-m", f"bench.{name}", *flags], cwd=HERE.parent)
        if result.returncode != 0:
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

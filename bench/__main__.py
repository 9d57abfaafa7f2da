"""Runs every benchmark in this directory, one process each, and says which failed.

``python -m bench`` runs them all; ``python -m bench NAME...`` runs some; ``--quick`` is passed on
to each for a short smoke run; ``--help`` prints the usage and the benchmarks' names and runs
nothing.  Each benchmark prints its own figures, its reference ratio and the command that
reproduces it; docs/benchmarks.md records the latest full-size figures.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    return sorted(path.stem for path in HERE.glob("*.py") if not path.stem.startswith("_"))


USAGE = """usage: python -m bench [--quick] [NAME ...]

Runs the named benchmarks (default: all), one process each, at full size; most need root and
must run under the shared lock (flock /tmp/pycalico-root.lock).  --quick: a short smoke run of
each.  `python -m bench.NAME --help` shows one benchmark's own options.

benchmarks: {names}"""


def main(argv: list[str]) -> int:
    if "-h" in argv or "--help" in argv:
        print(USAGE.format(names=", ".join(available())))
        return 0
    flags = [arg for arg in argv if arg.startswith("-")]
    unknown = [arg for arg in argv if not arg.startswith("-") and arg not in available()]
    if unknown:
        print(f"bench: no benchmark named {', '.join(unknown)} (have: {', '.join(available())})")
        return 2
    names = [arg for arg in argv if not arg.startswith("-")] or available()
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

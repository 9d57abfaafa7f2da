"""One ``calico-kube-controllers`` process for tests: started with an environment, its log and
status file in a directory, waited on by log line.

What it is: ``KubeControllersProcess(directory, name, env)``, the installed executable (the
virtualenv's, so a test runs the code under test) as a Deployment would start it, with
stdout and stderr in ``<directory>/<name>.log`` and ``--status-file <directory>/<name>-status.json``;
``POD_NAME`` is ``name`` (its leader-election identity).  What it is not: a fixture (callers
own the process and stop it, also on failure) or a Kubernetes/etcd client.

Invariants: ``wait_for`` fails at once, with the log's tail, if the process has exited;
``stop`` leaves no process behind (SIGKILL after 10 s).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from pycalico.testing.eventually import eventually

EXECUTABLE = str(Path(sys.executable).parent / "calico-kube-controllers")


class KubeControllersProcess:
    """One calico-kube-controllers process, its log and status file in ``directory``."""

    def __init__(self, directory: Path, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.log = directory / f"{name}.log"
        self.status = directory / f"{name}-status.json"
        self.env = {**env, "POD_NAME": name}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [EXECUTABLE, "--status-file", str(self.status)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self, signum: int = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def text(self) -> str:
        return self.log.read_text() if self.log.exists() else ""

    def count(self, line: str) -> int:
        return self.text().count(line)

    async def wait_for(self, line: str, *, times: int = 1, timeout: float = 30.0) -> float:
        """Wait until ``line`` has appeared ``times`` times; the monotonic time it was seen."""

        async def seen() -> float:
            assert self.process is not None and self.process.poll() is None, self.text()[-3000:]
            assert self.count(line) >= times, f"{self.name}: no {line!r} yet"
            return time.monotonic()

        return float(await eventually(seen, timeout=timeout, interval=0.1))

    def check(self, flag: str = "-r") -> subprocess.CompletedProcess[str]:
        """``calico-kube-controllers -r`` (or ``-l``) on this process's status file."""
        return subprocess.run([EXECUTABLE, flag, "-f", str(self.status)], capture_output=True,
                              text=True, timeout=30, check=False)  # fmt: skip

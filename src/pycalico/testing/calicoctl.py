"""The installed ``calicoctl`` as a subprocess, for integration tests: what a user types.

What it is: a runner bound to one etcd (``DATASTORE_TYPE=etcdv3``, ``ETCD_ENDPOINTS``; the test
process's own ``ETCD_*``/``CALICO_*`` variables are dropped so they cannot leak in), with
``ok``/``fails`` that assert the exit status and say what calicoctl printed when it is wrong,
and manifests written into a directory the test owns.  What it is not: a way around the
executable (tests that want the Python API call ``pycalico.ctl`` directly).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CALICOCTL = str(Path(sys.executable).parent / "calicoctl")


class Calicoctl:
    def __init__(self, endpoint: str, files: Path | None = None) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "CALICO_"))}
        self.env.update(DATASTORE_TYPE="etcdv3", ETCD_ENDPOINTS=endpoint)
        self.files = files
        self.written = 0

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CALICOCTL, *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    run = __call__

    def ok(self, *args: str, stdin: str | None = None) -> str:
        done = self(*args, stdin=stdin)
        assert done.returncode == 0, f"calicoctl {' '.join(args)}: {done.stderr}{done.stdout}"
        return done.stdout

    def fails(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        done = self(*args, stdin=stdin)
        assert done.returncode == 1, f"calicoctl {' '.join(args)} should fail: {done.stdout}"
        return done

    def manifest(self, text: str, name: str | None = None) -> str:
        """``text`` written to a file (``name``, else ``manifest-N.yaml``) in the test's dir."""
        assert self.files is not None, "Calicoctl(endpoint, files=tmp_path) to write manifests"
        self.written += 1
        path = self.files / (name or f"manifest-{self.written}.yaml")
        path.write_text(text)
        return str(path)

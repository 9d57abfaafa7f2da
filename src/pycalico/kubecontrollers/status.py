"""kube-controllers' status file, read by its readiness and liveness checks.

What it is: Calico's ``kube-controllers/pkg/status`` -- a set of named conditions (``Startup``,
``CalicoDatastore``, ``KubeAPIServer``; pycalico adds none) each ready or not with a reason,
written as JSON to ``/status/status.json`` whenever one changes, in Calico's shape::

    {"Readiness": {"CalicoDatastore": {"Ready": true, "Reason": ""}, ...}}

and ``check(path)``: what Calico's ``check-status -r`` / ``-l`` print and exit with (``Ready``
and 0 when every condition is ready, else the reasons of the others joined by ``"; "`` and 1;
no conditions at all is not ready).

What it is not: the health loop that sets the conditions (``health``).
Invariants: the file is replaced atomically (written beside it, then renamed), so a check
never reads half a file; a write that fails is logged, never raised (status is best effort).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_STATUS_FILE = "/status/status.json"


@dataclass(frozen=True)
class Condition:
    ready: bool
    reason: str = ""


class StatusFile:
    def __init__(self, path: str | os.PathLike[str] = DEFAULT_STATUS_FILE) -> None:
        self.path = Path(path)
        self.readiness: dict[str, Condition] = {}

    def set_ready(self, key: str, ready: bool, reason: str = "") -> None:
        """Record one condition; the file is rewritten only if it changed."""
        condition = Condition(ready, reason)
        if self.readiness.get(key) == condition:
            return
        self.readiness[key] = condition
        self._write()

    def ready(self) -> bool:
        return bool(self.readiness) and all(c.ready for c in self.readiness.values())

    def _write(self) -> None:
        document = {
            "Readiness": {
                key: {"Ready": c.ready, "Reason": c.reason} for key, c in self.readiness.items()
            }
        }
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            temporary.write_text(json.dumps(document))
            temporary.replace(self.path)
        except OSError as error:
            log.warning("cannot write status file %s: %s", self.path, error)


def check(path: str | os.PathLike[str]) -> tuple[bool, str]:
    """Calico's ``check-status``: (ready, the line to print)."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        return False, f"Failed to read status file {path}: {error}"
    readiness = document.get("Readiness") if isinstance(document, dict) else None
    if not isinstance(readiness, dict) or not readiness:
        return False, ""
    reasons = [
        str(c.get("Reason", ""))
        for c in readiness.values()
        if not (isinstance(c, dict) and c.get("Ready") is True)
    ]
    if not reasons:
        return True, "Ready"
    return False, "; ".join(reasons)

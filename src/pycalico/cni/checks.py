"""The checks the CNI specification's skel makes before any plugin code runs: container ID,
interface name and network name, and whether the configuration's version allows the command.

Pure (``pycalico.cni.spec`` only); every problem is a ``CniError`` with the specification's code
and the variable or key it concerns.
"""

from __future__ import annotations

import re

from pycalico.cni.spec import (
    ERR_INCOMPATIBLE_VERSION,
    ERR_INVALID_ENVIRONMENT,
    ERR_INVALID_NETWORK_CONFIG,
    CniError,
    Invocation,
)

_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$")


def validate_invocation(invocation: Invocation) -> None:
    if invocation.command in ("VERSION", "GC", "STATUS"):
        return
    if not _NAME_RE.match(invocation.container_id):
        raise CniError(
            f"CNI_CONTAINERID: invalid container ID {invocation.container_id!r}",
            code=ERR_INVALID_ENVIRONMENT,
        )
    name = invocation.ifname
    if invocation.command != "DEL" or name:
        problem = interface_name_problem(name)
        if problem:
            raise CniError(f"CNI_IFNAME: {problem}", code=ERR_INVALID_ENVIRONMENT)
    if not _NAME_RE.match(invocation.network_name or ""):
        raise CniError(
            f"name: invalid network name {invocation.network_name!r}",
            code=ERR_INVALID_NETWORK_CONFIG,
        )


def interface_name_problem(name: str) -> str | None:
    if not name:
        return "interface name is empty"
    if len(name) > 15:
        return f"interface name {name!r} is longer than 15 characters"
    if name in (".", "..") or any(c in name for c in "/:") or any(c.isspace() for c in name):
        return f"interface name {name!r} contains an invalid character ('/', ':' or whitespace)"
    return None


def version_allows(command: str, version: str) -> None:
    order = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
    minimum = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}.get(command)
    if minimum and order.index(version) < order.index(minimum):
        raise CniError(
            f"config version {version} does not allow {command} (needs {minimum} or later)",
            code=ERR_INCOMPATIBLE_VERSION,
        )

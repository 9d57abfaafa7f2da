"""Running another CNI plugin the standard way, and reading what it answered.

What it is: ``exec_plugin`` runs a delegated plugin (an IPAM plugin such as ``host-local``) as an
executable found on ``CNI_PATH``, with the caller's ``CNI_*`` environment and a configuration on
stdin, as libcni's ``invoke`` does; ``checked`` turns its answer into the result object or into a
``CniError`` that keeps the plugin's own code and message.  What it is not: chaining (runtimes
chain plugins; ``calico`` only delegates IPAM).

Invariant: a plugin that does not finish within ``DELEGATE_TIMEOUT`` is killed and reported.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from typing import Any

from pycalico.cni.agent_protocol import Response
from pycalico.cni.spec import ERR_INVALID_NETWORK_CONFIG, CniError

DELEGATE_TIMEOUT = 60.0


def checked(plugin: str, response: Response) -> dict[str, Any]:
    try:
        body = json.loads(response.stdout) if response.stdout.strip() else {}
    except ValueError:
        body = None
    if response.exit_code != 0:
        if isinstance(body, dict) and "msg" in body:
            raise CniError(
                f"{plugin}: {body['msg']}",
                code=int(body.get("code") or 999),
                details=str(body.get("details") or ""),
            )
        raise CniError(f"{plugin} failed (exit {response.exit_code}): {response.stderr.strip()}")
    if not isinstance(body, dict):
        raise CniError(f"{plugin} printed something that is not a JSON object")
    return body


def find_plugin(name: str, cni_path: str) -> str:
    for directory in filter(None, cni_path.split(os.pathsep)):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise CniError(
        f"ipam.type: plugin {name!r} not found in CNI_PATH ({cni_path or 'empty'})",
        code=ERR_INVALID_NETWORK_CONFIG,
    )


async def exec_plugin(name: str, env: Mapping[str, str], stdin: str) -> Response:
    """Run a delegated plugin the standard way: an executable on ``CNI_PATH``."""
    binary = find_plugin(name, env.get("CNI_PATH", ""))
    child_env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), **env}
    process = await asyncio.create_subprocess_exec(
        binary,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env,
    )
    try:
        out, err = await asyncio.wait_for(
            process.communicate(stdin.encode()), timeout=DELEGATE_TIMEOUT
        )
    except TimeoutError:
        raise CniError(f"{name} did not answer within {DELEGATE_TIMEOUT:.0f}s") from None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return Response(process.returncode or 0, out.decode(), err.decode())

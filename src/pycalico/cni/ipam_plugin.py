"""``calico-ipam``: the CNI IPAM plugin executable, a thin client.

Imports only the standard library (and the stdlib-only ``agent_protocol``) before it knows where
the work happens: if the node agent listens on its CNI socket the call is forwarded there
(warm imports, a live etcd connection); otherwise ``pycalico.cni.ipam_handler`` is imported and
does the same work in this process.  Either way the process prints what the handler answered
(a result, or CNI error JSON) and exits with its status.  ``-v``/``--version`` prints the version.

Not here: any IPAM logic (``pycalico.ipam``) or CNI wire format (``pycalico.cni.spec``).
"""

from __future__ import annotations

import os
import sys

from pycalico.cni import agent_protocol

PLUGIN = "calico-ipam"
VERSION = "v0.1.0 (pycalico)"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "-v" in args or "--version" in args:
        print(VERSION)
        return 0
    stdin = sys.stdin.read()
    env = dict(os.environ)
    response = None
    if env.get("CNI_COMMAND") == "VERSION":
        # Runtimes (podman) ask before every ADD: answer without the agent or the handler.
        response = _version(stdin)
    else:
        try:
            response = agent_protocol.forward(PLUGIN, env, stdin, agent_protocol.socket_path(env))
        except agent_protocol.ProtocolError as exc:
            import json

            error = {"cniVersion": "1.0.0", "code": 999, "msg": str(exc), "details": ""}
            response = agent_protocol.Response(1, json.dumps(error), f"{PLUGIN}: {exc}\n")
    if response is None:
        from pycalico.cni import ipam_handler

        response = ipam_handler.run(env, stdin)
    if response.stdout:
        sys.stdout.write(
            response.stdout if response.stdout.endswith("\n") else response.stdout + "\n"
        )
    if response.stderr:
        sys.stderr.write(response.stderr)
    sys.stdout.flush()
    return response.exit_code


def _version(stdin: str) -> agent_protocol.Response:
    import json

    from pycalico.cni.versions import SUPPORTED_VERSIONS

    try:
        config = json.loads(stdin) if stdin.strip() else {}
    except ValueError:
        config = {}
    version = config.get("cniVersion") if isinstance(config, dict) else None
    body = {
        "cniVersion": version or SUPPORTED_VERSIONS[-1],
        "supportedVersions": list(SUPPORTED_VERSIONS),
    }
    return agent_protocol.Response(0, json.dumps(body))


if __name__ == "__main__":
    sys.exit(main())

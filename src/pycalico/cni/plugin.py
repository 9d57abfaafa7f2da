"""``calico``: the CNI plugin executable, a thin client.

Imports only the standard library (and the stdlib-only ``agent_protocol``) before it knows where
the work happens: if the node agent listens on its CNI socket (``CALICO_AGENT_SOCKET``, default
``/var/run/calico/cni.sock``) the call is forwarded there, where imports are warm and the etcd
connection is live; otherwise ``pycalico.cni.handler`` is imported and does the same work in
this process.  Either way the process prints what the handler answered (a result, or CNI error
JSON) and exits with its status.  ``VERSION`` is answered here, without either; ``-v`` prints
the plugin's version.

Not here: any CNI, IPAM or kernel logic (``pycalico.cni.handler``).  Invariant: once a call has
been handed to the agent, its answer is final (``agent_protocol``): no in-process retry.
"""

from __future__ import annotations

import os
import sys

from pycalico.cni import agent_protocol

PLUGIN = "calico"
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
        response = _version(stdin)
    else:
        try:
            response = agent_protocol.forward(PLUGIN, env, stdin, agent_protocol.socket_path(env))
        except agent_protocol.ProtocolError as exc:
            import json

            error = {"cniVersion": "1.0.0", "code": 999, "msg": str(exc), "details": ""}
            response = agent_protocol.Response(1, json.dumps(error), f"{PLUGIN}: {exc}\n")
    if response is None:
        if sys.flags.no_site:
            # Started with -S (the installed script): site-packages are needed from here on.
            import site

            site.main()
        from pycalico.cni import handler

        response = handler.run(env, stdin)
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

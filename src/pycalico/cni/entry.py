"""The shared body of the thin CNI executables (``calico`` and ``calico-ipam``).

What it is: standard-library-only dispatch.  ``VERSION`` is answered at once; any other command
is forwarded to the node agent's unix socket when one listens (warm imports, a live etcd
connection), and otherwise the named handler module is imported and does the same work in this
process.  Either way the process prints what the handler answered (a result, or CNI error JSON)
and exits with its status.

What it is not: any CNI, IPAM or kernel logic (the handler modules).

Invariants: nothing outside the standard library and ``agent_protocol`` is imported before the
in-process fallback is chosen; once a call has been handed to the agent its answer is final (no
in-process retry, which could run an ADD twice).  Start-up cost matters here (two plugin
processes per pod): no ``from __future__``, no ``os`` (``posix`` is built in), annotations that
would need imports are quoted.
"""

import posix
import sys

from pycalico.cni import agent_protocol

VERSION = "v0.1.0 (pycalico)"
# Set by an installed executable that runs on a faster-starting interpreter than pycalico's own
# (``install.client_python``): the in-process path needs pycalico's dependencies, so it
# re-executes the script on this one.  None: this interpreter can do everything.
IN_PROCESS_PYTHON: "str | None" = None
_REEXECUTED = b"PYCALICO_CNI_REEXECUTED"


def _reexecute(stdin: str) -> None:
    """Run this plugin call again on ``IN_PROCESS_PYTHON``, with the same arguments, environment
    and stdin (already read here: handed over in a memory file).  Returns only if it cannot."""
    if IN_PROCESS_PYTHON is None or _REEXECUTED in posix.environ:
        return
    data = stdin.encode("utf-8", "surrogateescape")
    descriptor = posix.memfd_create("cni-stdin")
    written = 0
    while written < len(data):
        written += posix.write(descriptor, data[written:])
    posix.lseek(descriptor, 0, 0)
    posix.dup2(descriptor, 0)
    posix.close(descriptor)
    posix.putenv(_REEXECUTED, b"1")  # never twice, whatever sys.executable says
    sys.stdout.flush()
    posix.execv(IN_PROCESS_PYTHON, [IN_PROCESS_PYTHON, "-S", sys.argv[0], *sys.argv[1:]])


def environment() -> dict[str, str]:
    """The process environment decoded as ``os.environ`` does, without importing ``os``."""
    return {
        key.decode("utf-8", "surrogateescape"): value.decode("utf-8", "surrogateescape")
        for key, value in posix.environ.items()
    }


def run(plugin: str, handler_module: str, argv: "list[str] | None" = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "-v" in args or "--version" in args:
        print(VERSION)
        return 0
    stdin = sys.stdin.read()
    env = environment()
    response = None
    if env.get("CNI_COMMAND") == "VERSION":
        # Runtimes (podman) ask before every ADD: answer without the agent or the handler.
        response = version_response(stdin)
    else:
        try:
            response = agent_protocol.forward(plugin, env, stdin, agent_protocol.socket_path(env))
        except agent_protocol.ProtocolError as exc:
            response = agent_protocol.error_response(plugin, str(exc))
    if response is None:
        if argv is None:
            _reexecute(stdin)
        if sys.flags.no_site:
            # Started with -S (the installed script): site-packages are needed from here on.
            import site

            site.main()
        handler = __import__(handler_module, fromlist=["run"])
        response = handler.run(env, stdin)
    if response.stdout:
        out = response.stdout
        sys.stdout.write(out if out.endswith("\n") else out + "\n")
    if response.stderr:
        sys.stderr.write(response.stderr)
    sys.stdout.flush()
    return response.exit_code


def version_response(stdin: str) -> agent_protocol.Response:
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

"""The node agent's CNI socket protocol: how a thin plugin process hands its call to the agent.

Standard library only (the plugin executables import it before anything else).  This module is
the wire format and the client; the server side is ``pycalico.cni.agent_server``.

Protocol (version 1), over a unix stream socket (``CALICO_AGENT_SOCKET``, default
``/var/run/calico/cni.sock``), one request and one response per connection, each a single
line of UTF-8 JSON ending in ``\\n``:

    request   {"protocol": 1, "plugin": "calico-ipam", "env": {"CNI_COMMAND": "ADD", ...},
               "stdin": "<the network configuration, verbatim>"}
    response  {"protocol": 1, "exit_code": 0, "stdout": "<result JSON>", "stderr": ""}

``env`` carries the ``CNI_*`` variables and the ones that configure the datastore and node
(``ETCD_*``, ``DATASTORE_TYPE``, ``CALICO_*``, ``NODENAME``, ``KUBERNETES_NODE_NAME``); the
agent answers exactly what the plugin would have printed and the exit status it would have
returned, so the plugin only copies the response out.

Invariants: a plugin falls back to doing the work in-process only when it could not hand the
request over at all (no socket, nobody listening).  Once the request is sent, the agent's answer
(or a failure to get one) is final: retrying in-process could assign a second address.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

PROTOCOL_VERSION = 1
SOCKET_ENV = "CALICO_AGENT_SOCKET"
DEFAULT_SOCKET = "/var/run/calico/cni.sock"
FORWARDED_PREFIXES = ("CNI_", "ETCD_", "CALICO_", "DATASTORE_")
FORWARDED_NAMES = ("NODENAME", "KUBERNETES_NODE_NAME", "HOSTNAME")
MAX_MESSAGE = 16 * 1024 * 1024


class ProtocolError(Exception):
    """A malformed message, or an agent that accepted a request and failed to answer."""


@dataclass(frozen=True, slots=True)
class Request:
    plugin: str
    env: Mapping[str, str]
    stdin: str

    def encode(self) -> bytes:
        body = {
            "protocol": PROTOCOL_VERSION,
            "plugin": self.plugin,
            "env": dict(self.env),
            "stdin": self.stdin,
        }
        return json.dumps(body, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> Request:
        raw = _decode(line)
        env = raw.get("env")
        plugin = raw.get("plugin")
        if not isinstance(plugin, str) or not isinstance(env, dict):
            raise ProtocolError("request needs 'plugin' (string) and 'env' (object)")
        stdin = raw.get("stdin", "")
        if not isinstance(stdin, str):
            raise ProtocolError("request 'stdin' must be a string")
        return cls(plugin=plugin, env={str(k): str(v) for k, v in env.items()}, stdin=stdin)


@dataclass(frozen=True, slots=True)
class Response:
    exit_code: int
    stdout: str = ""
    stderr: str = ""

    def encode(self) -> bytes:
        body = {
            "protocol": PROTOCOL_VERSION,
            "exit_code": self.exit_code,
            "stdout": self.stdout,
            "stderr": self.stderr,
        }
        return json.dumps(body, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def decode(cls, line: bytes) -> Response:
        raw = _decode(line)
        exit_code = raw.get("exit_code")
        if not isinstance(exit_code, int):
            raise ProtocolError("response needs an integer 'exit_code'")
        return cls(exit_code, str(raw.get("stdout", "")), str(raw.get("stderr", "")))


def _decode(line: bytes) -> dict[str, object]:
    try:
        raw = json.loads(line)
    except ValueError as exc:
        raise ProtocolError(f"not a JSON line: {exc}") from None
    if not isinstance(raw, dict):
        raise ProtocolError("message is not a JSON object")
    if raw.get("protocol") != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {raw.get('protocol')!r}")
    return raw


def forwarded_env(env: Mapping[str, str]) -> dict[str, str]:
    return {
        k: v for k, v in env.items() if k.startswith(FORWARDED_PREFIXES) or k in FORWARDED_NAMES
    }


def socket_path(env: Mapping[str, str]) -> str:
    return env.get(SOCKET_ENV) or DEFAULT_SOCKET


def forward(
    plugin: str, env: Mapping[str, str], stdin: str, path: str, *, timeout: float = 120.0
) -> Response | None:
    """Send the call to the agent; None if no agent is listening (do the work yourself)."""
    if not os.path.exists(path):
        return None
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.settimeout(timeout)
        try:
            connection.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        try:
            connection.sendall(Request(plugin, forwarded_env(env), stdin).encode())
        except (BrokenPipeError, ConnectionResetError):
            # The agent closed the connection before reading anything: it is going away.
            return None
        chunks = []
        received = 0
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            received += len(chunk)
            if chunk.endswith(b"\n") or received > MAX_MESSAGE:
                break
    except OSError as exc:
        raise ProtocolError(f"the node agent at {path} did not answer: {exc}") from exc
    finally:
        connection.close()
    data = b"".join(chunks)
    if not data.strip():
        raise ProtocolError(f"the node agent at {path} closed the connection without an answer")
    return Response.decode(data)

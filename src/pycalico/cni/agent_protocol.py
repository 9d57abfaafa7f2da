"""The node agent's CNI socket protocol: how a thin plugin process hands its call to the agent.

Standard library only, and lean: ``entry.run`` (the plugins' full way, and in-process callers)
uses it, so it uses the C modules ``_json`` and ``_socket`` directly instead of ``json``,
``socket`` and ``dataclasses`` (which pull in ``re``, ``enum`` and ``inspect``).  The installed
executables' usual path speaks protocol 2, a binary frame (``thin_client``); the agent serves
both.  The server side is ``pycalico.cni.agent_server``.

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

# No ``from __future__ import annotations`` (a .py import, ~0.15 ms): annotations that name
# typing-only names are quoted instead.  ``posix`` (built in) stands in for ``os``, whose import
# (posixpath, stat, _collections_abc) costs ~0.8 ms in a process started with -S.
import _json  # the C half of json: string escaping and scanning, nothing else imported
import _socket
import posix

# typing costs ~6 ms to import (it pulls in re); the annotations here are never evaluated.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

PROTOCOL_VERSION = 1
SOCKET_ENV = "CALICO_AGENT_SOCKET"
DEFAULT_SOCKET = "/var/run/calico/cni.sock"
FORWARDED_PREFIXES = ("CNI_", "ETCD_", "CALICO_", "DATASTORE_")
FORWARDED_NAMES = ("NODENAME", "KUBERNETES_NODE_NAME", "HOSTNAME")
_FORWARDED_PREFIXES = tuple(prefix.encode() for prefix in FORWARDED_PREFIXES)
_FORWARDED_NAMES = tuple(name.encode() for name in FORWARDED_NAMES)
MAX_MESSAGE = 16 * 1024 * 1024

_quote = _json.encode_basestring_ascii


class ProtocolError(Exception):
    """A malformed message, or an agent that accepted a request and failed to answer."""


def _parse(line: bytes | str) -> "dict[str, Any]":
    """Decode one message: a flat JSON object of strings, integers and one level of string
    maps, which is all the protocol sends.  Anything else is handed to ``json``."""
    text = line.decode() if isinstance(line, bytes) else line
    try:
        return _parse_flat(text.strip())
    except (ValueError, IndexError):
        import json

        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise ProtocolError(f"not a JSON line: {exc}") from None
        if not isinstance(raw, dict):
            raise ProtocolError("message is not a JSON object") from None
        return raw


def _parse_flat(text: str) -> "dict[str, Any]":
    position = 0

    def skip() -> None:
        nonlocal position
        while text[position] in " \t\r\n":
            position += 1

    def expect(char: str) -> None:
        nonlocal position
        skip()
        if text[position] != char:
            raise ValueError(f"expected {char!r} at {position}")
        position += 1

    def string() -> str:
        nonlocal position
        expect('"')
        value, position = _json.scanstring(text, position, True)
        return str(value)

    def value(nested: bool) -> "Any":
        nonlocal position
        skip()
        char = text[position]
        if char == '"':
            return string()
        if char == "{" and not nested:
            return obj(True)
        end = position
        while end < len(text) and (text[end].isdigit() or text[end] == "-"):
            end += 1
        if end == position:
            raise ValueError(f"unsupported value at {position}")
        number, position = int(text[position:end]), end
        return number

    def obj(nested: bool) -> "dict[str, Any]":
        nonlocal position
        expect("{")
        out: dict[str, Any] = {}
        skip()
        if text[position] == "}":
            position += 1
            return out
        while True:
            key = string()
            expect(":")
            out[key] = value(nested)
            skip()
            if text[position] == ",":
                position += 1
                continue
            expect("}")
            return out

    result = obj(False)
    skip_tail = text[position:].strip()
    if skip_tail:
        raise ValueError("trailing data")
    return result


def _checked(raw: "dict[str, Any]") -> "dict[str, Any]":
    if raw.get("protocol") != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {raw.get('protocol')!r}")
    return raw


class Request:
    __slots__ = ("env", "plugin", "stdin")

    def __init__(self, plugin: str, env: "Mapping[str, str]", stdin: str) -> None:
        self.plugin = plugin
        self.env = env
        self.stdin = stdin

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Request) and (self.plugin, dict(self.env), self.stdin) == (
            other.plugin,
            dict(other.env),
            other.stdin,
        )

    def __repr__(self) -> str:
        return f"Request(plugin={self.plugin!r}, env={dict(self.env)!r}, stdin={self.stdin!r})"

    def encode(self) -> bytes:
        env = ",".join(f"{_quote(k)}:{_quote(v)}" for k, v in self.env.items())
        return (
            f'{{"protocol":{PROTOCOL_VERSION},"plugin":{_quote(self.plugin)},'
            f'"env":{{{env}}},"stdin":{_quote(self.stdin)}}}\n'
        ).encode()

    @classmethod
    def decode(cls, line: bytes) -> "Request":
        raw = _checked(_parse(line))
        env = raw.get("env")
        plugin = raw.get("plugin")
        if not isinstance(plugin, str) or not isinstance(env, dict):
            raise ProtocolError("request needs 'plugin' (string) and 'env' (object)")
        stdin = raw.get("stdin", "")
        if not isinstance(stdin, str):
            raise ProtocolError("request 'stdin' must be a string")
        return cls(plugin=plugin, env={str(k): str(v) for k, v in env.items()}, stdin=stdin)


class Response:
    __slots__ = ("exit_code", "stderr", "stdout")

    def __init__(self, exit_code: int, stdout: str = "", stderr: str = "") -> None:
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Response) and (self.exit_code, self.stdout, self.stderr) == (
            other.exit_code,
            other.stdout,
            other.stderr,
        )

    def __repr__(self) -> str:
        return f"Response({self.exit_code!r}, {self.stdout!r}, {self.stderr!r})"

    def encode(self) -> bytes:
        return (
            f'{{"protocol":{PROTOCOL_VERSION},"exit_code":{int(self.exit_code)},'
            f'"stdout":{_quote(self.stdout)},"stderr":{_quote(self.stderr)}}}\n'
        ).encode()

    @classmethod
    def decode(cls, line: bytes) -> "Response":
        raw = _checked(_parse(line))
        exit_code = raw.get("exit_code")
        if not isinstance(exit_code, int):
            raise ProtocolError("response needs an integer 'exit_code'")
        return cls(exit_code, str(raw.get("stdout", "")), str(raw.get("stderr", "")))


def forwarded_env(env: "Mapping[str, str]") -> dict[str, str]:
    return {
        k: v for k, v in env.items() if k.startswith(FORWARDED_PREFIXES) or k in FORWARDED_NAMES
    }


def socket_path(env: "Mapping[str, str]") -> str:
    return env.get(SOCKET_ENV) or DEFAULT_SOCKET


def forward(
    plugin: str, env: "Mapping[str, str]", stdin: str, path: str, *, timeout: float = 120.0
) -> "Response | None":
    """Send the call to the agent; None if no agent is listening (do the work yourself)."""
    try:
        posix.stat(path)
    except OSError:
        return None
    connection = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
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


def error_response(plugin: str, message: str) -> Response:
    """What a plugin prints when the agent failed it: CNI error JSON (as ``json.dumps`` writes
    it, without importing json) and the message on stderr."""
    body = f'{{"cniVersion": "1.0.0", "code": 999, "msg": {_quote(message)}, "details": ""}}'
    return Response(1, body, f"{plugin}: {message}\n")

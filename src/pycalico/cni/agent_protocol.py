"""Handing a CNI call to the node agent from Python code: ``forward`` and the ``Response`` type.

Standard library only, and lean: ``entry.run`` (the plugins' full way) uses it, so it imports
only built-in modules (``_json``, ``_socket``, ``posix``) and the frame format of
``thin_client``.  There is one wire protocol, the ``CNI2`` binary frame that ``thin_client``
defines and ``pycalico.cni.agent_server`` serves; this module speaks it for callers that already
hold the environment and stdin as text.

``env`` carries the ``CNI_*`` variables and the ones that configure the datastore and node
(``ETCD_*``, ``DATASTORE_TYPE``, ``CALICO_*``, ``NODENAME``, ``KUBERNETES_NODE_NAME``); the
agent answers exactly what the plugin would have printed and the exit status it would have
returned, so the plugin only copies the response out.

Invariants: a plugin falls back to doing the work in-process only when it could not hand the
request over at all (no socket, nobody listening, the agent closed before reading).  Once the
request is sent, the agent's answer (or a failure to get one) is final: retrying in-process
could assign a second address.
"""

# No ``from __future__ import annotations`` (a .py import, ~0.15 ms): annotations that name
# typing-only names are quoted instead.  ``posix`` (built in) stands in for ``os``.
import _json  # the C half of json: string escaping only
import _socket
import posix

from pycalico.cni import thin_client

# typing costs ~6 ms to import (it pulls in re); the annotations here are never evaluated.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

SOCKET_ENV = "CALICO_AGENT_SOCKET"
DEFAULT_SOCKET = "/var/run/calico/cni.sock"
FORWARDED_PREFIXES = ("CNI_", "ETCD_", "CALICO_", "DATASTORE_")
FORWARDED_NAMES = ("NODENAME", "KUBERNETES_NODE_NAME", "HOSTNAME")

_quote = _json.encode_basestring_ascii


class ProtocolError(Exception):
    """An agent that accepted a request and failed to answer it with a well-formed frame."""


class Response:
    """What a plugin prints and the status it exits with."""

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


def forwarded_env(env: "Mapping[str, str]") -> "dict[str, str]":
    return {
        k: v for k, v in env.items() if k.startswith(FORWARDED_PREFIXES) or k in FORWARDED_NAMES
    }


def socket_path(env: "Mapping[str, str]") -> str:
    return env.get(SOCKET_ENV) or DEFAULT_SOCKET


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def forward(
    plugin: str, env: "Mapping[str, str]", stdin: str, path: str, *, timeout: float = 120.0
) -> "Response | None":
    """Send the call to the agent in a ``CNI2`` frame; None if no agent is listening (do the
    work yourself); ProtocolError if it took the request and gave no well-formed answer."""
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
        pairs = [(_encode(k), _encode(v)) for k, v in forwarded_env(env).items()]
        request = thin_client.encode_request(_encode(plugin), pairs, _encode(stdin))
        try:
            connection.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            # The agent closed the connection before reading anything: it is going away.
            return None
        received = thin_client.receive(connection)
        if not received:
            raise ProtocolError(f"the node agent at {path} closed the connection without an answer")
        code, stdout, stderr = thin_client.decode_response(received)
    except (ValueError, thin_client.FrameError) as exc:
        raise ProtocolError(f"the node agent at {path} answered with a bad frame: {exc}") from None
    except OSError as exc:
        raise ProtocolError(f"the node agent at {path} did not answer: {exc}") from exc
    finally:
        connection.close()
    return Response(code, _decode(stdout), _decode(stderr))


def error_response(plugin: str, message: str) -> Response:
    """What a plugin prints when the agent failed it: CNI error JSON (as ``json.dumps`` writes
    it, without importing json) and the message on stderr."""
    body = f'{{"cniVersion": "1.0.0", "code": 999, "msg": {_quote(message)}, "details": ""}}'
    return Response(1, body, f"{plugin}: {message}\n")

"""The CNI executables' fast path: hand the call to the node agent in a binary frame.

What it is: the code an installed ``calico``/``calico-ipam`` runs first, on every CNI call.  It
uses only modules that are built into the interpreter (``_socket``, ``posix``, ``sys``: no
``_json`` shared library, no ``os``, no package imports), because a plugin process lives for a
few milliseconds and a third of a millisecond of imports is a measurable share of a pod's ADD.
The executables ``pycalico.cni.install`` writes import it first (and nothing else unless the
call must be served in-process); the node agent imports it for the frame format.

What it is not: a CNI implementation (the handlers behind the agent).  This frame is the agent
socket's only protocol; ``agent_protocol.forward`` speaks it for callers holding text.

Frame format (protocol version 2), one request and one response per connection:

    request   b"CNI2 <plugin> <env bytes> <stdin bytes>\\n" + env + stdin
              env = b"\\0".join(b"NAME=value" for each forwarded variable)
    response  b"CNI2 <exit code> <stdout bytes> <stderr bytes>\\n" + stdout + stderr

Lengths are decimal byte counts, so values and stdin pass through untouched (no escaping, no
decoding here).

Invariants: ``forward`` returns None, having consumed nothing (stdin included), whenever the
call must take the full way instead: ``-v``/arguments, ``CNI_COMMAND=VERSION``, or no agent
accepting on the socket.  Once the request is sent the agent's answer is final: a failure to
get one becomes CNI error JSON and exit status 1, never an in-process retry (which could assign
a second address).
"""

import _socket
import posix
import sys

MAGIC = b"CNI2"
DEFAULT_SOCKET = b"/var/run/calico/cni.sock"
SOCKET_ENV = b"CALICO_AGENT_SOCKET"
FORWARDED_PREFIXES = (b"CNI_", b"ETCD_", b"CALICO_", b"DATASTORE_")
FORWARDED_NAMES = (b"NODENAME", b"KUBERNETES_NODE_NAME", b"HOSTNAME")
MAX_FRAME = 16 * 1024 * 1024
TIMEOUT_SECONDS = 120.0

# JSON string escapes for the one text this module writes itself (an error message).
_JSON_ESCAPES = {i: f"\\u{i:04x}" for i in range(32)}
_JSON_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\", 10: "\\n", 13: "\\r", 9: "\\t"})


class FrameError(Exception):
    """A frame that does not follow the format above."""


def encode_request(plugin: bytes, env: "list[tuple[bytes, bytes]]", stdin: bytes) -> bytes:
    block = b"\0".join(name + b"=" + value for name, value in env)
    return b"%s %s %d %d\n" % (MAGIC, plugin, len(block), len(stdin)) + block + stdin


def encode_response(exit_code: int, stdout: bytes, stderr: bytes) -> bytes:
    return b"%s %d %d %d\n" % (MAGIC, exit_code, len(stdout), len(stderr)) + stdout + stderr


def frame_length(data: bytes) -> "int | None":
    """The whole frame's length once its header line is in ``data``; None until then."""
    end = data.find(b"\n")
    if end < 0:
        if len(data) > 256:
            raise FrameError("frame header longer than 256 bytes")
        return None
    fields = data[:end].split(b" ")
    if len(fields) != 4 or fields[0] != MAGIC:
        raise FrameError("not a CNI2 frame header")
    try:
        first, second = int(fields[2]), int(fields[3])
    except ValueError:
        raise FrameError("frame lengths are not numbers") from None
    if first < 0 or second < 0 or first + second > MAX_FRAME:
        raise FrameError("frame lengths out of range")
    return end + 1 + first + second


def _split(frame: bytes, kind: str) -> "tuple[bytes, bytes, bytes]":
    """(the header's second field, first part, second part) of a complete frame."""
    header, _, body = frame.partition(b"\n")
    fields = header.split(b" ")
    if len(fields) != 4 or fields[0] != MAGIC:
        raise FrameError(f"not a CNI2 {kind} frame")
    cut = int(fields[2])
    if len(body) != cut + int(fields[3]):
        raise FrameError(f"{kind} frame is truncated")
    return fields[1], body[:cut], body[cut:]


def decode_request(frame: bytes) -> "tuple[str, dict[str, str], str]":
    """(plugin, environment, stdin) of a complete request frame, as text."""
    plugin, block, stdin = _split(frame, "request")
    env = {}
    for item in block.split(b"\0") if block else ():
        name, equals, value = item.partition(b"=")
        if not equals:
            raise FrameError("environment entry without '='")
        env[name.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
    text = stdin.decode("utf-8", "surrogateescape")
    return plugin.decode("utf-8", "surrogateescape"), env, text


def decode_response(frame: bytes) -> "tuple[int, bytes, bytes]":
    """(exit code, stdout, stderr) of a complete response frame."""
    code, stdout, stderr = _split(frame, "response")
    return int(code), stdout, stderr


def error_json(message: str) -> bytes:
    """CNI error JSON as ``json.dumps`` writes it, for a failure to get the agent's answer."""
    text = message.translate(_JSON_ESCAPES)
    body = f'{{"cniVersion": "1.0.0", "code": 999, "msg": "{text}", "details": ""}}'
    return body.encode("utf-8", "surrogateescape")


def _write_all(descriptor: int, data: bytes) -> None:
    while data:
        data = data[posix.write(descriptor, data) :]


def _read_stdin() -> bytes:
    chunks: list[bytes] = []
    while True:
        chunk = posix.read(0, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def receive(connection: "_socket.socket") -> bytes:
    """One whole frame from ``connection`` (less if it closes early)."""
    data = b""
    needed = None
    while needed is None or len(data) < needed:
        chunk = connection.recv(65536)
        if not chunk:
            break
        data += chunk
        if needed is None:
            needed = frame_length(data)
    return data


def forward(plugin: bytes) -> "int | None":
    """Hand this process's CNI call to the agent, write its answer out, return the exit status;
    None when the call must take the full way (nothing consumed)."""
    environ = posix.environ
    if len(sys.argv) > 1 or environ.get(b"CNI_COMMAND") == b"VERSION":
        return None
    path = environ.get(SOCKET_ENV) or DEFAULT_SOCKET
    connection = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        connection.settimeout(TIMEOUT_SECONDS)
        connection.connect(path)
    except OSError:
        connection.close()
        return None  # nobody listens: the full way tells "no agent" from real failures
    env = [
        (name, value)
        for name, value in environ.items()
        if name.startswith(FORWARDED_PREFIXES) or name in FORWARDED_NAMES
    ]
    stdin = _read_stdin()
    try:
        try:
            connection.sendall(encode_request(plugin, env, stdin))
        except (BrokenPipeError, ConnectionResetError):
            # The agent went away before reading: the full way may work in-process.
            import io

            sys.stdin = io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8")
            return None
        try:
            received = receive(connection)
            if not received:
                raise OSError("it closed the connection without an answer")
            code, stdout, stderr = decode_response(received)
        except (ValueError, FrameError) as exc:
            raise OSError(f"its answer is not a CNI2 frame ({exc})") from None
    except OSError as exc:
        where = path.decode("utf-8", "surrogateescape")
        message = f"the node agent at {where} did not answer: {exc}"
        code, stdout = 1, error_json(message)
        stderr = f"{plugin.decode()}: {message}\n".encode("utf-8", "surrogateescape")
    finally:
        connection.close()
    if stdout:
        _write_all(1, stdout if stdout.endswith(b"\n") else stdout + b"\n")
    if stderr:
        _write_all(2, stderr)
    return code

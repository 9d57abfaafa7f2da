"""BIRD 2 from Python: its control socket (``BirdControl``), its process (``BirdProcess``), and
``check_config`` (``bird -p -c``).

What it is: the only code that talks to BIRD.  The control socket speaks BIRD's reply protocol
(lines ``NNNN-text`` continue a reply, ``NNNN text`` ends it, `` text`` continues the previous
code; 0xxx is success, 8xxx/9xxx an error, 1xxx/2xxx data), so a query costs one round trip on a
unix socket, never a ``birdc`` process.  ``parse_protocols`` reads ``show protocols`` output
(pure, shared with ``calicoctl node status``).  What it is not: deciding the configuration
(``processor``) or when to reload (``confd``).

Invariants:

* ``BirdControl`` opens one connection per command and always reads through the final reply
  line, so replies never mix across commands; every call has a timeout.
* ``BirdProcess.stop`` waits for BIRD to exit (it needs more than half a second after SIGTERM)
  before returning, so a restart never finds the old daemon still holding the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

BIRD_BINARY = "bird"
DEFAULT_SOCKET = "/var/run/calico/bird.ctl"
EXPECTED_HEADINGS = ["name", "proto", "table", "state", "since", "info"]


class BirdError(Exception):
    """BIRD refused a command, or its socket could not be reached."""


@dataclass(frozen=True, slots=True)
class BirdReply:
    code: int  # the final line's code
    lines: tuple[tuple[int, str], ...]  # (code, text) for every line, continuations included

    @property
    def ok(self) -> bool:
        return self.code < 8000

    @property
    def text(self) -> str:
        return "\n".join(text for _, text in self.lines)


@dataclass(frozen=True, slots=True)
class ProtocolRow:
    name: str
    proto: str
    table: str
    state: str
    since: str
    info: str


def parse_reply_lines(raw: Sequence[str]) -> BirdReply:
    """A reply from its raw lines (without newlines), the last one being the final line."""
    lines: list[tuple[int, str]] = []
    code = 0
    for line in raw:
        if line.startswith(" "):
            lines.append((code, line[1:]))
            continue
        if len(line) >= 4 and line[:4].isdigit():
            code = int(line[:4])
            lines.append((code, line[5:]))
    return BirdReply(code, tuple(lines))


def parse_protocols(reply: BirdReply) -> list[ProtocolRow]:
    """Rows of ``show protocols``.  Raises ``BirdError`` if the table heading is not BIRD's."""
    rows: list[ProtocolRow] = []
    for code, text in reply.lines:
        if code == 2002:
            if [word.lower() for word in text.split()] != EXPECTED_HEADINGS:
                raise BirdError(f"unknown BIRD table output format: {text!r}")
        elif code == 1002:
            columns = text.split()
            if len(columns) < 5:
                continue
            rows.append(
                ProtocolRow(
                    name=columns[0],
                    proto=columns[1],
                    table=columns[2],
                    state=columns[3],
                    since=columns[4],
                    info=" ".join(columns[5:]),
                )
            )
    return rows


def _final(line: str) -> bool:
    return len(line) >= 5 and line[:4].isdigit() and line[4] == " "


class BirdControl:
    """A client of BIRD's control socket (``bird -s PATH``)."""

    def __init__(self, path: str = DEFAULT_SOCKET, *, timeout: float = 5.0) -> None:
        self.path = path
        self.timeout = timeout

    async def command(self, command: str) -> BirdReply:
        try:
            return await asyncio.wait_for(self._command(command), self.timeout)
        except TimeoutError as error:
            raise BirdError(f"BIRD at {self.path}: no reply to {command!r}") from error
        except OSError as error:
            raise BirdError(f"BIRD at {self.path}: {error.strerror or error}") from error

    async def _command(self, command: str) -> BirdReply:
        reader, writer = await asyncio.open_unix_connection(self.path, limit=1 << 24)
        try:
            welcome = await reader.readline()
            if not welcome.startswith(b"0001"):
                raise BirdError(f"BIRD at {self.path}: unexpected greeting {welcome!r}")
            writer.write(command.encode() + b"\n")
            await writer.drain()
            raw: list[str] = []
            while True:
                line = await reader.readline()
                if not line:
                    raise BirdError(f"BIRD at {self.path}: connection closed mid-reply")
                text = line.decode(errors="replace").rstrip("\n")
                raw.append(text)
                if _final(text):
                    return parse_reply_lines(raw)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def configure(self, path: str | None = None) -> BirdReply:
        """Reload the configuration (``configure``), or from another file; raises on refusal."""
        reply = await self.command(f'configure "{path}"' if path else "configure")
        if not reply.ok:
            raise BirdError(f"BIRD refused the configuration: {reply.text}")
        return reply

    async def protocols(self) -> list[ProtocolRow]:
        return parse_protocols(await self.command("show protocols"))

    async def ready(self) -> bool:
        try:
            reply = await self.command("show status")
        except BirdError:
            return False
        return reply.ok


def bird_command(
    config_path: str, socket_path: str, *, binary: str = BIRD_BINARY, recover: bool = True
) -> list[str]:
    """BIRD in the foreground.  ``recover`` adds ``-R`` (graceful-restart recovery, as Calico
    starts it): a restarted BIRD keeps the kernel routes it left and tells its peers it is
    restarting, so neither side drops routes until BGP has converged again."""
    return [binary, "-f", *(["-R"] if recover else []), "-c", config_path, "-s", socket_path]


def check_config(path: str, *, binary: str = BIRD_BINARY) -> str | None:
    """``bird -p -c path``: None if BIRD accepts the file, else its complaint."""
    result = subprocess.run(
        [binary, "-p", "-c", path], capture_output=True, text=True, timeout=30, check=False
    )
    if result.returncode == 0:
        return None
    return (result.stderr or result.stdout).strip() or f"bird -p exited {result.returncode}"


class BirdProcess:
    """One BIRD daemon in the foreground (``bird -f -c CONFIG -s SOCKET``), its output appended
    to ``log_path``."""

    def __init__(
        self,
        config_path: str,
        socket_path: str,
        log_path: str,
        *,
        binary: str = BIRD_BINARY,
        stop_timeout: float = 5.0,
    ) -> None:
        self.config_path = config_path
        self.socket_path = socket_path
        self.log_path = log_path
        self.binary = binary
        self.stop_timeout = stop_timeout
        self.process: asyncio.subprocess.Process | None = None

    def command(self) -> list[str]:
        return bird_command(self.config_path, self.socket_path, binary=self.binary)

    async def start(self) -> asyncio.subprocess.Process:
        os.makedirs(os.path.dirname(self.socket_path) or ".", exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        return self.process

    async def stop(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), self.stop_timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()

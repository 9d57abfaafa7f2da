"""The node agent's side of the CNI socket (``agent_protocol``): accept, dispatch, answer.

An asyncio unix-socket server that reads one request per connection (a ``CNI2`` frame, see
``thin_client``: the socket's only protocol), hands it to the
handler registered for its plugin (``calico-ipam`` -> ``ipam_handler.handle`` bound to the
agent's live ``KVStore``), and writes back one response frame.
``calico-node`` runs it; tests and benchmarks run it directly.  It does no CNI or IPAM work itself.

Invariants: the socket file is created with mode 0600 (only root may hand the agent work) and
removed on close; a handler failure is answered as CNI error JSON, never by dropping the
connection (the plugin must not fall back to in-process work for a request already sent).
Calls for one sandbox (``CNI_CONTAINERID``) run one at a time, in arrival order: a plugin
killed mid-ADD does not stop the agent's ADD, and the runtime's DEL that follows at once must
undo that ADD whole, not race it (it would release the address and find no interface while
the ADD goes on to create both).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import stat
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any

from pycalico.cni import thin_client
from pycalico.cni.agent_protocol import Response
from pycalico.datastore.api import KVStore
from pycalico.ipam.allocator import IPAM

Handler = Callable[[Mapping[str, str], str], Awaitable[Response]]


def _error(message: str) -> Response:
    body = {"cniVersion": "1.0.0", "code": 999, "msg": message, "details": ""}
    return Response(1, json.dumps(body), message + "\n")


def ipam_handler(
    kv: KVStore, *, cache_seconds: float = 1.0, allocator: IPAM | None = None
) -> Handler:
    """``calico-ipam`` served by one long-lived allocator on the agent's datastore connection.

    The allocator reuses IPAM config, pools and node labels for ``cache_seconds`` (changes
    take effect within that time) and combines concurrent requests of a node into one block
    write; it replaces the plugins' host file lock.
    """
    from pycalico.cni import ipam_handler as module

    ipam = allocator if allocator is not None else IPAM(kv, cache_seconds=cache_seconds)

    async def serve(env: Mapping[str, str], stdin: str) -> Response:
        return await module.handle(env, stdin, ipam=ipam, lock=module.no_lock)

    return serve


def calico_handler(
    kv: KVStore, *, ipam_cache_seconds: float = 1.0, allocator: IPAM | None = None
) -> Handler:
    """``calico`` served with the agent's datastore connection and one long-lived allocator
    (its ``calico-ipam`` step runs in the agent too, on that allocator: no process, no lock),
    and, for Kubernetes mode, one Kubernetes client per API it is asked to use."""
    ipam = allocator if allocator is not None else IPAM(kv, cache_seconds=ipam_cache_seconds)
    return _CalicoHandler(kv, ipam)


class _CalicoHandler:
    """The ``calico`` plugin's handler; it owns the agent's Kubernetes clients (one per API,
    for the agent's life, not one per pod), which ``AgentServer.close`` closes."""

    def __init__(self, kv: KVStore, ipam: IPAM) -> None:
        from pycalico.cni.kubernetes import KubeClients

        self.kv = kv
        self.ipam = ipam
        self.kube = KubeClients()

    async def __call__(self, env: Mapping[str, str], stdin: str) -> Response:
        from pycalico.cni import handler as module

        return await module.handle(env, stdin, kv=self.kv, ipam=self.ipam, kube=self.kube)

    async def close(self) -> None:
        await self.kube.close()


def default_handlers(kv: KVStore, *, cache_seconds: float = 1.0) -> dict[str, Handler]:
    """Every plugin the node agent serves (``calico-node`` looks this up), sharing ONE
    long-lived allocator: its hot blocks, handle cache and per-node batching cover both the
    ``calico`` plugin's IPAM step and direct ``calico-ipam`` calls."""
    allocator = IPAM(kv, cache_seconds=cache_seconds)
    return {
        "calico": calico_handler(kv, allocator=allocator),
        "calico-ipam": ipam_handler(kv, allocator=allocator),
    }


class _Connection(asyncio.Protocol):
    """One plugin call: collect the request (a ``CNI2`` frame), answer it with one, close.
    A bare protocol rather than asyncio streams: no reader, writer or task until the request
    is in (this sits on every pod's ADD and DEL)."""

    def __init__(self, server: AgentServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.answering = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.answering:
            return  # one request per connection: anything after it is ignored
        self.buffer += data
        if not thin_client.MAGIC.startswith(bytes(self.buffer[:4])):
            self._answer_frame(None, "not a CNI2 frame (the agent speaks only protocol 2)")
            return
        try:
            needed = thin_client.frame_length(bytes(self.buffer))
        except thin_client.FrameError as exc:
            self._answer_frame(None, str(exc))
            return
        if needed is not None and len(self.buffer) >= needed:
            self._answer_frame(bytes(self.buffer[:needed]), "")

    def eof_received(self) -> bool:
        if not self.answering:
            if self.buffer:
                self._answer_frame(None, "request frame is truncated")
            elif self.transport is not None:
                self.transport.close()
        return True  # keep the write side open for the answer

    def _start(self, reply: Coroutine[Any, Any, None]) -> None:
        assert self.transport is not None
        self.answering = True
        self.transport.pause_reading()
        task = asyncio.get_running_loop().create_task(reply)
        self.server._tasks.add(task)
        task.add_done_callback(self.server._tasks.discard)

    def _answer_frame(self, frame: bytes | None, problem: str) -> None:
        assert self.transport is not None
        self._start(self.server._reply_frame(frame, problem, self.transport))


class SocketPathError(Exception):
    """The agent socket's path cannot be used; the message names the path and the problem."""


def check_socket_path(path: str) -> None:
    """Refuse a path the agent must not listen on.  Its directory is never created here (a typo
    would otherwise leave directories anywhere), and only a socket is ever replaced."""
    if not path:
        raise SocketPathError("socket path is empty")
    if path.startswith("-"):
        raise SocketPathError(f"socket path {path!r} starts with '-' (an option was meant?)")
    parent = os.path.dirname(path) or "."
    if not os.path.exists(parent):
        raise SocketPathError(f"socket {path}: directory {parent} does not exist")
    if not os.path.isdir(parent):
        raise SocketPathError(f"socket {path}: {parent} is not a directory")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        raise SocketPathError(f"socket {path}: is a directory")
    if not stat.S_ISSOCK(mode):
        raise SocketPathError(f"socket {path}: exists and is not a socket; not replacing it")


class AgentServer:
    def __init__(self, path: str, handlers: Mapping[str, Handler]) -> None:
        self.path = path
        self.handlers = dict(handlers)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._sandboxes: dict[str, tuple[asyncio.Lock, int]] = {}  # lock, calls holding/awaiting

    async def start(self) -> None:
        """Listen on ``path``: SocketPathError (before anything is touched) if its directory
        is missing or the path holds something other than a socket; a stale socket is replaced."""
        check_socket_path(self.path)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Connection(self), self.path)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for handler in {id(h): h for h in self.handlers.values()}.values():
            close = getattr(handler, "close", None)
            if close is not None:
                await close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _handle(self, plugin: str, env: Mapping[str, str], stdin: str) -> Response:
        handler = self.handlers.get(plugin)
        if handler is None:
            return _error(f"the node agent does not serve plugin {plugin!r}")
        try:
            async with self._sandbox(env.get("CNI_CONTAINERID", "")):
                return await handler(env, stdin)
        except Exception as exc:
            return _error(f"{plugin}: {type(exc).__name__}: {exc}")

    @contextlib.asynccontextmanager
    async def _sandbox(self, container: str) -> AsyncIterator[None]:
        """Serialise the calls of one sandbox; the lock goes when its last call is done."""
        if not container:
            yield
            return
        lock, users = self._sandboxes.get(container, (asyncio.Lock(), 0))
        self._sandboxes[container] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._sandboxes[container]
            if users == 1:
                del self._sandboxes[container]
            else:
                self._sandboxes[container] = (lock, users - 1)

    async def _reply_frame(
        self, frame: bytes | None, problem: str, transport: asyncio.Transport
    ) -> None:
        try:
            if frame is None:
                response = _error(f"bad request on the agent socket: {problem}")
            else:
                try:
                    plugin, env, stdin = thin_client.decode_request(frame)
                except (thin_client.FrameError, ValueError) as exc:
                    response = _error(f"bad request on the agent socket: {exc}")
                else:
                    response = await self._handle(plugin, env, stdin)
            if not transport.is_closing():
                transport.write(
                    thin_client.encode_response(
                        response.exit_code,
                        response.stdout.encode("utf-8", "surrogateescape"),
                        response.stderr.encode("utf-8", "surrogateescape"),
                    )
                )
        finally:
            transport.close()  # also when cancelled: the agent is stopping


async def serve_forever(path: str, env: Mapping[str, str]) -> None:
    """A CNI agent alone (no BIRD, confd or Felix) until SIGTERM/SIGINT: for tests, benchmarks
    and nodes that run only the plugins.  The datastore comes from ``env`` (``ETCD_*``)."""
    import signal

    from pycalico.datastore.config import DatastoreConfig
    from pycalico.datastore.etcd import EtcdKVStore

    kv = EtcdKVStore.from_config(DatastoreConfig.from_env(env))
    server = AgentServer(path, default_handlers(kv))
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await server.close()
        await kv.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from pycalico.cni.agent_protocol import DEFAULT_SOCKET, SOCKET_ENV, socket_path

    parser = argparse.ArgumentParser(
        prog="python -m pycalico.cni.agent_server",
        description=(
            "Serve the CNI plugins (calico, calico-ipam) on a unix socket, without the rest of "
            "calico-node, until SIGTERM or SIGINT.  The datastore comes from ETCD_ENDPOINTS "
            "and the other ETCD_* variables."
        ),
    )
    parser.add_argument(
        "--socket",
        default=socket_path(os.environ),
        metavar="PATH",
        help=(
            f"the socket to listen on (default: ${SOCKET_ENV}, else {DEFAULT_SOCKET}); its "
            "directory must exist, and an existing file there must be a socket"
        ),
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """``python -m pycalico.cni.agent_server [--socket PATH]``."""
    args = parse_args(argv)
    try:
        check_socket_path(args.socket)
        asyncio.run(serve_forever(args.socket, dict(os.environ)))
    except (SocketPathError, OSError) as exc:
        print(f"agent_server: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

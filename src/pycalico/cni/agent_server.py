"""The node agent's side of the CNI socket (``agent_protocol``): accept, dispatch, answer.

An asyncio unix-socket server that reads one request line per connection, hands it to the
handler registered for its plugin (``calico-ipam`` -> ``ipam_handler.handle`` bound to the
agent's live ``KVStore``), and writes back one response line.  ``calico-node`` runs it; tests
and benchmarks run it directly.  It does no CNI or IPAM work itself.

Invariants: the socket file is created with mode 0600 (only root may hand the agent work) and
removed on close; a handler failure is answered as CNI error JSON, never by dropping the
connection (the plugin must not fall back to in-process work for a request already sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable, Mapping

from pycalico.cni.agent_protocol import MAX_MESSAGE, ProtocolError, Request, Response
from pycalico.datastore.api import KVStore

Handler = Callable[[Mapping[str, str], str], Awaitable[Response]]


def _error(message: str) -> Response:
    body = {"cniVersion": "1.0.0", "code": 999, "msg": message, "details": ""}
    return Response(1, json.dumps(body), message + "\n")


def ipam_handler(kv: KVStore, *, cache_seconds: float = 1.0) -> Handler:
    """``calico-ipam`` served by one long-lived allocator on the agent's datastore connection.

    The allocator reuses IPAM config, pools and node labels for ``cache_seconds`` (changes
    take effect within that time) and combines concurrent requests of a node into one block
    write; it replaces the plugins' host file lock.
    """
    from pycalico.cni import ipam_handler as module
    from pycalico.ipam.allocator import IPAM

    allocator = IPAM(kv, cache_seconds=cache_seconds)

    async def serve(env: Mapping[str, str], stdin: str) -> Response:
        return await module.handle(env, stdin, ipam=allocator, lock=module.no_lock)

    return serve


def calico_handler(kv: KVStore, *, ipam_cache_seconds: float = 1.0) -> Handler:
    """``calico`` served with the agent's datastore connection and one long-lived allocator
    (its ``calico-ipam`` step runs in the agent too, on that allocator: no process, no lock)."""
    from pycalico.cni import handler as module
    from pycalico.ipam.allocator import IPAM

    allocator = IPAM(kv, cache_seconds=ipam_cache_seconds)

    async def serve(env: Mapping[str, str], stdin: str) -> Response:
        return await module.handle(env, stdin, kv=kv, ipam=allocator)

    return serve


def default_handlers(kv: KVStore) -> dict[str, Handler]:
    """Every plugin the node agent serves (``calico-node`` looks this up)."""
    return {"calico": calico_handler(kv), "calico-ipam": ipam_handler(kv)}


class AgentServer:
    def __init__(self, path: str, handlers: Mapping[str, Handler]) -> None:
        self.path = path
        self.handlers = dict(handlers)
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, self.path, limit=MAX_MESSAGE)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            if not line:
                return
            try:
                request = Request.decode(line)
            except ProtocolError as exc:
                response = _error(f"bad request on the agent socket: {exc}")
            else:
                handler = self.handlers.get(request.plugin)
                if handler is None:
                    response = _error(f"the node agent does not serve plugin {request.plugin!r}")
                else:
                    try:
                        response = await handler(request.env, request.stdin)
                    except Exception as exc:
                        response = _error(f"{request.plugin}: {type(exc).__name__}: {exc}")
            writer.write(response.encode())
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


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


def main(argv: list[str] | None = None) -> int:
    """``python -m pycalico.cni.agent_server [SOCKET]`` (default ``CALICO_AGENT_SOCKET``)."""
    import sys

    from pycalico.cni.agent_protocol import socket_path

    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else socket_path(os.environ)
    asyncio.run(serve_forever(path, dict(os.environ)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The lab's etcd relay: ``127.0.0.1:<port>`` on the machine itself, forwarded to one etcd member
inside its lab namespace, so ``calicoctl`` (and the lab's own commands) reach the lab's etcd
without any interface joining the machine's network to the lab's.

What it is: a small long-lived process (``python -m pycalico.lab.relay STATE_DIR``) that reads
the members from ``state.json`` and, for each connection to a member's host port, opens a socket
*inside that member's namespace* and copies bytes both ways.  What it is not: a proxy that
understands etcd or gRPC.  ``python -m pycalico.lab.relay STATE_DIR kube`` is a second one, for
the Kubernetes API server of ``up --kubernetes`` (its pid in ``<state dir>/kube/relay.pid``).

Invariants: it listens on loopback only; it writes its pid to ``<state dir>/relay.pid`` before
serving and exits on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import Sequence

from pycalico.lab import state as lab_state
from pycalico.netns.namespace import socket_in_netns


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            sink.close()


def _handler(namespace: str, address: str, port: int):  # type: ignore[no-untyped-def]
    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        upstream = socket_in_netns(namespace, socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        try:
            await loop.sock_connect(upstream, (address, port))
        except OSError:
            upstream.close()
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(sock=upstream)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    return accept


def _targets(lab: lab_state.LabState, kube: bool) -> list[tuple[str, str, int, int]]:
    """(namespace, address, port, host port) of each upstream this relay serves."""
    if kube:
        if lab.kube is None:
            raise SystemExit(f"calico-lab relay: the lab in {lab.state_dir} has no Kubernetes")
        return [(lab.kube.namespace, lab.kube.address, lab.kube.port, lab.kube.host_port)]
    return [(m.namespace, m.address, 2379, m.host_port) for m in lab.etcd]


async def serve(state_dir: str, *, kube: bool = False) -> None:
    lab = lab_state.load(state_dir)
    if lab is None:
        raise SystemExit(f"calico-lab relay: no lab state in {state_dir}")
    servers = [
        await asyncio.start_server(_handler(namespace, address, port), "127.0.0.1", host_port)
        for namespace, address, port, host_port in _targets(lab, kube)
    ]
    pid_path = os.path.join(lab.kube.directory, "relay.pid") if lab.kube and kube else None
    with open(pid_path or os.path.join(state_dir, "relay.pid"), "w") as file:
        file.write(str(os.getpid()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) not in (1, 2) or args[1:] not in ([], ["kube"]):
        print("usage: python -m pycalico.lab.relay STATE_DIR [kube]", file=sys.stderr)
        return 2
    asyncio.run(serve(args[0], kube=args[1:] == ["kube"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

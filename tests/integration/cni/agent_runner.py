"""A node agent serving only the CNI socket, for tests: ``python agent_runner.py SOCKET``.

Run inside a node namespace (``nsenter --net``) so the veths it makes land there; the datastore
comes from ``ETCD_ENDPOINTS``.  Stops on SIGTERM and removes its socket.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from pycalico.cni.agent_server import AgentServer, default_handlers
from pycalico.datastore.etcd import EtcdKVStore


async def main(path: str) -> None:
    kv = EtcdKVStore([os.environ["ETCD_ENDPOINTS"]])
    server = AgentServer(path, default_handlers(kv))
    await server.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        await stop.wait()
    finally:
        await server.close()
        await kv.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))

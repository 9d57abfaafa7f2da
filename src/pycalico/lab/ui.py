"""``calico-lab ui``: a page on loopback with a live picture of the lab.

What it is: a small aiohttp server.  ``/`` and ``/static/*`` are the page (plain HTML, CSS and
vanilla JavaScript shipped in ``ui_static/``: nothing to build); ``/api/*`` answers JSON from
``pycalico.lab.ui_sources``: ``nodes`` (BGP sessions), ``pods`` (by node and namespace),
``matrix`` (measured when asked, POST), ``flows`` (recent denied flows) and ``explain``.  The
lab's state is re-read on every request, so pods added after the server started show up.
What it is not: a way to change the lab; every endpoint only reads (the matrix sends probes).

Invariants: it binds 127.0.0.1 only; blocking reads run in worker threads, never on the event
loop; the line ``calico-lab ui: serving on http://127.0.0.1:<port>/`` is printed (and flushed)
once the socket listens, so a caller can wait for it (``--port 0`` picks a free port).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from pycalico.lab import cluster, ui_sources
from pycalico.lab.cluster import LabError
from pycalico.lab.state import LabState

STATIC = Path(__file__).with_name("ui_static")
HOST = "127.0.0.1"
STATE_DIR: web.AppKey[str] = web.AppKey("state_dir", str)


async def _answer(request: web.Request, read: Callable[[LabState], Any]) -> web.Response:
    try:
        lab = cluster.require(request.app[STATE_DIR])
        data = await asyncio.to_thread(read, lab)
    except LabError as error:
        return web.json_response({"error": str(error)}, status=503)
    return web.json_response(data)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def api_nodes(request: web.Request) -> web.Response:
    return await _answer(request, ui_sources.nodes)


async def api_pods(request: web.Request) -> web.Response:
    return await _answer(request, ui_sources.pods)


async def api_matrix(request: web.Request) -> web.Response:
    return await _answer(request, ui_sources.reachability)


async def api_flows(request: web.Request) -> web.Response:
    return await _answer(request, ui_sources.flows)


async def api_explain(request: web.Request) -> web.Response:
    query = request.query
    source, destination = query.get("from", "").strip(), query.get("to", "").strip()
    if not source or not destination:
        return web.json_response({"error": "explain: give both from and to"}, status=400)
    port, protocol = query.get("port", "").strip(), query.get("protocol", "TCP").strip()
    if port and not port.isdigit():
        return web.json_response({"error": f"explain: port {port!r} is not a number"}, status=400)

    def read(lab: LabState) -> Any:
        return ui_sources.explain(lab, source, destination, port, protocol or "TCP")

    return await _answer(request, read)


def application(state_dir: str) -> web.Application:
    app = web.Application()
    app[STATE_DIR] = state_dir
    app.router.add_get("/", index)
    app.router.add_get("/api/nodes", api_nodes)
    app.router.add_get("/api/pods", api_pods)
    app.router.add_post("/api/matrix", api_matrix)
    app.router.add_get("/api/flows", api_flows)
    app.router.add_get("/api/explain", api_explain)
    app.router.add_static("/static/", STATIC)
    return app


async def _serve(state_dir: str, port: int) -> None:
    runner = web.AppRunner(application(state_dir), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, HOST, port)
        await site.start()
        bound = runner.addresses[0][1]
        print(f"calico-lab ui: serving on http://{HOST}:{bound}/", flush=True)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def serve(state_dir: str, port: int) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM)."""
    cluster.require(state_dir)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(state_dir, port))

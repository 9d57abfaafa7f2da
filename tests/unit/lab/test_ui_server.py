"""calico-lab ui's HTTP layer without a lab: the page and its assets are served from the
package, a missing lab is a 503 naming the state directory, a bad explain query a 400 naming
the field."""

from __future__ import annotations

from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from pycalico.lab import ui


async def test_page_assets_and_errors_without_a_lab(tmp_path: Path) -> None:
    async with TestClient(TestServer(ui.application(str(tmp_path / "none")))) as client:
        page = await client.get("/")
        assert page.status == 200
        html = await page.text()
        assert "/static/app.js" in html and 'id="explain-form"' in html
        script = await client.get("/static/app.js")
        assert script.status == 200 and "renderPods" in await script.text()
        nodes = await client.get("/api/nodes")
        assert nodes.status == 503
        assert str(tmp_path / "none") in (await nodes.json())["error"]
        missing = await client.get("/api/explain", params={"from": "default/a"})
        assert missing.status == 400
        assert "from and to" in (await missing.json())["error"]
        bad_port = await client.get("/api/explain", params={"from": "a", "to": "b", "port": "x"})
        assert bad_port.status == 400
        assert "port 'x'" in (await bad_port.json())["error"]

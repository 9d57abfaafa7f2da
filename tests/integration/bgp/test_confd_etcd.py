"""confd on a real etcd with a real BIRD (in a scratch network namespace): it writes only after
in-sync, rewrites and reloads only when the text changes, ignores what it does not watch, and
BIRD picks the change up over its control socket."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.unit.bgp.scenarios import node, peer, pool

from pycalico.bgp.bird import BirdControl, bird_command
from pycalico.bgp.confd import Confd
from pycalico.datastore import paths
from pycalico.model.codec import encode_value
from pycalico.testing.netns_fabric import NETNS_DIR, Fabric

pytestmark = pytest.mark.root


@pytest.fixture
def fabric() -> Iterator[Fabric]:
    with Fabric("pccf") as built:
        yield built


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(str(predicate))
        await asyncio.sleep(0.05)


@pytest.fixture
async def seeded(kv: Any) -> AsyncIterator[Any]:
    await kv.put(paths.resource_key("nodes", "node1"), encode_value(node("node1", "10.213.0.1/24")))
    await kv.put(paths.resource_key("nodes", "node2"), encode_value(node("node2", "10.213.0.2/24")))
    await kv.put(paths.resource_key("ippools", "p"), encode_value(pool("p", "10.70.0.0/16")))
    yield kv


async def test_confd_renders_and_reloads_only_on_change(
    seeded: Any, fabric: Fabric, tmp_path: Path
) -> None:
    kv = seeded
    scratch = fabric.add_node(1)
    config = tmp_path / "bird.cfg"
    socket = tmp_path / "bird.ctl"
    control = BirdControl(str(socket))
    confd = Confd(kv, "node1", str(config), control=control)
    task = asyncio.create_task(confd.run())
    bird = None
    try:
        await wait_for(lambda: config.exists())
        assert "protocol bgp Mesh_10_213_0_2" in config.read_text()
        bird = subprocess.Popen(
            [
                "nsenter",
                f"--net={NETNS_DIR}/{scratch.namespace}",
                *bird_command(str(config), str(socket)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        await wait_for(lambda: socket.exists())
        for _ in range(100):
            if await control.ready():
                break
            await asyncio.sleep(0.05)
        # BIRD started after the first write: confd tells it once it answers.
        await wait_for(lambda: not confd.reload_pending)
        writes, reloads = confd.stats.writes, confd.stats.reloads

        # A block claimed for this node: new text, one write, one reload, BIRD has the route.
        await kv.put(
            paths.affinity_key("node1", "10.70.3.0/26"), json.dumps({"state": "confirmed"}).encode()
        )
        await wait_for(lambda: confd.stats.writes == writes + 1)
        assert "route 10.70.3.0/26 blackhole;" in config.read_text()
        assert confd.stats.reloads == reloads + 1
        reply = await control.command("show route 10.70.3.0/26")
        assert "blackhole" in reply.text

        # The same value written again, another node's affinity, a kind confd ignores: renders
        # at most, never a write or a reload.
        renders = confd.stats.renders
        await kv.put(
            paths.resource_key("nodes", "node2"), encode_value(node("node2", "10.213.0.2/24"))
        )
        await kv.put(paths.affinity_key("node2", "10.70.9.0/26"), b'{"state":"confirmed"}')
        await kv.put(paths.resource_key("hostendpoints", "h"), b"{}")
        await wait_for(lambda: confd.stats.renders > renders)
        await asyncio.sleep(0.3)
        assert confd.stats.writes == writes + 1 and confd.stats.reloads == reloads + 1

        # A new global peer reaches BIRD's running configuration.
        await kv.put(
            paths.resource_key("bgppeers", "tor"),
            encode_value(peer("tor", peerIP="10.213.0.254", asNumber=65000)),
        )
        await wait_for(lambda: confd.stats.reloads == reloads + 2)
        names = [row.name for row in await control.protocols()]
        assert "Global_10_213_0_254" in names and "Mesh_10_213_0_2" in names

        # A render the running BIRD refuses (`configure check` over its socket): nothing is
        # written, nothing reloaded, BIRD keeps running the last good configuration.
        good = config.read_text()
        slow = peer("slow", peerIP="10.213.0.9", asNumber=65000, keepaliveTime="100000s")
        await kv.put(paths.resource_key("bgppeers", "slow"), encode_value(slow))
        await wait_for(lambda: confd.stats.rejected == 1)
        assert config.read_text() == good and confd.stats.reloads == reloads + 2
        assert await control.ready()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bird.cfg", "bird.ctl"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if bird is not None:
            bird.terminate()
            bird.wait(10)


async def test_confd_waits_for_in_sync_and_keeps_file_when_bird_rejects(
    seeded: Any, tmp_path: Path
) -> None:
    config = tmp_path / "bird.cfg"
    confd = Confd(seeded, "node1", str(config))
    task = asyncio.create_task(confd.run())
    try:
        await wait_for(lambda: config.exists())
        good = config.read_text()
        # A keepalive BIRD cannot accept (it allows 1-65535 s): `bird -p` refuses the render,
        # and the good file stays.
        slow = peer("slow", peerIP="10.213.0.9", asNumber=65000, keepaliveTime="100000s")
        await seeded.put(paths.resource_key("bgppeers", "slow"), encode_value(slow))
        await wait_for(lambda: confd.stats.rejected >= 1 or confd.stats.writes > 1)
        assert confd.stats.rejected == 1, config.read_text()
        assert config.read_text() == good
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

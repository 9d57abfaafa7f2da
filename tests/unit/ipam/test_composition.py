"""IPAM is composed, not inherited: one block store shared by the allocator, the releaser and
the batcher; the node agent holds one allocator for both plugins; claims, borrows and releases
are logged at debug level."""

from __future__ import annotations

import logging

import pytest

from pycalico.cni import agent_server
from pycalico.ipam.allocator import IPAM, AutoAssignRequest
from pycalico.ipam.assign import Allocator
from pycalico.ipam.batching import NodeBatcher
from pycalico.ipam.release import Releaser
from pycalico.ipam.store import BlockStore
from pycalico.testing.ipam import put_node, put_pool
from pycalico.testing.memory_kv import MemoryKVStore


def test_parts_share_one_block_store() -> None:
    ipam = IPAM(MemoryKVStore(), cache_seconds=1.0)
    assert isinstance(ipam.store, BlockStore)
    assert isinstance(ipam.allocator, Allocator) and isinstance(ipam.releaser, Releaser)
    assert isinstance(ipam.allocator.batcher, NodeBatcher)
    assert ipam.allocator.store is ipam.releaser.store is ipam.allocator.batcher.store is ipam.store
    assert not isinstance(ipam, BlockStore)  # a facade over the parts, not a subclass


def test_the_node_agent_serves_both_plugins_from_one_allocator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[IPAM] = []
    original = IPAM.__init__

    def counting(self: IPAM, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        built.append(self)

    monkeypatch.setattr(IPAM, "__init__", counting)
    handlers = agent_server.default_handlers(MemoryKVStore())
    assert set(handlers) == {"calico", "calico-ipam"}
    assert len(built) == 1 and built[0].store.cache_seconds > 0


async def test_claims_borrows_and_releases_are_logged_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kv = MemoryKVStore()
    # One /30 block in a /30 pool: the second node must borrow from the first one's block.
    await put_pool(kv, "tiny", "10.80.0.0/30", block_size=30)
    for node in ("node-a", "node-b"):
        await put_node(kv, node)
    ipam = IPAM(kv)
    caplog.set_level(logging.DEBUG, logger="pycalico.ipam")
    for node in ("node-a", "node-b"):
        await ipam.auto_assign(AutoAssignRequest(node=node, handle_id=f"h-{node}"))
    await ipam.release_by_handle("h-node-b")
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any("node-a claimed block 10.80.0.0/30" in m for m in messages), messages
    assert any("node-b borrowed 1 from block 10.80.0.0/30 (host:node-a)" in m for m in messages)
    assert any("released 1 addresses of h-node-b in block 10.80.0.0/30" in m for m in messages)

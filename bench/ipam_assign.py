"""IPAM assignment throughput against the raw etcd compare-and-swap transaction rate.

What this measures, on one etcd member started for the run:

* the reference: 16 concurrent clients each doing compare-and-swap updates of its own key
  (``EtcdKVStore.update`` with the revision of its previous write: one etcd transaction each),
  as many per second as etcd and the client stack allow;
* IPAM: 1,000 ``IPAM.auto_assign`` calls (one IPv4 address each, distinct handles) from 16
  concurrent clients over 8 node names (two clients per node, so they race on the node's
  block), through the same ``EtcdKVStore`` kind of connection, starting from an empty store.

The figure is assignments/s divided by CAS transactions/s (target >= 0.3).  An assignment costs
Calico's sequence of datastore calls: config, pools, node and affinities read, block read,
handle create and block compare-and-swap (plus retries when the two clients of a node collide),
so a ratio near 1/3 means the allocator adds little beyond the writes it must make.

Run: ``.venv/bin/python -m bench.ipam_assign`` (``--quick`` for a fifth of the work).
"""

from __future__ import annotations

import asyncio
import sys
import time

from pycalico.datastore.etcd import EtcdKVStore
from pycalico.ipam.allocator import IPAM, AutoAssignRequest
from pycalico.ipam.check import check
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.ipam import put_node, put_pool

CLIENTS = 16
NODES = 8


def shares(total: int) -> list[int]:
    """``total`` operations spread over CLIENTS clients as evenly as possible."""
    return [total // CLIENTS + (1 if c < total % CLIENTS else 0) for c in range(CLIENTS)]


class CasReference:
    """CLIENTS clients, each compare-and-swapping its own key; times bursts of transactions."""

    def __init__(self, kv: EtcdKVStore) -> None:
        self.kv = kv
        self.revisions: dict[str, int] = {}

    async def setup(self) -> None:
        for client in range(CLIENTS):
            key = f"/bench/cas/{client}"
            self.revisions[key] = await self.kv.put(key, b"0")

    async def burst(self, total: int) -> float:
        async def client_loop(key: str, count: int) -> None:
            revision = self.revisions[key]
            for i in range(count):
                revision = await self.kv.update(key, str(i).encode(), revision=revision)
            self.revisions[key] = revision

        start = time.perf_counter()
        await asyncio.gather(
            *(client_loop(k, n) for k, n in zip(self.revisions, shares(total), strict=True))
        )
        return time.perf_counter() - start


class Assigner:
    """CLIENTS clients over NODES nodes calling ``auto_assign``; times bursts of assignments."""

    def __init__(self, kv: EtcdKVStore, name: str, cache_seconds: float) -> None:
        self.kv = kv
        self.name = name
        self.allocator = IPAM(kv, cache_seconds=cache_seconds)
        # Each subject has its own nodes: they share the pool, not each other's blocks.
        self.nodes = [f"{name}-node-{i}" for i in range(NODES)]
        self.done = [0] * CLIENTS

    async def burst(self, total: int) -> float:
        async def client_loop(client: int, count: int) -> None:
            node = self.nodes[client % NODES]
            for _ in range(count):
                self.done[client] += 1
                await self.allocator.auto_assign(
                    AutoAssignRequest(
                        node=node,
                        handle_id=f"{self.name}.{client}.{self.done[client]}",
                        attrs={"node": node},
                    )
                )

        start = time.perf_counter()
        await asyncio.gather(*(client_loop(c, n) for c, n in enumerate(shares(total))))
        return time.perf_counter() - start


async def main(quick: bool) -> None:
    assignments = 200 if quick else 1000
    slices = 10
    cas_per_slice = 4 * assignments // slices
    with EtcdServer(name="bench-ipam") as etcd:
        kv = EtcdKVStore([etcd.endpoint])
        try:
            await put_pool(kv, "default-ipv4-ippool", "10.64.0.0/12")
            for subject in ("agent", "cold"):
                for node in range(NODES):
                    await put_node(kv, f"{subject}-node-{node}")
            reference = CasReference(kv)
            await reference.setup()
            warm = Assigner(kv, "agent", cache_seconds=1.0)
            cold = Assigner(kv, "cold", cache_seconds=0.0)
            cas_time = warm_time = cold_time = 0.0
            # Slices interleave reference and subjects so machine noise hits all of them alike.
            for _ in range(slices):
                cas_time += await reference.burst(cas_per_slice)
                warm_time += await warm.burst(assignments // slices)
                cas_time += await reference.burst(cas_per_slice)
                cold_time += await cold.burst(assignments // slices)
            report = await check(kv)
        finally:
            await kv.close()
    if not report.clean or report.allocations != 2 * assignments:
        raise SystemExit(f"IPAM store inconsistent after the run: {report.findings[:3]}")
    cas_rate = 2 * slices * cas_per_slice / cas_time
    warm_rate = assignments / warm_time
    cold_rate = assignments / cold_time
    print(f"etcd CAS transactions, {CLIENTS} clients: {cas_rate:7.0f}/s")
    print(
        f"auto_assign, {assignments} from {CLIENTS} clients over {NODES} nodes "
        f"({report.blocks} blocks in the end):"
    )
    print(
        f"  long-lived allocator (agent, cache_seconds=1): {warm_rate:7.0f}/s  "
        f"ratio {warm_rate / cas_rate:.2f}  (target >= 0.3)"
    )
    print(
        f"  cold (config, pools and node read every time): {cold_rate:7.0f}/s  "
        f"ratio {cold_rate / cas_rate:.2f}"
    )
    print("reproduce: .venv/bin/python -m bench.ipam_assign" + (" --quick" if quick else ""))


if __name__ == "__main__":
    asyncio.run(main("--quick" in sys.argv[1:]))

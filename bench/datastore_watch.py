"""Datastore watch benchmark: put → consumer latency through the Syncer, against raw aetcd.

What this measures: on a real etcd member started for the run, one client puts a value (a
realistic WorkloadEndpoint JSON) and times how long until a watching consumer has it in hand:

* the reference: an ``aetcd.Client.watch_prefix`` iterator (gRPC stream, no processing),
* ``EtcdKVStore.watch`` (our KV layer: event translation, resumable stream),
* ``Syncer`` (list, then watch; the update arrives as a ``SyncerBatch`` to the consumer),
* ``ResourceStore.watch`` (decoded into a WorkloadEndpoint model).

Each candidate gets the same number of sequential puts (the next put only once the previous
one has been seen), interleaved in rounds so machine noise hits all alike.  Figures are p50 and
p99 latencies and their ratio to the reference; the target for the Syncer is <= 2x.

Run: ``.venv/bin/python -m bench.datastore_watch`` (``--quick`` for fewer puts).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import aetcd

from pycalico.datastore import paths
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.datastore.syncer import Syncer
from pycalico.model.codec import decode_resource, encode_value
from pycalico.model.kinds import KINDS
from pycalico.testing.etcd_server import EtcdServer

from .datastore_list import workload_endpoint

PREFIX = paths.resource_prefix(KINDS["WorkloadEndpoint"])


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Candidate:
    """A consumer in its own task; ``seen`` is set when the awaited key arrives."""

    def __init__(self, name: str, stream: Callable[[], AsyncIterator[str]]) -> None:
        self.name = name
        self.stream = stream
        self.waiting_for: str | None = None
        self.seen = asyncio.Event()
        self.samples: list[float] = []
        self.task: asyncio.Task[None] | None = None

    async def consume(self) -> None:
        async for key in self.stream():
            if key == self.waiting_for:
                self.seen.set()

    async def measure(self, put: Callable[[str], Awaitable[object]], key: str) -> None:
        self.seen.clear()
        self.waiting_for = key
        began = time.perf_counter()
        await put(key)
        await asyncio.wait_for(self.seen.wait(), 10)
        self.samples.append(time.perf_counter() - began)


async def run(puts: int, rounds: int) -> list[Candidate]:
    with EtcdServer(name="bench") as etcd:
        raw = aetcd.Client(host="127.0.0.1", port=etcd.client_port)
        kv = EtcdKVStore([etcd.endpoint])
        writer = EtcdKVStore([etcd.endpoint])
        store = ResourceStore(kv)
        template = decode_resource(workload_endpoint(1))
        value = encode_value(template)
        try:
            await writer.put(PREFIX + "ns-1/seed", value)

            async def aetcd_stream() -> AsyncIterator[str]:
                watch = await raw.watch_prefix(PREFIX.encode())
                try:
                    async for event in watch:
                        yield event.kv.key.decode()
                finally:
                    await watch.cancel()

            async def kv_stream() -> AsyncIterator[str]:
                async for event in kv.watch(PREFIX, start_revision=0):
                    yield event.key

            async def syncer_stream() -> AsyncIterator[str]:
                async for batch in Syncer(kv, PREFIX):
                    for update in batch.updates:
                        yield update.key

            async def resource_stream() -> AsyncIterator[str]:
                async for event in store.watch("WorkloadEndpoint"):
                    yield event.key

            candidates = [
                Candidate("aetcd watch_prefix (reference)", aetcd_stream),
                Candidate("EtcdKVStore.watch", kv_stream),
                Candidate("Syncer", syncer_stream),
                Candidate("ResourceStore.watch (decoded)", resource_stream),
            ]
            for candidate in candidates:
                candidate.task = asyncio.create_task(candidate.consume())
            await asyncio.sleep(0.5)  # every watch established and in sync

            async def put(key: str) -> object:
                return await writer.put(key, value)

            counter = 0
            for _ in range(rounds):
                for candidate in candidates:
                    for _ in range(puts // rounds):
                        counter += 1
                        await candidate.measure(put, f"{PREFIX}ns-1/ep-{counter % 200}")
            for candidate in candidates:
                assert candidate.task is not None
                candidate.task.cancel()
                await asyncio.gather(candidate.task, return_exceptions=True)
            return candidates
        finally:
            await raw.close()
            await kv.close()
            await writer.close()


def main() -> None:
    quick = "--quick" in sys.argv
    puts, rounds = (200, 4) if quick else (2000, 10)
    candidates = asyncio.run(run(puts, rounds))
    reference = candidates[0].samples
    ref50, ref99 = percentile(reference, 0.5), percentile(reference, 0.99)
    print(f"datastore watch: put -> consumer latency, {puts} sequential puts per candidate")
    print(f"  (interleaved in {rounds} rounds, one local etcd 3.4 member; includes the put)")
    for candidate in candidates:
        p50, p99 = percentile(candidate.samples, 0.5), percentile(candidate.samples, 0.99)
        mean = statistics.fmean(candidate.samples)
        print(
            f"  {candidate.name:32} p50 {p50 * 1e3:6.2f} ms ({p50 / ref50:4.2f}x)  "
            f"p99 {p99 * 1e3:6.2f} ms ({p99 / ref99:4.2f}x)  mean {mean * 1e3:6.2f} ms"
        )
    print("reproduce: .venv/bin/python -m bench.datastore_watch" + (" --quick" if quick else ""))


if __name__ == "__main__":
    main()

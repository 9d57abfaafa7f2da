"""Model codec benchmark: decoding stored WorkloadEndpoints against a raw etcd range read.

What this measures: 10,000 realistic WorkloadEndpoint values (as ``encode_value`` writes them) are
put into a real etcd member started for the run; then, best of N, the time of

* the reference: one raw range read of the prefix (``EtcdKVStore.list``: gRPC + protobuf),
* ``decode_values`` of all values (the trusted path the datastore uses for a range read: shape
  checks only, garbage collector paused for the batch),
* ``decode_value`` of every value one by one (collector running),
* the same values validated in ONE pydantic-core call, as a JSON array against a cached
  ``TypeAdapter(list[WorkloadEndpoint])`` (an alternative evaluated for ``decode_values``, not
  used: see the figures),
* ``json.loads`` of every value (plain dicts, no models: a floor for any JSON decoder in
  Python), with the collector paused as for ``decode_values``,
* ``decode_resource`` of every parsed object (the untrusted path: defaults + every rule).

The figures are ratios to the range read measured in the same run; the target is that
read + ``decode_values`` stays within 3x the read alone.

Run: ``.venv/bin/python -m bench.model_codec`` (``--quick`` for 2,000 endpoints, fewer rounds).
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter

from pycalico.datastore.etcd import EtcdKVStore
from pycalico.model.codec import decode_resource, decode_value, decode_values, encode_value
from pycalico.model.endpoints import WorkloadEndpoint
from pycalico.model.meta import ObjectMeta
from pycalico.testing.etcd_server import EtcdServer

PREFIX = "/calico/resources/v3/projectcalico.org/workloadendpoints/"


def make_endpoint(index: int) -> WorkloadEndpoint:
    node = f"node-{index % 50}"
    pod = f"web-{index}"
    spec: dict[str, Any] = {
        "orchestrator": "k8s",
        "node": node,
        "containerID": f"{index:012x}abcdef",
        "pod": pod,
        "endpoint": "eth0",
        "serviceAccountName": "default",
        "ipNetworks": [f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}/32"],
        "profiles": ["kns.shop", "ksa.shop.default"],
        "interfaceName": f"cali{index:011x}",
        "mac": "9a:1b:2c:3d:4e:5f",
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
    }
    return WorkloadEndpoint.model_validate(
        {
            "metadata": ObjectMeta(
                name=f"{node.replace('-', '--')}-k8s-{pod.replace('-', '--')}-eth0",
                namespace="shop",
                labels={
                    "app": "web",
                    "pod-template-hash": "5d9f8c7b6",
                    "projectcalico.org/namespace": "shop",
                    "projectcalico.org/orchestrator": "k8s",
                    "projectcalico.org/serviceaccount": "default",
                },
            ),
            "spec": spec,
        }
    )


def collector_paused(run: Callable[[], object]) -> Callable[[], object]:
    def paused() -> object:
        gc.disable()
        try:
            return run()
        finally:
            gc.enable()

    return paused


def best_of(rounds: int, run: Callable[[], object]) -> float:
    """Best time of ``run``; its result is freed after the clock stops (callers keep results)."""
    times = []
    for _ in range(rounds):
        gc.collect()
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
        del result
    return min(times)


async def best_of_async(rounds: int, run: Callable[[], Any]) -> float:
    times = []
    for _ in range(rounds):
        gc.collect()
        start = time.perf_counter()
        result = await run()
        times.append(time.perf_counter() - start)
        del result
    return min(times)


async def main(quick: bool) -> dict[str, float]:
    count = 2_000 if quick else 10_000
    rounds = 3 if quick else 7
    endpoints = [make_endpoint(index) for index in range(count)]
    values = [encode_value(endpoint) for endpoint in endpoints]
    with EtcdServer() as etcd:
        async with EtcdKVStore([etcd.endpoint]) as store:
            semaphore = asyncio.Semaphore(64)

            async def put(endpoint: WorkloadEndpoint, value: bytes) -> None:
                async with semaphore:
                    await store.put(f"{PREFIX}shop/{endpoint.name}", value)

            await asyncio.gather(*(put(e, v) for e, v in zip(endpoints, values, strict=True)))
            listed = await store.list(PREFIX)
            assert len(listed.items) == count
            read = await best_of_async(rounds, lambda: store.list(PREFIX))

    stored = [item.value for item in listed.items]
    decoded = [decode_value(raw, kind=WorkloadEndpoint) for raw in stored]
    assert sorted(d.name for d in decoded) == sorted(e.name for e in endpoints)
    batch = best_of(rounds, lambda: decode_values(stored, kind=WorkloadEndpoint))
    trusted = best_of(rounds, lambda: [decode_value(raw, kind=WorkloadEndpoint) for raw in stored])
    as_list = TypeAdapter(list[WorkloadEndpoint])
    one_call = best_of(
        rounds,
        collector_paused(lambda: as_list.validate_json(b"[" + b",".join(stored) + b"]")),
    )
    floor = best_of(rounds, collector_paused(lambda: [json.loads(raw) for raw in stored]))
    parsed = [json.loads(raw) for raw in stored]
    untrusted = best_of(max(1, rounds // 2), lambda: [decode_resource(obj) for obj in parsed])
    return {
        "count": count,
        "read_s": read,
        "decode_values_s": batch,
        "decode_value_s": trusted,
        "one_call_s": one_call,
        "json_loads_s": floor,
        "decode_resource_s": untrusted,
    }


def report(figures: dict[str, float]) -> None:
    read = figures["read_s"]
    count = int(figures["count"])
    print(f"{count} WorkloadEndpoints, Python {sys.version.split()[0]}")
    print(f"  etcd range read (reference)   {read * 1000:8.1f} ms   1.00x")
    for label, key in (
        ("decode_values (trusted batch)", "decode_values_s"),
        ("decode_value one by one", "decode_value_s"),
        ("one call over a JSON array", "one_call_s"),
        ("json.loads only (floor)", "json_loads_s"),
        ("decode_resource (untrusted)", "decode_resource_s"),
    ):
        seconds = figures[key]
        per = seconds / count * 1e6
        print(
            f"  {label:<29} {seconds * 1000:8.1f} ms   {seconds / read:5.2f}x  ({per:.1f} us each)"
        )
    total = (read + figures["decode_values_s"]) / read
    print(f"  read + decode_values          {total:5.2f}x the read alone (target <= 3x)")
    print("reproduce: .venv/bin/python -m bench.model_codec")


if __name__ == "__main__":
    report(asyncio.run(main("--quick" in sys.argv)))

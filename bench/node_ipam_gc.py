"""IPAM GC pass time (kube-controllers' node controller) over 10,000 allocated addresses.

What this measures: a real etcd member started for the run holds 100 Calico Nodes, 200 blocks
(/26) and 10,000 pod addresses with their handles and WorkloadEndpoints, as the CNI plugin
writes them; 1% of the pods are gone from Kubernetes (the view of Kubernetes is in memory,
``FakeKubeView``: listing 10,000 pods from an API server is not part of this figure).  Timed:

* a first pass (every address judged, 100 leak candidates found, nothing released),
* the pure decision step alone (``LeakTracker.plan`` on the same snapshot),
* a pass after the grace period that re-reads and releases the 100 leaked addresses (each
  re-checked live and released with its sequence number).

An ad hoc figure with no reference ratio (kube-controllers' own GC is not run here); it is
recorded in docs/kube-controllers.md.

Run: ``.venv/bin/python -m bench.node_ipam_gc`` (``--quick`` for a tenth of the addresses).
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
import time
from collections.abc import Awaitable, Iterable

from pycalico.datastore import paths
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.ipam import keys
from pycalico.ipam.allocator import IPAM
from pycalico.ipam.blocks import AllocationBlock
from pycalico.ipam.records import BlockAffinity, IPAMHandle, affinity_string
from pycalico.kubecontrollers.ipam_gc import IPAMGarbageCollector
from pycalico.kubecontrollers.node_ipam_plan import LeakTracker
from pycalico.model.codec import encode_value
from pycalico.model.endpoints import WorkloadEndpoint, workload_endpoint_name
from pycalico.model.node import Node
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.ipam import put_pool
from pycalico.testing.kube_ipam import FakeKubeView, pod_handle

NODES = 100


async def gathered(jobs: Iterable[Awaitable[object]], width: int = 200) -> None:
    pending = list(jobs)
    for start in range(0, len(pending), width):
        await asyncio.gather(*pending[start : start + width])


def endpoint_value(node: str, pod: str, address: str) -> bytes:
    endpoint = WorkloadEndpoint.model_validate(
        {
            "metadata": {
                "name": workload_endpoint_name(node, "k8s", pod, "eth0"),
                "namespace": "ns",
            },
            "spec": {
                "orchestrator": "k8s",
                "node": node,
                "pod": pod,
                "endpoint": "eth0",
                "interfaceName": "cali0123456789a",
                "ipNetworks": [f"{address}/32"],
            },
        }
    )
    return encode_value(endpoint)


async def seed(kv: EtcdKVStore, view: FakeKubeView, per_node: int) -> int:
    """Write the store; returns how many pods are gone (their addresses leaked)."""
    leaked = 0
    await put_pool(kv, "pool1", "10.64.0.0/12", block_size=26)
    writes: list[Awaitable[object]] = []
    block_index = 0
    for n in range(NODES):
        node = f"node-{n}"
        view.add_node(node)
        calico = Node.model_validate(
            {
                "metadata": {"name": node},
                "spec": {"orchRefs": [{"orchestrator": "k8s", "nodeName": node}]},
            }
        )
        writes.append(kv.put(keys.node_key(node), encode_value(calico)))
        pod = 0
        for _ in range((per_node + 63) // 64):
            cidr = ipaddress.ip_network(f"10.64.{block_index // 4}.{64 * (block_index % 4)}/26")
            block_index += 1
            block = AllocationBlock.new(
                cidr, affinity=affinity_string(node), claim_time=None, sequence_number=1
            )
            for _ in range(min(64, per_node - pod)):
                name = f"p{n}-{pod}"
                handle = pod_handle("ns", name)
                attrs = {"node": node, "namespace": "ns", "pod": name}
                address = block.auto_assign(1, handle, attrs)[0].ip
                writes.append(kv.put(keys.handle_key(handle), IPAMHandle({str(cidr): 1}).to_json()))
                writes.append(
                    kv.put(
                        paths.resource_key(
                            "workloadendpoints",
                            workload_endpoint_name(node, "k8s", name, "eth0"),
                            "ns",
                        ),
                        endpoint_value(node, name, str(address)),
                    )
                )
                if pod % 100 != 7:  # 1% of the pods (one a node at least) are gone
                    view.pod_nodes[("ns", name)] = node
                else:
                    leaked += 1
                pod += 1
            writes.append(kv.put(keys.block_key(cidr), block.to_json()))
            writes.append(kv.put(keys.affinity_key(node, cidr), BlockAffinity().to_json()))
    await gathered(writes)
    return leaked


async def main(quick: bool) -> None:
    per_node = 10 if quick else 100
    now = [0.0]
    with EtcdServer(name="bench-node-gc") as etcd:
        kv = EtcdKVStore([etcd.endpoint])
        try:
            view = FakeKubeView()
            leaked = await seed(kv, view, per_node)
            store = ResourceStore(kv)
            gc = IPAMGarbageCollector(
                view, store, IPAM(kv), leak_grace_period=60.0, clock=lambda: now[0]
            )
            first = await gc.run_once()
            snap = await gc.snapshot()
            started = time.perf_counter()
            LeakTracker().plan(
                snap.allocations, snap.blocks, snap.world, now=0.0, leak_grace_period=60.0
            )
            plan_seconds = time.perf_counter() - started
            now[0] = 61.0
            second = await gc.run_once()
        finally:
            await kv.close()
    total = NODES * per_node
    if len(first.plan.candidates) != leaked or len(second.released) != leaked:
        raise SystemExit(
            f"unexpected: {len(first.plan.candidates)} candidates, {len(second.released)} released"
        )
    print(
        f"IPAM GC over {total} addresses on {NODES} nodes ({len(snap.blocks)} blocks), real etcd:"
    )
    print(
        f"  pass, nothing released ({len(first.plan.candidates)} candidates): "
        f"{first.seconds * 1000:7.0f} ms"
    )
    print(f"  of which the pure decision (LeakTracker.plan):      {plan_seconds * 1000:7.0f} ms")
    print(
        f"  pass releasing {len(second.released)} leaked addresses (re-read + CAS each): "
        f"{second.seconds * 1000:7.0f} ms"
    )
    print("reproduce: .venv/bin/python -m bench.node_ipam_gc" + (" --quick" if quick else ""))


if __name__ == "__main__":
    asyncio.run(main("--quick" in sys.argv[1:]))

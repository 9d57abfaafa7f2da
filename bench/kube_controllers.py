"""calico-kube-controllers at scale: cold start to in sync, peak memory, one update's latency.

What this measures (needs root and the shared lock: a private kube-apiserver on its own etcd,
and a private etcd for Calico's data), at issue 14's size: 1,000 namespaces (each with a
ServiceAccount), 10,000 pods (10 per namespace, spread over 100 node names; no kubelet runs, so
they stay Pending) with their 10,000 WorkloadEndpoints in etcd as the CNI plugin writes them
(labels already right), and 1,000 NetworkPolicies (one per namespace):

* **cold start**: the installed ``calico-kube-controllers`` is spawned (production settings,
  leader election on, controllers policy, namespace, serviceaccount, workloadendpoint; the node
  controller is another helper's) and the clock stops when all four have logged ``in sync``:
  each has listed its collection, converted every object, read Calico's side once and written
  what differs (1,000 policies, 2,000 profiles; 10,000 endpoints checked, none stale).  It
  includes interpreter start-up, imports, connecting, the KubeControllersConfiguration and the
  Lease.  **Peak RSS** is the process's VmHWM, read just before it is stopped.  Afterwards
  ``pycalico.kubecontrollers.compare.differences`` confirms that Calico's data equals
  Kubernetes'.
* **reference** (same run, same machine): the same Calico objects converted in this process
  (the pure conversions) and written straight to a wiped etcd with ``ResourceStore.create``, as
  a calicoctl-style tool holding the converted objects would -- no API server, no process
  start, no comparison.
* **update latency** at that scale, with the controllers running: a NetworkPolicy created
  through the API server until its Calico policy is in etcd (p50/p99 of ``--updates``); the
  reference is the same converted policy written directly with ``ResourceStore.create`` until
  it is readable.

Run: ``flock /tmp/pycalico-root.lock .venv/bin/python -m bench.kube_controllers`` (``--quick``:
100 namespaces, 1,000 pods, 100 policies).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pycalico.datastore import paths
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.k8s.client import KubeClient
from pycalico.k8s.conversion.network_policy import convert_network_policy
from pycalico.k8s.conversion.pods import workload_endpoint_data
from pycalico.k8s.conversion.profiles import namespace_profile, service_account_profile
from pycalico.kubecontrollers.compare import differences
from pycalico.model.codec import apply_defaults, encode_value
from pycalico.model.endpoints import WorkloadEndpoint
from pycalico.model.kinds import KINDS
from pycalico.model.meta import Resource
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.kube_server import KubeControlPlane

EXECUTABLE = str(Path(sys.executable).parent / "calico-kube-controllers")
CONTROLLERS = ("policy", "namespace", "serviceaccount", "workloadendpoint")
CONCURRENCY = 64


def namespace_body(index: int) -> dict[str, Any]:
    return {"metadata": {"name": f"ns{index:04d}", "labels": {"team": f"t{index % 10}"}}}


def account_body(namespace: str) -> dict[str, Any]:
    return {"metadata": {"name": "app", "namespace": namespace, "labels": {"role": "app"}}}


def pod_body(namespace: str, index: int) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"pod{index:05d}",
            "namespace": namespace,
            "labels": {"app": f"app{index % 10}", "tier": "web" if index % 2 else "db"},
        },
        "spec": {
            "nodeName": f"node{index % 100:03d}",
            "serviceAccountName": "app",
            "automountServiceAccountToken": False,
            "containers": [{"name": "main", "image": "busybox"}],
        },
    }


def policy_body(namespace: str, name: str = "allow-web") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": {"tier": "db"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [
                        {"podSelector": {"matchLabels": {"tier": "web"}}},
                        {"namespaceSelector": {"matchLabels": {"team": "t0"}}},
                    ],
                    "ports": [{"port": 5432}, {"port": 8080, "endPort": 8090}],
                }
            ],
        },
    }


async def bounded(calls: list[Any]) -> None:
    """Await the coroutine factories ``calls``, CONCURRENCY at a time."""
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(call: Any) -> None:
        async with semaphore:
            await call()

    await asyncio.gather(*(one(call) for call in calls))


async def populate(kube: KubeClient, kv: EtcdKVStore, spaces: int, pods: int) -> None:
    names = [namespace_body(i)["metadata"]["name"] for i in range(spaces)]
    core, net = kube.core, kube.networking
    await bounded([lambda i=i: core.create_namespace(namespace_body(i)) for i in range(spaces)])
    await bounded(
        [lambda n=n: core.create_namespaced_service_account(n, account_body(n)) for n in names]
    )
    await bounded(
        [lambda n=n: net.create_namespaced_network_policy(n, policy_body(n)) for n in names]
    )
    bodies = [pod_body(names[i % spaces], i) for i in range(pods)]
    await bounded(
        [lambda b=b: core.create_namespaced_pod(b["metadata"]["namespace"], b) for b in bodies]
    )
    endpoints = [workload_endpoint(body) for body in bodies]
    for start in range(0, len(endpoints), 500):
        chunk = endpoints[start : start + 500]
        await asyncio.gather(*(kv.put(endpoint_key(e), encode_value(e)) for e in chunk))


def endpoint_key(endpoint: Resource) -> str:
    metadata = endpoint.metadata
    return paths.resource_key(KINDS["WorkloadEndpoint"], metadata.name, metadata.namespace)


def workload_endpoint(pod: dict[str, Any]) -> Resource:
    """The WorkloadEndpoint the CNI plugin writes for ``pod`` (labels from the pod)."""
    data = workload_endpoint_data(pod)
    node = pod["spec"]["nodeName"]
    name = f"{node}-k8s-{data.pod}-eth0"
    return apply_defaults(
        WorkloadEndpoint.model_validate(
            {
                "metadata": {
                    "name": name,
                    "namespace": data.namespace,
                    "labels": dict(data.labels),
                },
                "spec": {
                    "orchestrator": "k8s",
                    "node": node,
                    "pod": data.pod,
                    "endpoint": "eth0",
                    "interfaceName": f"cali{abs(hash(name)) % 10**11:011d}",
                    "ipNetworks": ["10.65.0.1/32"],
                    "profiles": [f"kns.{data.namespace}", f"ksa.{data.namespace}.app"],
                    "serviceAccountName": data.service_account,
                },
            }
        )
    )


def vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def cold_start(env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen[bytes], float]:
    """Spawn the executable; seconds until every controller logged ``in sync``."""
    with open(log_path, "wb") as log:
        started = time.monotonic()
        process = subprocess.Popen(
            [EXECUTABLE, "--status-file", str(log_path.with_suffix(".json"))],
            env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    while True:
        text = log_path.read_text()
        if all(f"{name} controller: in sync" in text for name in CONTROLLERS):
            return process, time.monotonic() - started
        if process.poll() is not None or time.monotonic() - started > 300:
            raise RuntimeError(f"kube-controllers did not get in sync:\n{text[-3000:]}")
        await asyncio.sleep(0.02)


async def wait_for(kv: EtcdKVStore, key: str) -> None:
    while await kv.get(key) is None:
        await asyncio.sleep(0.002)


async def update_latency(
    kube: KubeClient, kv: EtcdKVStore, store: ResourceStore, count: int
) -> tuple[list[float], list[float]]:
    """(kubectl-style create until in etcd, direct create until readable) per update."""
    through, direct = [], []
    for index in range(count):
        body = policy_body("ns0000", f"update{index}")
        key = paths.resource_key(KINDS["NetworkPolicy"], f"knp.default.update{index}", "ns0000")
        started = time.monotonic()
        await kube.networking.create_namespaced_network_policy("ns0000", body)
        await wait_for(kv, key)
        through.append(time.monotonic() - started)
        # The same conversion, under a name the controllers do not own (they would delete it).
        converted = convert_network_policy(policy_body("ns0001", f"direct{index}")).policy
        name = f"reference.direct{index}"
        converted = converted.model_copy(
            update={"metadata": converted.metadata.model_copy(update={"name": name})}
        )
        started = time.monotonic()
        await store.create(converted)
        await wait_for(kv, paths.resource_key(KINDS["NetworkPolicy"], name, "ns0001"))
        direct.append(time.monotonic() - started)
    return through, direct


async def reference(kv: EtcdKVStore, store: ResourceStore, spaces: int) -> tuple[float, int]:
    """Convert and write the same Calico objects directly (wiped first); seconds, count."""
    for kind in ("NetworkPolicy", "Profile"):
        await kv.delete_prefix(paths.resource_prefix(KINDS[kind]))
    started = time.monotonic()
    objects: list[Resource] = []
    for i in range(spaces):
        namespace = namespace_body(i)
        name = namespace["metadata"]["name"]
        objects.append(namespace_profile(namespace))
        objects.append(service_account_profile(account_body(name)))
        objects.append(convert_network_policy(policy_body(name)).policy)
    semaphore = asyncio.Semaphore(500)

    async def create(resource: Resource) -> None:
        async with semaphore:
            await store.create(apply_defaults(resource))

    await asyncio.gather(*(create(r) for r in objects))
    return time.monotonic() - started, len(objects)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def run(spaces: int, pods: int, updates: int, directory: Path) -> None:
    calico = EtcdServer(name="bench-kc")
    plane = KubeControlPlane()
    process: subprocess.Popen[bytes] | None = None
    try:
        calico.start()
        plane.start()
        kube = await KubeClient.from_kubeconfig(plane.kubeconfig)
        kv = EtcdKVStore([calico.endpoint])
        store = ResourceStore(kv)
        try:
            started = time.monotonic()
            await populate(kube, kv, spaces, pods)
            print(f"populated {spaces} namespaces, {pods} pods (+ endpoints), {spaces} policies "
                  f"in {time.monotonic() - started:.1f}s; load average {os.getloadavg()[0]:.2f}")  # fmt: skip
            env = {
                "PATH": os.environ.get("PATH", ""), "KUBECONFIG": str(plane.kubeconfig),
                "ETCD_ENDPOINTS": calico.endpoint, "ENABLED_CONTROLLERS": ",".join(CONTROLLERS),
                "LEADER_ELECTION_NAMESPACE": "default", "PYTHONUNBUFFERED": "1",
            }  # fmt: skip
            process, seconds = await cold_start(env, directory / "kube-controllers.log")
            through, direct = await update_latency(kube, kv, store, updates)
            peak = vm_hwm_mb(process.pid)
            process.terminate()
            process.wait(10)
            left = await differences(kube, store)
            ref_seconds, written = await reference(kv, store, spaces)
        finally:
            await kube.close()
            await kv.close()
    finally:
        if process is not None and process.poll() is None:
            process.kill()
        plane.close()
        calico.close()
    print(
        f"cold start to in sync: {seconds:.2f}s (target < 10 s); peak RSS {peak:.0f} MB (target < 300 MB)"
    )
    print(f"  reference, convert + direct write of the same {written} objects: {ref_seconds:.2f}s "
          f"(ratio {seconds / ref_seconds:.1f})")  # fmt: skip
    print(f"  in sync afterwards: {'yes' if not left else f'NO: {left[:5]}'}")
    print(f"update latency, NetworkPolicy through the API server until in etcd: "
          f"p50 {percentile(through, 0.5) * 1000:.0f} ms, p99 {percentile(through, 0.99) * 1000:.0f} ms; "
          f"direct write p50 {percentile(direct, 0.5) * 1000:.1f} ms "
          f"(ratio {statistics.median(through) / statistics.median(direct):.0f})")  # fmt: skip
    print(f"command: flock /tmp/pycalico-root.lock .venv/bin/python -m bench.kube_controllers"
          f"{' --quick' if spaces < 1000 else ''}")  # fmt: skip


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kube_controllers")
    parser.add_argument("--quick", action="store_true", help="100 namespaces, 1,000 pods")
    parser.add_argument("--updates", type=int, default=20)
    arguments = parser.parse_args(argv)
    spaces, pods = (100, 1000) if arguments.quick else (1000, 10000)
    with tempfile.TemporaryDirectory(prefix="bench-kc-") as directory:
        asyncio.run(run(spaces, pods, arguments.updates, Path(directory)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

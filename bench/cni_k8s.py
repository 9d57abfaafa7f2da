"""Pod ADD+DEL through the ``calico`` plugin in Kubernetes mode versus etcd mode, in one run.

What this measures: the same installed ``calico`` executable, run as a process inside one node
network namespace (``nsenter --net``), each pod in its own network namespace made before the
clock starts, with the same ``K8S_POD_NAMESPACE``/``K8S_POD_NAME`` arguments; the two modes
differ only in the configuration:

* etcd mode: no Kubernetes API configured (labels and profiles from the call alone);
* Kubernetes mode: ``kubernetes.kubeconfig`` and ``policy.type: k8s``, so ADD also reads the Pod
  and its Namespace from a real kube-apiserver and patches the pod's ``podIP``/``podIPs``/
  ``containerID`` annotations, and DEL patches them out.

Both through a node agent (the normal case on a node; it keeps one Kubernetes client) and with
no agent (the plugin connects to etcd and to the API server itself, per call).  Runs of the
modes are interleaved so machine noise hits both alike.  Figures: ADD+DEL p50/p95 per mode and
the Kubernetes/etcd ratio.  Target: agent p50 ratio <= 1.3.

The Pods exist in the API before the clock starts (a kubelet calls CNI for pods that exist).
etcd and the API server are started for the run and reached from the node namespace through
loopback relays.

Run: ``.venv/bin/python -m bench.cni_k8s`` (30 pods per mode through the agent, 10 without;
``--quick``: 10 and 3), as root, under the shared lock.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from typing import Any

from bench.cni_add import Bench, ip, percentile, start_agent
from pycalico.cni.install import InstallOptions, install
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.k8s.client import KubeClient
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.ipam import put_node, put_pool
from pycalico.testing.kube_server import KubeControlPlane
from pycalico.testing.netns_fabric import EtcdRelay

WARMUP = 3
NAMESPACE = "bench"  # the namespace bench.cni_add.Bench puts in CNI_ARGS


async def make_pods(kubeconfig: str, names: list[str]) -> None:
    async with await KubeClient.from_kubeconfig(kubeconfig) as kube:
        await kube.core.create_namespace({"metadata": {"name": NAMESPACE}})
        await kube.core.create_namespaced_service_account(
            NAMESPACE, {"metadata": {"name": "default"}}
        )
        for name in names:
            body = {
                "metadata": {"name": name, "labels": {"app": "bench"}},
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "image": "pause",
                            "ports": [{"name": "http", "containerPort": 80}],
                        }
                    ]
                },
            }
            await kube.core.create_namespaced_pod(NAMESPACE, body)


async def measure(
    bench: Bench, kinds: dict[str, tuple[str, dict[str, Any], str]], count: int
) -> dict[str, list[float]]:
    """Interleaved runs; the no-agent kinds (seconds each: the imports) only the first
    ``in_process_count(count)`` times, so a full run stays within a few minutes."""
    times: dict[str, list[float]] = {name: [] for name in kinds}
    for i in range(count + WARMUP):
        for name, (binary, conf, path) in kinds.items():
            if name.endswith("inproc") and i >= in_process_count(count) + WARMUP:
                continue
            value = await bench.pair(binary, f"{name}-{i}", conf, path)
            if i >= WARMUP:  # the first runs warm page cache, imports and connections
                times[name].append(value)
        bench.close()
    return times


def in_process_count(count: int) -> int:
    return max(3, count // 3)


def report(times: dict[str, list[float]], count: int) -> None:
    print(
        f"pod ADD+DEL as processes in a node namespace, {count} sequential pods per mode "
        f"through the agent, {in_process_count(count)} without:"
    )
    for path in ("agent", "inproc"):
        etcd_p50 = statistics.median(times[f"etcd-{path}"])
        for mode in ("etcd", "k8s"):
            values = times[f"{mode}-{path}"]
            p50, p95 = statistics.median(values), percentile(values, 0.95)
            label = f"{'etcd mode' if mode == 'etcd' else 'Kubernetes mode'}, " + (
                "node agent" if path == "agent" else "no agent"
            )
            print(
                f"  {label:30s} p50 {1000 * p50:7.1f} ms (x{p50 / etcd_p50:4.2f})   "
                f"p95 {1000 * p95:7.1f} ms"
            )
    print("target: Kubernetes mode / etcd mode, node agent p50 <= 1.3")
    print("reproduce: .venv/bin/python -m bench.cni_k8s" + (" --quick" if count < 30 else ""))


async def main(count: int) -> None:
    node = f"bk8s-node-{uuid.uuid4().hex[:5]}"
    ip("netns", "add", node)
    agent: subprocess.Popen[bytes] | None = None
    relays: list[EtcdRelay] = []
    bench: Bench | None = None
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-cni-k8s-") as tmp,
            EtcdServer(name="bench-cni-k8s") as etcd,
            KubeControlPlane() as plane,
        ):
            for command in (
                ["ip", "link", "set", "lo", "up"],
                ["sysctl", "-qw", "net.ipv4.ip_forward=1"],
                ["ip", "route", "add", "default", "dev", "lo"],
            ):
                subprocess.run(["ip", "netns", "exec", node, *command], check=True)
            host, _, port = etcd.endpoint.rpartition("/")[2].partition(":")
            relays.append(EtcdRelay(host, int(port)))
            relays[-1].add(node)
            relays.append(EtcdRelay("127.0.0.1", plane.apiserver.port))
            relays[-1].add(node, port=plane.apiserver.port)
            kv = EtcdKVStore([etcd.endpoint])
            await put_pool(kv, "default-ipv4-ippool", "10.64.0.0/16")
            await put_node(kv, "bench-node")
            await kv.close()
            paths = ("agent", "inproc")
            names = [f"k8s-{p}-{i}" for p in paths for i in range(count + WARMUP)]
            await make_pods(str(plane.kubeconfig), names)
            socket_path = os.path.join(tmp, "cni.sock")
            agent = start_agent(node, socket_path)
            while not os.path.exists(socket_path):
                if agent.poll() is not None:
                    raise SystemExit("the CNI agent did not start")
                await asyncio.sleep(0.05)
            etcd_conf = {
                "cniVersion": "1.0.0",
                "name": "k8s-pod-network",
                "type": "calico",
                "nodename": "bench-node",
                "etcd_endpoints": "http://127.0.0.1:2379",
                "log_file_path": os.path.join(tmp, "cni.log"),
                "ipam_lock_file": os.path.join(tmp, "ipam.lock"),
                "mtu": 1450,
                "ipam": {"type": "calico-ipam"},
            }
            k8s_conf = {
                **etcd_conf,
                "kubernetes": {"kubeconfig": str(plane.kubeconfig)},
                "policy": {"type": "k8s"},
            }
            install(InstallOptions(bin_dir=os.path.join(tmp, "bin"), conf_dir=tmp))
            binary = os.path.join(tmp, "bin", "calico")
            nobody = os.path.join(tmp, "nobody.sock")
            bench = Bench(tmp, node)  # CNI_ARGS: namespace "bench", pod = container ID
            kinds = {
                "etcd-agent": (binary, etcd_conf, socket_path),
                "k8s-agent": (binary, k8s_conf, socket_path),
                "etcd-inproc": (binary, etcd_conf, nobody),
                "k8s-inproc": (binary, k8s_conf, nobody),
            }
            times = await measure(bench, kinds, count)
    finally:
        if bench is not None:
            bench.close()
        if agent is not None:
            agent.terminate()
            agent.wait(10)
        for relay in relays:
            relay.close()
        subprocess.run(["ip", "netns", "del", node], capture_output=True)
    report(times, count)


if __name__ == "__main__":
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        print(__doc__)
        raise SystemExit(0)
    quick = "--quick" in sys.argv[1:]
    asyncio.run(main(10 if quick else 30))

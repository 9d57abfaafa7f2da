"""Pod ADD+DEL through the ``calico`` plugin, against the reference ``bridge`` + ``host-local``.

What this measures, everything run as processes inside one node network namespace (``nsenter
--net``, as a runtime on that node would), each pod in its own network namespace made before
the clock starts:

* the reference: ``/usr/lib/cni/bridge`` with ``host-local`` IPAM (containernetworking-plugins):
  a veth into a bridge, an address from a /16 in a temporary ``dataDir``;
* ``calico`` as ``install-cni`` installs it (a script run with ``python -S``), with a node
  agent listening on its socket (the agent runs in the node namespace:
  ``python -m pycalico.cni.agent_server``), the normal case on a node;
* ``calico`` with no agent: the plugin imports the handler and talks to etcd itself.

Figures: ADD+DEL latency p50/p95 over N sequential pods (runs of the three interleaved, so
machine noise hits all alike), and the wall time of 50 pods whose ADD+DEL all run at once.  Each
as a ratio to the reference.  Target: agent p50 <= 2x the reference.  etcd is a member started
for the run, reached from the node namespace through a loopback relay (``EtcdRelay``).

Run: ``.venv/bin/python -m bench.cni_add`` (``--quick`` for 20 sequential pods and 10 at once).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from pycalico.cni.install import InstallOptions, install
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.ipam import put_node, put_pool
from pycalico.testing.netns_fabric import EtcdRelay

BIN = Path(sys.executable).parent
BRIDGE = "/usr/lib/cni/bridge"
WARMUP = 3


def start_agent(node: str, socket_path: str) -> subprocess.Popen[bytes]:
    """The node agent (``calico-node``'s CNI socket server) inside the node namespace."""
    return subprocess.Popen(
        [
            "nsenter",
            f"--net=/var/run/netns/{node}",
            sys.executable,
            "-m",
            "pycalico.cni.agent_server",
            "--socket",
            socket_path,
        ],
        env={**os.environ, "ETCD_ENDPOINTS": "http://127.0.0.1:2379"},
    )


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


class Bench:
    def __init__(self, tmp: str, node: str) -> None:
        self.tmp = tmp
        self.node = node
        self.tag = uuid.uuid4().hex[:5]
        self.pods: list[str] = []

    def pod(self) -> str:
        name = f"bcni-{self.tag}-{len(self.pods)}"
        ip("netns", "add", name)
        self.pods.append(name)
        return f"/var/run/netns/{name}"

    async def run(
        self,
        binary: str,
        command: str,
        container: str,
        netns: str,
        conf: dict[str, Any],
        socket_path: str,
    ) -> None:
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container,
            "CNI_NETNS": netns,
            "CNI_IFNAME": "eth0",
            "CNI_PATH": f"{BIN}:/usr/lib/cni",
            "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=bench;K8S_POD_NAME={container}",
            "CALICO_AGENT_SOCKET": socket_path,
        }
        process = await asyncio.create_subprocess_exec(
            "nsenter",
            f"--net=/var/run/netns/{self.node}",
            binary,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        out, err = await process.communicate(json.dumps(conf).encode())
        if process.returncode != 0:
            raise SystemExit(f"{binary} {command} {container}: {out.decode()} {err.decode()}")

    async def pair(
        self, binary: str, container: str, conf: dict[str, Any], socket_path: str = ""
    ) -> float:
        netns = self.pod()
        start = time.perf_counter()
        await self.run(binary, "ADD", container, netns, conf, socket_path)
        await self.run(binary, "DEL", container, netns, conf, socket_path)
        return time.perf_counter() - start

    def close(self) -> None:
        for name in self.pods:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.pods.clear()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def main(sequential: int, concurrent: int) -> None:
    node = f"bcni-node-{uuid.uuid4().hex[:5]}"
    ip("netns", "add", node)
    agent: subprocess.Popen[bytes] | None = None
    relay: EtcdRelay | None = None
    bench: Bench | None = None
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-cni-") as tmp,
            EtcdServer(name="bench-cni") as etcd,
        ):
            for command in (
                ["ip", "link", "set", "lo", "up"],
                ["sysctl", "-qw", "net.ipv4.ip_forward=1"],
                ["ip", "route", "add", "default", "dev", "lo"],
            ):
                subprocess.run(["ip", "netns", "exec", node, *command], check=True)
            host, _, port = etcd.endpoint.rpartition("/")[2].partition(":")
            relay = EtcdRelay(host, int(port))
            relay.add(node)
            kv = EtcdKVStore([etcd.endpoint])
            await put_pool(kv, "default-ipv4-ippool", "10.64.0.0/16")
            await put_node(kv, "bench-node")
            await kv.close()
            socket_path = os.path.join(tmp, "cni.sock")
            agent = start_agent(node, socket_path)
            while not os.path.exists(socket_path):
                if agent.poll() is not None:
                    raise SystemExit("the CNI agent did not start")
                await asyncio.sleep(0.05)
            bridge = {
                "cniVersion": "1.0.0",
                "name": "bench-bridge",
                "type": "bridge",
                "bridge": "cni-bench0",
                "isGateway": True,
                "ipam": {
                    "type": "host-local",
                    "subnet": "10.99.0.0/16",
                    "dataDir": os.path.join(tmp, "host-local"),
                },
            }
            calico = {
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
            nobody = os.path.join(tmp, "nobody.sock")
            # The executable a runtime would run: installed by install-cni (python -S).
            install(InstallOptions(bin_dir=os.path.join(tmp, "bin"), conf_dir=tmp))
            calico_binary = os.path.join(tmp, "bin", "calico")
            bench = Bench(tmp, node)
            kinds = {
                "bridge": (BRIDGE, bridge, ""),
                "agent": (calico_binary, calico, socket_path),
                "in-process": (calico_binary, calico, nobody),
            }
            times: dict[str, list[float]] = {name: [] for name in kinds}
            for i in range(sequential + WARMUP):
                for name, (binary, conf, path) in kinds.items():
                    value = await bench.pair(binary, f"{name[0]}{i}", conf, path)
                    if i >= WARMUP:  # the first runs warm page cache and the agent's imports
                        times[name].append(value)
                bench.close()
            walls: dict[str, float] = {}
            for name, (binary, conf, path) in kinds.items():
                start = time.perf_counter()
                await asyncio.gather(
                    *(bench.pair(binary, f"{name[0]}c{i}", conf, path) for i in range(concurrent))
                )
                walls[name] = time.perf_counter() - start
                bench.close()
    finally:
        if bench is not None:
            bench.close()
        if agent is not None:
            agent.terminate()
            agent.wait(10)
        if relay is not None:
            relay.close()
        subprocess.run(["ip", "netns", "del", node], capture_output=True)
    reference = statistics.median(times["bridge"])
    reference_p95 = percentile(times["bridge"], 0.95)
    print(f"pod ADD+DEL as processes in a node namespace, {sequential} sequential pods each:")
    labels = {
        "bridge": "bridge + host-local (reference)",
        "agent": "calico, node agent listening",
        "in-process": "calico, no agent (in-process)",
    }
    for name, label in labels.items():
        p50 = statistics.median(times[name])
        p95 = percentile(times[name], 0.95)
        print(
            f"  {label:34s} p50 {1000 * p50:7.1f} ms (x{p50 / reference:4.2f})   "
            f"p95 {1000 * p95:7.1f} ms (x{p95 / reference_p95:4.2f})"
        )
    print(f"{concurrent} pods at once (ADD then DEL each), wall time:")
    for name, label in labels.items():
        print(f"  {label:34s} {walls[name]:6.2f} s (x{walls[name] / walls['bridge']:4.2f})")
    print("target: agent p50 <= 2x the reference")
    print("reproduce: .venv/bin/python -m bench.cni_add" + (" --quick" if sequential < 100 else ""))


if __name__ == "__main__":
    quick = "--quick" in sys.argv[1:]
    asyncio.run(main(20 if quick else 100, 10 if quick else 50))

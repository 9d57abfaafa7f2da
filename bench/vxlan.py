"""The VXLAN overlay: pod-to-pod throughput against native routing, and the time from a new VTEP
to traffic at 50 VTEPs.

Run as root under the shared lock: ``flock /tmp/pycalico-root.lock .venv/bin/python -m
bench.vxlan [--seconds 5] [--vteps 50] [--quick]``.  One lab (its own state directory and
namespace prefix, removed at the end, also on failure) with 2 nodes in one subnet:

* **throughput**: iperf3 (TCP, one stream) from a pod on node1 to a pod on node2, first with
  the pool's ``vxlanMode: Always`` (through ``vxlan.calico``), then — same run, same pods, same
  pod MTU — with ``vxlanMode: CrossSubnet``, which makes Felix route the same-subnet block
  natively via node2's address.  The ratio overlay/native is the figure (Calico's: ~0.9 on a
  1500 MTU; target >= 0.85).
* **new VTEP to traffic**: ``--vteps - 2`` simulated remote VTEPs (Nodes with tunnel address,
  MAC and a block affinity; no kernel behind them) are written first, so every Felix holds 50
  VTEPs; then a real one: a namespace the bench configures as a VTEP by hand (VXLAN device,
  tunnel address, FDB/neighbour back to node1), whose Node and block affinity are written to
  etcd at t=0; the figure is the time until a pod on node1 gets an ICMP echo reply from the
  new VTEP's tunnel address (reached only through the overlay route node1's Felix programs).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from pycalico.datastore.paths import affinity_key
from pycalico.datastore.resources import ResourceStore
from pycalico.lab import cluster, kernel, pods, store
from pycalico.lab.state import LabState
from pycalico.model.codec import decode_resource

NEW_NODE = "newvtep"
NEW_ADDRESS = "10.99.0.200"
NEW_TUNNEL = "10.65.240.1"
NEW_BLOCK = "10.65.240.0/26"
NEW_MAC = "66:00:00:00:02:00"


def set_vxlan_mode(lab: LabState, mode: str) -> None:
    manifest = store.pool_manifest("default-ipv4-ippool", "10.65.0.0/16", 26, mode)
    store.call(lab.host_endpoints, lambda s: store.apply_all(s, [manifest]))


def iperf(lab: LabState, seconds: float) -> float:
    """Gbit/s from pod a (node1) to pod b (node2)."""
    a, b = lab.pod("a"), lab.pod("b")
    server = subprocess.Popen(
        ["ip", "netns", "exec", b.netns, "iperf3", "-s", "-1", "-B", b.ipv4],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            done = subprocess.run(
                ["ip", "netns", "exec", a.netns, "iperf3", "-c", b.ipv4, "-t", str(seconds),
                 "-J", "-O", "1" if seconds >= 3 else "0"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if done.returncode == 0:
                report = json.loads(done.stdout)
                return float(report["end"]["sum_received"]["bits_per_second"]) / 1e9
            if time.monotonic() > deadline:
                raise RuntimeError(f"iperf3 failed: {done.stdout[-500:]} {done.stderr[-500:]}")
            time.sleep(0.2)
    finally:
        server.kill()
        server.wait()


def route_via(lab: LabState, device: str) -> bool:
    node1 = lab.node("node1").namespace
    return device in kernel.ip(node1, "route", "get", lab.pod("b").ipv4)


def wait(condition: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError("timed out")
        time.sleep(0.05)


def node_manifest(name: str, address: str, tunnel: str, mac: str) -> dict[str, object]:
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Node",
        "metadata": {"name": name},
        "spec": {"bgp": {"ipv4Address": f"{address}/24"}, "ipv4VXLANTunnelAddr": tunnel,
                 "vxlanTunnelMACAddr": mac},
    }  # fmt: skip


def write_vteps(lab: LabState, vteps: list[tuple[str, str, str, str, str]]) -> None:
    """(name, address, tunnel, MAC, block) -> Node + confirmed block affinity."""

    async def work(resource_store: ResourceStore) -> None:
        for name, address, tunnel, mac, block in vteps:
            await resource_store.apply(decode_resource(node_manifest(name, address, tunnel, mac)))
            await resource_store.kv.put(affinity_key(name, block), b'{"state":"confirmed"}')

    store.call(lab.host_endpoints, work)


def build_real_vtep(lab: LabState) -> str:
    """A namespace on the fabric acting as a VTEP by hand; returns its namespace name."""
    namespace = f"{lab.prefix}-newvtep"
    node1 = lab.node("node1")
    kernel.add_namespace(namespace)
    kernel.attach_to_bridge(lab.fabric_namespace, namespace, "nv")
    kernel.ip(namespace, "addr", "add", f"{NEW_ADDRESS}/24", "dev", "eth0")
    kernel.ip(namespace, "link", "add", "vxlan.calico", "type", "vxlan", "id", "4096",
              "dstport", "4789", "local", NEW_ADDRESS, "dev", "eth0", "nolearning")  # fmt: skip
    kernel.ip(namespace, "link", "set", "vxlan.calico", "address", NEW_MAC, "mtu", "1450", "up")
    kernel.ip(namespace, "addr", "add", f"{NEW_TUNNEL}/32", "dev", "vxlan.calico")
    spec = json.loads(kernel.netns_exec(node1.namespace, "ip", "-j", "-d", "link", "show",
                                        "vxlan.calico"))[0]  # fmt: skip
    tunnel1 = kernel.netns_exec(node1.namespace, "ip", "-j", "addr", "show", "vxlan.calico")
    tunnel1_ip = json.loads(tunnel1)[0]["addr_info"][0]["local"]
    kernel.ip(namespace, "neigh", "replace", tunnel1_ip, "lladdr", spec["address"], "dev",
              "vxlan.calico", "nud", "permanent")  # fmt: skip
    kernel.netns_exec(namespace, "bridge", "fdb", "append", spec["address"], "dev",
                      "vxlan.calico", "dst", node1.address, "self", "permanent")  # fmt: skip
    kernel.ip(namespace, "route", "add", "10.65.0.0/16", "via", tunnel1_ip, "dev",
              "vxlan.calico", "onlink")  # fmt: skip
    return namespace


def pinged(lab: LabState) -> bool:
    a = lab.pod("a")
    done = subprocess.run(
        ["ip", "netns", "exec", a.netns, "ping", "-c", "1", "-W", "0.05", NEW_TUNNEL],
        capture_output=True, check=False,
    )  # fmt: skip
    return done.returncode == 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench.vxlan", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="iperf3 run length")
    parser.add_argument("--vteps", type=int, default=50, help="VTEPs every Felix holds")
    parser.add_argument("--quick", action="store_true", help="1 s iperf3, 10 VTEPs")
    args = parser.parse_args(argv)
    seconds, total = (1.0, 10) if args.quick else (args.seconds, args.vteps)
    work = tempfile.mkdtemp(prefix="bench-vxlan-")
    state_dir, prefix = os.path.join(work, "lab"), f"bvx{os.getpid() % 1000}"
    try:
        lab = cluster.up(state_dir=state_dir, prefix=prefix, nodes=2, encapsulation="vxlan")
        pods.add(state_dir, [pods.PodSpec("a", "node1", "default"),
                             pods.PodSpec("b", "node2", "default")])  # fmt: skip
        lab = cluster.require(state_dir)
        wait(lambda: route_via(lab, "vxlan.calico"), 10)
        overlay = iperf(lab, seconds)
        set_vxlan_mode(lab, "CrossSubnet")
        wait(lambda: route_via(lab, "eth0"), 10)
        native = iperf(lab, seconds)
        ratio = overlay / native
        print(f"throughput pod->pod across nodes: VXLAN {overlay:.2f} Gbit/s, native routed "
              f"{native:.2f} Gbit/s -> ratio {ratio:.2f} (target >= 0.85)")  # fmt: skip
        set_vxlan_mode(lab, "Always")
        ghosts = [
            (f"ghost{i}", f"10.99.2.{i}", f"10.65.{100 + i}.0", f"66:00:00:00:01:{i:02x}",
             f"10.65.{100 + i}.0/26")
            for i in range(1, total - 2)
        ]  # fmt: skip
        write_vteps(lab, ghosts)
        node1 = lab.node("node1").namespace
        wait(lambda: f"10.65.{100 + len(ghosts)}.0/26" in kernel.ip(node1, "route"), 30)
        build_real_vtep(lab)
        assert not pinged(lab)
        started = time.monotonic()
        write_vteps(lab, [(NEW_NODE, NEW_ADDRESS, NEW_TUNNEL, NEW_MAC, NEW_BLOCK)])
        wait(lambda: pinged(lab), 30)
        took = time.monotonic() - started
        print(f"new VTEP to traffic with {total} VTEPs: {took * 1000:.0f} ms (write to first "
              "echo reply from a pod on node1, through node1's Felix)")  # fmt: skip
        print(f"command: flock /tmp/pycalico-root.lock .venv/bin/python -m bench.vxlan "
              f"{' '.join(argv)}")  # fmt: skip
        return 0 if ratio >= 0.85 else 1
    finally:
        cluster.down(state_dir=state_dir, prefix=prefix)
        subprocess.run(["rm", "-rf", work], check=False)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

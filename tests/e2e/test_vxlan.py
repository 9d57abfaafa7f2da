"""The VXLAN overlay end to end, real kernel and packets: 4 nodes over two subnets joined by a
router without pod routes (only the overlay carries pods across), IPv4 and IPv6, the demo's
policy matrix over the overlay, UDP 4789 counted on the router, VTEPs that come and go, a Felix
restart under a live flow, and CrossSubnet leaving same-subnet traffic unencapsulated."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Callable

import pytest

from pycalico import demo
from pycalico.datastore.paths import affinity_key
from pycalico.datastore.resources import ResourceStore
from pycalico.lab import kernel, matrix, pods, store
from pycalico.lab.state import LabState
from pycalico.netns.namespace import socket_in_netns
from tests.e2e.conftest import BIN, LabRunner

DB_FROM_WEB_ONLY = """\
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: db-from-web-only, namespace: shop}
spec:
  selector: app == 'db'
  types: [Ingress]
  ingress: [{action: Allow, source: {selector: app == 'web'}}]
"""

pytestmark = [pytest.mark.root, pytest.mark.slow]

COUNTERS = """
table inet vxtest {
  counter vxlan {}
  counter pods {}
  counter same {}
  counter crossed {}
  chain watch {
    type filter hook %s priority -300; policy accept;
    iifname "br0" oifname "br1" ip daddr 10.65.0.0/16 counter name crossed
    iifname "br1" oifname "br0" ip daddr 10.65.0.0/16 counter name crossed
    ip saddr 10.99.0.0/24 udp dport 4789 counter name same
    udp dport 4789 counter name vxlan
    ip daddr 10.65.0.0/16 counter name pods
    ip6 daddr fd00:65::/48 counter name pods
  }
}
"""


def add_counters(namespace: str, hook: str) -> None:
    subprocess.run(["ip", "netns", "exec", namespace, "nft", "-f", "-"], input=COUNTERS % hook,
                   text=True, check=True)  # fmt: skip


def counter(namespace: str, name: str) -> int:
    out = kernel.netns_exec(namespace, "nft", "-j", "list", "counter", "inet", "vxtest", name)
    for item in json.loads(out)["nftables"]:
        if "counter" in item:
            return int(item["counter"]["packets"])
    raise AssertionError(f"no counter {name} in {namespace}")


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.02)
    return time.monotonic() - start


def kernel_state(namespace: str) -> str:
    return "\n".join(
        kernel.netns_exec(namespace, *command, check=False)
        for command in (
            ("ip", "route"),
            ("ip", "neigh", "show", "dev", "vxlan.calico"),
            ("bridge", "fdb", "show", "dev", "vxlan.calico"),
        )
    )


def ctl(lab: LabState, *args: str, stdin: str | None = None) -> str:
    env = {"DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": lab.host_endpoints, "PATH": "/usr/bin"}
    done = subprocess.run([str(BIN / "calicoctl"), *args], input=stdin, env=env, text=True,
                          capture_output=True, check=False, timeout=30)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def add_demo_pods(runner: LabRunner) -> LabState:
    placement = {"web-1": "node1", "web-2": "node3", "db": "node4", "probe-1": "node2",
                 "probe-2": "node4", "admin": "node3"}  # fmt: skip
    specs = [
        pods.PodSpec(
            name, placement[name], namespace, dict(kv.split("=") for kv in labels.split(","))
        )
        for name, _, namespace, labels in demo.PODS
    ]
    pods.add(runner.state_dir, specs)
    return runner.state()


def test_vxlan_always_two_subnets_dual_stack(lab: LabRunner) -> None:
    lab.run("up", "--nodes", "4", "--encapsulation", "vxlan", "--subnets", "2", "--ipv6")
    state = lab.state()
    fabric = state.fabric_namespace
    add_counters(fabric, "forward")
    for node in state.nodes:
        details = kernel.ip(node.namespace, "-d", "link", "show", "vxlan.calico")
        assert "vxlan id 4096" in details and "dstport 4789" in details, details
        assert "vxlan id 4096" in kernel.ip(node.namespace, "-d", "link", "show", "vxlan-v6.calico")
    nodes = json.loads(ctl(state, "get", "nodes", "-o", "json"))["items"]
    assert all(n["spec"].get("ipv4VXLANTunnelAddr") and n["spec"].get("vxlanTunnelMACAddr")
               and n["spec"].get("ipv6VXLANTunnelAddr") for n in nodes), nodes  # fmt: skip

    state = add_demo_pods(lab)
    pod = state.pod("web-1")
    assert "mtu 1430" in kernel.ip(pod.netns, "link", "show", "eth0")  # 1500 - 70 (v6 VXLAN)
    result = matrix.run(state.pods, lambda *_: True, deadline=30.0)
    assert not result.mismatches, matrix.summary(result) + f" {result.mismatches[:10]}" + lab.logs()
    assert result.reachable == 6 * 5 * 4  # icmp, tcp, icmp6, tcp6
    # Pods crossed subnets only inside VXLAN: the router forwarded UDP 4789, never a pod packet.
    assert counter(fabric, "vxlan") > 0
    assert counter(fabric, "pods") == 0
    assert "10.65." not in kernel.ip(fabric, "route")
    # Each node blackholes the rest of its own blocks (Felix owns the cluster routes).
    assert "blackhole 10.65." in kernel.ip(state.node("node1").namespace, "route")

    # The demo's policy matrix, over the overlay (this lab has no Kubernetes, so the demo's
    # NetworkPolicy goes in as the Calico policy kube-controllers would make of it).
    ctl(state, "apply", "-f", "-", stdin=demo.POLICIES + "---\n" + DB_FROM_WEB_ONLY)
    result = matrix.run(state.pods, demo.expected_after_policy, deadline=30.0)
    assert not result.mismatches, matrix.summary(result) + f" {result.mismatches[:10]}"

    # A VTEP appearing (a new node with a block) reaches the others' kernels within 2 s.
    ghost_block = "10.65.250.0/26"
    ctl(state, "apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": "ghost"},
        "spec": {"bgp": {"ipv4Address": "10.99.1.77/24"}, "ipv4VXLANTunnelAddr": "10.65.250.0",
                 "vxlanTunnelMACAddr": "66:00:00:00:00:77"}}))  # fmt: skip
    write_affinity(state, "ghost", ghost_block, b'{"state":"confirmed"}')
    node1 = state.node("node1").namespace

    def seen() -> bool:
        return ghost_block in kernel.ip(node1, "route") and "66:00:00:00:00:77" in kernel_state(
            node1
        )

    took = wait_for(seen, 2.0, "ghost VTEP programmed on node1")
    assert "10.65.250.0/26 via 10.65.250.0 dev vxlan.calico" in kernel.ip(node1, "route")
    assert "dst 10.99.1.77" in kernel.netns_exec(
        node1, "bridge", "fdb", "show", "dev", "vxlan.calico"
    )
    ctl(state, "delete", "node", "ghost")
    write_affinity(state, "ghost", ghost_block, None)
    gone = wait_for(lambda: "66:00:00:00:00:77" not in kernel_state(node1)
                    and ghost_block not in kernel.ip(node1, "route"), 2.0, "ghost removed")  # fmt: skip
    print(f"VTEP add {took:.3f}s, remove {gone:.3f}s")

    restart_felix_under_flow(state, lab)


def write_affinity(lab: LabState, host: str, cidr: str, value: bytes | None) -> None:
    key = affinity_key(host, cidr)

    async def work(resource_store: ResourceStore) -> None:
        if value is None:
            await resource_store.kv.delete(key)
        else:
            await resource_store.kv.put(key, value)

    store.call(lab.host_endpoints, work)


def restart_felix_under_flow(state: LabState, runner: LabRunner) -> None:
    """Felix on node1 restarts while a TCP flow crosses the overlay; leftovers are swept."""
    client, server = state.pod("web-1"), state.pod("db")  # node1 -> node4 (other subnet)
    listener = socket_in_netns(server.netns, socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((server.ipv4, 9123))
    listener.listen(1)
    flow = socket_in_netns(client.netns, socket.AF_INET, socket.SOCK_STREAM)
    flow.settimeout(5)
    flow.connect((server.ipv4, 9123))
    accepted, _ = listener.accept()
    accepted.settimeout(5)
    node1 = state.node("node1").namespace
    # Leftovers of "a previous Felix": a stale VTEP's neighbour, FDB entry and route.
    kernel.ip(node1, "neigh", "replace", "10.65.251.0", "lladdr", "66:00:00:00:00:99", "dev",
              "vxlan.calico", "nud", "permanent")  # fmt: skip
    kernel.netns_exec(node1, "bridge", "fdb", "append", "66:00:00:00:00:99", "dev", "vxlan.calico",
                      "dst", "10.99.1.99", "self", "permanent")  # fmt: skip
    kernel.ip(node1, "route", "add", "10.65.251.0/26", "via", "10.65.251.0", "dev", "vxlan.calico",
              "onlink", "proto", "80")  # fmt: skip
    felix = [p for p in kernel.namespace_pids(node1) if "calico-felix" in kernel.command_name(p)]
    assert felix, "no Felix on node1"
    for pid in felix:
        subprocess.run(["kill", "-KILL", str(pid)], check=True)
    try:
        for _i in range(30):  # the flow keeps going while Felix is down and restarting
            flow.sendall(b"x" * 100)
            assert accepted.recv(100), "flow broken"
            time.sleep(0.1)
        wait_for(lambda: "10.65.251.0" not in kernel_state(node1)
                 and "66:00:00:00:00:99" not in kernel_state(node1), 30.0,
                 "leftovers swept by the restarted Felix")  # fmt: skip
        flow.sendall(b"after")
        assert accepted.recv(5) == b"after"
    finally:
        for sock in (flow, accepted, listener):
            sock.close()


def test_vxlan_cross_subnet_encapsulates_only_across_subnets(lab: LabRunner) -> None:
    lab.run("up", "--nodes", "3", "--encapsulation", "vxlan-crosssubnet", "--subnets", "2")
    state = lab.state()  # node1, node2 in 10.99.0.0/24; node3 in 10.99.1.0/24
    node2 = state.node("node2").namespace
    add_counters(node2, "prerouting")
    add_counters(state.fabric_namespace, "forward")
    pods.add(lab.state_dir, [pods.PodSpec(f"p{i}", f"node{i}", "default", {}) for i in (1, 2, 3)])
    state = lab.state()
    node1 = state.node("node1").namespace
    routes = kernel.ip(node1, "route")
    p2, p3 = state.pod("p2"), state.pod("p3")
    block2 = kernel.ip(node1, "route", "get", p2.ipv4)
    assert "via 10.99.0.2 dev eth0" in block2, routes
    assert "dev vxlan.calico" in kernel.ip(node1, "route", "get", p3.ipv4), routes
    result = matrix.run(state.pods, lambda *_: True, deadline=30.0)
    assert not result.mismatches, matrix.summary(result) + lab.logs()
    # node1 <-> node2 pod traffic arrived at node2 unencapsulated, none of it as VXLAN.
    assert counter(node2, "pods") > 0
    vxlan_at_node2 = counter(node2, "vxlan")
    assert counter(state.fabric_namespace, "vxlan") > 0  # node3 only through the overlay
    # (Same-subnet pod packets are bridged by br0, and seen there too when br_netfilter is
    # loaded; what matters is that none was routed between the subnets.)
    assert counter(state.fabric_namespace, "crossed") == 0
    # node2's VXLAN packets all come from node3 (another subnet), never from node1.
    assert vxlan_at_node2 > 0
    assert counter(node2, "same") == 0

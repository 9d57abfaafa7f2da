"""Outgoing NAT on a real kernel: a pod in a natOutgoing pool reaches an outside host as its node
(or as ``natOutgoingAddress``); pod-to-pod traffic across nodes is never masqueraded; without
natOutgoing the outside host sees the pod.  IPv4 and IPv6.

The world (every namespace created here, removed at module end, also on failure):

    pod a (10.66.0.1, fd00:66::1) ── node A ── eth1 ── outside (192.168.71.2, fd00:71::2)
                                       └── eth2 ── node B ── pod b (10.66.1.1, fd00:66:0:1::1)

Felix's in-process dataplane programs node A; node B is plain routing (what matters is the
source address pod b sees).  Servers tell each client the source address they saw.  The last
test runs ``calico-felix`` itself against real etcd: the pool is an IPPool resource, and turning
its ``natOutgoing`` off reaches the kernel through the syncer, the calculation graph and the NAT
manager (the time that takes is measured).
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from pycalico.datastore.etcd import EtcdKVStore
from pycalico.felix import messages as m
from pycalico.felix.dataplane.loop import DataplaneOptions
from pycalico.felix.rules.model import RenderConfig
from pycalico.model.ipam import IPPool
from pycalico.testing import felix_world, netns
from pycalico.testing.etcd_server import EtcdServer

from .conftest import ALLOW, PROFILE, Node
from .test_felix_daemon import FelixProcess

pytestmark = pytest.mark.root

POD_A, POD_A6 = "10.66.0.1", "fd00:66::1"
POD_B, POD_B6 = "10.66.1.1", "fd00:66:0:1::1"
NODE_A_OUT, NODE_A_OUT6 = "192.168.71.1", "fd00:71::1"
OUTSIDE, OUTSIDE6 = "192.168.71.2", "fd00:71::2"
NAT_ADDRESS = "192.168.71.10"  # natOutgoingAddress: a second address of node A
POOLS = ("10.66.0.0/16", "fd00:66::/48")
PORT = 7070


@dataclass
class World:
    a: netns.Topology
    b: netns.Topology

    @property
    def outside(self) -> str:
        return self.a.pods["out"].name


def _link_nodes(a: netns.Topology, b: netns.Topology) -> None:
    netns.run("ip", "link", "add", "eth2", "netns", a.node, "type", "veth", "peer", "name",
              "eth2", "netns", b.node)  # fmt: skip
    for node, mine, mine6 in (
        (a.node, "172.30.0.1", "fd00:72::1"),
        (b.node, "172.30.0.2", "fd00:72::2"),
    ):
        netns.netns_run(node, "ip", "addr", "add", f"{mine}/30", "dev", "eth2")
        netns.netns_run(node, "ip", "-6", "addr", "add", f"{mine6}/64", "dev", "eth2", "nodad")
        netns.netns_run(node, "ip", "link", "set", "eth2", "up")
    mac = {
        n: netns.netns_run(n, "cat", "/sys/class/net/eth2/address").strip()
        for n in (a.node, b.node)
    }
    for node, peer, ip, ip6 in ((a.node, b.node, "172.30.0.2", "fd00:72::2"),
                                (b.node, a.node, "172.30.0.1", "fd00:72::1")):  # fmt: skip
        for address in (ip, ip6):
            netns.netns_run(node, "ip", "neigh", "replace", address, "lladdr", mac[peer], "dev",
                            "eth2", "nud", "permanent")  # fmt: skip
    netns.netns_run(a.node, "ip", "route", "add", "10.66.1.0/24", "via", "172.30.0.2")
    netns.netns_run(a.node, "ip", "-6", "route", "add", "fd00:66:0:1::/64", "via", "fd00:72::2")
    netns.netns_run(b.node, "ip", "route", "add", "10.66.0.0/24", "via", "172.30.0.1")
    netns.netns_run(b.node, "ip", "-6", "route", "add", "fd00:66::/64", "via", "fd00:72::1")
    pod_b = b.pods["b"]
    netns.netns_run(b.node, "ip", "route", "add", POD_B, "dev", pod_b.interface)
    netns.netns_run(b.node, "ip", "-6", "route", "add", POD_B6, "dev", pod_b.interface)


def _outside_v6(a: netns.Topology) -> None:
    out = a.pods["out"]
    netns.netns_run(a.node, "ip", "-6", "addr", "add", f"{NODE_A_OUT6}/64", "dev", "eth1", "nodad")
    netns.netns_run(out.name, "ip", "-6", "addr", "add", f"{OUTSIDE6}/64", "dev", "eth0", "nodad")
    netns.netns_run(out.name, "ip", "-6", "route", "add", "default", "via", NODE_A_OUT6)
    node_mac = netns.netns_run(a.node, "cat", "/sys/class/net/eth1/address").strip()
    for address in (NODE_A_OUT6, NAT_ADDRESS):
        netns.netns_run(out.name, "ip", "neigh", "replace", address, "lladdr", node_mac, "dev",
                        "eth0", "nud", "permanent")  # fmt: skip
    netns.netns_run(a.node, "ip", "neigh", "replace", OUTSIDE6, "lladdr", out.mac, "dev", "eth1",
                    "nud", "permanent")  # fmt: skip
    netns.netns_run(a.node, "ip", "addr", "add", f"{NAT_ADDRESS}/32", "dev", "eth1")


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    a, b = netns.Topology(), netns.Topology()
    try:
        a.create_node()
        a.add_pod("a", POD_A, ipv6=POD_A6)
        a.add_outside("out", "eth1", NODE_A_OUT, OUTSIDE)
        _outside_v6(a)
        b.create_node()
        b.add_pod("b", POD_B, ipv6=POD_B6)
        _link_nodes(a, b)
        yield World(a, b)
    finally:
        a.cleanup()
        b.cleanup()


class WhoAmI:
    """Servers (v4 and v6) in a namespace that answer each connection with its source address."""

    def __init__(self, namespace: str) -> None:
        self.sockets: list[socket.socket] = []
        with netns.enter(namespace):
            for family, address in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
                server = socket.socket(family)
                server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                server.bind((address, PORT))
                server.listen(8)
                threading.Thread(target=self._serve, args=(server,), daemon=True).start()
                self.sockets.append(server)

    @staticmethod
    def _serve(server: socket.socket) -> None:
        while True:
            try:
                connection, peer = server.accept()
            except OSError:
                return
            with connection:
                connection.sendall(peer[0].encode())

    def close(self) -> None:
        for server in self.sockets:
            server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
            server.close()


def seen_by(world: World, source: str, target: str) -> str:
    """The source address the server at ``target`` saw for a connection from pod ``source``."""
    return seen_from(world.a.pods[source].name, target)


def seen_from(namespace: str, target: str) -> str:
    family = socket.AF_INET6 if ":" in target else socket.AF_INET
    with netns.enter(namespace):
        client = socket.socket(family)
    with client:
        client.settimeout(5)
        client.connect((target, PORT))
        return client.recv(64).decode()


@pytest.fixture(scope="module")
def servers(world: World) -> Iterator[None]:
    outside, pod_b = WhoAmI(world.outside), WhoAmI(world.b.pods["b"].name)
    try:
        yield
    finally:
        outside.close()
        pod_b.close()


def felix(world: World, nat_outgoing_address: str = "") -> Node:
    options = DataplaneOptions(render=RenderConfig(nat_outgoing_address=nat_outgoing_address))
    node = Node(world.a, options)
    node.send(m.ActiveProfileUpdate(PROFILE, (ALLOW,), (ALLOW,)), node.workload("a"))
    return node


def pools(masquerade: bool) -> list[m.IPPoolUpdate]:
    return [m.IPPoolUpdate(cidr, cidr, masquerade) for cidr in POOLS]


def test_nat_outgoing_pool_masquerades_only_traffic_leaving_all_pools(
    world: World, servers: None
) -> None:
    node = felix(world)
    node.send(*pools(True), m.InSync())
    assert seen_by(world, "a", OUTSIDE) == NODE_A_OUT
    assert seen_by(world, "a", OUTSIDE6) == NODE_A_OUT6
    # Pod to pod across nodes: the receiving pod sees the real source, v4 and v6.
    assert seen_by(world, "a", POD_B) == POD_A
    assert seen_by(world, "a", POD_B6) == POD_A6
    # ... also when the remote pod's pool is another (disabled) pool than the sender's.
    node.send(m.IPPoolUpdate("10.66.0.0/24", "10.66.0.0/24", True),
              m.IPPoolRemove("10.66.0.0/16"),
              m.IPPoolUpdate("10.66.1.0/24", "10.66.1.0/24", False, disabled=True))  # fmt: skip
    assert seen_by(world, "a", POD_B) == POD_A
    assert seen_by(world, "a", OUTSIDE) == NODE_A_OUT


def test_without_nat_outgoing_the_outside_host_sees_the_pod(world: World, servers: None) -> None:
    node = felix(world)
    node.send(*pools(False), m.InSync())
    assert seen_by(world, "a", OUTSIDE) == POD_A
    assert seen_by(world, "a", OUTSIDE6) == POD_A6
    # Turning natOutgoing on is one set change, applied by the next transaction.
    start = time.perf_counter()
    node.send(*pools(True))
    elapsed = time.perf_counter() - start
    assert seen_by(world, "a", OUTSIDE) == NODE_A_OUT  # a new connection: new conntrack entry
    assert elapsed < 1.0, f"NAT pool change took {elapsed:.3f}s to apply"


def test_nat_outgoing_address_is_the_source_the_outside_host_sees(
    world: World, servers: None
) -> None:
    node = felix(world, nat_outgoing_address=NAT_ADDRESS)
    node.send(*pools(True), m.InSync())
    assert seen_by(world, "a", OUTSIDE) == NAT_ADDRESS
    assert seen_by(world, "a", OUTSIDE6) == NODE_A_OUT6  # v6 still masquerades
    assert seen_by(world, "a", POD_B) == POD_A


# --- calico-felix end to end: the pool in etcd -------------------------------------------------

E2E_PODS = {"p": "10.69.0.1"}
E2E_NODE_OUT, E2E_OUTSIDE = "192.168.73.1", "192.168.73.2"
RELAY_PORT = 23792


@pytest.fixture(scope="module")
def etcd_world() -> Iterator[tuple[netns.Topology, EtcdServer]]:
    """A node namespace with pod ``p`` and an outside namespace; etcd relayed into the node."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    server = EtcdServer(name="felix-nat")
    try:
        server.start()
        with felix_world.etcd_node(server, E2E_PODS, RELAY_PORT) as (topo, _):
            topo.add_outside("out", "eth1", E2E_NODE_OUT, E2E_OUTSIDE)
            yield topo, server
    finally:
        server.close()


@pytest.fixture
async def e2e_kv(etcd_world: tuple[netns.Topology, EtcdServer]) -> AsyncIterator[EtcdKVStore]:
    store = EtcdKVStore([etcd_world[1].endpoint])
    try:
        await store.delete_prefix("/calico/")
        yield store
    finally:
        await store.close()


def nat_pool(nat_outgoing: bool) -> IPPool:
    spec = {"cidr": "10.69.0.0/16", "natOutgoing": nat_outgoing}
    return IPPool.model_validate({"metadata": {"name": "nat-pool"}, "spec": spec})


async def until_seen(namespace: str, expected: str, felix: FelixProcess) -> float:
    """Seconds until a new connection from ``namespace`` is seen as ``expected`` (10 s max)."""
    start = time.monotonic()
    seen = ""
    while time.monotonic() - start < 10:
        seen = await asyncio.to_thread(seen_from, namespace, E2E_OUTSIDE)
        if seen == expected:
            return time.monotonic() - start
        await asyncio.sleep(0.02)
    raise AssertionError(f"outside still sees {seen}, not {expected}\n{felix.tail(40)}")


async def test_calico_felix_follows_the_pool_in_etcd(
    etcd_world: tuple[netns.Topology, EtcdServer], e2e_kv: EtcdKVStore
) -> None:
    topo, _ = etcd_world
    outside = WhoAmI(topo.pods["out"].name)
    felix = FelixProcess(topo.node, f"felix-{topo.tag}", RELAY_PORT)
    try:
        await felix_world.write_pods(e2e_kv, topo, felix.hostname, E2E_PODS, {"p": {}})
        await felix_world.put(e2e_kv, nat_pool(True))
        felix.start()
        await asyncio.to_thread(felix.wait_ready)
        pod = topo.pods["p"].name
        await until_seen(pod, E2E_NODE_OUT, felix)
        await felix_world.put(e2e_kv, nat_pool(False))
        off = await until_seen(pod, E2E_PODS["p"], felix)
        await felix_world.put(e2e_kv, nat_pool(True))
        on = await until_seen(pod, E2E_NODE_OUT, felix)
        print(f"natOutgoing off in etcd -> pod seen as itself: {off:.3f} s; on again: {on:.3f} s")
        assert max(off, on) < 2.0, (off, on)
        assert felix.stop() == 0, felix.tail()
    finally:
        outside.close()
        felix.cleanup()
        netns.netns_run(topo.node, "nft", "delete", "table", "inet", "calico", check=False)

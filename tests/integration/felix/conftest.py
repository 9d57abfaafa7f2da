"""Fixtures for Felix dataplane tests on real namespaces, veths and nftables.

* ``topology`` (module): a node namespace with pods ``a``, ``b``, ``c`` behind ``cali*`` veths
  (pod side ``eth0`` with a ``/32`` and a default route via 169.254.1.1), Calico-style.
* ``node`` (function): a fresh in-process ``Dataplane`` programming that node namespace (so each
  test starts with a freshly replaced ``calico`` table), plus message helpers.
* ``matrix`` (function): a ``ConnectivityChecker`` with servers on TCP 80/81 and UDP 53 in every
  pod.

For tests that run ``calico-felix`` itself against a real etcd (the test module defines
``PODS``, key -> IPv4, and its own ``RELAY_PORT``):

* ``etcd_server`` (module): a private etcd;
* ``world`` (module): a node namespace with those pods, reaching etcd at 127.0.0.1:RELAY_PORT;
* ``kv`` (function): a client on that etcd, with ``/calico/`` wiped before and after the test.

Every namespace is removed at module end, also on failure; servers are stopped per test.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Iterator

import pytest

from pycalico.datastore.etcd import EtcdKVStore
from pycalico.felix import messages as m
from pycalico.felix.dataplane.loop import ApplyReport, Dataplane, DataplaneOptions
from pycalico.felix.drivers.conntrack import ConntrackCommand
from pycalico.felix.drivers.interfaces import ProcSysctls
from pycalico.felix.drivers.nft import LibNftablesBackend
from pycalico.felix.drivers.routes import NetlinkRoutes
from pycalico.testing import netns
from pycalico.testing.connectivity import ConnectivityChecker, Endpoint
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.felix_world import EtcdRelay, etcd_node

pytestmark = pytest.mark.root

ALLOW = m.ResolvedRule(action="allow")
PROFILE = m.ProfileID("kns.default")
PODS = {"a": "10.65.0.1", "b": "10.65.0.2", "c": "10.65.0.3"}


@pytest.fixture(scope="module")
def topology() -> Iterator[netns.Topology]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    topo = netns.Topology()
    try:
        topo.create_node()
        for key, ip in PODS.items():
            topo.add_pod(key, ip, ipv6=f"fd00:65::{ip.rsplit('.', 1)[1]}")
        yield topo
    finally:
        topo.cleanup()


@contextlib.contextmanager
def host_endpoint_topology(
    pod_ip: str, node_ip: str, outside_ip: str, pod_subnet: str
) -> Iterator[netns.Topology]:
    """A node with one pod (``pod``) and an outside namespace (``out``) on the node's plain
    interface ``eth1``, routed to the pods' subnet through the node: the host endpoint tests'
    world.  Removed on exit, also on failure."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    topo = netns.Topology()
    try:
        topo.create_node()
        topo.add_pod("pod", pod_ip)
        topo.add_outside("out", "eth1", node_ip, outside_ip)
        netns.netns_run(topo.pods["out"].name, "ip", "route", "add", pod_subnet, "via", node_ip)
        yield topo
    finally:
        topo.cleanup()


def wep_id(key: str) -> m.WorkloadEndpointID:
    return m.WorkloadEndpointID("k8s", f"default/{key}", "eth0")


class Node:
    """An in-process Felix dataplane bound to the node namespace of a topology."""

    def __init__(self, topology: netns.Topology, options: DataplaneOptions | None = None) -> None:
        self.topology = topology
        with netns.enter(topology.node):
            self.dataplane = Dataplane(
                options or DataplaneOptions(),
                LibNftablesBackend(),
                NetlinkRoutes(),
                ProcSysctls(),
                ConntrackCommand(),
            )

    def send(self, *messages: m.Message) -> ApplyReport | None:
        with netns.enter(self.topology.node):
            for message in messages:
                self.dataplane.on_update(message)
            return self.dataplane.apply()

    def workload(
        self,
        key: str,
        tiers: tuple[m.TierInfo, ...] = (),
        profiles: tuple[m.ProfileID, ...] = (PROFILE,),
        allow_spoofed: tuple[str, ...] = (),
    ) -> m.WorkloadEndpointUpdate:
        pod = self.topology.pods[key]
        return m.WorkloadEndpointUpdate(
            wep_id(key),
            pod.interface,
            pod.mac,
            (f"{pod.ipv4}/32",),
            (f"{pod.ipv6}/128",) if pod.ipv6 else (),
            profiles,
            tiers,
            allow_spoofed_source_prefixes=allow_spoofed,
        )

    def start(
        self, *extra: m.Message, tiers: dict[str, tuple[m.TierInfo, ...]] | None = None
    ) -> None:
        """Allow-all profile, every pod as a workload, the extra messages, then in-sync."""
        tiers = tiers or {}
        self.send(
            m.ActiveProfileUpdate(PROFILE, (ALLOW,), (ALLOW,)),
            *extra,
            *(self.workload(key, tiers.get(key, ())) for key in PODS),
            m.InSync(),
        )

    def nft(self, *args: str) -> str:
        return netns.netns_run(self.topology.node, "nft", *args)


@pytest.fixture
def node(topology: netns.Topology) -> Node:
    return Node(topology)


@pytest.fixture
def matrix(topology: netns.Topology) -> Iterator[ConnectivityChecker]:
    endpoints = {key: Endpoint(pod.name, pod.ipv4) for key, pod in topology.pods.items()}
    endpoints |= {f"{key}6": Endpoint(pod.name, pod.ipv6) for key, pod in topology.pods.items()}
    endpoints["node"] = Endpoint(topology.node, "10.65.255.1")
    checker = ConnectivityChecker(endpoints)
    try:
        checker.serve(list(PODS), tcp_ports=(80, 81), udp_ports=(53,))
        checker.serve([f"{key}6" for key in PODS], tcp_ports=(80,))
        yield checker
    finally:
        checker.stop()


# --- calico-felix against a real etcd -------------------------------------------------------


@pytest.fixture(scope="module")
def etcd_server(request: pytest.FixtureRequest) -> Iterator[EtcdServer]:
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    server = EtcdServer(name=f"felix-{module}")
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def world(
    request: pytest.FixtureRequest, etcd_server: EtcdServer
) -> Iterator[tuple[netns.Topology, EtcdRelay]]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    with etcd_node(etcd_server, request.module.PODS, request.module.RELAY_PORT) as node:
        yield node


@pytest.fixture
async def kv(etcd_server: EtcdServer) -> AsyncIterator[EtcdKVStore]:
    if not etcd_server.running:  # a test that stopped it (an outage drill) may end early
        etcd_server.start()
    store = EtcdKVStore([etcd_server.endpoint])
    try:
        await store.delete_prefix("/calico/")
        yield store
    finally:
        if etcd_server.running:
            await store.delete_prefix("/calico/")
        await store.close()

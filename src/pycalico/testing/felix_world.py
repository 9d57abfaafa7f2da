"""A node for end-to-end Felix tests: pods in namespaces, real etcd behind a relay, packets.

What it is: the pieces every test that runs Felix against real etcd and checks reachability
with packets needs — a node namespace with pods and a loopback relay to an etcd member
(``etcd_node``), servers in every pod (``serving``), the expected matrix for a set of blocked
pairs (``reachability``), and writing resources and the pods' WorkloadEndpoints as the CNI
plugin would (``put``, ``pod_workload``, ``write_pods``).  What it is not: a Felix launcher
(each test module runs Felix its own way: a process, or calico-node's supervisor).

Invariant: ``etcd_node`` and ``serving`` undo what they made (namespaces, relay, servers), also
when the test fails.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from pycalico.datastore.api import KVStore
from pycalico.felix.calc import key_of
from pycalico.model.codec import encode_value
from pycalico.model.meta import Resource
from pycalico.testing import felix_calc as build
from pycalico.testing import netns
from pycalico.testing.connectivity import ConnectivityChecker, Endpoint, Probe
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.netns_fabric import EtcdRelay


@contextlib.contextmanager
def etcd_node(
    etcd: EtcdServer, pods: Mapping[str, str], relay_port: int
) -> Iterator[tuple[netns.Topology, EtcdRelay]]:
    """A node namespace with ``pods`` (key -> IPv4) and etcd reachable at 127.0.0.1:relay_port
    inside it.  Needs root."""
    if os.geteuid() != 0:
        raise PermissionError("a Felix node needs root (network namespaces)")
    topo = netns.Topology()
    relay = EtcdRelay("127.0.0.1", etcd.client_port)
    try:
        topo.create_node()
        for key, ip in pods.items():
            topo.add_pod(key, ip)
        relay.add(topo.node, relay_port)
        yield topo, relay
    finally:
        relay.close()
        topo.cleanup()


@contextlib.contextmanager
def serving(
    topo: netns.Topology, keys: Iterable[str], tcp_ports: tuple[int, ...] = (80,)
) -> Iterator[ConnectivityChecker]:
    """Servers on ``tcp_ports`` and UDP 53 in each pod of ``keys``; stopped on exit."""
    checker = ConnectivityChecker(
        {key: Endpoint(pod.name, pod.ipv4) for key, pod in topo.pods.items()}
    )
    try:
        checker.serve(list(keys), tcp_ports=tcp_ports, udp_ports=(53,))
        yield checker
    finally:
        checker.stop()


def reachability(keys: Iterable[str], blocked: Iterable[tuple[str, str]] = ()) -> dict[Probe, bool]:
    """TCP 80 and ICMP between every ordered pair of pods: open unless the pair is blocked."""
    closed = set(blocked)
    pods = list(keys)
    out: dict[Probe, bool] = {}
    for src in pods:
        for dst in pods:
            if src != dst:
                out[Probe(src, dst, 80)] = (src, dst) not in closed
                out[Probe(src, dst, 0, "icmp")] = (src, dst) not in closed
    return out


async def put(kv: KVStore, resource: Resource) -> None:
    await kv.put(key_of(resource), encode_value(resource))


def pod_workload(topo: netns.Topology, key: str, ip: str, **fields: Any) -> Resource:
    """The pod's WorkloadEndpoint as the CNI plugin writes it (its veth, address and MAC)."""
    pod = topo.pods[key]
    endpoint = build.workload(f"pod-{key}", ips=[ip], interface=pod.interface, **fields)
    return endpoint.model_copy(update={"spec": endpoint.spec.model_copy(update={"mac": pod.mac})})


async def write_pods(
    kv: KVStore,
    topo: netns.Topology,
    hostname: str,
    pods: Mapping[str, str],
    labels: Mapping[str, Mapping[str, str]],
) -> None:
    """The ``default`` namespace profile and a WorkloadEndpoint per pod on ``hostname``."""
    await put(kv, build.namespace_profile("default"))
    for key, ip in pods.items():
        await put(kv, pod_workload(topo, key, ip, node=hostname, labels=labels[key]))

"""Calico's endpoint status files, end to end: ``calico-felix`` (a process in a node namespace,
real etcd, real nftables) writes one file per local workload endpoint that is up under
``<endpointStatusPathPrefix>/endpoint-status/``, sweeps a leftover of a previous run, removes a
file when its endpoint is deleted, and still reports the status in etcd.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator

import pytest

from pycalico.datastore import paths
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.felix.calc import key_of
from pycalico.testing import felix_world, netns
from pycalico.testing.felix_world import pod_workload
from pycalico.testing.netns_fabric import EtcdRelay

from .test_felix_daemon import FelixProcess

pytestmark = pytest.mark.root

PODS = {"a": "10.68.0.1", "b": "10.68.0.2"}
LABELS = {"a": {"role": "a"}, "b": {"role": "b"}}
RELAY_PORT = 23791


@pytest.fixture
def status_prefix() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="felix-epstatus-")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def felix(world: tuple[netns.Topology, EtcdRelay], status_prefix: str) -> Iterator[FelixProcess]:
    topo, _ = world
    process = FelixProcess(topo.node, f"felix-{topo.tag}", RELAY_PORT)
    process.env["FELIX_ENDPOINTSTATUSPATHPREFIX"] = status_prefix
    try:
        yield process
    finally:
        process.cleanup()
        netns.netns_run(topo.node, "nft", "delete", "table", "inet", "calico", check=False)
        netns.netns_run(topo.node, "ip", "route", "flush", "proto", "80", check=False)


async def until(condition: Callable[[], bool], felix: FelixProcess, what: str) -> None:
    """Poll ``condition`` (a file system view) for up to 10 s; fail with Felix's log."""
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n--- felix log ---\n{felix.tail(40)}")


def listing(directory: str) -> dict[str, str]:
    if not os.path.isdir(directory):
        return {}
    out = {}
    for name in os.listdir(directory):
        with open(os.path.join(directory, name)) as handle:
            out[name] = handle.read()
    return out


async def test_status_files_follow_the_local_endpoints(
    kv: EtcdKVStore,
    world: tuple[netns.Topology, EtcdRelay],
    felix: FelixProcess,
    status_prefix: str,
) -> None:
    topo, _ = world
    directory = os.path.join(status_prefix, "endpoint-status")
    os.makedirs(directory)
    leftover = os.path.join(directory, "k8s default%2Fpod-gone eth0")
    with open(leftover, "w") as handle:
        handle.write("{}")
    await felix_world.write_pods(kv, topo, felix.hostname, PODS, LABELS)
    felix.start()
    await asyncio.to_thread(felix.wait_ready)

    names = {f"k8s default%2Fpod-{key} eth0" for key in PODS}
    await until(lambda: set(listing(directory)) == names, felix, f"files {names}")
    content = json.loads(listing(directory)["k8s default%2Fpod-a eth0"])
    pod = topo.pods["a"]
    assert content == {"ifaceName": pod.interface, "mac": pod.mac, "ipv4Nets": ["10.68.0.1/32"]}

    # Status in etcd as before (endpoint reporting on in FelixProcess).
    key = paths.workload_endpoint_status_key(felix.hostname, "k8s", "default/pod-b", "eth0")
    assert (await kv.get(key)) is not None

    # The endpoint goes: its file goes; the other stays.
    endpoint_b = pod_workload(topo, "b", PODS["b"], node=felix.hostname, labels=LABELS["b"])
    await kv.delete(key_of(endpoint_b))
    await until(lambda: set(listing(directory)) == {"k8s default%2Fpod-a eth0"}, felix, "b gone")
    assert felix.stop() == 0, felix.tail()

"""calico-node with ``CALICO_CONFD_IN_PROCESS=true``: no confd child, the same BGP result (two
nodes mesh, a claimed block becomes a route on the other node)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pycalico.testing.bgp_cluster import BgpCluster, wait_for
from pycalico.testing.etcd_server import EtcdServer

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture
def cluster(etcd: EtcdServer) -> Iterator[BgpCluster]:
    if not etcd.running:
        etcd.start()
    with BgpCluster(
        etcd.endpoint, 2, prefix="pcip", extra_env={"CALICO_CONFD_IN_PROCESS": "true"}
    ) as built:
        built.call(lambda kv: kv.delete_prefix(""))
        built.start()
        yield built


def test_in_process_confd_meshes_and_routes(cluster: BgpCluster) -> None:
    first, second = cluster.nodes
    try:
        wait_for(lambda: set(cluster.established(first)) == {"Mesh_10_213_0_2"}, 30)
    except TimeoutError:
        pytest.fail(cluster.logs(first))
    for node in cluster.nodes:
        commands = []
        for pid in cluster.fabric.pids(node.namespace):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as file:
                    commands.append(file.read().split(b"\0"))
            except OSError:
                continue
        assert not any(b"-confd" in words for words in commands), commands
    block = str(cluster.assign(first, "k8s-pod-network.ip1").network)
    route = wait_for(lambda: cluster.kernel_routes(second).get(block), 20)
    assert route["gateway"] == first.ip

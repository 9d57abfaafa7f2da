"""BGPFilter end to end: two calico-nodes with real BIRD and an external router (gobgpd) as a
global BGPPeer that names a filter.

1. The peer names a filter that does not exist yet: the router gets both nodes' blocks.
2. Creating the filter (export: reject block B) makes confd re-render; the router loses B and
   keeps A (B is rejected on both nodes: node 2 originates it, node 1 would re-advertise it).
3. Taking the filter off the peer brings B back.

Every step also checks that the node's rendered configuration says what the step expects.
"""

from __future__ import annotations

import ipaddress
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pycalico.testing.bgp_cluster import BgpCluster, GoBgp, wait_for
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.netns_fabric import FabricNode

pytestmark = [pytest.mark.root, pytest.mark.slow]

ROUTER_AS = 65000
FUNCTION = "'bgp_reject-b_exportFilterV4'"


@pytest.fixture
def cluster(etcd: EtcdServer) -> Iterator[BgpCluster]:
    if not etcd.running:
        etcd.start()
    with BgpCluster(etcd.endpoint, 2, prefix="pcbf") as built:
        built.call(lambda kv: kv.delete_prefix(""))
        built.start()
        failed = True
        try:
            yield built
            failed = False
        finally:
            if failed:
                for node in built.nodes:
                    sys.stderr.write(built.logs(node)[-3000:] + "\n")
            built.call(lambda kv: kv.delete_prefix(""))


def block_of(cluster: BgpCluster, node: FabricNode, handle: str) -> str:
    address = cluster.assign(node, handle)
    return str(ipaddress.ip_interface(f"{address.ip}/26").network)


def peer(address: str, filters: list[str] | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"peerIP": address, "asNumber": ROUTER_AS}
    if filters is not None:
        spec["filters"] = filters
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "BGPPeer",
        "metadata": {"name": "edge-router"},
        "spec": spec,
    }


def rendered(node: FabricNode) -> str:
    with open(node.bird_config) as file:
        return file.read()


def test_export_filter_withholds_a_block_until_taken_off_the_peer(cluster: BgpCluster) -> None:
    first, second = cluster.nodes
    mesh = f"Mesh_{second.ip.replace('.', '_')}"
    try:
        wait_for(lambda: mesh in cluster.established(first), 30)
    except TimeoutError:
        pytest.fail(f"no mesh session: {cluster.bgp_protocols(first)}")
    block_a = block_of(cluster, first, "k8s-pod-network.fa")
    block_b = block_of(cluster, second, "k8s-pod-network.fb")
    assert block_a != block_b
    namespace, address = cluster.fabric.add_router(100)
    router = GoBgp(cluster.fabric, namespace, address, ROUTER_AS)
    router.start([(node.ip, 64512) for node in cluster.nodes])

    def expect(prefixes: set[str], what: str) -> None:
        try:
            wait_for(lambda: router.prefixes() == prefixes, 30)
        except TimeoutError:
            pytest.fail(
                f"{what}: router has {router.prefixes()}, wanted {prefixes}; sessions "
                f"{router.established()}; node1 {cluster.bgp_protocols(first)}"
            )

    try:
        cluster.apply(peer(address, ["reject-b"]))
        try:
            wait_for(lambda: len(router.established()) == 2, 30)
        except TimeoutError:
            pytest.fail(f"router sessions {router.established()}")
        expect({block_a, block_b}, "filter named but missing")
        assert "no BGPFilter 'reject-b'" in rendered(first)

        cluster.apply(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "BGPFilter",
                "metadata": {"name": "reject-b"},
                "spec": {
                    "exportV4": [{"action": "Reject", "matchOperator": "In", "cidr": block_b}]
                },
            }
        )
        expect({block_a}, "filter rejecting block B")
        for node in cluster.nodes:
            text = rendered(node)
            assert f"function {FUNCTION}() {{" in text
            assert f"      {FUNCTION}();\n" in text
        time.sleep(1)  # B stays withheld
        assert router.prefixes() == {block_a}

        cluster.apply(peer(address, None))
        expect({block_a, block_b}, "filter taken off the peer")
        for node in cluster.nodes:
            # The function is still defined (the filter exists) but no peer calls it.
            text = rendered(node)
            assert f"function {FUNCTION}() {{" in text
            assert f"      {FUNCTION}();\n" not in text
    finally:
        router.stop()

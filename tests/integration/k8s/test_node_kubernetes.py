"""calico-node with Kubernetes, end to end: a real calico-node (real BIRD) in a network namespace
with ``KUBECONFIG`` for a real kube-apiserver (relayed into the namespace on loopback), and an
external router (gobgpd).

1. The node's address comes from its Kubernetes Node's InternalIP
   (``IP_AUTODETECTION_METHOD=kubernetes-internal-ip``, with eth0's prefix).  Once BIRD answers, ``kubectl get node -o yaml`` shows ``NetworkUnavailable=False``
   (``CalicoIsUp``) and the ``projectcalico.org/*`` annotations; the Calico Node carries
   ``orchRefs`` from ``CALICO_K8S_NODE_REF``.
2. BGPConfiguration ``serviceClusterIPs``: the router receives the range; a Service with
   ``externalTrafficPolicy: Local`` and an endpoint on this node adds its cluster IP /32;
   deleting the Service withdraws the /32 (the range stays).
3. A clean stop of calico-node sets ``CalicoIsDown``; so does ``calico-node -shutdown``.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pycalico.testing.bgp_cluster import BgpCluster, GoBgp, wait_for
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.kube_server import KubeControlPlane
from pycalico.testing.netns_fabric import EtcdRelay

pytestmark = [pytest.mark.root, pytest.mark.slow]

ROUTER_AS = 65000
NODE_AS = 64512
RANGE = "10.96.0.0/16"  # the test API server's --service-cluster-ip-range
CLUSTER_IP = "10.96.7.7"


def kubectl_json(plane: KubeControlPlane, *args: str) -> Any:
    return json.loads(plane.apiserver.kubectl(*args, "-o", "json").stdout)


def kubectl_apply(plane: KubeControlPlane, directory: Path, manifest: dict[str, Any]) -> None:
    path = directory / f"{manifest['kind']}-{secrets.token_hex(3)}.json"
    path.write_text(json.dumps(manifest))
    plane.apiserver.kubectl("apply", "-f", str(path))


@pytest.fixture
def world(
    etcd: EtcdServer, kube_plane: KubeControlPlane, tmp_path: Path
) -> Iterator[tuple[BgpCluster, str]]:
    if not etcd.running:
        etcd.start()
    k8s_name = f"k8s-node-{secrets.token_hex(3)}"
    port = kube_plane.apiserver.port
    env = {
        "KUBECONFIG": str(kube_plane.kubeconfig),
        "CALICO_K8S_NODE_REF": k8s_name,
        "AS": str(NODE_AS),
        "IP_AUTODETECTION_METHOD": "kubernetes-internal-ip",
    }
    relay = EtcdRelay("127.0.0.1", port)  # a plain TCP relay: the API server on loopback
    try:
        with BgpCluster(etcd.endpoint, 1, prefix="pcnk", extra_env=env) as cluster:
            cluster.call(lambda kv: kv.delete_prefix(""))
            # The kubelet's Node: its InternalIP is the address calico-node must pick.
            addresses = [
                {"type": "Hostname", "address": k8s_name},
                {"type": "InternalIP", "address": cluster.nodes[0].ip},
            ]
            node = {"metadata": {"name": k8s_name}, "status": {"addresses": addresses}}
            kubectl_apply(kube_plane, tmp_path, {"apiVersion": "v1", "kind": "Node", **node})
            relay.add(cluster.nodes[0].namespace, port)
            failed = True
            try:
                yield cluster, k8s_name
                failed = False
            finally:
                if failed:
                    sys.stderr.write(cluster.logs(cluster.nodes[0])[-4000:] + "\n")
                cluster.call(lambda kv: kv.delete_prefix(""))
    finally:
        relay.close()
        kube_plane.apiserver.kubectl("delete", "node", k8s_name, "--ignore-not-found")
        for kind in ("service", "endpointslice"):
            kube_plane.apiserver.kubectl("delete", kind, "svc-local", "--ignore-not-found")


def network_condition(plane: KubeControlPlane, name: str) -> dict[str, str]:
    node = kubectl_json(plane, "get", "node", name)
    found = [c for c in node["status"].get("conditions") or [] if c["type"] == "NetworkUnavailable"]
    return found[0] if found else {}


def test_feedback_and_service_advertisement(
    world: tuple[BgpCluster, str], kube_plane: KubeControlPlane, tmp_path: Path
) -> None:
    cluster, k8s_name = world
    [node] = cluster.nodes
    cluster.apply(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "BGPConfiguration",
            "metadata": {"name": "default"},
            "spec": {"serviceClusterIPs": [{"cidr": RANGE}]},
        }
    )
    namespace, address = cluster.fabric.add_router(100)
    router = GoBgp(cluster.fabric, namespace, address, ROUTER_AS)
    router.start([(node.ip, NODE_AS)])
    try:
        cluster.apply(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "BGPPeer",
                "metadata": {"name": "edge-router"},
                "spec": {"peerIP": address, "asNumber": ROUTER_AS},
            }
        )
        cluster.start()

        # 1. Feedback on the Kubernetes Node, as kubectl shows it.
        try:
            wait_for(lambda: network_condition(kube_plane, k8s_name).get("status") == "False", 60)
        except TimeoutError:
            pytest.fail(f"no CalicoIsUp: {network_condition(kube_plane, k8s_name)}")
        condition = network_condition(kube_plane, k8s_name)
        assert condition["reason"] == "CalicoIsUp"
        assert condition["message"] == "Calico is running on this node"
        text = kube_plane.apiserver.kubectl("get", "node", k8s_name, "-o", "yaml").stdout
        assert "type: NetworkUnavailable" in text
        annotations = kubectl_json(kube_plane, "get", "node", k8s_name)["metadata"]["annotations"]
        assert node.address.endswith("/24")
        assert annotations["projectcalico.org/IPv4Address"] == node.address
        assert annotations["projectcalico.org/ASNumber"] == str(NODE_AS)
        calico_node = cluster.get("Node", node.name)
        refs = [(r.orchestrator, r.node_name) for r in calico_node.spec.orch_refs or []]  # type: ignore[attr-defined]
        assert refs == [("k8s", k8s_name)]

        # 2. The range, then a local Service's /32, then its withdrawal.
        def expect(prefixes: set[str], what: str) -> None:
            try:
                wait_for(lambda: router.prefixes() == prefixes, 30)
            except TimeoutError:
                pytest.fail(f"{what}: router has {router.prefixes()}, wanted {prefixes}")

        expect({RANGE}, "serviceClusterIPs range")
        kubectl_apply(kube_plane, tmp_path, local_service())
        kubectl_apply(kube_plane, tmp_path, endpoint_slice(k8s_name))
        expect({RANGE, f"{CLUSTER_IP}/32"}, "Service with a local endpoint")
        with open(node.bird_config) as file:
            assert f"route {CLUSTER_IP}/32 blackhole;" in file.read()
        kube_plane.apiserver.kubectl("delete", "service", "svc-local")
        expect({RANGE}, "Service deleted")

        # 3. A clean stop tells Kubernetes the network is going down.
        cluster.fabric.stop_node(node)
        assert network_condition(kube_plane, k8s_name)["reason"] == "CalicoIsDown"
    finally:
        router.stop()


def local_service() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "svc-local", "namespace": "default"},
        "spec": {
            "type": "NodePort",
            "externalTrafficPolicy": "Local",
            "clusterIP": CLUSTER_IP,
            "ports": [{"port": 80, "protocol": "TCP"}],
        },
    }


def endpoint_slice(k8s_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "svc-local",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "svc-local"},
        },
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.70.0.9"], "nodeName": k8s_name, "conditions": {"ready": True}}
        ],
        "ports": [{"port": 80, "protocol": "TCP"}],
    }


def test_shutdown_command_marks_the_node_down(kube_plane: KubeControlPlane, tmp_path: Path) -> None:
    """``calico-node -shutdown`` (Calico's preStop hook) against the real API server."""
    name = f"k8s-node-{secrets.token_hex(3)}"
    executable = os.path.join(os.path.dirname(sys.executable), "calico-node")
    env = {"PATH": os.environ.get("PATH", ""), "NODENAME": "calico-1"}
    refused = subprocess.run(
        [executable, "-shutdown"], env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 1 and "-shutdown needs KUBECONFIG" in refused.stderr
    env |= {"KUBECONFIG": str(kube_plane.kubeconfig), "CALICO_K8S_NODE_REF": name}
    # No such Node yet: the API server's 404 is the failure.
    missing = subprocess.run(
        [executable, "-shutdown"], env=env, capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 1, missing.stderr
    kubectl_apply(
        kube_plane, tmp_path, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}
    )
    try:
        done = subprocess.run(
            [executable, "-shutdown"], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        condition = network_condition(kube_plane, name)
        assert (condition["status"], condition["reason"]) == ("True", "CalicoIsDown")
    finally:
        kube_plane.apiserver.kubectl("delete", "node", name, "--ignore-not-found")

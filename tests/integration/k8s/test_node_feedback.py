"""calico-node's feedback on a real Kubernetes Node: condition and BGP annotations."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator

import pytest
from kubernetes_asyncio import client as k8s_client

from pycalico.k8s.client import KubeClient, KubeError
from pycalico.k8s.node_feedback import set_bgp_annotations, set_network_condition
from pycalico.model.node import NodeBGPSpec
from pycalico.testing.kube_server import KubeControlPlane

pytestmark = pytest.mark.root


@pytest.fixture
async def node_name(kube: KubeClient) -> AsyncIterator[str]:
    name = f"node-{secrets.token_hex(4)}"
    await kube.core.create_node(k8s_client.V1Node(metadata=k8s_client.V1ObjectMeta(name=name)))
    yield name
    await kube.core.delete_node(name)


def kubectl_node(plane: KubeControlPlane, name: str) -> dict[str, object]:
    reply = plane.apiserver.kubectl("get", "node", name, "-o", "json").stdout
    node: dict[str, object] = json.loads(reply)
    return node


async def test_network_unavailable_false_keeps_other_conditions(
    kube: KubeClient, kube_plane: KubeControlPlane, node_name: str
) -> None:
    # A kubelet's condition is already there; Calico's patch must merge, not replace.
    ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok"}
    await kube.core.patch_node_status(node_name, {"status": {"conditions": [ready]}})

    await set_network_condition(kube, node_name)

    conditions = {c["type"]: c for c in kubectl_node(kube_plane, node_name)["status"]["conditions"]}  # type: ignore[index]
    assert conditions["NetworkUnavailable"]["status"] == "False"
    assert conditions["NetworkUnavailable"]["reason"] == "CalicoIsUp"
    assert conditions["NetworkUnavailable"]["message"] == "Calico is running on this node"
    assert conditions["Ready"]["status"] == "True"

    await set_network_condition(kube, node_name, calico_up=False)
    node = await kube.core.read_node_status(node_name)
    [mine] = [c for c in node.status.conditions if c.type == "NetworkUnavailable"]
    assert (mine.status, mine.reason) == ("True", "CalicoIsDown")


async def test_bgp_annotations_are_written_and_stale_ones_removed(
    kube: KubeClient, kube_plane: KubeControlPlane, node_name: str
) -> None:
    await kube.core.patch_node(node_name, {"metadata": {"annotations": {"other": "kept"}}})
    bgp = NodeBGPSpec.model_validate(
        {"ipv4Address": "10.0.0.5/24", "ipv6Address": "fd00::5/64", "asNumber": 64513}
    )
    await set_bgp_annotations(kube, node_name, bgp)
    annotations = kubectl_node(kube_plane, node_name)["metadata"]["annotations"]  # type: ignore[index]
    assert annotations["projectcalico.org/IPv4Address"] == "10.0.0.5/24"
    assert annotations["projectcalico.org/IPv6Address"] == "fd00::5/64"
    assert annotations["projectcalico.org/ASNumber"] == "64513"

    await set_bgp_annotations(
        kube, node_name, NodeBGPSpec.model_validate({"ipv4Address": "10.0.0.6/24"})
    )
    node = await kube.core.read_node(node_name)
    assert node.metadata.annotations == {
        "other": "kept",
        "projectcalico.org/IPv4Address": "10.0.0.6/24",
    }


async def test_a_missing_node_is_a_not_found_error(kube: KubeClient) -> None:
    with pytest.raises(KubeError) as caught:
        await set_network_condition(kube, "no-such-node")
    assert caught.value.not_found
    assert "no-such-node" in str(caught.value)

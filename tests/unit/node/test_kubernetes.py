"""calico-node's Kubernetes settings (pure parts): the Kubernetes Node's name, KUBECONFIG,
``kubernetes-internal-ip`` autodetection, ``orchRefs`` from ``CALICO_K8S_NODE_REF``, and the
feedback giving up on a clean stop when the API server does not answer."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pycalico.model.node import Node
from pycalico.node.autodetect import AutodetectError, Interface, detect
from pycalico.node.kubernetes import NodeFeedback, k8s_node_name, kubeconfig
from pycalico.node.startup import StartupSettings, _with_orch_ref

INTERFACES = [
    Interface("lo", ("127.0.0.1/8",)),
    Interface("eth0", ("10.0.0.5/24", "fd00::5/64")),
]


def test_k8s_node_name_and_kubeconfig() -> None:
    assert k8s_node_name({}, "calico-1") == "calico-1"
    assert k8s_node_name({"CALICO_K8S_NODE_REF": " k8s-1 "}, "calico-1") == "k8s-1"
    assert kubeconfig({}) is None
    assert kubeconfig({"KUBECONFIG": "/a/config:/b/config"}) == "/a/config"
    assert NodeFeedback.from_env({}, "n") is None
    feedback = NodeFeedback.from_env({"KUBECONFIG": "/k", "CALICO_K8S_NODE_REF": "k"}, "n")
    assert feedback is not None and (feedback.kubeconfig_path, feedback.name) == ("/k", "k")


def test_kubernetes_internal_ip_takes_the_local_prefix() -> None:
    method = "kubernetes-internal-ip"
    assert detect(method, INTERFACES, 4, kubernetes_addresses=["10.0.0.5"]) == "10.0.0.5/24"
    # Not on a local interface: the address alone.
    assert detect(method, INTERFACES, 4, kubernetes_addresses=["10.9.9.9"]) == "10.9.9.9/32"
    # The family's first InternalIP; none of that family: no address.
    assert (
        detect(method, INTERFACES, 6, kubernetes_addresses=["10.0.0.5", "fd00::5"]) == "fd00::5/64"
    )
    assert detect(method, INTERFACES, 6, kubernetes_addresses=["10.0.0.5"]) is None
    with pytest.raises(AutodetectError, match="KUBECONFIG"):
        detect(method, INTERFACES, 4)


def test_orch_refs_from_k8s_node_ref(tmp_path: Path) -> None:
    settings = StartupSettings.from_env(
        {
            "NODENAME": "calico-1",
            "CALICO_K8S_NODE_REF": "k8s-1",
            "KUBECONFIG": "/etc/kube",
            "CALICO_NODENAME_FILE": str(tmp_path / "nodename"),
        }
    )
    assert (settings.k8s_node_ref, settings.kubeconfig) == ("k8s-1", "/etc/kube")
    node = Node.model_validate({"metadata": {"name": "calico-1"}})
    assert _with_orch_ref(node, None) is node
    wire = _with_orch_ref(node, settings.k8s_node_ref).model_dump(by_alias=True, exclude_none=True)
    assert wire["spec"]["orchRefs"] == [{"orchestrator": "k8s", "nodeName": "k8s-1"}]


async def test_report_down_gives_up_when_nobody_answers(tmp_path: Path) -> None:
    # A kubeconfig pointing at a port nothing listens on: one attempt, False, no exception.
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
    )
    started = time.monotonic()
    assert await NodeFeedback(str(config), "n").report_down(timeout=2.0) is False
    assert time.monotonic() - started < 3.0

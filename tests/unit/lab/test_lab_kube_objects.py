"""The Kubernetes lab's pure parts: the scheduler's choice, the kubelet's status bodies, the
Kubernetes-flavour conflist switch, and ``state.json`` with a control plane in it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from tests.unit.lab.test_lab_logic import make_lab

from pycalico.lab import cli, cluster, kubeobjects, pods, store
from pycalico.lab import state as lab_state
from pycalico.lab.state import KubeState, NodeState, PodState

NOW = datetime(2026, 12, 6, 18, 0, 5, 123456, tzinfo=UTC)
NODE = NodeState("node2", "clab-node2", "10.99.0.2", "", "/tmp/n2")


def test_least_loaded_picks_the_node_with_fewest_pods_first_on_ties() -> None:
    nodes = ["node1", "node2", "node3"]
    assert kubeobjects.least_loaded(nodes, []) == "node1"
    assert kubeobjects.least_loaded(nodes, ["node1", "node2", "other"]) == "node3"
    assert kubeobjects.least_loaded(nodes, ["node1", "node3", "node3"]) == "node2"
    with pytest.raises(ValueError, match="nodes: there is no node"):
        kubeobjects.least_loaded([], [])


def test_status_patch_is_what_a_kubelet_writes_for_a_running_pod() -> None:
    pod = {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"containers": [{"name": "a", "image": "nginx"}, {"name": "b"}]},
    }
    networked = PodState("web", "node2", "default", "clab-pod-web", "c" * 64, ipv4="10.65.0.7")
    status = kubeobjects.pod_status_patch(pod, networked, NODE, NOW)["status"]
    assert status["phase"] == "Running"
    assert (status["podIP"], status["podIPs"]) == ("10.65.0.7", [{"ip": "10.65.0.7"}])
    assert (status["hostIP"], status["hostIPs"]) == ("10.99.0.2", [{"ip": "10.99.0.2"}])
    assert status["startTime"] == "2026-12-06T18:00:05Z"
    assert {c["type"] for c in status["conditions"] if c["status"] == "True"} >= {
        "Ready",
        "ContainersReady",
    }
    assert [(c["name"], c["image"], c["ready"]) for c in status["containerStatuses"]] == [
        ("a", "nginx", True),
        ("b", kubeobjects.PAUSE_IMAGE, True),
    ]
    assert status["containerStatuses"][0]["containerID"] == "pycalico-lab://" + "c" * 64


def test_node_heartbeat_and_binding_bodies() -> None:
    patch = kubeobjects.node_status_patch(NODE, NOW, NOW)["status"]
    (ready,) = patch["conditions"]
    assert (ready["type"], ready["status"], ready["lastHeartbeatTime"]) == (
        "Ready",
        "True",
        "2026-12-06T18:00:05Z",
    )
    assert {"type": "InternalIP", "address": "10.99.0.2"} in patch["addresses"]
    body = kubeobjects.binding("web", "ns-a", "node3")
    assert body["target"] == {"apiVersion": "v1", "kind": "Node", "name": "node3"}
    assert body["metadata"] == {"name": "web", "namespace": "ns-a"}


def test_pod_manifest_binds_only_when_a_node_is_given() -> None:
    bound = kubeobjects.pod_manifest("db", "ns-a", "node2", {"app": "db"})
    assert bound["spec"]["nodeName"] == "node2" and bound["metadata"]["labels"] == {"app": "db"}
    assert "nodeName" not in kubeobjects.pod_manifest("db", "ns-a", "", {})["spec"]


def test_namespace_profile_applies_the_namespace_labels() -> None:
    profile = store.namespace_profile("ns-a", {"team": "blue"})
    assert profile["spec"]["labelsToApply"] == {
        "pcns.team": "blue",
        "pcns.projectcalico.org/name": "ns-a",
    }


def test_conflist_switches_to_kubeconfig_mode_with_one_setting(tmp_path: Path) -> None:
    lab = lab_state.LabState("clab", str(tmp_path), False, (), (NODE,))
    etcd_mode = pods.conflist(lab, NODE)["plugins"][0]
    assert "kubernetes" not in etcd_mode and etcd_mode["policy"] == {"type": "k8s"}
    kube_mode = pods.conflist(lab, NODE, kubeconfig="/k/node-kubeconfig")["plugins"][0]
    assert kube_mode["kubernetes"] == {"kubeconfig": "/k/node-kubeconfig"}


def test_state_keeps_the_control_plane_and_pod_uids(tmp_path: Path) -> None:
    kube = KubeState("clab-control", "10.99.0.240", 6443, 40000, str(tmp_path / "kube"))
    pod = PodState("web", "node2", "default", "clab-pod-web", "c" * 64, uid="u-1")
    lab = lab_state.LabState("clab", str(tmp_path), False, (), (NODE,), (pod,), kube=kube)
    lab_state.save(lab)
    assert lab_state.load(str(tmp_path)) == lab
    assert kube.kubeconfig == str(tmp_path / "kube" / "kubeconfig")
    # A state file written before Kubernetes mode existed still loads.
    lab_state.save(lab_state.LabState("clab", str(tmp_path), False, ()))
    assert lab_state.load(str(tmp_path)).kube is None  # type: ignore[union-attr]


def test_env_adds_kubeconfig_and_node_env_gets_the_node_side_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube = KubeState("t-control", "10.99.0.240", 6443, 40000, str(tmp_path / "kube"))
    lab = replace(make_lab(tmp_path), kube=kube)
    lab_state.save(lab)
    done = CliRunner().invoke(cli.main, ["--state-dir", str(tmp_path), "env"])
    assert done.exit_code == 0
    assert done.output == (
        f"export DATASTORE_TYPE=etcdv3 ETCD_ENDPOINTS={lab.host_endpoints} "
        f"KUBECONFIG={tmp_path / 'kube' / 'kubeconfig'}\n"
    )
    # calico-node never inherits the caller's KUBECONFIG (this machine's relay).
    monkeypatch.setenv("KUBECONFIG", "/somewhere/else")
    monkeypatch.setattr(cluster, "executable", lambda name: f"/bin/{name}")
    assert cluster.node_env(lab, lab.nodes[0])["KUBECONFIG"] == kube.node_kubeconfig
    plain = make_lab(tmp_path)
    assert "KUBECONFIG" not in cluster.node_env(plain, plain.nodes[0])

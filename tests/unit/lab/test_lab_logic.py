"""The lab's pure parts: names, labels, state file, BGP session counts, CNI stdin, the demo's
answer key."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from pycalico import demo
from pycalico.lab import cluster, pods
from pycalico.lab import state as lab_state
from pycalico.lab.state import EtcdMemberState, LabState, NodeState, PodState


def make_lab(tmp: Path, nodes: int = 4, reflectors: int = 0, ipv6: bool = False) -> LabState:
    return LabState(
        prefix="t",
        state_dir=str(tmp),
        ipv6=ipv6,
        etcd=(EtcdMemberState("etcd0", "t-etcd0", "10.99.0.250", 4001),),
        nodes=tuple(
            NodeState(
                f"node{i}",
                f"t-node{i}",
                f"10.99.0.{i}",
                "",
                str(tmp / f"node{i}"),
                route_reflector=i <= reflectors,
            )
            for i in range(1, nodes + 1)
        ),
    )


def test_labels_parse_and_refuse_items_without_equals() -> None:
    assert lab_state.parse_labels("app=web, tier=front,") == {"app": "web", "tier": "front"}
    assert lab_state.parse_labels("") == {}
    assert lab_state.parse_labels("empty=") == {"empty": ""}
    with pytest.raises(ValueError, match="'app' is not key=value"):
        lab_state.parse_labels("app")


@pytest.mark.parametrize("name", ["", "Web", "web_1", "-web", "web-", "x" * 41])
def test_pod_names_must_be_dns_labels(name: str) -> None:
    with pytest.raises(ValueError, match="pod name"):
        lab_state.check_pod_name(name)


@pytest.mark.parametrize("name", ["", "Shop", "shop_1", "-shop", "x" * 64])
def test_namespace_names_must_be_dns_labels(name: str) -> None:
    with pytest.raises(ValueError, match=r"--namespace .*Kubernetes namespace name"):
        lab_state.check_namespace_name(name)
    lab_state.check_namespace_name("shop-2")


def test_state_round_trips_through_the_file_and_pods_replace_by_name(tmp_path: Path) -> None:
    lab = make_lab(tmp_path)
    pod = PodState("web", "node1", "shop", "t-pod-web", "c" * 64, {"app": "web"}, "10.65.0.1")
    lab = lab.with_pod(pod).with_pod(PodState("db", "node2", "shop", "t-pod-db", "d" * 64))
    lab = lab.with_pod(PodState("web", "node3", "shop", "t-pod-web", "e" * 64))
    lab_state.save(lab)
    loaded = lab_state.load(str(tmp_path))
    assert loaded == lab
    assert [p.name for p in loaded.pods] == ["db", "web"]
    assert loaded.pod("web").node == "node3"
    assert loaded.without_pod("web").pods == (loaded.pod("db"),)
    with pytest.raises(KeyError, match="no pod named 'x'"):
        loaded.pod("x")
    assert json.loads((tmp_path / "state.json").read_text())["prefix"] == "t"
    assert lab_state.load(str(tmp_path / "missing")) is None


def test_endpoints_seen_from_nodes_and_from_the_machine(tmp_path: Path) -> None:
    lab = make_lab(tmp_path)
    assert lab.node_endpoints == "http://10.99.0.250:2379"
    assert lab.host_endpoints == "http://127.0.0.1:4001"


def test_calico_names_for_endpoints_and_host_interfaces() -> None:
    assert pods.endpoint_name("node-1", "web-0") == "node--1-k8s-web--0-eth0"
    name = pods.host_interface("shop", "web")
    assert name == "cali" + hashlib.sha1(b"shop.web").hexdigest()[:11]
    assert len(name) == 15


def test_each_plugin_gets_the_list_name_version_and_the_pod_labels(tmp_path: Path) -> None:
    lab = make_lab(tmp_path)
    document = pods.conflist(lab, lab.nodes[0])
    (config,) = pods._network_configs(document, {"app": "web", "a": "1"})
    assert config["type"] == "calico"
    assert config["name"] == "k8s-pod-network" and config["cniVersion"] == "1.0.0"
    assert config["nodename"] == "node1"
    assert config["etcd_endpoints"] == "http://10.99.0.250:2379"
    assert config["ipam"] == {"type": "calico-ipam", "assign_ipv4": "true", "assign_ipv6": "false"}
    assert config["policy"] == {"type": "k8s"}
    assert config["args"]["cni"]["labels"] == [
        {"key": "a", "value": "1"},
        {"key": "app", "value": "web"},
    ]
    (bare,) = pods._network_configs(document, {})
    assert "args" not in bare


def test_expected_bgp_sessions_for_mesh_reflectors_and_dual_stack(tmp_path: Path) -> None:
    mesh = make_lab(tmp_path, nodes=4)
    assert [cluster.expected_sessions(mesh, n) for n in mesh.nodes] == [3, 3, 3, 3]
    rr = make_lab(tmp_path, nodes=5, reflectors=2)
    assert [cluster.expected_sessions(rr, n) for n in rr.nodes] == [4, 4, 2, 2, 2]
    dual = make_lab(tmp_path, nodes=3, ipv6=True)
    assert cluster.expected_sessions(dual, dual.nodes[0]) == 4


def test_demo_answer_key_blocks_exactly_ten_of_sixty_cells() -> None:
    fake = [
        PodState(name, node, namespace, f"x-{name}", "c", lab_state.parse_labels(labels))
        for name, node, namespace, labels in demo.PODS
    ]
    blocked = {
        (s.name, d.name, protocol)
        for s in fake
        for d in fake
        if s is not d
        for protocol in ("icmp", "tcp")
        if not demo.expected_after_policy(s, d, protocol)
    }
    to_db = {(s, "db", p) for s in ("probe-1", "probe-2", "admin") for p in ("icmp", "tcp")}
    tools_tcp = {(s, d, "tcp") for s in ("probe-1", "probe-2") for d in ("web-1", "web-2")}
    assert blocked == to_db | tools_tcp
    assert len(blocked) == 10

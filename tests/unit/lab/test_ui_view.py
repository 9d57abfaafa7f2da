"""calico-lab ui's pure shaping: pods grouped by node and namespace (every node listed, also
an empty one), BGP peers, the matrix's cells."""

from __future__ import annotations

from dataclasses import dataclass

from pycalico.lab import ui_view
from pycalico.model.endpoints import WorkloadEndpoint
from pycalico.model.meta import ObjectMeta


def wep(node: str, namespace: str, pod: str, address: str) -> WorkloadEndpoint:
    return WorkloadEndpoint(
        metadata=ObjectMeta(
            name=f"{node}-k8s-{pod}-eth0",
            namespace=namespace,
            labels={"app": pod, "projectcalico.org/namespace": namespace},
        ),
        spec={  # type: ignore[arg-type]
            "node": node,
            "orchestrator": "k8s",
            "pod": pod,
            "endpoint": "eth0",
            "ipNetworks": [f"{address}/32"],
        },
    )


def test_pods_grouped_by_node_then_namespace_sorted_with_empty_nodes() -> None:
    groups = ui_view.pods_by_node(
        [
            wep("node2", "data", "db", "10.65.1.1"),
            wep("node1", "default", "web", "10.65.0.1"),
            wep("node2", "data", "cache", "10.65.1.2"),
        ],
        ["node1", "node2", "node3"],
    )
    assert [g["node"] for g in groups] == ["node1", "node2", "node3"]
    assert groups[2]["namespaces"] == []
    (data,) = groups[1]["namespaces"]
    assert data["namespace"] == "data"
    assert [p["name"] for p in data["pods"]] == ["cache", "db"]
    web = groups[0]["namespaces"][0]["pods"][0]
    assert web["addresses"] == ["10.65.0.1"]
    assert web["labels"] == {"app": "web"}  # Calico's own labels are not the pod's
    assert web["endpoint"] == "node1-k8s-web-eth0"


@dataclass
class Peer:
    address: str
    peer_type: str
    state: str
    since: str
    info: str


def test_peers_sorted_and_marked_established() -> None:
    rows = ui_view.peer_view(
        [
            Peer("10.99.0.3", "node-to-node mesh", "start", "12:00", "Active Socket: refused"),
            Peer("10.99.0.2", "node-to-node mesh", "up", "12:00", "Established"),
        ]
    )
    assert [(r["address"], r["established"]) for r in rows] == [
        ("10.99.0.2", "yes"),
        ("10.99.0.3", "no"),
    ]


def test_matrix_cells_by_source_then_destination() -> None:
    view = ui_view.matrix_view(
        ["a", "b"],
        {("a", "b", "icmp"): True, ("a", "b", "tcp"): False, ("b", "a", "icmp"): True,
         ("b", "a", "tcp"): True},
        1.25,
    )  # fmt: skip
    assert view["cells"]["a"]["b"] == {"icmp": True, "tcp": False}
    assert view["summary"] == "3 of 4 probes reached their pod (1.2s)"


def test_flows_newest_first_naming_the_rule_that_denied_each() -> None:
    records = [
        {"time": 10.0, "node": "node1", "source_endpoint": "node1-k8s-a-eth0",
         "source_ip": "10.65.0.1", "destination_ip": "10.65.0.2", "protocol": "tcp",
         "destination_port": 8080, "kind": "Rule", "tier": "default",
         "policy": "default.deny-db", "direction": "ingress", "rule_index": 2},
        {"time": 30.0, "node": "node2", "kind": "EndOfTier", "tier": "security",
         "direction": "egress"},
        {"time": 20.0, "node": "node2", "kind": "NoProfile", "direction": "ingress"},
    ]  # fmt: skip
    rows = ui_view.flow_view(records, 2)
    assert [row["time"] for row in rows] == [30.0, 20.0]
    assert rows[0]["denied_by"] == "tier security: egress end-of-tier"
    assert rows[1]["denied_by"] == "profiles: ingress no profile matched"
    (rule,) = ui_view.flow_view(records[:1], 5)
    assert rule["denied_by"] == "default/default.deny-db ingress[2]"
    assert rule["source"] == "node1-k8s-a-eth0 (10.65.0.1)"
    assert (rule["destination"], rule["port"]) == ("10.65.0.2", "8080")
    assert ui_view.flow_view(records, 0) == []

"""Shared inputs for the BGP unit tests: small clusters as ``BgpInputs`` (pure values)."""

from __future__ import annotations

from typing import Any

from pycalico.bgp.processor import BgpInputs
from pycalico.model.bgp import BGPConfiguration, BGPPeer
from pycalico.model.ipam import IPPool
from pycalico.model.node import Node


def node(
    name: str,
    ipv4: str | None = None,
    ipv6: str | None = None,
    *,
    rr: str | None = None,
    labels: dict[str, str] | None = None,
    as_number: int | None = None,
) -> Node:
    bgp: dict[str, Any] = {}
    if ipv4:
        bgp["ipv4Address"] = ipv4
    if ipv6:
        bgp["ipv6Address"] = ipv6
    if rr:
        bgp["routeReflectorClusterID"] = rr
    if as_number:
        bgp["asNumber"] = as_number
    spec = {"bgp": bgp} if bgp else {}
    return Node.model_validate({"metadata": {"name": name, "labels": labels or {}}, "spec": spec})


def peer(name: str, **spec: Any) -> BGPPeer:
    return BGPPeer.model_validate({"metadata": {"name": name}, "spec": spec})


def config(name: str, **spec: Any) -> BGPConfiguration:
    return BGPConfiguration.model_validate({"metadata": {"name": name}, "spec": spec})


def pool(name: str, cidr: str, **spec: Any) -> IPPool:
    return IPPool.model_validate({"metadata": {"name": name}, "spec": {"cidr": cidr, **spec}})


def nodes(*items: Node) -> dict[str, Node]:
    return {item.name: item for item in items}


FOUR = nodes(*(node(f"node{i}", f"10.0.0.{i}/24") for i in range(1, 5)))
POOLS = [pool("default-ipv4-ippool", "192.168.0.0/16")]


def mesh() -> BgpInputs:
    """Node 2 of four in the default full mesh, with two blocks (one still pending)."""
    return BgpInputs(
        node_name="node2",
        nodes=FOUR,
        pools=POOLS,
        affinities={"192.168.10.0/26": "confirmed", "192.168.11.0/26": "pending"},
    )


def reflectors() -> tuple[BgpInputs, BgpInputs]:
    """Mesh off, node3/node4 reflectors (cluster 244.0.0.1) selected by a BGPPeer; the inputs
    as seen from reflector node3 and from client node1."""
    cluster = nodes(
        node("node1", "10.0.0.1/24"),
        node("node2", "10.0.0.2/24"),
        node("node3", "10.0.0.3/24", rr="244.0.0.1", labels={"route-reflector": "true"}),
        node("node4", "10.0.0.4/24", rr="244.0.0.1", labels={"route-reflector": "true"}),
    )
    peers = [
        peer(
            "peer-with-route-reflectors",
            nodeSelector="all()",
            peerSelector="route-reflector == 'true'",
        )
    ]
    configs = {"default": config("default", nodeToNodeMeshEnabled=False)}
    common: dict[str, Any] = {"nodes": cluster, "peers": peers, "configs": configs, "pools": POOLS}
    return (
        BgpInputs(node_name="node3", affinities={"192.168.30.0/26": "confirmed"}, **common),
        BgpInputs(node_name="node1", affinities={"192.168.1.0/26": "confirmed"}, **common),
    )


def external() -> BgpInputs:
    """Node 1 with a global external router (eBGP, on another port, keep next hop), a
    node-specific multi-hop peer with TTL security, and a pool that is not exported."""
    peers = [
        peer("tor", peerIP="10.0.0.254", asNumber=65000),
        peer("far-router", peerIP="172.16.5.1:1790", asNumber=65001, keepOriginalNextHop=True),
        peer(
            "node1-upstream",
            node="node1",
            peerIP="10.1.0.1",
            asNumber=65002,
            ttlSecurity=2,
            sourceAddress="None",
            maxRestartTime="5m",
            keepaliveTime="10s",
            numAllowedLocalASNumbers=1,
            localASNumber=64999,
        ),
        peer("elsewhere", node="node3", peerIP="10.1.0.9", asNumber=65003),
    ]
    pools = [
        *POOLS,
        pool("private", "10.99.0.0/16", disableBGPExport=True),
        pool("vxlan-pool", "10.98.0.0/16", vxlanMode="Always"),
    ]
    return BgpInputs(
        node_name="node1",
        nodes=FOUR,
        peers=peers,
        pools=pools,
        configs={"default": config("default", asNumber=64600, logSeverityScreen="Debug")},
        affinities={"192.168.1.0/26": "", "192.168.1.77/32": "confirmed"},
    )


def passwords() -> BgpInputs:
    """Mesh and a global peer, both with secret-backed passwords."""
    secret = {"secretKeyRef": {"name": "bgp-secrets", "key": "mesh"}}
    peers = [
        peer(
            "tor",
            peerIP="10.0.0.254",
            asNumber=65000,
            password={"secretKeyRef": {"name": "bgp-secrets", "key": "tor"}},
        )
    ]
    return BgpInputs(
        node_name="node1",
        nodes=nodes(node("node1", "10.0.0.1/24"), node("node2", "10.0.0.2/24")),
        peers=peers,
        pools=POOLS,
        configs={"default": config("default", nodeMeshPassword=secret)},
        passwords={("bgp-secrets", "mesh"): "mesh-secret", ("bgp-secrets", "tor"): "t0r s3cret"},
    )


def ipv6() -> BgpInputs:
    """Dual-stack node 1 meshing with a dual-stack and an IPv6-only node, blocks of both
    families, and an IPv6 global peer."""
    cluster = nodes(
        node("node1", "10.0.0.1/24", "fd00::1/64"),
        node("node2", "10.0.0.2/24", "fd00::2/64"),
        node("node3", None, "fd00::3/64"),
    )
    return BgpInputs(
        node_name="node1",
        nodes=cluster,
        peers=[peer("v6-router", peerIP="fd00::fe", asNumber=65000)],
        pools=[*POOLS, pool("default-ipv6-ippool", "fd10::/48")],
        affinities={"192.168.1.0/26": "confirmed", "fd10::1:0/122": "confirmed"},
        configs={"default": config("default", listenPort=1179, logSeverityScreen="Warning")},
    )


def static_routes() -> BgpInputs:
    """Calico's confd case ``mesh/static-routes``: kube-master with the BGPConfiguration's
    service ranges (two entries without a CIDR, ignored) and the Service routes its local
    endpoints give it (``test_services`` derives them from the case's Services)."""
    spec = {
        "serviceClusterIPs": [{"cidr": "10.101.0.0/16"}, {}, {"cidr": "fd00:96::/112"}],
        "serviceLoadBalancerIPs": [{"cidr": "80.15.0.0/24"}, {}],
    }
    cluster = nodes(
        node("kube-master", "10.192.0.2/16", "fdf5:10::2/112"),
        node("kube-node-1", "10.192.0.3/16", "fdf5:10::3/112"),
        node("kube-node-2", "10.192.0.4/16", "fdf5:10::4/112"),
    )
    return BgpInputs(
        node_name="kube-master",
        nodes=cluster,
        pools=[pool("ippool-1", "192.168.0.0/16")],
        configs={"default": config("default", **spec)},
        service_routes=frozenset({"10.101.0.101/32", "fd00:96::28/128"}),
    )


GOLDEN = {
    "mesh": mesh,
    "route-reflector": lambda: reflectors()[0],
    "route-reflector-client": lambda: reflectors()[1],
    "external-peers": external,
    "passwords": passwords,
    "ipv6": ipv6,
    "static-routes": static_routes,
}

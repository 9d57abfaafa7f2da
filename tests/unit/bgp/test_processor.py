"""The pure BGP processor: Calico's confd semantics for mesh, reflectors, peers, exports."""

from __future__ import annotations

import dataclasses

from pycalico.bgp.processor import (
    DEFAULT_AS,
    BgpInputs,
    BirdPeer,
    build,
    hash_router_id,
    password_refs,
    peer_name,
)

from .scenarios import (
    FOUR,
    POOLS,
    config,
    external,
    ipv6,
    mesh,
    node,
    nodes,
    passwords,
    peer,
    reflectors,
)


def by_name(peers: tuple[BirdPeer, ...]) -> dict[str, BirdPeer]:
    return {p.name: p for p in peers}


def test_peer_names_are_calicos() -> None:
    assert peer_name("Mesh", "10.0.0.2") == "Mesh_10_0_0_2"
    assert peer_name("Global", "fd00::1") == "Global_fd00__1"
    assert peer_name("Node", "10.0.0.9", 1790) == "Node_10_0_0_9_port_1790"


def test_mesh_peers_every_other_node_and_the_greater_address_connects() -> None:
    result = build(mesh())
    peers = by_name(result.ipv4.peers)
    assert list(peers) == ["Mesh_10_0_0_1", "Mesh_10_0_0_3", "Mesh_10_0_0_4"]
    # node2 is 10.0.0.2: it waits for the greater addresses and connects to the lesser.
    assert not peers["Mesh_10_0_0_1"].passive
    assert peers["Mesh_10_0_0_3"].passive and peers["Mesh_10_0_0_4"].passive
    for item in peers.values():
        assert item.as_number == DEFAULT_AS and item.internal
        assert item.source_address == "10.0.0.2"
        assert item.restart_time is None  # only nodeMeshMaxRestartTime sets one
        assert item.ttl_security is None  # multihop, ttl security off: Calico's mesh
    assert result.router_id == "10.0.0.2" and result.as_number == DEFAULT_AS
    assert not result.ipv6.enabled and result.ipv6.peers == ()


def test_passive_uses_string_order_like_calico() -> None:
    # "10.0.0.10" < "10.0.0.9" as strings: Calico compares the text, so do we.
    cluster = nodes(node("a", "10.0.0.9/24"), node("b", "10.0.0.10/24"))
    peers = build(BgpInputs(node_name="a", nodes=cluster)).ipv4.peers
    assert peers[0].address == "10.0.0.10" and not peers[0].passive
    peers = build(BgpInputs(node_name="b", nodes=cluster)).ipv4.peers
    assert peers[0].address == "10.0.0.9" and peers[0].passive


def test_mesh_off_and_reflectors_are_not_meshed() -> None:
    off = dataclasses.replace(
        mesh(), configs={"default": config("default", nodeToNodeMeshEnabled=False)}
    )
    assert build(off).ipv4.peers == () and not build(off).mesh_enabled
    cluster = dict(FOUR)
    cluster["node4"] = node("node4", "10.0.0.4/24", rr="244.0.0.1")
    inputs = dataclasses.replace(mesh(), nodes=cluster)
    assert "Mesh_10_0_0_4" not in by_name(build(inputs).ipv4.peers)
    # The reflector itself has no mesh at all.
    assert build(dataclasses.replace(inputs, node_name="node4")).ipv4.peers == ()


def test_as_numbers_node_then_global_then_default() -> None:
    cluster = nodes(node("a", "10.0.0.1/24", as_number=65010), node("b", "10.0.0.2/24"))
    inputs = BgpInputs(
        node_name="b", nodes=cluster, configs={"default": config("default", asNumber=65020)}
    )
    result = build(inputs)
    assert result.as_number == 65020
    (only,) = result.ipv4.peers
    assert only.as_number == 65010 and not only.internal
    assert build(dataclasses.replace(inputs, node_name="a")).as_number == 65010


def test_route_reflector_side() -> None:
    reflector, client = reflectors()
    result = build(reflector)
    peers = by_name(result.ipv4.peers)
    # Forward (node3 is in nodeSelector all(), peers with reflector node4) and reverse (node3 is
    # selected, so it peers back with every node the BGPPeer applies to).
    assert set(peers) == {"Node_10_0_0_1", "Node_10_0_0_2", "Node_10_0_0_4"}
    for name in ("Node_10_0_0_1", "Node_10_0_0_2"):
        assert peers[name].rr_client and peers[name].rr_cluster_id == "244.0.0.1"
        assert not peers[name].passive  # the clients have the lesser addresses
    # Same cluster ID: the other reflector is a non-client peer.  Node-specific peerings are
    # never passive in Calico: both sides connect.
    assert not peers["Node_10_0_0_4"].rr_client and not peers["Node_10_0_0_4"].passive
    assert result.rr_cluster_id == "244.0.0.1" and not result.mesh_enabled
    client_peers = by_name(build(client).ipv4.peers)
    assert set(client_peers) == {"Node_10_0_0_3", "Node_10_0_0_4"}
    assert all(not p.passive and not p.rr_client for p in client_peers.values())


def test_manual_reverse_peering_only_peers_forward() -> None:
    reflector, _ = reflectors()
    manual = [
        peer(
            "to-rr",
            nodeSelector="!has(route-reflector)",
            peerSelector="route-reflector == 'true'",
            reversePeering="Manual",
        )
    ]
    assert build(dataclasses.replace(reflector, peers=manual)).ipv4.peers == ()


def test_external_peers() -> None:
    result = build(external())
    peers = {n: p for n, p in by_name(result.ipv4.peers).items() if p.kind != "Mesh"}
    assert set(peers) == {"Global_10_0_0_254", "Global_172_16_5_1_port_1790", "Node_10_1_0_1"}
    tor = peers["Global_10_0_0_254"]
    assert tor.as_number == 65000 and not tor.internal and tor.ttl_security is None
    assert tor.source_address == "10.0.0.1" and tor.restart_time is None
    far = peers["Global_172_16_5_1_port_1790"]
    assert far.port == 1790 and far.next_hop == "keep"
    upstream = peers["Node_10_1_0_1"]
    assert upstream.ttl_security == 2
    assert upstream.source_address is None
    assert upstream.restart_time == 300 and upstream.keepalive_time == 10
    assert upstream.allow_local_as == 1 and upstream.local_as == 64999
    assert result.as_number == 64600 and result.protocol_debug == "all"


def test_global_peering_wins_over_identical_node_peering() -> None:
    peers = [
        peer("b-node", node="node1", peerIP="10.0.0.254", asNumber=65000),
        peer("a-global", peerIP="10.0.0.254", asNumber=65000),
    ]
    result = build(BgpInputs(node_name="node1", nodes=FOUR, peers=peers))
    assert [p.name for p in result.ipv4.peers] == [
        "Global_10_0_0_254",
        "Mesh_10_0_0_2",
        "Mesh_10_0_0_3",
        "Mesh_10_0_0_4",
    ]


def test_no_peering_with_itself() -> None:
    peers = [peer("self", peerIP="10.0.0.1", asNumber=64512)]
    result = build(BgpInputs(node_name="node1", nodes=FOUR, peers=peers))
    assert "Global_10_0_0_1" not in by_name(result.ipv4.peers)


def test_next_hop_modes() -> None:
    peers = [
        peer("self", peerIP="10.0.0.250", asNumber=65000, nextHopMode="Self"),
        peer("keep", peerIP="10.0.0.251", asNumber=65000, nextHopMode="Keep"),
        peer("auto", peerIP="10.0.0.252", asNumber=65000, nextHopMode="Auto"),
    ]
    result = by_name(build(BgpInputs(node_name="node1", nodes=FOUR, peers=peers)).ipv4.peers)
    assert result["Global_10_0_0_250"].next_hop == "self"
    assert result["Global_10_0_0_251"].next_hop == "keep"
    assert result["Global_10_0_0_252"].next_hop is None


def test_routes_export_blocks_and_pools() -> None:
    result = build(external())
    blocks = {b.cidr: b for b in result.ipv4.blocks}
    assert blocks["192.168.1.0/26"].blackhole
    assert not blocks["192.168.1.77/32"].blackhole  # a /32 block is its own route
    pools = {p.cidr: p for p in result.ipv4.pools}
    assert pools["192.168.0.0/16"].export and pools["192.168.0.0/16"].kernel == "accept"
    assert not pools["10.99.0.0/16"].export
    assert pools["10.98.0.0/16"].kernel == "reject"
    assert pools["10.98.0.0/16"].reason == "VXLAN routes are handled by Felix."
    # A pending affinity is not this node's yet: no blackhole, no export (Calico).
    assert [b.cidr for b in build(mesh()).ipv4.blocks] == ["192.168.10.0/26"]


def test_passwords_resolved_missing_and_unwritable() -> None:
    inputs = passwords()
    refs = password_refs(inputs.configs, inputs.peers)
    assert [(r.name, r.key) for r in refs] == [("bgp-secrets", "mesh"), ("bgp-secrets", "tor")]
    peers = by_name(build(inputs).ipv4.peers)
    assert peers["Mesh_10_0_0_2"].password == "mesh-secret"
    assert peers["Global_10_0_0_254"].password == "t0r s3cret"
    missing = build(dataclasses.replace(inputs, passwords={}))
    assert all(p.password is None for p in missing.ipv4.peers)
    assert any("bgp-secrets/mesh not found" in note for note in missing.notes)
    quoted = build(dataclasses.replace(inputs, passwords={("bgp-secrets", "tor"): 'a"b'}))
    assert by_name(quoted.ipv4.peers)["Global_10_0_0_254"].password is None
    assert any("double quote" in note for note in quoted.notes)


def test_ipv6_family() -> None:
    result = build(ipv6())
    assert [p.name for p in result.ipv6.peers] == [
        "Global_fd00__fe",
        "Mesh_fd00__2",
        "Mesh_fd00__3",
    ]
    assert [p.name for p in result.ipv4.peers] == ["Mesh_10_0_0_2"]
    assert result.ipv6.peers[1].source_address == "fd00::1"
    # Mesh peers keep Calico's port-less names even when the listen port is not 179.
    assert result.ipv6.peers[1].port == 1179 and result.listen_port == 1179
    assert [b.cidr for b in result.ipv6.blocks] == ["fd10::1:0/122"]
    assert [p.cidr for p in result.ipv6.pools] == ["fd10::/48"]
    assert result.protocol_debug == "none"


def test_router_id_override_hash_and_ipv6_only() -> None:
    assert build(dataclasses.replace(mesh(), router_id="1.2.3.4")).router_id == "1.2.3.4"
    hashed = build(dataclasses.replace(mesh(), router_id="hash")).router_id
    assert hashed == hash_router_id("node2") != "10.0.0.2"
    only6 = build(dataclasses.replace(ipv6(), node_name="node3"))
    assert only6.router_id == hash_router_id("node3")
    assert not only6.ipv4.enabled and only6.ipv6.enabled


def test_log_levels() -> None:
    def level(**spec: str) -> tuple[str, str]:
        result = build(dataclasses.replace(mesh(), configs={"default": config("default", **spec)}))
        return result.protocol_debug, result.peer_debug

    assert level() == ("states", "full")  # peers: states, routes, filters, events
    assert level(logSeverityScreen="Debug") == ("all", "all")
    assert level(logSeverityScreen="Error") == ("none", "none")
    node_config = {
        "default": config("default", logSeverityScreen="Info"),
        "node.node2": config("node.node2", logSeverityScreen="Debug"),
    }
    assert build(dataclasses.replace(mesh(), configs=node_config)).protocol_debug == "all"


def test_unregistered_node_and_bad_selector_do_not_raise() -> None:
    result = build(BgpInputs(node_name="ghost", nodes=FOUR, pools=POOLS))
    assert result.ipv4.peers == () and any("not registered" in n for n in result.notes)
    bad = [peer("bad", nodeSelector="all()", peerSelector="has(x)")]
    fine = build(BgpInputs(node_name="node1", nodes=FOUR, peers=bad))
    assert len(fine.ipv4.peers) == 3


def test_build_is_deterministic() -> None:
    assert build(external()) == build(external())

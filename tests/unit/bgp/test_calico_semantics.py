"""confd behaviours Calico's own confd has, one small cluster each (written here, not copied):
route priority, pending blocks, Felix's and eBPF's interfaces, debug levels, multihop,
Calico's peering rules, communities, programClusterRoutes, workload peers, bindMode and the
newer BGPFilter rule fields.  Every configuration rendered here must also satisfy BIRD 2."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import pytest

from pycalico.bgp.bird import check_config
from pycalico.bgp.config import BirdPeer
from pycalico.bgp.peerings import WorkloadPeer
from pycalico.bgp.processor import BgpInputs, build
from pycalico.bgp.render import render
from pycalico.model.bgpfilter import BGPFilter

from .scenarios import FOUR, POOLS, config, node, nodes, peer, pool


def peers_of(inputs: BgpInputs, version: int = 4) -> dict[str, BirdPeer]:
    result = build(inputs)
    family = result.ipv4 if version == 4 else result.ipv6
    return {p.name: p for p in family.peers}


def on_node1(**extra: Any) -> BgpInputs:
    return BgpInputs(node_name="node1", nodes=FOUR, pools=POOLS, **extra)


def bgp_filter(name: str, **spec: Any) -> BGPFilter:
    return BGPFilter.model_validate({"metadata": {"name": name}, "spec": spec})


# -- route priority -----------------------------------------------------------------------------


def test_normal_route_priority_default_and_configured() -> None:
    text = render(build(on_node1(affinities={"192.168.5.0/26": "confirmed"})))
    # Routes with a better priority than the normal 1024 win over the kernel's (preference 200).
    assert "if (defined(bgp_local_pref)&&(bgp_local_pref > 2147482623)) then" in text
    assert "if (!defined(krt_metric)) then { krt_metric = 1024; }" in text
    assert "if ( net ~ 192.168.5.0/26 && krt_metric < 1024 ) then { accept; }" in text
    assert "if (krt_metric < 1024) then { preference = 200; }" in text
    # BIRD 2's kernel protocol would install everything at its own default metric (32).
    assert text.count("  metric 0;") == 2
    configured = on_node1(
        affinities={"192.168.5.0/26": ""},
        configs={"default": config("default", ipv4NormalRoutePriority=5000)},
    )
    text = render(build(configured))
    assert "bgp_local_pref > 2147478647" in text
    assert "krt_metric < 5000 ) then { accept; }" in text
    assert "krt_metric = 2147483647 - bgp_local_pref;" in text


# -- blocks -------------------------------------------------------------------------------------


def test_pending_affinity_is_neither_blackholed_nor_exported() -> None:
    inputs = on_node1(affinities={"192.168.1.0/26": "pending", "192.168.2.0/26": ""})
    config_ = build(inputs)
    assert [b.cidr for b in config_.ipv4.blocks] == ["192.168.2.0/26"]
    text = render(config_)
    assert "192.168.1.0" not in text
    assert "route 192.168.2.0/26 blackhole;" in text


# -- Felix's interfaces -------------------------------------------------------------------------


def test_tunnel_and_ebpf_routes_stay_home() -> None:
    text = render(build(on_node1()))
    assert '(ifname ~ "*.cali") || (ifname ~ "*.calico") || (ifname ~ "tunl0")' in text
    assert 'if (ifname ~ "bpf*.cali") then { reject; }' in text
    assert "  reject_local_routes();\n  apply_communities();\n  calico_aggr();" in text
    # When BIRD programs IPIP routes (Calico's BIRD 1.6 only), tunl0 routes are not Felix's.
    enabled = on_node1(configs={"default": config("default", programClusterRoutes="Enabled")})
    assert build(enabled).ipv4.tunnel_interfaces == ("*.cali", "*.calico")


def test_program_cluster_routes_decides_the_kernel_filter() -> None:
    pools = [
        pool("plain", "10.10.0.0/16"),
        pool("ipip", "10.11.0.0/16", ipipMode="Always"),
        pool("vxlan", "10.12.0.0/16", vxlanMode="Always"),
    ]

    def kernel(policy: str | None) -> dict[str, str | None]:
        spec = {"programClusterRoutes": policy} if policy else {}
        inputs = BgpInputs(
            node_name="node1",
            nodes=FOUR,
            pools=pools,
            configs={"default": config("default", **spec)},
        )
        return {p.cidr: p.kernel for p in build(inputs).ipv4.pools}

    assert kernel(None) == {
        "10.10.0.0/16": "accept",
        "10.11.0.0/16": "reject",
        "10.12.0.0/16": "reject",
    }
    assert kernel("Disabled")["10.10.0.0/16"] == "reject"
    # BIRD 2 has no krt_tunnel: IPIP stays Felix's, with a note.
    assert kernel("EnabledIPIPOnly") == {
        "10.10.0.0/16": "reject",
        "10.11.0.0/16": "reject",
        "10.12.0.0/16": "reject",
    }
    noted = build(
        BgpInputs(
            node_name="node1",
            nodes=FOUR,
            pools=pools,
            configs={"default": config("default", programClusterRoutes="Enabled")},
        )
    )
    assert any("krt_tunnel" in note for note in noted.notes)


# -- debug levels -------------------------------------------------------------------------------


def test_debug_levels_at_info() -> None:
    text = render(build(on_node1()))
    assert "protocol device {\n  debug { states };" in text
    assert "protocol direct {\n  debug { states };" in text
    assert "template bgp bgp_template {\n  debug { states, routes, filters, events };" in text


# -- sessions -----------------------------------------------------------------------------------


def test_same_subnet_peers_are_multihop_like_calico() -> None:
    text = render(build(on_node1()))
    assert "  ttl security off;\n  multihop;" in text
    assert "direct;" not in text and "gateway recursive;" in text
    ttl = on_node1(peers=[peer("tor", peerIP="10.0.0.254", asNumber=65000, ttlSecurity=1)])
    assert "  ttl security on;\n  multihop 1;" in render(build(ttl))


# -- peerings -----------------------------------------------------------------------------------


def test_node_specific_peerings_are_never_passive() -> None:
    inputs = on_node1(peers=[peer("to-4", node="node1", peerIP="10.0.0.4", asNumber=64512)])
    peering = peers_of(inputs)["Node_10_0_0_4"]
    assert not peering.passive


def test_peer_selector_only_peer_is_global() -> None:
    inputs = on_node1(
        configs={"default": config("default", nodeToNodeMeshEnabled=False)},
        peers=[peer("all", peerSelector="all()")],
    )
    assert set(peers_of(inputs)) == {"Global_10_0_0_2", "Global_10_0_0_3", "Global_10_0_0_4"}


def test_peer_ip_of_a_calico_node_takes_its_port_and_passive_side() -> None:
    inputs = on_node1(
        configs={
            "default": config("default", nodeToNodeMeshEnabled=False),
            "node.node3": config("node.node3", listenPort=150),
        },
        peers=[peer("to-3", peerIP="10.0.0.3", asNumber=64512)],
    )
    peering = peers_of(inputs)["Global_10_0_0_3_port_150"]
    assert peering.port == 150 and peering.passive  # "10.0.0.3" > "10.0.0.1": it connects
    # On node3 the BGPPeer's reverse side peers back with every node, node-specifically.
    back = peers_of(dataclasses.replace(inputs, node_name="node3"))
    assert "Node_10_0_0_1" in back and not back["Node_10_0_0_1"].passive


def test_peer_ip_without_as_number_takes_the_nodes_or_is_left_out() -> None:
    cluster = nodes(node("node1", "10.0.0.1/24"), node("node2", "10.0.0.2/24", as_number=65002))
    inputs = BgpInputs(
        node_name="node1",
        nodes=cluster,
        configs={"default": config("default", nodeToNodeMeshEnabled=False)},
        peers=[peer("to-2", peerIP="10.0.0.2"), peer("nowhere", peerIP="10.9.9.9")],
    )
    result = build(inputs)
    assert [(p.name, p.as_number) for p in result.ipv4.peers] == [("Global_10_0_0_2", 65002)]
    assert any("nowhere" in note and "asNumber" in note for note in result.notes)


def test_local_workload_peers() -> None:
    inputs = on_node1(
        peers=[
            peer("vm", localWorkloadSelector="app == 'bird'", asNumber=65100, localASNumber=65001)
        ],
        workload_peers=(WorkloadPeer("vm", "192.168.7.3", "fd00:7::3"),),
    )
    peering = peers_of(inputs)["Local_Workload_192_168_7_3"]
    assert peering.passive and peering.local_as == 65001 and peering.source_address is None
    assert not peering.internal  # eBGP seen from the local AS 65001


# -- communities, bind mode ---------------------------------------------------------------------


def test_prefix_advertisements_add_communities() -> None:
    spec = {
        "communities": [{"name": "big", "value": "1:2:3"}],
        "prefixAdvertisements": [
            {"cidr": "192.168.0.0/16", "communities": ["big", "100:200"]},
            {"cidr": "fd00::/64", "communities": ["100:300"]},
        ],
    }
    inputs = on_node1(configs={"default": config("default", **spec)})
    text = render(build(inputs))
    assert (
        "  if ( net ~ 192.168.0.0/16 ) then {\n"
        "    bgp_community.add((100, 200));\n"
        "    bgp_large_community.add((1, 2, 3));\n"
        "  }"
    ) in text
    assert "bgp_community.add((100, 300));" in text  # the IPv6 function


def test_bind_mode_node_ip_listens_on_the_node_address() -> None:
    inputs = on_node1(configs={"default": config("default", bindMode="NodeIP", listenPort=1790)})
    assert "  local 10.0.0.1 port 1790 as 64512;" in render(build(inputs))


# -- BGPFilter rule fields ----------------------------------------------------------------------


def test_filter_operations_communities_peer_type_as_path_and_priority() -> None:
    rules = [
        {
            "action": "Accept",
            "peerType": "eBGP",
            "communities": {"values": ["65000:42"]},
            "operations": [
                {"addCommunity": {"value": "65001:200"}},
                {"prependASPath": {"prefix": [65010, 65011]}},
                {"setPriority": {"value": 100}},
            ],
        },
        {"action": "Reject", "asPathPrefix": [65020, 65021], "priority": 512},
    ]
    inputs = on_node1(
        filters={"f": bgp_filter("f", exportV4=rules)},
        peers=[peer("tor", peerIP="10.0.0.254", asNumber=65000, filters=["f"])],
    )
    text = render(build(inputs))
    assert "function 'bgp_f_exportFilterV4'(bool is_same_as) {" in text
    assert (
        "if (!is_same_as) then { if (((65000, 42) ~ bgp_community)) then { "
        "bgp_community.add((65001, 200)); bgp_path.prepend(65011); bgp_path.prepend(65010); "
        "bgp_local_pref = 2147483547; accept; } }"
    ) in text
    assert (
        "if ((bgp_path ~ [= 65020 65021 * =])&&"
        "(defined(bgp_local_pref)&&(bgp_local_pref = 2147483135))) then { reject; }"
    ) in text
    assert "'bgp_f_exportFilterV4'(false);" in text  # the ToR is in another AS


# -- BIRD accepts all of it ---------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD is not installed")
def test_bird_accepts_every_behaviour(tmp_path: Path) -> None:
    spec = {
        "bindMode": "NodeIP",
        "listenPort": 1790,
        "logSeverityScreen": "Debug",
        "programClusterRoutes": "Enabled",
        "prefixAdvertisements": [{"cidr": "192.168.0.0/16", "communities": ["1:2", "3:4:5"]}],
    }
    filters = {
        "f": bgp_filter(
            "f",
            exportV4=[
                {
                    "action": "Accept",
                    "peerType": "iBGP",
                    "operations": [{"setPriority": {"value": 9}}],
                }
            ],
            importV6=[{"action": "Reject", "asPathPrefix": [1, 2]}],
        )
    }
    cluster = nodes(
        node("node1", "10.0.0.1/24", "fd00::1/64"), node("node2", "10.0.0.2/24", "fd00::2/64")
    )
    inputs = BgpInputs(
        node_name="node1",
        nodes=cluster,
        pools=[*POOLS, pool("v6", "fd10::/48"), pool("x", "10.9.0.0/16", vxlanMode="Always")],
        configs={"default": config("default", **spec)},
        affinities={"192.168.0.0/26": "", "192.168.0.64/26": "pending", "fd10::/122": "confirmed"},
        filters=filters,
        peers=[
            peer("tor", peerIP="10.0.0.254", asNumber=65000, filters=["f"], ttlSecurity=2),
            peer("tor6", peerIP="fd00::fe", asNumber=65000, filters=["f"], reachableBy="fd00::fd"),
            peer("vm", localWorkloadSelector="a == 'b'", asNumber=65100, localASNumber=65001),
        ],
        workload_peers=(WorkloadPeer("vm", "192.168.0.3", "fd10::3"),),
    )
    path = tmp_path / "bird.cfg"
    path.write_text(render(build(inputs)))
    assert check_config(str(path)) is None

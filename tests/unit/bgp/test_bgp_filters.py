"""BGPFilters as BIRD: rule → condition for every operator, prefix length, source and interface;
Calico's function names; the calls a peer makes, in order, per family; and BIRD (``bird -p``)
accepting a whole rendered configuration that uses them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from pycalico.bgp import confd as confd_module
from pycalico.bgp.bird import check_config
from pycalico.bgp.confd import ConfdState
from pycalico.bgp.filters import (
    filter_functions,
    function_name,
    peer_calls,
    rule_statement,
)
from pycalico.bgp.processor import BgpInputs, build
from pycalico.bgp.render import render
from pycalico.datastore import paths
from pycalico.datastore.updates import decode_update
from pycalico.model.bgpfilter import BGPFilter, BGPFilterRule
from pycalico.model.codec import encode_value

from .scenarios import node, nodes, peer, pool


def bgp_filter(name: str, **spec: Any) -> BGPFilter:
    return BGPFilter.model_validate({"metadata": {"name": name}, "spec": spec})


def v4(**rule: Any) -> BGPFilterRule:
    resource = bgp_filter("f", exportV4=[rule])
    assert resource.spec.export_v4 is not None
    return resource.spec.export_v4[0]


def v6(**rule: Any) -> BGPFilterRule:
    resource = bgp_filter("f", exportV6=[rule])
    assert resource.spec.export_v6 is not None
    return resource.spec.export_v6[0]


@pytest.mark.parametrize(
    ("operator", "symbol"), [("Equal", "="), ("NotEqual", "!="), ("In", "~"), ("NotIn", "!~")]
)
def test_each_operator(operator: str, symbol: str) -> None:
    rule = v4(action="Accept", matchOperator=operator, cidr="77.0.0.0/16")
    assert rule_statement(rule) == f"if ((net {symbol} 77.0.0.0/16)) then {{ accept; }}"


@pytest.mark.parametrize(
    ("bounds", "text"),
    [
        ({"min": 24}, "[ 10.0.0.0/8{24,32} ]"),
        ({"max": 24}, "[ 10.0.0.0/8{8,24} ]"),
        ({"min": 16, "max": 24}, "[ 10.0.0.0/8{16,24} ]"),
        ({"min": 4}, "[ 10.0.0.0/8{8,32} ]"),  # min below the CIDR's own length is raised
        ({}, "[ 10.0.0.0/8{8,32} ]"),
    ],
)
def test_prefix_length_makes_a_prefix_set(bounds: dict[str, int], text: str) -> None:
    rule = v4(action="Reject", matchOperator="NotIn", cidr="10.0.0.0/8", prefixLength=bounds)
    assert rule_statement(rule) == f"if ((net !~ {text})) then {{ reject; }}"


def test_ipv6_prefix_length_tops_at_128() -> None:
    rule = v6(action="Accept", matchOperator="In", cidr="fd00::/8", prefixLength={"min": 48})
    assert rule_statement(rule) == "if ((net ~ [ fd00::/8{48,128} ])) then { accept; }"


def test_source_interface_and_their_combination() -> None:
    source = "((defined(source))&&(source ~ [ RTS_BGP ]))"
    interface = '((defined(ifname))&&(ifname ~ "eth*"))'
    assert rule_statement(v4(action="Reject", source="RemotePeers")) == (
        f"if ({source}) then {{ reject; }}"
    )
    assert rule_statement(v4(action="Accept", interface="eth*")) == (
        f"if ({interface}) then {{ accept; }}"
    )
    everything = v4(
        action="Accept",
        matchOperator="In",
        cidr="55.4.0.0/16",
        prefixLength={"max": 24},
        source="RemotePeers",
        interface="eth*",
    )
    assert rule_statement(everything) == (
        f"if ((net ~ [ 55.4.0.0/16{{16,24}} ])&&{source}&&{interface}) then {{ accept; }}"
    )


def test_a_rule_without_conditions_is_its_action() -> None:
    assert rule_statement(v4(action="Reject")) == "reject;"
    assert rule_statement(v4(action="Accept")) == "accept;"


def test_function_names_are_calicos_and_fit_bird() -> None:
    assert function_name("my-filter", "import", 4) == "'bgp_my-filter_importFilterV4'"
    assert function_name("my-filter", "Export", 6) == "'bgp_my-filter_exportFilterV6'"
    long = "very-long-name-that-should-be-truncated-because-it-is-longer-than-the-max"
    name = function_name(long, "import", 4)
    assert len(name) == 66  # 64 + the quotes
    assert name.startswith("'bgp_very-long-name-that-should-b_")
    assert name.endswith("_importFilterV4'")
    hash_part = name[len("'bgp_very-long-name-that-should-b_") :][:16]
    assert hash_part == hash_part.upper() and len(hash_part) == 16
    assert function_name(long + "x", "import", 4) != name
    with pytest.raises(ValueError, match="direction"):
        function_name("f", "sideways", 4)


def test_functions_only_where_a_filter_has_rules_and_bad_rules_are_left_out() -> None:
    good = bgp_filter(
        "a",
        importV4=[{"action": "Reject"}],
        exportV6=[{"action": "Accept", "matchOperator": "In", "cidr": "fd00::/8"}],
    )
    # Stored data that bypassed validation (a CIDR of the wrong family) is never printed.
    bad = bgp_filter(
        "b",
        exportV4=[
            {"action": "Accept", "matchOperator": "In", "cidr": "fd00::/8"},
            {"action": "Reject"},
        ],
    )
    functions, notes = filter_functions({"b": bad, "a": good}, 4)
    assert [(f.filter_name, f.direction) for f in functions] == [("a", "import"), ("b", "export")]
    assert functions[1].lines == ("reject;",)
    assert notes == ("BGPFilter b exportV4[0] left out: fd00::/8 is not an IPv4 network",)
    functions6, _ = filter_functions({"b": bad, "a": good}, 6)
    assert [(f.name, f.lines) for f in functions6] == [
        ("'bgp_a_exportFilterV6'", ("if ((net ~ fd00::/8)) then { accept; }",))
    ]


def test_peer_calls_follow_the_peers_order_and_skip_what_has_no_function() -> None:
    filters = {
        "one": bgp_filter("one", exportV4=[{"action": "Reject"}]),
        "two": bgp_filter("two", exportV4=[{"action": "Accept"}], importV4=[{"action": "Accept"}]),
    }
    functions, _ = filter_functions(filters, 4)
    assert peer_calls(["two", "missing", "one"], functions, "export", True) == (
        "'bgp_two_exportFilterV4'()",
        "'bgp_one_exportFilterV4'()",
    )
    assert peer_calls(["one", "two"], functions, "import", True) == ("'bgp_two_importFilterV4'()",)
    assert peer_calls(None, functions, "import", True) == ()


def filtered_cluster() -> BgpInputs:
    """node1 (dual stack) with an IPv4 and an IPv6 external peer, both naming filters."""
    filters = {
        "reject-b": bgp_filter(
            "reject-b",
            exportV4=[{"action": "Reject", "matchOperator": "In", "cidr": "10.70.1.0/24"}],
            importV4=[
                {"action": "Accept", "matchOperator": "Equal", "cidr": "0.0.0.0/0"},
                {"action": "Reject"},
            ],
            importV6=[{"action": "Reject", "matchOperator": "NotIn", "cidr": "fd00::/8"}],
        ),
        "edge.v2": bgp_filter(
            "edge.v2",
            exportV4=[
                {
                    "action": "Accept",
                    "matchOperator": "In",
                    "cidr": "10.70.0.0/16",
                    "prefixLength": {"min": 24, "max": 26},
                    "source": "RemotePeers",
                    "interface": "eth*",
                }
            ],
        ),
    }
    return BgpInputs(
        node_name="node1",
        nodes=nodes(node("node1", "10.0.0.1/24", "fd00::1/64"), node("node2", "10.0.0.2/24")),
        pools=[pool("p", "10.70.0.0/16")],
        peers=[
            peer("tor", peerIP="10.0.0.254", asNumber=65000, filters=["reject-b", "edge.v2"]),
            peer("tor6", peerIP="fd00::fe", asNumber=65000, filters=["reject-b", "absent"]),
        ],
        filters=filters,
    )


def test_processor_puts_the_calls_on_the_peers_of_each_family() -> None:
    config = build(filtered_cluster())
    peers = {p.name: p for p in config.peers}
    tor = peers["Global_10_0_0_254"]
    assert tor.import_calls == ("'bgp_reject-b_importFilterV4'()",)
    assert tor.export_calls == (
        "'bgp_reject-b_exportFilterV4'()",
        "'bgp_edge.v2_exportFilterV4'()",
    )
    tor6 = peers["Global_fd00__fe"]
    assert tor6.import_calls == ("'bgp_reject-b_importFilterV6'()",)
    assert tor6.export_calls == ()
    mesh = peers["Mesh_10_0_0_2"]
    assert mesh.import_calls == mesh.export_calls == ()
    assert config.notes == ("BGPPeer tor6: no BGPFilter 'absent'",)
    assert [f.name for f in config.ipv6.filter_functions] == ["'bgp_reject-b_importFilterV6'"]


def test_rendered_peer_filters_chain_before_calicos_own() -> None:
    text = render(build(filtered_cluster()))
    # Import: the filters, then Calico's preference rule; export: Calico's priority mapping,
    # then the filters, then Calico's export function.
    assert (
        "    import filter {\n"
        "      'bgp_reject-b_importFilterV4'();\n"
        "      # A route whose priority"
    ) in text
    assert (
        "      'bgp_reject-b_exportFilterV4'();\n"
        "      'bgp_edge.v2_exportFilterV4'();\n"
        "      calico_export_to_bgp_peers(false);\n"
        "      reject;\n"
        "    };\n"
    ) in text
    assert (
        "function 'bgp_reject-b_importFilterV4'() {\n"
        "  if ((net = 0.0.0.0/0)) then { accept; }\n"
        "  reject;\n"
        "}\n"
    ) in text
    # Peers without filters call Calico's export function alone.
    assert "      }\n      calico_export_to_bgp_peers(true);\n      reject;" in text
    # Every function is defined before the first protocol that calls it.
    assert text.index("function 'bgp_edge.v2_exportFilterV4'()") < text.index("protocol bgp")


def test_no_filters_changes_nothing() -> None:
    plain = filtered_cluster()
    without = BgpInputs(
        node_name=plain.node_name,
        nodes=plain.nodes,
        pools=plain.pools,
        peers=[peer("tor", peerIP="10.0.0.254", asNumber=65000)],
    )
    text = render(build(without))
    assert "BGPFilter" not in text and "'bgp_" not in text


@pytest.mark.skipif(shutil.which("bird") is None, reason="BIRD is not installed")
def test_bird_accepts_the_rendered_filters(tmp_path: Path) -> None:
    inputs = filtered_cluster()
    long = "a" * 70 + ".b-c"
    every_operator = bgp_filter(
        long,
        exportV4=[
            {"action": "Accept", "matchOperator": op, "cidr": "10.0.0.0/8", "prefixLength": pl}
            for op in ("Equal", "NotEqual", "In", "NotIn")
            for pl in ({"min": 9}, {"max": 30}, {"min": 16, "max": 24})
        ]
        + [{"action": "Reject", "interface": "*"}, {"action": "Reject"}],
        importV6=[
            {
                "action": "Accept",
                "matchOperator": "In",
                "cidr": "::/0",
                "prefixLength": {"max": 64},
            },
            {"action": "Reject", "source": "RemotePeers", "interface": "vxlan-v6.calico"},
        ],
    )
    with_long = BgpInputs(
        node_name=inputs.node_name,
        nodes=inputs.nodes,
        pools=inputs.pools,
        peers=[
            *inputs.peers,
            peer("tor-b", peerIP="10.0.0.253", asNumber=65001, filters=[long, "reject-b"]),
            peer("tor6-b", peerIP="fd00::fd", asNumber=65001, filters=[long]),
        ],
        filters={**inputs.filters, long: every_operator},
    )
    path = tmp_path / "bird.cfg"
    text = render(build(with_long))
    path.write_text(text)
    assert text.count("function 'bgp_") == 6
    assert check_config(str(path)) is None

    # And the test can fail: BIRD refuses a call to a function that does not exist.
    path.write_text(text.replace("'bgp_reject-b_exportFilterV4'();", "'bgp_nope'();", 1))
    assert check_config(str(path)) is not None


def test_confd_reads_filters_under_calicos_key_and_follows_deletes() -> None:
    state = ConfdState()
    key = paths.resource_key("bgpfilters", "reject-b")
    assert key == "/calico/resources/v3/projectcalico.org/BGPFilters/reject-b"
    resource = bgp_filter("reject-b", exportV4=[{"action": "Reject"}])
    assert state.apply(decode_update(key, encode_value(resource), 1))  # type: ignore[arg-type]
    inputs = state.inputs("node1", {}, None)
    assert list(inputs.filters) == ["reject-b"]
    # confd follows one prefix per kind it reads, so BGPFilters are watched.
    assert paths.resource_prefix("bgpfilters").endswith("/BGPFilters/")
    assert "bgpfilters" in confd_module._KINDS
    assert state.apply(decode_update(key, None, 2))  # type: ignore[arg-type]
    assert state.inputs("node1", {}, None).filters == {}

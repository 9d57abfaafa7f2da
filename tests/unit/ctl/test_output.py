"""calicoctl's table, YAML, JSON and name output, byte for byte, for every kind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from pycalico.ctl.columns import COLUMNS, TableContext, go_float, join
from pycalico.ctl.output import (
    OutputFormatError,
    OutputSpec,
    ResultSet,
    UnknownHeading,
    format_json,
    format_names,
    format_yaml,
    parse_output,
    render,
    tabwriter,
)
from pycalico.model.codec import encode_resource, load_documents
from pycalico.model.kinds import KINDS

REPO = Path(__file__).resolve().parents[3]


def wire(text: str) -> dict[str, Any]:
    (resource,) = load_documents(text, "test")
    return encode_resource(resource)


def listing(kind: str, *items: dict[str, Any], namespaced: bool = False) -> ResultSet:
    return ResultSet(kind, tuple(items), True, 7, namespaced)


POOL = wire(
    """
apiVersion: projectcalico.org/v3
kind: IPPool
metadata: {name: ippool-name1}
spec: {cidr: 10.0.1.0/24, ipipMode: Always, vxlanMode: Never, blockSize: 27,
       nodeSelector: "foo == 'bar'"}
"""
)


def test_pool_ps_table_is_calicos_byte_for_byte() -> None:
    # The same pool and expected text as Calico's own calicoctl system tests.
    text = render([listing("IPPool", POOL)], OutputSpec("ps"))
    assert text == (
        "NAME           CIDR          SELECTOR       \n"
        "ippool-name1   10.0.1.0/24   foo == 'bar'   \n"
        "\n"
    )


def test_pool_wide_table_is_calicos_byte_for_byte() -> None:
    text = render([listing("IPPool", POOL)], OutputSpec("wide"))
    assert text.splitlines() == [
        "NAME           CIDR          NAT     IPIPMODE   VXLANMODE   DISABLED   "
        "DISABLEBGPEXPORT   SELECTOR       ASSIGNMENTMODE   ",
        "ippool-name1   10.0.1.0/24   false   Always     Never       false      "
        "false              foo == 'bar'   Automatic        ",
        "",
    ]


def test_each_get_is_its_own_table_followed_by_a_blank_line() -> None:
    single = ResultSet("IPPool", (POOL,), False)
    text = render([single, single], OutputSpec("ps"))
    table = "NAME           CIDR          SELECTOR       \nippool-name1   10.0.1.0/24   foo == 'bar'   \n"
    assert text == table + "\n" + table + "\n"


def test_tabwriter_pads_every_cell_to_at_least_five() -> None:
    assert tabwriter([["A", ""], ["bb", "c"]]) == "A    " + "     " + "\n" + "bb   c    \n"


# --- every kind's columns -------------------------------------------------------------------


@pytest.fixture(scope="module")
def all_kinds() -> dict[str, list[dict[str, Any]]]:
    text = "\n---\n".join(
        (REPO / "examples" / name).read_text()
        for name in ("all-kinds.yaml", "clusterinformation.yaml")
    )
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for resource in load_documents(text, "all-kinds.yaml"):
        by_kind.setdefault(resource.kind, []).append(encode_resource(resource))
    return by_kind


# (ps headings, wide headings, the wide row of the first item of all-kinds.yaml)
EXPECTED: dict[str, tuple[list[str], list[str], list[str]]] = {
    "IPPool": (
        ["NAME", "CIDR", "SELECTOR"],
        [
            "NAME",
            "CIDR",
            "NAT",
            "IPIPMODE",
            "VXLANMODE",
            "DISABLED",
            "DISABLEBGPEXPORT",
            "SELECTOR",
            "ASSIGNMENTMODE",
        ],
        [
            "pods-v4",
            "10.244.0.0/16",
            "true",
            "Never",
            "CrossSubnet",
            "false",
            "false",
            "all()",
            "Automatic",
        ],
    ),
    "IPAMConfiguration": (
        ["NAME", "STRICTAFFINITY", "AUTOALLOCATEBLOCKS"],
        ["NAME", "STRICTAFFINITY", "AUTOALLOCATEBLOCKS", "MAXBLOCKSPERHOST"],
        ["default", "false", "true", "0"],
    ),
    "IPReservation": (
        ["NAME"],
        ["NAME", "CIDRS"],
        ["pods-reserved", "10.244.0.1,10.244.1.0/30,fd00:10:244::/126"],
    ),
    "ClusterInformation": (
        ["NAME", "CLUSTERGUID", "CLUSTERTYPE", "CALICOVERSION", "DATASTOREREADY"],
        ["NAME", "CLUSTERGUID", "CLUSTERTYPE", "CALICOVERSION", "DATASTOREREADY"],
        ["default", "5b9a0c6e2f4d4a8b9c1d2e3f4a5b6c7d", "k8s,bgp", "v3.31.0", "true"],
    ),
    "FelixConfiguration": (["NAME"], ["NAME"], ["default"]),
    "KubeControllersConfiguration": (["NAME"], ["NAME"], ["default"]),
    "BGPConfiguration": (
        ["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"],
        ["NAME", "LOGSEVERITY", "MESHENABLED", "ASNUMBER"],
        ["default", "Info", "true", "64512"],
    ),
    "Node": (
        ["NAME"],
        ["NAME", "ASN", "IPV4", "IPV6"],
        ["node-1", "64512", "192.168.56.11/24", ""],
    ),
    "BGPPeer": (
        ["NAME", "PEERIP", "NODE", "ASN"],
        ["NAME", "PEERIP", "NODE", "ASN"],
        ["peer-with-route-reflectors", "", "all()", "0"],
    ),
    "BGPFilter": (
        ["NAME", "NUMEXPORT", "NUMIMPORT"],
        ["NAME", "NUMEXPORT", "NUMIMPORT"],
        ["tor-routes", "3", "3"],
    ),
    "Tier": (["NAME", "ORDER"], ["NAME", "ORDER"], ["security", "100"]),
    "GlobalNetworkPolicy": (
        ["NAME", "TIER"],
        ["NAME", "TIER", "ORDER", "SELECTOR"],
        ["security.allow-cluster-dns", "security", "10", "all()"],
    ),
    "NetworkPolicy": (
        ["NAME", "TIER"],
        ["NAME", "TIER", "ORDER", "SELECTOR"],
        ["allow-frontend", "default", "100", "app == 'backend'"],
    ),
    "StagedGlobalNetworkPolicy": (
        ["NAME", "TIER"],
        ["NAME", "TIER", "ORDER", "SELECTOR"],
        ["security.stage-deny-telnet", "security", "20", "all()"],
    ),
    "StagedNetworkPolicy": (
        ["NAME", "TIER"],
        ["NAME", "TIER", "ORDER", "SELECTOR"],
        ["stage-backend-lockdown", "default", "90", "app == 'backend'"],
    ),
    "StagedKubernetesNetworkPolicy": (
        ["NAME"],
        ["NAME", "PODSELECTOR"],
        [
            "stage-db-ingress",
            "&LabelSelector{MatchLabels:map[string]string{app: db,},"
            "MatchExpressions:[]LabelSelectorRequirement{},}",
        ],
    ),
    "Profile": (["NAME"], ["NAME", "LABELS"], ["kns.shop", "pcns.projectcalico.org/name=shop"]),
    "WorkloadEndpoint": (
        ["WORKLOAD", "NODE", "NETWORKS", "INTERFACE"],
        ["NAME", "WORKLOAD", "NODE", "NETWORKS", "INTERFACE", "PROFILES", "NATS"],
        [
            "node--1-k8s-backend--0-eth0",
            "backend-0",
            "node-1",
            "10.244.1.5/32",
            "cali1f2e3d4c5b6",
            "kns.shop,ksa.shop.default",
            "",
        ],
    ),
    "HostEndpoint": (
        ["NAME", "NODE"],
        ["NAME", "NODE", "INTERFACE", "IPS", "PROFILES"],
        ["node-1-eth0", "node-1", "eth0", "192.168.56.11", "projectcalico-default-allow"],
    ),
    "NetworkSet": (["NAME"], ["NAME", "NETS"], ["partner-apis", "203.0.113.0/24"]),
    "GlobalNetworkSet": (
        ["NAME"],
        ["NAME", "NETS"],
        ["blocked-ranges", "198.51.100.0/24,2001:db8:bad::/48"],
    ),
}


def test_every_kind_of_the_model_has_calicoctl_columns() -> None:
    assert set(KINDS) <= set(COLUMNS)
    assert set(KINDS) <= set(EXPECTED), "add the new kind to EXPECTED"


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_kind_columns(kind: str, all_kinds: dict[str, list[dict[str, Any]]]) -> None:
    ps, wide, row = EXPECTED[kind]
    result = listing(kind, all_kinds[kind][0])
    ps_lines = render([result], OutputSpec("ps")).splitlines()
    wide_lines = render([result], OutputSpec("wide")).splitlines()
    assert ps_lines[0].split() == ps
    assert wide_lines[0].split() == wide
    # Cells may be empty, so compare by column position rather than by splitting on blanks.
    starts = [wide_lines[0].index(h) for h in wide]
    ends = [*starts[1:], None]
    cells = [wide_lines[1][s:e].rstrip() for s, e in zip(starts, ends, strict=True)]
    assert cells == row
    assert ps_lines[-1] == "" and wide_lines[-1] == ""


def test_namespace_column_is_prepended_only_when_asked(
    all_kinds: dict[str, list[dict[str, Any]]],
) -> None:
    result = listing("NetworkPolicy", *all_kinds["NetworkPolicy"], namespaced=True)
    plain = render([result], OutputSpec("ps")).splitlines()
    with_namespace = render([result], OutputSpec("ps"), print_namespace=True).splitlines()
    assert plain[0].split() == ["NAME", "TIER"]
    assert with_namespace[0].split() == ["NAMESPACE", "NAME", "TIER"]
    assert with_namespace[1].split() == ["shop", "allow-frontend", "default"]
    # Cluster-scoped kinds never get one.
    pools = render([listing("IPPool", POOL)], OutputSpec("ps"), print_namespace=True)
    assert pools.splitlines()[0].split() == ["NAME", "CIDR", "SELECTOR"]


def test_node_without_own_as_number_shows_the_cluster_one_in_brackets(
    all_kinds: dict[str, list[dict[str, Any]]],
) -> None:
    rr = all_kinds["Node"][1]
    text = render(
        [listing("Node", rr)], OutputSpec("wide"), context=TableContext(default_as_number="65001")
    )
    assert text.splitlines()[1].split() == ["rr-1", "(65001)", "192.168.56.2/24"]


def test_unset_pointers_and_flags_print_as_go_does() -> None:
    config = wire("apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: x}\n")
    row = render([listing("BGPConfiguration", config)], OutputSpec("ps")).splitlines()[1]
    assert row.split() == ["x", "-", "-"]  # LOGSEVERITY empty, MESHENABLED and ASNUMBER unset
    tier = {"kind": "Tier", "metadata": {"name": "last"}, "spec": {}}
    assert render([listing("Tier", tier)], OutputSpec("ps")).splitlines()[1].split() == [
        "last",
        "<nil>",
    ]


def test_custom_columns_and_unknown_heading() -> None:
    spec = parse_output("custom-columns=CIDR,NAME")
    assert render([listing("IPPool", POOL)], spec).splitlines()[1].split() == [
        "10.0.1.0/24",
        "ippool-name1",
    ]
    with pytest.raises(UnknownHeading, match=r"Unknown heading BOGUS, valid values are: .*CIDR"):
        render([listing("IPPool", POOL)], parse_output("custom-columns=BOGUS"))


# --- Go printing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (100.0, "100"),
        (1_000_000.0, "1e+06"),
        (10_000_000.0, "1e+07"),
        (123456.0, "123456"),
        (1234567.0, "1.234567e+06"),
        (100.5, "100.5"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (-2.5, "-2.5"),
        (0.0, "0"),
    ],
)
def test_go_float(value: float, text: str) -> None:
    assert go_float(value) == text


def test_join_truncates_like_calicoctl() -> None:
    nets = [f"10.0.{i}.0/24" for i in range(20)]
    joined = join(nets, ",", 80)
    assert len(joined) == 80 and joined.endswith("...")
    assert join({"b": "2", "a": "1"}) == "a=1,b=2"
    assert join(None) == ""


# --- documents -------------------------------------------------------------------------------


def test_yaml_one_object_list_object_and_sequence() -> None:
    single = ResultSet("IPPool", (POOL,), False)
    one = yaml.safe_load(format_yaml([single]))
    assert one["kind"] == "IPPool" and one["metadata"]["name"] == "ippool-name1"
    listed = yaml.safe_load(format_yaml([listing("IPPool", POOL)]))
    assert listed["kind"] == "IPPoolList"
    assert listed["metadata"] == {"resourceVersion": "7"}
    assert [i["metadata"]["name"] for i in listed["items"]] == ["ippool-name1"]
    several = yaml.safe_load(format_yaml([single, single]))
    assert isinstance(several, list) and len(several) == 2
    empty = yaml.safe_load(format_yaml([listing("IPPool")]))
    assert empty["items"] == []


def test_yaml_keys_sorted_and_whole_floats_are_integers() -> None:
    tier = {"apiVersion": "projectcalico.org/v3", "kind": "Tier", "metadata": {"name": "t"}}
    tier["spec"] = {"order": 1_000_000.0, "defaultAction": "Deny"}
    text = format_yaml([ResultSet("Tier", (tier,), False)])
    assert text == (
        "apiVersion: projectcalico.org/v3\nkind: Tier\nmetadata:\n  name: t\n"
        "spec:\n  defaultAction: Deny\n  order: 1000000\n"
    )


def test_json_keeps_go_field_order() -> None:
    text = format_json([listing("IPPool", POOL)])
    document = json.loads(text)
    assert list(document) == ["kind", "apiVersion", "metadata", "items"]
    assert list(document["items"][0])[:3] == ["kind", "apiVersion", "metadata"]
    assert text.startswith('{\n  "kind": "IPPoolList"')


def test_names() -> None:
    policy = {"kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": "shop"}}
    text = format_names([listing("IPPool", POOL), listing("NetworkPolicy", policy)])
    assert text == "ippool/ippool-name1\nnetworkpolicy/shop/p\n"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ps", OutputSpec("ps")),
        ("wide", OutputSpec("wide")),
        ("yml", OutputSpec("yaml")),
        ("json", OutputSpec("json")),
        ("name", OutputSpec("name")),
        ("custom-columns=NAME,CIDR", OutputSpec("custom-columns", ("NAME", "CIDR"))),
    ],
)
def test_parse_output(value: str, expected: OutputSpec) -> None:
    assert parse_output(value) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("xml", "unrecognized output format 'xml'"),
        ("custom-columns=", "need to specify at least one column"),
        ("go-template={{.}}", "not supported"),
    ],
)
def test_parse_output_refuses(value: str, message: str) -> None:
    with pytest.raises(OutputFormatError, match=message):
        parse_output(value)

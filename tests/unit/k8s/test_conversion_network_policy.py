"""Kubernetes NetworkPolicy -> Calico NetworkPolicy, case by case.

Each case restates, as input and expected output, a case of Calico's own converter tests
(libcalico-go ``conversion_test.go``: "Test NetworkPolicy conversion" and its "no policyTypes"
twin; kube-controllers ``networkpolicy_converter_test.go``), named after it; cases marked
``extra`` are ours, for behaviour Calico's converter has but its tests do not pin.
"""

from __future__ import annotations

from typing import Any

import pytest

from pycalico.k8s.conversion.network_policy import (
    convert_network_policy,
    kubernetes_name,
    policy_name,
)
from pycalico.k8s.conversion.objects import ConversionError

ORCH = "projectcalico.org/orchestrator == 'k8s'"
K_V = f"{ORCH} && k == 'v' && k2 == 'v2'"
LABELS2 = {"label": "value", "label2": "value2"}
SEL_LABELS2 = f"{ORCH} && label == 'value' && label2 == 'value2'"
SEL_LABEL = f"{ORCH} && label == 'value'"
PEER_K_V = {"podSelector": {"matchLabels": {"k": "v", "k2": "v2"}}}
BLOCK = {"cidr": "192.168.0.0/16", "except": ["192.168.3.0/24", "192.168.4.0/24"]}
BLOCK3 = {
    "cidr": "192.168.0.0/16",
    "except": ["192.168.3.0/24", "192.168.4.0/24", "192.168.5.0/24"],
}
NETS3 = {"nets": ["192.168.0.0/16"], "notNets": BLOCK3["except"]}


def knp(
    *,
    pods: dict[str, Any] | None = None,
    ingress: list[dict[str, Any]] | None = None,
    egress: list[dict[str, Any]] | None = None,
    types: list[str] | None = None,
    name: str = "test.policy",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"podSelector": pods if pods is not None else {}}
    if ingress is not None:
        spec["ingress"] = ingress
    if egress is not None:
        spec["egress"] = egress
    if types is not None:
        spec["policyTypes"] = types
    return {"metadata": {"name": name, "namespace": "default"}, "spec": spec}


def allow(
    protocol: str | None = None,
    source: dict[str, Any] | None = None,
    destination: dict[str, Any] | None = None,
) -> dict[str, Any]:
    rule: dict[str, Any] = {"action": "Allow"}
    if protocol:
        rule["protocol"] = protocol
    rule["source"] = source or {}
    rule["destination"] = destination or {}
    return rule


def calico(
    selector: str,
    *,
    ingress: list[dict[str, Any]] | None = None,
    egress: list[dict[str, Any]] | None = None,
    types: tuple[str, ...] = ("Ingress",),
) -> dict[str, Any]:
    spec: dict[str, Any] = {"tier": "default", "order": 1000}
    if ingress:
        spec["ingress"] = ingress
    if egress:
        spec["egress"] = egress
    spec["selector"] = selector
    spec["types"] = list(types)
    return spec


# (id, Kubernetes policy, expected Calico spec, expected dropped rules as "direction[index]")
CASES: list[tuple[str, dict[str, Any], dict[str, Any], list[str]]] = [
    (
        "basic k8s NetworkPolicy",
        knp(
            pods={"matchLabels": LABELS2},
            ingress=[{"ports": [{"port": 80}, {"port": "foo"}], "from": [PEER_K_V]}],
            types=["Ingress"],
        ),
        calico(
            SEL_LABELS2,
            ingress=[allow("TCP", {"selector": K_V}, {"ports": [80, "foo"]})],
        ),
        [],
    ),
    (
        "no ports",
        knp(pods={"matchLabels": LABELS2}, ingress=[{"from": [PEER_K_V]}], types=["Ingress"]),
        calico(SEL_LABELS2, ingress=[allow(None, {"selector": K_V})]),
        [],
    ),
    (
        "blank ports",
        knp(
            pods={"matchLabels": LABELS2},
            ingress=[{"ports": [{"port": 80}, {}], "from": [PEER_K_V]}],
            types=["Ingress"],
        ),
        calico(SEL_LABELS2, ingress=[allow("TCP", {"selector": K_V})]),
        [],
    ),
    (
        "egress with blank ports",
        knp(
            pods={"matchLabels": LABELS2},
            egress=[
                {"ports": [{}, {"port": 80}], "to": [PEER_K_V]},
                {"ports": [{"port": 53, "protocol": "UDP"}]},
            ],
            types=["Egress"],
        ),
        calico(
            SEL_LABELS2,
            egress=[
                allow("TCP", None, {"selector": K_V}),
                allow("UDP", None, {"ports": [53]}),
            ],
            types=("Egress",),
        ),
        [],
    ),
    (
        "drop rules with invalid ports (ingress)",
        knp(
            pods={"matchLabels": LABELS2},
            ingress=[
                {"ports": [{"port": 80}, {"port": "foo"}], "from": [PEER_K_V]},
                {"ports": [{"port": 80}, {"port": "-50:-1"}], "from": [PEER_K_V]},
            ],
            types=["Ingress"],
        ),
        calico(SEL_LABELS2, ingress=[allow("TCP", {"selector": K_V}, {"ports": [80, "foo"]})]),
        ["ingress[1]"],
    ),
    (
        "drop rules with invalid ports (egress, types Ingress only)",
        knp(
            pods={"matchLabels": LABELS2},
            egress=[
                {"ports": [{"port": 80}, {"port": "foo"}], "to": [PEER_K_V]},
                {"ports": [{"port": 80}, {"port": "-50:-1"}], "to": [PEER_K_V]},
                {"ports": [{"port": 80}, {"port": "-22:-3"}], "to": [PEER_K_V]},
            ],
            types=["Ingress"],
        ),
        calico(
            SEL_LABELS2,
            egress=[allow("TCP", None, {"ports": [80, "foo"], "selector": K_V})],
        ),
        ["egress[1]", "egress[2]"],
    ),
    (
        "no rules",
        knp(pods={"matchLabels": {"label": "value"}}, types=["Ingress"]),
        calico(SEL_LABEL),
        [],
    ),
    (
        "default-deny egress",
        knp(types=["Egress"], name="testPolicy"),
        calico(ORCH, types=("Egress",)),
        [],
    ),
    (
        "multiple peers",
        knp(
            pods={"matchLabels": {"label": "value"}},
            ingress=[
                {
                    "ports": [{}],
                    "from": [
                        {"podSelector": {"matchLabels": {"k": "v"}}},
                        {"podSelector": {"matchLabels": {"k2": "v2"}}},
                    ],
                }
            ],
            types=["Ingress"],
        ),
        calico(
            SEL_LABEL,
            ingress=[
                allow("TCP", {"selector": f"{ORCH} && k == 'v'"}),
                allow("TCP", {"selector": f"{ORCH} && k2 == 'v2'"}),
            ],
        ),
        [],
    ),
    (
        "DoesNotExist expression",
        knp(
            pods={"matchLabels": LABELS2},
            ingress=[
                {
                    "ports": [{"port": 80}, {"port": "foo"}],
                    "from": [
                        {
                            "podSelector": {
                                "matchExpressions": [{"key": "toast", "operator": "DoesNotExist"}]
                            }
                        }
                    ],
                }
            ],
            types=["Ingress"],
        ),
        calico(
            SEL_LABELS2,
            ingress=[allow("TCP", {"selector": f"{ORCH} && ! has(toast)"}, {"ports": [80, "foo"]})],
        ),
        [],
    ),
    (
        "multiple peers and ports",
        knp(
            pods={"matchLabels": {"label": "value"}},
            ingress=[
                {
                    "ports": [{"port": 90, "protocol": "UDP"}, {"port": 80, "protocol": "TCP"}],
                    "from": [
                        {"podSelector": {"matchLabels": {"k": "v"}}},
                        {"podSelector": {"matchLabels": {"k2": "v2"}}},
                    ],
                }
            ],
            types=["Ingress"],
        ),
        calico(
            SEL_LABEL,
            ingress=[
                allow("TCP", {"selector": f"{ORCH} && k == 'v'"}, {"ports": [80]}),
                allow("TCP", {"selector": f"{ORCH} && k2 == 'v2'"}, {"ports": [80]}),
                allow("UDP", {"selector": f"{ORCH} && k == 'v'"}, {"ports": [90]}),
                allow("UDP", {"selector": f"{ORCH} && k2 == 'v2'"}, {"ports": [90]}),
            ],
        ),
        [],
    ),
    ("empty podSelector", knp(types=["Ingress"]), calico(ORCH), []),
    (
        "namespaceSelector",
        knp(
            pods={"matchLabels": {"label": "value"}},
            ingress=[
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"namespaceRole": "dev", "namespaceFoo": "bar"}
                            }
                        }
                    ]
                }
            ],
            types=["Ingress"],
        ),
        calico(
            SEL_LABEL,
            ingress=[
                allow(
                    None,
                    {
                        "selector": ORCH,
                        "namespaceSelector": "namespaceFoo == 'bar' && namespaceRole == 'dev'",
                    },
                )
            ],
        ),
        [],
    ),
    (
        "nil namespaceSelector",
        knp(
            pods={"matchLabels": {"label": "value"}},
            ingress=[{"from": [{"podSelector": {}}]}],
            types=["Ingress"],
        ),
        calico(SEL_LABEL, ingress=[allow(None, {"selector": ORCH})]),
        [],
    ),
    (
        "empty namespaceSelector",
        knp(
            pods={"matchLabels": {"label": "value"}},
            ingress=[{"from": [{"namespaceSelector": {"matchLabels": {}}}]}],
            types=["Ingress"],
        ),
        calico(SEL_LABEL, ingress=[allow(None, {"selector": ORCH, "namespaceSelector": "all()"})]),
        [],
    ),
    (
        "pod and namespace selectors",
        knp(
            pods={"matchLabels": {"label": "value"}},
            ingress=[
                {
                    "from": [
                        {
                            "namespaceSelector": {
                                "matchLabels": {"namespaceRole": "dev", "namespaceFoo": "bar"}
                            },
                            "podSelector": {"matchLabels": {"podA": "B", "podC": "D"}},
                        }
                    ]
                }
            ],
            types=["Ingress"],
        ),
        calico(
            SEL_LABEL,
            ingress=[
                allow(
                    None,
                    {
                        "selector": f"{ORCH} && podA == 'B' && podC == 'D'",
                        "namespaceSelector": "namespaceFoo == 'bar' && namespaceRole == 'dev'",
                    },
                )
            ],
        ),
        [],
    ),
    (
        "podSelector.MatchExpressions",
        knp(
            pods={"matchExpressions": [{"key": "k", "operator": "In", "values": ["v1", "v2"]}]},
            types=["Ingress"],
        ),
        calico(f"{ORCH} && k in {{ 'v1', 'v2' }}"),
        [],
    ),
    (
        "ports only",
        knp(ingress=[{"ports": [{"protocol": "TCP", "port": 80}]}], types=["Ingress"]),
        calico(ORCH, ingress=[allow("TCP", None, {"ports": [80]})]),
        [],
    ),
    (
        "port range only",
        knp(
            ingress=[{"ports": [{"protocol": "TCP", "port": 32000, "endPort": 32768}]}],
            types=["Ingress"],
        ),
        calico(ORCH, ingress=[allow("TCP", None, {"ports": ["32000:32768"]})]),
        [],
    ),
    (
        "ports only (egress)",
        knp(egress=[{"ports": [{"protocol": "TCP", "port": 80}]}], types=["Egress"]),
        calico(ORCH, egress=[allow("TCP", None, {"ports": [80]})], types=("Egress",)),
        [],
    ),
    (
        "port range only (egress)",
        knp(
            egress=[{"ports": [{"protocol": "TCP", "port": 32000, "endPort": 32768}]}],
            types=["Egress"],
        ),
        calico(ORCH, egress=[allow("TCP", None, {"ports": ["32000:32768"]})], types=("Egress",)),
        [],
    ),
    (
        "ingress rule with an IPBlock peer",
        knp(ingress=[{"from": [{"ipBlock": BLOCK}]}], types=["Ingress"]),
        calico(
            ORCH,
            ingress=[allow(None, {"nets": ["192.168.0.0/16"], "notNets": BLOCK["except"]})],
        ),
        [],
    ),
    (
        "egress rule with an IPBlock peer",
        knp(egress=[{"to": [{"ipBlock": BLOCK3}]}], types=["Egress"]),
        calico(ORCH, egress=[allow(None, None, NETS3)], types=("Egress",)),
        [],
    ),
    (
        "egress rule with IPBlock and ports",
        knp(
            egress=[
                {
                    "ports": [{"port": 90, "protocol": "UDP"}, {"port": 80, "protocol": "TCP"}],
                    "to": [{"ipBlock": BLOCK3}],
                }
            ],
            types=["Egress"],
        ),
        calico(
            ORCH,
            egress=[
                allow("TCP", None, {"ports": [80], **NETS3}),
                allow("UDP", None, {"ports": [90], **NETS3}),
            ],
            types=("Egress",),
        ),
        [],
    ),
    (
        "IPBlock peer with no except",
        knp(ingress=[{"from": [{"ipBlock": {"cidr": "192.168.0.0/16"}}]}], types=["Ingress"]),
        calico(ORCH, ingress=[allow(None, {"nets": ["192.168.0.0/16"]})]),
        [],
    ),
    (
        "IPBlock that does not parse leaves the peer empty",
        knp(ingress=[{"from": [{"ipBlock": {"cidr": "192.168.0.0/55"}}]}], types=["Ingress"]),
        calico(ORCH, ingress=[allow(None, {})]),
        [],
    ),
    (
        "both an Egress and an Ingress rule",
        knp(
            ingress=[{"from": [{"ipBlock": BLOCK}]}],
            egress=[
                {
                    "to": [
                        {
                            "ipBlock": {
                                "cidr": "10.10.0.0/16",
                                "except": [
                                    "192.168.13.0/24",
                                    "192.168.14.0/24",
                                    "192.168.15.0/24",
                                ],
                            }
                        }
                    ]
                }
            ],
            types=["Egress", "Ingress"],
        ),
        calico(
            ORCH,
            ingress=[allow(None, {"nets": ["192.168.0.0/16"], "notNets": BLOCK["except"]})],
            egress=[
                allow(
                    None,
                    None,
                    {
                        "nets": ["10.10.0.0/16"],
                        "notNets": ["192.168.13.0/24", "192.168.14.0/24", "192.168.15.0/24"],
                    },
                )
            ],
            types=("Ingress", "Egress"),
        ),
        [],
    ),
    # "no policyTypes" (Kubernetes <= 1.7): the same shapes with policyTypes unset.
    (
        "no policyTypes: basic",
        knp(pods={"matchLabels": LABELS2}, ingress=[{"ports": [{"port": 80}], "from": [PEER_K_V]}]),
        calico(SEL_LABELS2, ingress=[allow("TCP", {"selector": K_V}, {"ports": [80]})]),
        [],
    ),
    (
        "no policyTypes: no rules",
        knp(pods={"matchLabels": {"label": "value"}}),
        calico(SEL_LABEL),
        [],
    ),
    (
        "no policyTypes: multiple peers",
        knp(
            pods={"matchLabels": {"label": "value"}},
            ingress=[
                {
                    "ports": [{}],
                    "from": [
                        {"podSelector": {"matchLabels": {"k": "v"}}},
                        {"podSelector": {"matchLabels": {"k2": "v2"}}},
                    ],
                }
            ],
        ),
        calico(
            SEL_LABEL,
            ingress=[
                allow("TCP", {"selector": f"{ORCH} && k == 'v'"}),
                allow("TCP", {"selector": f"{ORCH} && k2 == 'v2'"}),
            ],
        ),
        [],
    ),
    (
        "no policyTypes: multiple peers and ports",
        knp(
            pods={"matchLabels": {"label": "value"}},
            ingress=[
                {
                    "ports": [{"port": 90, "protocol": "UDP"}, {"port": 80, "protocol": "TCP"}],
                    "from": [
                        {"podSelector": {"matchLabels": {"k": "v"}}},
                        {"podSelector": {"matchLabels": {"k2": "v2"}}},
                    ],
                }
            ],
        ),
        calico(
            SEL_LABEL,
            ingress=[
                allow("TCP", {"selector": f"{ORCH} && k == 'v'"}, {"ports": [80]}),
                allow("TCP", {"selector": f"{ORCH} && k2 == 'v2'"}, {"ports": [80]}),
                allow("UDP", {"selector": f"{ORCH} && k == 'v'"}, {"ports": [90]}),
                allow("UDP", {"selector": f"{ORCH} && k2 == 'v2'"}, {"ports": [90]}),
            ],
        ),
        [],
    ),
    ("no policyTypes: empty podSelector", knp(), calico(ORCH), []),
    (
        "no policyTypes: podSelector.MatchExpressions",
        knp(pods={"matchExpressions": [{"key": "k", "operator": "In", "values": ["v1", "v2"]}]}),
        calico(f"{ORCH} && k in {{ 'v1', 'v2' }}"),
        [],
    ),
    (
        "no policyTypes: ports only",
        knp(ingress=[{"ports": [{"protocol": "TCP", "port": 80}]}]),
        calico(ORCH, ingress=[allow("TCP", None, {"ports": [80]})]),
        [],
    ),
    # kube-controllers' policy converter tests.
    (
        "kube-controllers: egress rule",
        knp(
            pods={"matchLabels": LABELS2},
            egress=[{"ports": [{"port": 80}], "to": [PEER_K_V]}],
            types=["Egress"],
            name="testPolicy",
        ),
        calico(
            SEL_LABELS2,
            egress=[allow("TCP", None, {"selector": K_V, "ports": [80]})],
            types=("Egress",),
        ),
        [],
    ),
    (
        "kube-controllers: egress rule and port range",
        knp(
            pods={"matchLabels": LABELS2},
            egress=[{"ports": [{"port": 32000, "endPort": 32768}], "to": [PEER_K_V]}],
            types=["Egress"],
            name="testPolicy",
        ),
        calico(
            SEL_LABELS2,
            egress=[allow("TCP", None, {"selector": K_V, "ports": ["32000:32768"]})],
            types=("Egress",),
        ),
        [],
    ),
    (
        "kube-controllers: v1.7 policy with an ingress rule",
        knp(pods={"matchLabels": {"label": "value"}}, ingress=[{"from": [PEER_K_V]}]),
        calico(SEL_LABEL, ingress=[allow(None, {"selector": K_V})]),
        [],
    ),
    # Ours: behaviour of Calico's converter that its tests do not pin down.
    (
        "extra: SCTP sorts before TCP; ports merge into ranges per protocol",
        knp(
            ingress=[
                {
                    "ports": [
                        {"port": 82},
                        {"port": 80},
                        {"port": 81},
                        {"port": 5000, "protocol": "SCTP"},
                        {"port": "http"},
                        {"port": 9090, "endPort": 9092},
                    ]
                }
            ],
            types=["Ingress"],
        ),
        calico(
            ORCH,
            ingress=[
                allow("SCTP", None, {"ports": [5000]}),
                allow("TCP", None, {"ports": ["http", "80:82", "9090:9092"]}),
            ],
        ),
        [],
    ),
    (
        "extra: a port entry without a port allows every port of its protocol only",
        knp(
            egress=[
                {"ports": [{"protocol": "UDP"}, {"port": 53, "protocol": "UDP"}, {"port": 53}]}
            ],
            types=["Egress"],
        ),
        calico(
            ORCH,
            egress=[allow("TCP", None, {"ports": [53]}), allow("UDP")],
            types=("Egress",),
        ),
        [],
    ),
    (
        "extra: empty from/to means any peer; CIDRs normalised to the network",
        knp(
            ingress=[{"from": []}],
            egress=[{"to": [{"ipBlock": {"cidr": "10.1.2.3/8", "except": ["10.1.2.3/16"]}}]}],
            types=["Ingress", "Egress"],
        ),
        calico(
            ORCH,
            ingress=[allow()],
            egress=[allow(None, None, {"nets": ["10.0.0.0/8"], "notNets": ["10.1.0.0/16"]})],
            types=("Ingress", "Egress"),
        ),
        [],
    ),
    (
        "extra: named port with endPort, reversed range and port above 65535 are dropped",
        knp(
            ingress=[
                {"ports": [{"port": "http", "endPort": 90}]},
                {"ports": [{"port": 90, "endPort": 80}]},
                {"ports": [{"port": 70000}]},
                {"ports": [{"port": 443}]},
            ],
            types=["Ingress"],
        ),
        calico(ORCH, ingress=[allow("TCP", None, {"ports": [443]})]),
        ["ingress[0]", "ingress[1]", "ingress[2]"],
    ),
    (
        "extra: IPv6 ipBlock",
        knp(
            ingress=[{"from": [{"ipBlock": {"cidr": "fd00::1/64", "except": ["fd00::/80"]}}]}],
            types=["Ingress"],
        ),
        calico(ORCH, ingress=[allow(None, {"nets": ["fd00::/64"], "notNets": ["fd00::/80"]})]),
        [],
    ),
]


@pytest.mark.parametrize(
    ("k8s", "expected", "dropped"),
    [pytest.param(k8s, expected, dropped, id=name) for name, k8s, expected, dropped in CASES],
)
def test_network_policy_case(
    k8s: dict[str, Any], expected: dict[str, Any], dropped: list[str]
) -> None:
    converted = convert_network_policy(k8s)
    assert converted.policy.spec.model_dump(by_alias=True, exclude_none=True) == expected
    assert [f"{rule.direction}[{rule.index}]" for rule in converted.dropped] == dropped
    metadata = converted.policy.metadata
    assert metadata.name == "knp.default." + k8s["metadata"]["name"]
    assert metadata.namespace == "default"
    assert converted.policy.kind == "NetworkPolicy"


def test_only_name_and_namespace_are_kept() -> None:
    k8s = knp(name="allow-all")
    k8s["metadata"].update(uid="30316465-6365-4463-ad63-3564622d3638", resourceVersion="42")
    metadata = convert_network_policy(k8s).policy.metadata
    assert metadata.model_dump(exclude_none=True) == {
        "name": "knp.default.allow-all",
        "namespace": "default",
    }


def test_dropped_rule_names_the_field_and_the_value() -> None:
    bad = knp(ingress=[{"ports": [{"port": 80}, {"port": "-50:-1"}]}], types=["Ingress"])
    (dropped,) = convert_network_policy(bad).dropped
    assert str(dropped).startswith("spec.ingress[0]: ports[1]: '-50:-1'")


def test_dropped_rules_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = knp(ingress=[{"ports": [{"port": "-1:-2"}]}], types=["Ingress"])
    convert_network_policy(bad)
    assert "dropping a rule" in caplog.text and "'-1:-2'" in caplog.text


def test_a_policy_without_a_name_is_refused() -> None:
    with pytest.raises(ConversionError, match=r"metadata\.name"):
        convert_network_policy({"metadata": {"namespace": "default"}, "spec": {}})


def test_names_round_trip() -> None:
    assert policy_name("allow-dns") == "knp.default.allow-dns"
    assert kubernetes_name("knp.default.allow-dns") == "allow-dns"
    assert kubernetes_name("allow-dns") is None
    assert kubernetes_name("knp.default.") is None

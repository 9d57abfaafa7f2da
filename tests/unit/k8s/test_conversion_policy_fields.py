"""NetworkPolicy fields one by one, for the cases ``test_conversion_network_policy`` leaves
open: each restates a rule of libcalico-go's ``k8sRuleToCalico`` / ``k8sPeerToCalicoFields``."""

from __future__ import annotations

from typing import Any

import pytest

from pycalico.k8s.conversion.network_policy import convert_network_policy

ORCH = "projectcalico.org/orchestrator == 'k8s'"


def spec_of(k8s_spec: dict[str, Any]) -> dict[str, Any]:
    policy = {"metadata": {"name": "p", "namespace": "ns1"}, "spec": k8s_spec}
    spec: dict[str, Any] = convert_network_policy(policy).policy.model_dump(
        by_alias=True, exclude_none=True
    )["spec"]
    return spec


CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "an except that does not parse ends notNets there (Calico returns what it has)",
        {
            "ingress": [
                {
                    "from": [
                        {
                            "ipBlock": {
                                "cidr": "10.0.0.0/8",
                                "except": ["10.1.0.0/16", "bad", "10.2.0.0/16"],
                            }
                        }
                    ]
                }
            ]
        },
        {
            "ingress": [
                {
                    "action": "Allow",
                    "source": {"nets": ["10.0.0.0/8"], "notNets": ["10.1.0.0/16"]},
                    "destination": {},
                }
            ]
        },
    ),
    (
        "a namespaceSelector alone still gets the orchestrator clause on the pod side",
        {
            "policyTypes": ["Egress"],
            "egress": [
                {
                    "to": [
                        {
                            "namespaceSelector": {
                                "matchExpressions": [
                                    {"key": "team", "operator": "In", "values": ["a", "b"]},
                                    {"key": "env", "operator": "NotIn", "values": ["dev"]},
                                    {"key": "pci", "operator": "Exists"},
                                ]
                            }
                        }
                    ]
                }
            ],
        },
        {
            "egress": [
                {
                    "action": "Allow",
                    "source": {},
                    "destination": {
                        "selector": ORCH,
                        "namespaceSelector": "team in { 'a', 'b' } && env not in { 'dev' } && has(pci)",
                    },
                }
            ]
        },
    ),
    (
        "a named port alone, with its protocol",
        {"ingress": [{"ports": [{"port": "dns", "protocol": "UDP"}]}]},
        {
            "ingress": [
                {
                    "action": "Allow",
                    "protocol": "UDP",
                    "source": {},
                    "destination": {"ports": ["dns"]},
                }
            ]
        },
    ),
    (
        "egress ports without peers: ports on the destination, no selector",
        {
            "policyTypes": ["Egress"],
            "egress": [{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53}]}],
        },
        {
            "egress": [
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "source": {},
                    "destination": {"ports": [53]},
                },
                {
                    "action": "Allow",
                    "protocol": "UDP",
                    "source": {},
                    "destination": {"ports": [53]},
                },
            ]
        },
    ),
    (
        "protocols outer, peers inner: 2 protocols x 2 peers = 4 rules",
        {
            "ingress": [
                {
                    "from": [
                        {"ipBlock": {"cidr": "10.0.0.0/8"}},
                        {"podSelector": {"matchLabels": {"a": "b"}}},
                    ],
                    "ports": [{"port": 80}, {"port": 80, "protocol": "UDP", "endPort": 81}],
                }
            ]
        },
        {
            "ingress": [
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "source": {"nets": ["10.0.0.0/8"]},
                    "destination": {"ports": [80]},
                },
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "source": {"selector": f"{ORCH} && a == 'b'"},
                    "destination": {"ports": [80]},
                },
                {
                    "action": "Allow",
                    "protocol": "UDP",
                    "source": {"nets": ["10.0.0.0/8"]},
                    "destination": {"ports": ["80:81"]},
                },
                {
                    "action": "Allow",
                    "protocol": "UDP",
                    "source": {"selector": f"{ORCH} && a == 'b'"},
                    "destination": {"ports": ["80:81"]},
                },
            ]
        },
    ),
    (
        "SCTP with an endPort range",
        {"ingress": [{"ports": [{"port": 3868, "endPort": 3870, "protocol": "SCTP"}]}]},
        {
            "ingress": [
                {
                    "action": "Allow",
                    "protocol": "SCTP",
                    "source": {},
                    "destination": {"ports": ["3868:3870"]},
                }
            ]
        },
    ),
    (
        "an empty ports list means any protocol and port",
        {"ingress": [{"ports": [], "from": [{"podSelector": {}}]}]},
        {"ingress": [{"action": "Allow", "source": {"selector": ORCH}, "destination": {}}]},
    ),
]


@pytest.mark.parametrize(
    ("k8s_spec", "expected"), [pytest.param(k, e, id=name) for name, k, e in CASES]
)
def test_rule_conversion(k8s_spec: dict[str, Any], expected: dict[str, Any]) -> None:
    spec = spec_of(k8s_spec)
    for direction in ("ingress", "egress"):
        assert spec.get(direction) == expected.get(direction)


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        (None, ["Ingress"]),
        ([], ["Ingress"]),
        (["Egress"], ["Egress"]),
        (["Egress", "Ingress"], ["Ingress", "Egress"]),
        (["Ingress", "Bogus"], ["Ingress"]),
    ],
)
def test_policy_types(types: list[str] | None, expected: list[str]) -> None:
    k8s_spec: dict[str, Any] = {} if types is None else {"policyTypes": types}
    assert spec_of(k8s_spec)["types"] == expected


def test_egress_rules_are_kept_when_types_omit_egress(caplog: pytest.LogCaptureFixture) -> None:
    spec = spec_of({"policyTypes": ["Ingress"], "egress": [{}]})
    assert spec["types"] == ["Ingress"]
    assert spec["egress"] == [{"action": "Allow", "source": {}, "destination": {}}]
    assert "policyTypes omit Egress" in caplog.text

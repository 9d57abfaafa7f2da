"""The staged policy kinds: Calico's checks (stagedAction Delete included), write defaults, and
the round trip through the codec."""

from __future__ import annotations

from typing import Any

import pytest

from pycalico.model.codec import (
    ValidationFailure,
    decode_resource,
    decode_value,
    encode_resource,
    encode_value,
    load_documents,
)
from pycalico.model.staged import (
    StagedGlobalNetworkPolicy,
    StagedKubernetesNetworkPolicy,
    StagedNetworkPolicy,
)

SNP, SGNP, SKNP = (
    "StagedNetworkPolicy",
    "StagedGlobalNetworkPolicy",
    "StagedKubernetesNetworkPolicy",
)
NAMESPACED = {SNP: "shop", SKNP: "shop", SGNP: None}
RULE = {"action": "Allow", "protocol": "TCP", "destination": {"ports": [80]}}


def _data(kind: str, spec: dict[str, Any] | None, name: str = "p") -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if NAMESPACED[kind]:
        metadata["namespace"] = NAMESPACED[kind]
    data: dict[str, Any] = {"apiVersion": "projectcalico.org/v3", "kind": kind}
    data["metadata"] = metadata
    if spec is not None:
        data["spec"] = spec
    return data


def _decode(kind: str, spec: dict[str, Any] | None, name: str = "p") -> Any:
    return decode_resource(_data(kind, spec, name))


def _problems(kind: str, spec: dict[str, Any] | None, name: str = "p") -> dict[str, str]:
    with pytest.raises(ValidationFailure) as caught:
        _decode(kind, spec, name)
    return {problem.field: problem.message for problem in caught.value.problems}


# --- defaults ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [SNP, SGNP])
def test_calico_shaped_defaults_are_the_enforced_kinds_plus_staged_action_set(kind: str) -> None:
    policy = _decode(kind, {"selector": "all()", "egress": [RULE]})
    wire = encode_resource(policy)["spec"]
    assert wire["stagedAction"] == "Set"
    assert wire["tier"] == "default"
    assert wire["types"] == ["Egress"]


@pytest.mark.parametrize("kind", [SNP, SGNP])
def test_delete_keeps_tier_and_drops_types(kind: str) -> None:
    policy = _decode(kind, {"stagedAction": "Delete", "types": ["Ingress"]})
    assert encode_resource(policy)["spec"] == {"stagedAction": "Delete", "tier": "default"}
    tiered = _decode(kind, {"stagedAction": "Delete", "tier": "security"}, name="security.p")
    assert encode_resource(tiered)["spec"] == {"stagedAction": "Delete", "tier": "security"}


def test_kubernetes_shape_defaults_only_the_staged_action() -> None:
    policy = _decode(SKNP, {"ingress": [{"from": [{"podSelector": {}}]}]})
    assert encode_resource(policy)["spec"] == {
        "stagedAction": "Set",
        "podSelector": {},  # always written, as Calico's API has no omitempty on it
        # An empty peer selector means "every pod": it must survive the round trip.
        "ingress": [{"from": [{"podSelector": {}}]}],
    }


# --- stagedAction -----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [SNP, SGNP, SKNP])
@pytest.mark.parametrize("action", ["Set", "Delete", "Learn", "Ignore"])
def test_every_staged_action_is_accepted(kind: str, action: str) -> None:
    assert (
        encode_resource(_decode(kind, {"stagedAction": action}))["spec"]["stagedAction"] == action
    )


@pytest.mark.parametrize("kind", [SNP, SGNP, SKNP])
def test_an_unknown_staged_action_is_refused_by_field(kind: str) -> None:
    problems = _problems(kind, {"stagedAction": "Apply"})
    assert list(problems) == ["spec.stagedAction"]
    assert "'Set'" in problems["spec.stagedAction"]


@pytest.mark.parametrize(
    ("kind", "spec", "fields"),
    [
        (SNP, {"selector": "all()", "order": 5}, ["spec.order", "spec.selector"]),
        (SNP, {"ingress": [RULE]}, ["spec.ingress"]),
        (
            SGNP,
            {"doNotTrack": True, "applyOnForward": True},
            ["spec.doNotTrack", "spec.applyOnForward"],
        ),
        (SGNP, {"namespaceSelector": "all()"}, ["spec.namespaceSelector"]),
        (SKNP, {"podSelector": {"matchLabels": {"app": "db"}}}, ["spec.podSelector"]),
        (SKNP, {"policyTypes": ["Ingress"], "egress": [{}]}, ["spec.egress", "spec.policyTypes"]),
    ],
)
def test_delete_refuses_every_other_field_by_name(
    kind: str, spec: dict[str, Any], fields: list[str]
) -> None:
    problems = _problems(kind, {"stagedAction": "Delete", **spec})
    assert sorted(problems) == sorted(fields)
    assert all("stagedAction is Delete" in message for message in problems.values())


def test_the_kubernetes_shape_has_no_tier() -> None:
    assert _problems(SKNP, {"stagedAction": "Delete", "tier": "x"}) == {
        "spec.tier": "unknown field"
    }


def test_delete_still_checks_the_tier_name() -> None:
    assert "spec.tier" in _problems(SGNP, {"stagedAction": "Delete", "tier": "Bad_Tier"})


# --- the enforced kinds' checks apply -------------------------------------------------------


def test_calico_shaped_specs_get_the_enforced_kinds_checks() -> None:
    bad_rule = {"action": "Allow", "destination": {"ports": [80]}}
    problems = _problems(SNP, {"ingress": [bad_rule], "selector": "app ==="})
    assert "spec.ingress[0].destination.ports" in problems
    assert "spec.selector" in problems
    problems = _problems(SGNP, {"preDNAT": True, "egress": [RULE]})
    assert {"spec.egress", "spec.applyOnForward"} <= set(problems)
    assert "unknown field" in _problems(SNP, {"preDNAT": True})["spec.preDNAT"]


def test_names_follow_the_enforced_kinds_rules() -> None:
    assert "metadata.name" in _problems(SNP, {"tier": "security"}, name="other.p")
    assert _decode(SNP, {"tier": "security"}, name="security.p").name == "security.p"
    assert _decode(SNP, {}, name="knp.default.allow").name == "knp.default.allow"
    assert "metadata.name" in _problems(SGNP, {}, name="knp.default.allow")
    assert "metadata.name" in _problems(SKNP, {}, name="Bad")
    assert "not namespaced" in _problems_with_namespace(SGNP)["metadata.namespace"]


def _problems_with_namespace(kind: str) -> dict[str, str]:
    data = _data(kind, {})
    data["metadata"]["namespace"] = "shop"
    with pytest.raises(ValidationFailure) as caught:
        decode_resource(data)
    return {problem.field: problem.message for problem in caught.value.problems}


# --- the Kubernetes NetworkPolicy shape -------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field", "fragment"),
    [
        (
            {"podSelector": {"matchLabels": {"bad key!": "x"}}},
            "spec.podSelector.matchLabels",
            "key",
        ),
        (
            {"podSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
            "spec.podSelector.matchExpressions[0].values",
            "must be given",
        ),
        (
            {
                "podSelector": {
                    "matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]
                }
            },
            "spec.podSelector.matchExpressions[0].values",
            "must be empty",
        ),
        (
            {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Gt"}]}},
            "spec.podSelector.matchExpressions[0].operator",
            "In",
        ),
        ({"ingress": [{"from": [{}]}]}, "spec.ingress[0].from[0]", "must set"),
        (
            {"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]},
            "spec.egress[0].to[0].ipBlock",
            "cannot be combined",
        ),
        (
            {"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.1/8"}}]}]},
            "spec.egress[0].to[0].ipBlock.cidr",
            "network address",
        ),
        (
            {"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["11.0.0.0/16"]}}]}]},
            "spec.egress[0].to[0].ipBlock.except[0]",
            "strict subset",
        ),
        (
            {"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8"]}}]}]},
            "spec.egress[0].to[0].ipBlock.except[0]",
            "strict subset",
        ),
        ({"ingress": [{"ports": [{"port": 0}]}]}, "spec.ingress[0].ports[0].port", "1-65535"),
        (
            {"ingress": [{"ports": [{"port": "Web_"}]}]},
            "spec.ingress[0].ports[0].port",
            "port name",
        ),
        (
            {"ingress": [{"ports": [{"protocol": "ICMP"}]}]},
            "spec.ingress[0].ports[0].protocol",
            "TCP",
        ),
        (
            {"ingress": [{"ports": [{"port": "http", "endPort": 90}]}]},
            "spec.ingress[0].ports[0].endPort",
            "numeric port",
        ),
        (
            {"ingress": [{"ports": [{"port": 100, "endPort": 90}]}]},
            "spec.ingress[0].ports[0].endPort",
            "between",
        ),
        ({"policyTypes": ["Ingress", "Ingress"]}, "spec.policyTypes", "more than once"),
        ({"policyTypes": ["Both"]}, "spec.policyTypes[0]", "Ingress"),
        ({"ingress": [{"from": [], "bogus": 1}]}, "spec.ingress[0].bogus", "unknown field"),
    ],
)
def test_kubernetes_shape_checks(spec: dict[str, Any], field: str, fragment: str) -> None:
    problems = _problems(SKNP, spec)
    assert field in problems, problems
    assert fragment in problems[field], problems[field]


def test_kubernetes_shape_accepts_a_full_policy() -> None:
    spec = {
        "podSelector": {
            "matchLabels": {"app": "db"},
            "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}],
        },
        "policyTypes": ["Ingress", "Egress"],
        "ingress": [
            {
                "from": [
                    {"podSelector": {"matchLabels": {"app": "api"}}, "namespaceSelector": {}},
                    {"ipBlock": {"cidr": "fd00::/48", "except": ["fd00::/64"]}},
                ],
                "ports": [{"protocol": "UDP", "port": 53}, {"port": "metrics"}],
            }
        ],
        "egress": [{"to": [], "ports": [{"port": 8000, "endPort": 8100}]}],
    }
    policy = _decode(SKNP, spec)
    assert isinstance(policy, StagedKubernetesNetworkPolicy)
    wire = encode_resource(policy)["spec"]
    assert wire["ingress"][0]["from"][1] == {
        "ipBlock": {"cidr": "fd00::/48", "except": ["fd00::/64"]}
    }
    assert wire["egress"] == [{"ports": [{"port": 8000, "endPort": 8100}]}]


# --- round trip -------------------------------------------------------------------------------


def test_every_staged_kind_round_trips_through_the_codec() -> None:
    text = (
        "apiVersion: projectcalico.org/v3\nkind: StagedGlobalNetworkPolicy\n"
        "metadata: {name: security.p}\n"
        "spec: {tier: security, stagedAction: Learn, order: 5, selector: all(), preDNAT: true,\n"
        "  applyOnForward: true, ingress: [{action: Deny, protocol: tcp, source: {nets: [10.0.0.0/8]}}]}\n"
        "---\n"
        "apiVersion: projectcalico.org/v3\nkind: StagedNetworkPolicy\n"
        "metadata: {name: p, namespace: shop}\n"
        "spec: {stagedAction: Ignore, selector: app == 'x', egress: [{action: Pass}]}\n"
        "---\n"
        "apiVersion: projectcalico.org/v3\nkind: StagedKubernetesNetworkPolicy\n"
        "metadata: {name: k, namespace: shop}\n"
        "spec: {stagedAction: Delete}\n"
    )
    resources = load_documents(text, "staged.yaml")
    assert [type(r) for r in resources] == [
        StagedGlobalNetworkPolicy,
        StagedNetworkPolicy,
        StagedKubernetesNetworkPolicy,
    ]
    for resource in resources:
        assert decode_value(encode_value(resource), kind=resource.kind) == resource
        assert decode_resource(encode_resource(resource)) == resource
    assert encode_resource(resources[0])["spec"]["ingress"][0]["protocol"] == "TCP"
    assert encode_resource(resources[2])["spec"] == {"stagedAction": "Delete", "podSelector": {}}

"""BGPFilter: Calico's rule checks, each error naming the rule's field path."""

from __future__ import annotations

from typing import Any

import pytest

from pycalico.model.bgpfilter import BGPFilter, effective_prefix_lengths
from pycalico.model.codec import decode_resource, encode_resource, validate_resource
from pycalico.model.kinds import lookup_kind
from pycalico.model.validation import ValidationFailure


def problems(spec: dict[str, Any]) -> list[tuple[str, str]]:
    resource = BGPFilter.model_validate({"metadata": {"name": "f"}, "spec": spec})
    return validate_resource(resource)


def test_a_full_filter_is_valid_and_round_trips() -> None:
    spec = {
        "exportV4": [
            {"action": "Reject", "matchOperator": "In", "cidr": "10.70.1.0/24"},
            {
                "action": "Accept",
                "matchOperator": "NotIn",
                "cidr": "10.0.0.0/8",
                "prefixLength": {"min": 16, "max": 24},
                "source": "RemotePeers",
                "interface": "eth*",
            },
        ],
        "importV4": [{"action": "Reject"}],
        "exportV6": [{"action": "Accept", "matchOperator": "Equal", "cidr": "fd00::/8"}],
        "importV6": [
            {"action": "Reject", "matchOperator": "NotEqual", "cidr": "fd00:1::/64"},
            {"action": "Accept", "interface": "*"},
        ],
    }
    assert problems(spec) == []
    document = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "BGPFilter",
        "metadata": {"name": "f"},
        "spec": spec,
    }
    assert encode_resource(decode_resource(document))["spec"] == spec


def test_aliases_and_key_segment() -> None:
    for name in ("bgpfilter", "bgpfilters", "bgpf", "bgpfs", "bf", "bfs", "BGPFilter"):
        assert lookup_kind(name).kind == "BGPFilter"
    assert lookup_kind("bf").plural == "bgpfilters"
    assert not lookup_kind("bf").namespaced


@pytest.mark.parametrize(
    ("rule", "field", "fragment"),
    [
        ({"action": "Accept", "cidr": "10.0.0.0/8"}, "matchOperator", "both be set"),
        ({"action": "Accept", "matchOperator": "In"}, "cidr", "both be set"),
        (
            {"action": "Accept", "matchOperator": "In", "cidr": "10.0.0.1/8"},
            "cidr",
            "not a network address",
        ),
        (
            {"action": "Accept", "matchOperator": "In", "cidr": "fd00::/8"},
            "cidr",
            "not an IPv4 network",
        ),
        ({"action": "Accept", "prefixLength": {"min": 8}}, "prefixLength", "cidr is required"),
        (
            {
                "action": "Accept",
                "matchOperator": "In",
                "cidr": "10.0.0.0/8",
                "prefixLength": {"max": 33},
            },
            "prefixLength.max",
            "between 0 and 32",
        ),
        (
            {
                "action": "Accept",
                "matchOperator": "In",
                "cidr": "10.0.0.0/16",
                "prefixLength": {"max": 8},
            },
            "prefixLength",
            "matches no route",
        ),
        (
            {
                "action": "Accept",
                "matchOperator": "In",
                "cidr": "10.0.0.0/8",
                "prefixLength": {"min": 24, "max": 16},
            },
            "prefixLength",
            "matches no route",
        ),
        ({"action": "Accept", "interface": "much-too-long-name"}, "interface", "interface name"),
        ({"action": "Accept", "interface": 'eth"0'}, "interface", "interface name"),
    ],
)
def test_v4_rule_problems_name_the_field(rule: dict[str, Any], field: str, fragment: str) -> None:
    found = problems({"importV4": [{"action": "Reject"}, rule]})
    assert any(
        path == f"spec.importV4[1].{field}" and fragment in message for path, message in found
    ), found


def test_v6_lists_hold_ipv6_and_allow_lengths_to_128() -> None:
    good = {"action": "Accept", "matchOperator": "In", "cidr": "fd00::/8"}
    assert problems({"exportV6": [{**good, "prefixLength": {"min": 48, "max": 128}}]}) == []
    found = problems(
        {
            "exportV6": [
                {"action": "Accept", "matchOperator": "In", "cidr": "10.0.0.0/8"},
                {**good, "prefixLength": {"min": 129}},
            ]
        }
    )
    assert ("spec.exportV6[0].cidr", "10.0.0.0/8 is not an IPv6 network") in found
    assert any(path == "spec.exportV6[1].prefixLength.min" for path, _ in found), found


@pytest.mark.parametrize(
    "rule",
    [
        {"action": "Drop"},
        {"matchOperator": "In", "cidr": "10.0.0.0/8"},
        {"action": "Accept", "matchOperator": "Contains", "cidr": "10.0.0.0/8"},
        {"action": "Accept", "source": "LocalPeers"},
        {"action": "Accept", "peerType": "external"},
    ],
)
def test_shape_errors_are_rejected(rule: dict[str, Any]) -> None:
    document = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "BGPFilter",
        "metadata": {"name": "f"},
        "spec": {"exportV4": [rule]},
    }
    with pytest.raises(ValidationFailure) as raised:
        decode_resource(document)
    assert "spec.exportV4[0]" in str(raised.value)


def test_effective_prefix_lengths_are_calicos() -> None:
    def lengths(cidr: str, **bounds: int) -> tuple[int, int]:
        rule: dict[str, Any] = {"action": "Accept", "matchOperator": "In", "cidr": cidr}
        if bounds:
            rule["prefixLength"] = bounds
        resource = BGPFilter.model_validate(
            {"metadata": {"name": "f"}, "spec": {"importV4": [rule]}}
        )
        assert resource.spec.import_v4 is not None
        return effective_prefix_lengths(resource.spec.import_v4[0])

    assert lengths("10.0.0.0/8") == (8, 32)
    assert lengths("10.0.0.0/8", min=4) == (8, 32)
    assert lengths("10.0.0.0/8", min=16) == (16, 32)
    assert lengths("10.0.0.0/8", max=24) == (8, 24)
    assert lengths("10.0.0.0/8", min=16, max=24) == (16, 24)

"""The defaults Calico fills in on write, and that applying them twice changes nothing."""

from __future__ import annotations

from typing import Any

import pytest

from pycalico.model.codec import apply_defaults, decode_resource, encode_resource
from pycalico.model.policy import default_policy_types


def _decode(kind: str, spec: dict[str, Any] | None = None, **meta: Any) -> Any:
    data: dict[str, Any] = {
        "apiVersion": "projectcalico.org/v3",
        "kind": kind,
        "metadata": {"name": meta.pop("name", "r"), **meta},
    }
    if spec is not None:
        data["spec"] = spec
    return decode_resource(data)


@pytest.mark.parametrize(
    ("cidr", "block_size", "stored_cidr"),
    [("10.0.0.0/16", 26, "10.0.0.0/16"), ("fd00:0:0::/48", 122, "fd00::/48")],
)
def test_ip_pool_defaults_by_family(cidr: str, block_size: int, stored_cidr: str) -> None:
    pool = _decode("IPPool", {"cidr": cidr})
    assert encode_resource(pool)["spec"] == {
        "cidr": stored_cidr,
        "vxlanMode": "Never",
        "ipipMode": "Never",
        "blockSize": block_size,
        "nodeSelector": "all()",
        "allowedUses": ["Workload", "Tunnel"],
        "assignmentMode": "Automatic",
    }


def test_explicit_values_are_kept() -> None:
    pool = _decode(
        "IPPool",
        {
            "cidr": "10.0.0.0/16",
            "ipipMode": "Always",
            "nodeSelector": "rack == 'a'",
            "allowedUses": ["Workload"],
            "assignmentMode": "Manual",
            "blockSize": 24,
        },
    )
    spec = encode_resource(pool)["spec"]
    assert spec["ipipMode"] == "Always"
    assert spec["nodeSelector"] == "rack == 'a'"
    assert spec["allowedUses"] == ["Workload"]
    assert spec["assignmentMode"] == "Manual"
    assert spec["blockSize"] == 24


RULE = {"action": "Allow"}


@pytest.mark.parametrize(
    ("ingress", "egress", "types"),
    [
        (None, None, ["Ingress"]),
        ([RULE], None, ["Ingress"]),
        (None, [RULE], ["Egress"]),
        ([RULE], [RULE], ["Ingress", "Egress"]),
    ],
)
def test_policy_types_defaulting(
    ingress: list[dict[str, str]] | None, egress: list[dict[str, str]] | None, types: list[str]
) -> None:
    spec: dict[str, Any] = {}
    if ingress:
        spec["ingress"] = ingress
    if egress:
        spec["egress"] = egress
    for kind, meta in (("GlobalNetworkPolicy", {}), ("NetworkPolicy", {"namespace": "ns"})):
        policy = _decode(kind, spec, **meta)
        assert policy.spec.types == types
        assert policy.spec.tier == "default"


def test_explicit_types_are_not_changed() -> None:
    policy = _decode("GlobalNetworkPolicy", {"types": ["Egress"], "ingress": [RULE]})
    assert policy.spec.types == ["Egress"]
    assert default_policy_types([], []) == ["Ingress"]


def test_tier_defaults() -> None:
    assert _decode("Tier", {"order": 10}, name="t").spec.default_action == "Deny"
    assert _decode("Tier", {"defaultAction": "Pass"}, name="t").spec.default_action == "Pass"
    assert _decode("Tier", name="default").spec.order == 1_000_000
    assert encode_resource(_decode("Tier", name="mine"))["spec"] == {
        "order": 1_000_000,
        "defaultAction": "Deny",
    }
    assert encode_resource(
        _decode("Tier", {"order": 10_000_000, "defaultAction": "Pass"}, name="kube-baseline")
    )["spec"] == {"order": 10_000_000, "defaultAction": "Pass"}


def test_workload_endpoint_labels_and_namespace() -> None:
    wep = _decode(
        "WorkloadEndpoint",
        {"orchestrator": "k8s", "node": "n", "pod": "p", "endpoint": "eth0", "interfaceName": "c"},
        name="",
        # Calico overrides these two labels: a user cannot claim another namespace.
        labels={"app": "web", "projectcalico.org/namespace": "kube-system"},
    )
    assert wep.namespace == "default"
    assert wep.name == "n-k8s-p-eth0"
    assert wep.metadata.labels == {
        "app": "web",
        "projectcalico.org/namespace": "default",
        "projectcalico.org/orchestrator": "k8s",
    }


def test_defaults_are_idempotent_for_every_example_kind() -> None:
    from pathlib import Path

    from pycalico.model.codec import load_documents

    text = (Path(__file__).resolve().parents[3] / "examples" / "all-kinds.yaml").read_text()
    for resource in load_documents(text):
        assert apply_defaults(resource) == resource

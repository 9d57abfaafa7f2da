"""Selectors, ports, Profiles and pod labels of the Kubernetes conversions.

The tables restate Calico's own converter tests (libcalico-go ``conversion_test.go``: "selector
conversion table", the ``SimplifyPorts`` table, "Test Namespace conversion", "Test
ServiceAccount conversion", and the labels of "Test Pod conversion"); ``extra`` cases are ours.
"""

from __future__ import annotations

from typing import Any

import pytest

from pycalico.k8s.conversion.objects import ConversionError
from pycalico.k8s.conversion.pods import workload_endpoint_data
from pycalico.k8s.conversion.ports import PortError, parse_port, protocol_name, simplify_ports
from pycalico.k8s.conversion.profiles import (
    namespace_profile,
    profile_namespace,
    profile_service_account,
    service_account_profile,
)
from pycalico.k8s.conversion.selectors import namespace_selector, pod_selector

ORCH = "projectcalico.org/orchestrator == 'k8s'"


def _expr(operator: str, *values: str) -> dict[str, Any]:
    requirement: dict[str, Any] = {"key": "toast", "operator": operator}
    if values:
        requirement["values"] = list(values)
    return {"matchExpressions": [requirement]}


SELECTOR_CASES = [
    ("empty pod selector", {}, "pod", ORCH),
    ("empty namespace selector", {}, "namespace", "all()"),
    ("DoesNotExist namespace selector", _expr("DoesNotExist"), "namespace", "! has(toast)"),
    ("Exists namespace selector", _expr("Exists"), "namespace", "has(toast)"),
    (
        "In namespace selector",
        _expr("In", "butter", "jam"),
        "namespace",
        "toast in { 'butter', 'jam' }",
    ),
    (
        "NotIn namespace selector",
        _expr("NotIn", "marmite", "milk"),
        "namespace",
        "toast not in { 'marmite', 'milk' }",
    ),
    ("DoesNotExist pod selector", _expr("DoesNotExist"), "pod", f"{ORCH} && ! has(toast)"),
    ("nil pod selector", None, "pod", ORCH),
    ("nil namespace selector", None, "namespace", ""),
    (
        "extra: labels sorted, then expressions in order",
        {
            "matchLabels": {"b": "2", "a": "1"},
            "matchExpressions": _expr("Exists")["matchExpressions"],
        },
        "pod",
        f"{ORCH} && a == '1' && b == '2' && has(toast)",
    ),
    ("extra: unknown operator contributes nothing", _expr("Gt", "1"), "namespace", ""),
]


@pytest.mark.parametrize(
    ("selector", "kind", "expected"),
    [pytest.param(s, k, e, id=name) for name, s, k, e in SELECTOR_CASES],
)
def test_selector(selector: dict[str, Any] | None, kind: str, expected: str) -> None:
    render = pod_selector if kind == "pod" else namespace_selector
    assert render(selector) == expected


def _ports(text: str) -> list[int | str]:
    return [parse_port(part) for part in text.split(",")] if text else []


def _text(ports: list[int | str]) -> str:
    return ",".join(str(port) for port in ports)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("", ""),
        ("1", "1"),
        ("65535", "65535"),
        ("0:65535", "0:65535"),
        ("1,2", "1:2"),
        ("2,1", "1:2"),
        ("1,2,4", "1:2,4"),
        ("1,2,3,4,80:81,81:90,9090", "1:4,80:90,9090"),
        ("81:90,4,2,80:81,3,1,9090", "1:4,80:90,9090"),
        ("81:90,4,2,foo,80:81,3,1,9090,http", "foo,http,1:4,80:90,9090"),
        ("foo", "foo"),
        ("0", "0"),
    ],
)
def test_simplify_ports(given: str, expected: str) -> None:
    assert _text(simplify_ports(_ports(given))) == expected


@pytest.mark.parametrize(
    ("text", "port"),
    [("80", 80), ("80:80", 80), ("80:90", "80:90"), ("http-alt", "http-alt"), ("a_b.c", "a_b.c")],
)
def test_parse_port(text: str, port: int | str) -> None:
    assert parse_port(text) == port


@pytest.mark.parametrize("text", ["-50:-1", "65536", "90:80", "http:90", "x" * 129, "a b"])
def test_parse_port_refuses(text: str) -> None:
    with pytest.raises(PortError):
        parse_port(text)


def test_protocol_names_are_matched_case_insensitively() -> None:
    assert [protocol_name(p) for p in ("tcp", "Udp", "sctp", "icmpv6", "GRE")] == [
        "TCP",
        "UDP",
        "SCTP",
        "ICMPv6",
        "GRE",
    ]


def _wire(profile: Any) -> dict[str, Any]:
    return dict(profile.model_dump(by_alias=True, exclude_none=True))


ALLOW_ALL = {"ingress": [{"action": "Allow"}], "egress": [{"action": "Allow"}]}


@pytest.mark.parametrize(
    ("namespace", "labels"),
    [
        pytest.param(
            {"metadata": {"name": "default", "labels": {"foo": "bar", "roger": "rabbit"}}},
            {
                "pcns.foo": "bar",
                "pcns.roger": "rabbit",
                "pcns.projectcalico.org/name": "default",
            },
            id="Namespace to a Profile",
        ),
        pytest.param(
            {"metadata": {"name": "default", "annotations": {}}},
            {"pcns.projectcalico.org/name": "default"},
            id="Namespace with no labels",
        ),
        pytest.param(
            {
                "metadata": {
                    "name": "default",
                    "annotations": {
                        "net.beta.kubernetes.io/network-policy": (
                            '{"ingress": {"isolation": "DefaultDeny"}}'
                        )
                    },
                }
            },
            {"pcns.projectcalico.org/name": "default"},
            id="network-policy annotation ignored",
        ),
        pytest.param(
            {
                "metadata": {
                    "name": "default",
                    "annotations": {"net.beta.kubernetes.io/network-policy": "invalidJSON"},
                }
            },
            {"pcns.projectcalico.org/name": "default"},
            id="malformed annotation does not fail",
        ),
        pytest.param(
            {
                "metadata": {
                    "name": "default",
                    "annotations": {"net.beta.kubernetes.io/network-policy": "{}"},
                }
            },
            {"pcns.projectcalico.org/name": "default"},
            id="valid but not DefaultDeny annotation",
        ),
    ],
)
def test_namespace_profile(namespace: dict[str, Any], labels: dict[str, str]) -> None:
    assert _wire(namespace_profile(namespace)) == {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Profile",
        "metadata": {"name": "kns.default"},
        "spec": {**ALLOW_ALL, "labelsToApply": labels},
    }


@pytest.mark.parametrize(
    ("account", "name", "labels"),
    [
        pytest.param(
            {"metadata": {"name": "sa-test", "labels": {"foo": "bar", "roger": "rabbit"}}},
            "ksa.default.sa-test",
            {
                "pcsa.foo": "bar",
                "pcsa.roger": "rabbit",
                "pcsa.projectcalico.org/name": "sa-test",
            },
            id="ServiceAccount in default namespace",
        ),
        pytest.param(
            {"metadata": {"name": "sa-test", "namespace": "test", "annotations": {}}},
            "ksa.test.sa-test",
            {"pcsa.projectcalico.org/name": "sa-test"},
            id="ServiceAccount in a namespace",
        ),
        pytest.param(
            {"metadata": {"name": "sa-test"}},
            "ksa.default.sa-test",
            {"pcsa.projectcalico.org/name": "sa-test"},
            id="ServiceAccount with no labels",
        ),
    ],
)
def test_service_account_profile(
    account: dict[str, Any], name: str, labels: dict[str, str]
) -> None:
    assert _wire(service_account_profile(account)) == {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Profile",
        "metadata": {"name": name},
        "spec": {"labelsToApply": labels},
    }


def test_profile_names_parse_back() -> None:
    assert profile_namespace("kns.default") == "default"
    assert profile_namespace("ksa.default.x") is None
    assert profile_service_account("ksa.test.sa-test") == ("test", "sa-test")
    assert profile_service_account("ksa.test.sa.with.dots") == ("test", "sa.with.dots")
    assert profile_service_account("ksa.nodot") is None
    assert profile_service_account("kns.default") is None


def _pod(**fields: Any) -> dict[str, Any]:
    metadata = {"name": "podA", "namespace": "default", **fields.pop("metadata", {})}
    return {"metadata": metadata, "spec": {"nodeName": "nodeA", **fields}}


def test_pod_labels_gain_namespace_and_orchestrator() -> None:
    data = workload_endpoint_data(_pod(metadata={"labels": {"labelA": "valueA"}}))
    assert (data.pod, data.namespace, data.service_account, data.key) == (
        "podA",
        "default",
        "",
        "default/podA",
    )
    assert data.labels == {
        "labelA": "valueA",
        "projectcalico.org/namespace": "default",
        "projectcalico.org/orchestrator": "k8s",
    }


def test_pod_with_no_labels() -> None:
    assert workload_endpoint_data(_pod()).labels == {
        "projectcalico.org/namespace": "default",
        "projectcalico.org/orchestrator": "k8s",
    }


def test_pod_service_account_label() -> None:
    data = workload_endpoint_data(_pod(serviceAccountName="sa-test"))
    assert data.service_account == "sa-test"
    assert data.labels["projectcalico.org/serviceaccount"] == "sa-test"


def test_long_service_account_is_kept_but_not_labelled() -> None:
    account = "a" * 63
    data = workload_endpoint_data(_pod(serviceAccountName=account))
    assert data.service_account == account
    assert "projectcalico.org/serviceaccount" not in data.labels


def test_pod_labels_cannot_override_calico_labels() -> None:
    data = workload_endpoint_data(
        _pod(metadata={"labels": {"projectcalico.org/namespace": "other"}})
    )
    assert data.labels["projectcalico.org/namespace"] == "default"


@pytest.mark.parametrize(
    "pod",
    [
        pytest.param({"status": {"podIP": "192.168.0.1000"}}, id="bad pod IP"),
        pytest.param(
            {"metadata": {"annotations": {"cni.projectcalico.org/podIPs": "192.168.0.1,x"}}},
            id="bad podIPs annotation",
        ),
        pytest.param(
            {"metadata": {"annotations": {"cni.projectcalico.org/allowedSourcePrefixes": '[""]'}}},
            id="empty string in allowedSourcePrefixes",
        ),
        pytest.param(
            {
                "metadata": {
                    "annotations": {
                        "cni.projectcalico.org/allowedSourcePrefixes": '["10.0.0.0/33"]'
                    }
                }
            },
            id="invalid CIDR in allowedSourcePrefixes",
        ),
        pytest.param(
            {
                "status": {"podIP": "10.0.0.1"},
                "metadata": {"annotations": {"cni.projectcalico.org/floatingIPs": "[1.1.1.1"}},
            },
            id="floatingIPs not JSON",
        ),
    ],
)
def test_pods_calico_cannot_convert(pod: dict[str, Any]) -> None:
    metadata = pod.pop("metadata", {})
    obj = _pod(metadata=metadata)
    obj.update(pod)
    with pytest.raises(ConversionError):
        workload_endpoint_data(obj)


def test_pod_without_an_ip_still_converts() -> None:
    obj = _pod(metadata={"annotations": {"cni.projectcalico.org/floatingIPs": "not json"}})
    assert workload_endpoint_data(obj).pod == "podA"

"""Kubernetes mode's pure decisions: pod and namespace to endpoint and IPAM settings, patches."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycalico.cni.config import NetConf
from pycalico.cni.pod_request import (
    CONTAINER_ID,
    POD_IP,
    POD_IPS,
    PodSettings,
    feedback_patch,
    identity_only,
    ip_nats,
    ipam_config,
    ipam_requests,
    pod_settings,
    ports_of,
    release_patch,
)
from pycalico.cni.spec import CniError
from pycalico.cni.workload import identify, workload_endpoint
from pycalico.model.codec import validate_resource


def conf(ipam: str = "calico-ipam", **features: bool) -> NetConf:
    return NetConf.parse(
        {
            "name": "k8s-pod-network",
            "type": "calico",
            "ipam": {"type": ipam},
            "policy": {"type": "k8s"},
            "kubernetes": {"kubeconfig": "/etc/kubeconfig"},
            "feature_control": features,
        }
    )


def pod(annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "web-0",
            "namespace": "prod",
            "uid": "u-1",
            "labels": {"app": "web", "projectcalico.org/namespace": "spoofed"},
            "annotations": annotations or {},
        },
        "spec": {"serviceAccountName": "builder", **spec},
    }


def namespace(annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "prod", "annotations": annotations or {}}}


def test_labels_profiles_and_service_account() -> None:
    settings = pod_settings(conf(), pod(), namespace())
    assert settings.labels == {
        "app": "web",
        "projectcalico.org/namespace": "prod",
        "projectcalico.org/orchestrator": "k8s",
        "projectcalico.org/serviceaccount": "builder",
    }
    assert settings.profiles == ("kns.prod", "ksa.prod.builder")
    assert (settings.uid, settings.namespace, settings.pod) == ("u-1", "prod", "web-0")
    assert settings.ip_addrs == () and settings.ipv4_pools is None


def test_no_service_account_no_ksa_profile() -> None:
    raw = pod()
    del raw["spec"]["serviceAccountName"]
    settings = pod_settings(conf(), raw, namespace())
    assert settings.profiles == ("kns.prod",)
    assert "projectcalico.org/serviceaccount" not in settings.labels


def test_named_and_host_ports_as_calico() -> None:
    containers = [
        {
            "name": "a",
            "ports": [
                {"name": "http", "containerPort": 80},
                {"containerPort": 81},  # neither name nor host port: not a WEP port
                {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                {"containerPort": 9000, "hostPort": 30000, "hostIP": "10.0.0.1"},
                {"name": "odd", "containerPort": 7, "protocol": "ICMP"},  # skipped
            ],
        }
    ]
    init = [{"name": "i", "ports": [{"name": "s", "containerPort": 5, "protocol": "SCTP"}]}]
    ports = ports_of(pod(containers=containers, initContainers=init))
    assert [(p.name, p.protocol, p.port, p.host_port, p.host_ip) for p in ports] == [
        ("http", "TCP", 80, 0, ""),
        ("dns", "UDP", 53, 0, ""),
        ("", "TCP", 9000, 30000, "10.0.0.1"),
        ("s", "SCTP", 5, 0, ""),
    ]


@pytest.mark.parametrize(
    ("pod_ann", "ns_ann", "v4", "v6", "families"),
    [
        ({}, {}, None, None, (None, None)),
        ({}, {"cni.projectcalico.org/ipv4pools": '["ns-pool"]'}, ("ns-pool",), None, (None, None)),
        (
            {"cni.projectcalico.org/ipv4pools": '["pod-pool"]'},
            {"cni.projectcalico.org/ipv4pools": '["ns-pool"]'},
            ("pod-pool",),
            None,
            (None, None),
        ),
        (
            {"cni.projectcalico.org/ipv6pools": '["fd00::/64"]'},
            {"cni.projectcalico.org/ipFamilies": '["IPv4","IPv6"]'},
            None,
            ("fd00::/64",),
            (True, True),
        ),
        (
            {"cni.projectcalico.org/ipFamilies": '["IPv6"]'},
            {"cni.projectcalico.org/ipFamilies": '["IPv4"]'},
            None,
            None,
            (False, True),
        ),
    ],
)
def test_pool_and_family_precedence(
    pod_ann: dict[str, str],
    ns_ann: dict[str, str],
    v4: tuple[str, ...] | None,
    v6: tuple[str, ...] | None,
    families: tuple[bool | None, bool | None],
) -> None:
    settings = pod_settings(conf(), pod(pod_ann), namespace(ns_ann))
    assert (settings.ipv4_pools, settings.ipv6_pools) == (v4, v6)
    assert (settings.assign_ipv4, settings.assign_ipv6) == families


def test_pools_ignored_without_calico_ipam() -> None:
    ann = {"cni.projectcalico.org/ipv4pools": "not json"}
    assert pod_settings(conf("host-local"), pod(ann), namespace()).ipv4_pools is None


def test_ip_addrs_pod_only() -> None:
    ns_ann = {"cni.projectcalico.org/ipAddrs": '["10.0.0.9"]'}
    assert pod_settings(conf(), pod(), namespace(ns_ann)).ip_addrs == ()
    settings = pod_settings(
        conf(), pod({"cni.projectcalico.org/ipAddrs": '["10.0.0.9", "fd00::9"]'}), namespace()
    )
    assert [str(a) for a in settings.ip_addrs] == ["10.0.0.9", "fd00::9"]


@pytest.mark.parametrize(
    ("annotations", "features", "ipam", "needle"),
    [
        ({"cni.projectcalico.org/ipAddrs": "10.0.0.1"}, {}, "calico-ipam", "is not JSON"),
        ({"cni.projectcalico.org/ipAddrs": '"10.0.0.1"'}, {}, "calico-ipam", "list of strings"),
        ({"cni.projectcalico.org/ipAddrs": "[]"}, {}, "calico-ipam", "lists no address"),
        ({"cni.projectcalico.org/ipAddrs": '["10.0.0.300"]'}, {}, "calico-ipam", "not an IP"),
        (
            {"cni.projectcalico.org/ipAddrs": '["10.0.0.1","10.0.0.2"]'},
            {},
            "calico-ipam",
            "more than one IPv4",
        ),
        ({"cni.projectcalico.org/ipAddrs": '["10.0.0.1"]'}, {}, "host-local", "calico-ipam"),
        (
            {
                "cni.projectcalico.org/ipAddrs": '["10.0.0.1"]',
                "cni.projectcalico.org/ipAddrsNoIpam": '["10.0.0.1"]',
            },
            {"ip_addrs_no_ipam": True},
            "calico-ipam",
            "together",
        ),
        (
            {"cni.projectcalico.org/ipAddrsNoIpam": '["10.0.0.1"]'},
            {},
            "calico-ipam",
            "ip_addrs_no_ipam is not enabled",
        ),
        ({"cni.projectcalico.org/floatingIPs": '["1.2.3.4"]'}, {}, "calico-ipam", "floating_ips"),
        (
            {"cni.projectcalico.org/floatingIPs": '["nope"]'},
            {"floating_ips": True},
            "calico-ipam",
            "not an IP",
        ),
        ({"cni.projectcalico.org/ipv4pools": "[1]"}, {}, "calico-ipam", "list of strings"),
        ({"cni.projectcalico.org/ipFamilies": '["IPv5"]'}, {}, "calico-ipam", "'IPv5'"),
    ],
)
def test_bad_annotations_name_the_annotation_and_the_pod(
    annotations: dict[str, str], features: dict[str, bool], ipam: str, needle: str
) -> None:
    with pytest.raises(CniError) as caught:
        pod_settings(conf(ipam, **features), pod(annotations), namespace())
    message = caught.value.msg
    assert "pod prod/web-0" in message and needle in message
    assert any(key in message for key in annotations), message


def test_bad_namespace_annotation_is_named() -> None:
    with pytest.raises(CniError, match="ipv6pools"):
        pod_settings(conf(), pod(), namespace({"cni.projectcalico.org/ipv6pools": "{"}))


@st.composite
def address_lists(draw: st.DrawFn) -> list[str]:
    v4 = draw(st.lists(st.ip_addresses(v=4).map(str), max_size=2))
    v6 = draw(st.lists(st.ip_addresses(v=6).map(str), max_size=2))
    return draw(st.permutations(v4 + v6))


@given(address_lists())
def test_ip_addrs_at_most_one_per_family(addresses: list[str]) -> None:
    annotations = {"cni.projectcalico.org/ipAddrs": json.dumps(addresses)}
    v4 = sum(":" not in a for a in addresses)
    v6 = len(addresses) - v4
    if addresses and v4 <= 1 and v6 <= 1:
        settings = pod_settings(conf(), pod(annotations), namespace())
        assert [str(a) for a in settings.ip_addrs] == [
            str(ipaddress.ip_address(a)) for a in addresses
        ]
        requests = ipam_requests({"K8S_POD_NAME": "web-0"}, settings)
        assert [r["IP"] for r in requests] == [str(a) for a in settings.ip_addrs]
        assert all(r["K8S_POD_NAME"] == "web-0" for r in requests)
    else:
        with pytest.raises(CniError, match="ipAddrs"):
            pod_settings(conf(), pod(annotations), namespace())


def test_ipam_config_carries_pools_and_families_only_when_asked() -> None:
    base = {"name": "n", "ipam": {"type": "calico-ipam", "ipv4_pools": ["conf-pool"]}}
    plain = pod_settings(conf(), pod(), namespace())
    assert ipam_config(base, plain) == base
    asked = pod_settings(
        conf(),
        pod({"cni.projectcalico.org/ipv4pools": '["p"]'}),
        namespace({"cni.projectcalico.org/ipFamilies": '["IPv6"]'}),
    )
    out = ipam_config(base, asked)
    assert out["ipam"] == {
        "type": "calico-ipam",
        "ipv4_pools": ["p"],
        "assign_ipv4": "false",
        "assign_ipv6": "true",
    }
    assert base["ipam"] == {"type": "calico-ipam", "ipv4_pools": ["conf-pool"]}  # not mutated
    assert ipam_requests({"A": "1"}, asked) == [{"A": "1"}]


def test_floating_ips_map_to_the_pod_address_of_their_family() -> None:
    settings = pod_settings(
        conf(floating_ips=True),
        pod({"cni.projectcalico.org/floatingIPs": '["1.2.3.4"]'}),
        namespace(),
    )
    nats = ip_nats(settings, ["10.65.0.5/32"])
    assert [(n.internal_ip, n.external_ip) for n in nats] == [("10.65.0.5", "1.2.3.4")]
    with pytest.raises(CniError, match="no IPv4 pod address"):
        ip_nats(settings, ["fd00::5/128"])


def test_feedback_and_release_patches() -> None:
    patch = feedback_patch("u-1", ["10.65.0.5", "fd00::5"], "c1")
    assert patch == {
        "metadata": {
            "uid": "u-1",
            "annotations": {POD_IP: "10.65.0.5", POD_IPS: "10.65.0.5,fd00::5", CONTAINER_ID: "c1"},
        }
    }
    ops = release_patch("c1")
    assert ops[0] == {
        "op": "test",
        "path": "/metadata/annotations/cni.projectcalico.org~1containerID",
        "value": "c1",
    }
    assert {op["path"].rsplit("~1", 1)[1] for op in ops[1:]} == {"podIP", "podIPs"}
    assert all(op["value"] == "" for op in ops[1:])


def test_identity_only_ignores_labels_and_annotations() -> None:
    settings = identity_only(pod({"cni.projectcalico.org/ipAddrs": "garbage"}))
    assert settings == PodSettings("prod", "web-0", "u-1", {}, (), "")


def test_endpoint_from_pod_settings_is_valid() -> None:
    config = conf(floating_ips=True)
    raw = pod(
        {"cni.projectcalico.org/floatingIPs": '["1.2.3.4"]'},
        containers=[{"name": "a", "ports": [{"name": "http", "containerPort": 80}]}],
    )
    settings = pod_settings(config, raw, namespace())
    workload = identify(
        "node-1",
        "k8s-pod-network",
        "c1",
        "eth0",
        {"K8S_POD_NAMESPACE": "prod", "K8S_POD_NAME": "web-0"},
    )
    address = ipaddress.ip_interface("10.65.0.5/32")
    endpoint = workload_endpoint(config, workload, [address], "aa:bb:cc:dd:ee:ff", settings)
    assert endpoint.metadata.name == "node--1-k8s-web--0-eth0"
    assert endpoint.metadata.labels == settings.labels
    assert endpoint.spec.profiles == ["kns.prod", "ksa.prod.builder"]
    assert endpoint.spec.service_account_name == "builder"
    assert [p.name for p in endpoint.spec.ports or []] == ["http"]
    assert [(n.internal_ip, n.external_ip) for n in endpoint.spec.ip_nats or []] == [
        ("10.65.0.5", "1.2.3.4")
    ]
    validate_resource(endpoint)

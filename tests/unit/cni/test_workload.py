"""Workload identity, Calico's names, the endpoint and the result: pure logic."""

from __future__ import annotations

import hashlib
import ipaddress

import pytest

from pycalico.cni.checks import interface_name_problem
from pycalico.cni.config import NetConf
from pycalico.cni.handler import host_sysctls
from pycalico.cni.spec import CniError, render_result
from pycalico.cni.workload import (
    host_veth_name,
    identify,
    result_for,
    valid_attachments,
    workload_endpoint,
)
from pycalico.model.codec import validate_resource


def test_k8s_identity_and_names() -> None:
    workload = identify(
        "node-1",
        "k8s-pod-network",
        "abc123",
        "eth0",
        {"K8S_POD_NAMESPACE": "prod", "K8S_POD_NAME": "web-0"},
    )
    assert workload.orchestrator == "k8s" and workload.namespace == "prod"
    assert workload.name == "node--1-k8s-web--0-eth0"
    digest = hashlib.sha1(b"prod.web-0").hexdigest()[:11]
    assert workload.host_ifname == "cali" + digest and len(workload.host_ifname) == 15
    assert workload.handle_id == "k8s-pod-network.abc123"


def test_plain_container_identity() -> None:
    workload = identify("n1", "net", "0123456789abcdef", "eth1", {"IgnoreUnknown": "1"})
    assert (workload.orchestrator, workload.namespace) == ("cni", "default")
    assert workload.name == "n1-cni-0123456789abcdef-eth1"
    assert workload.host_ifname == "cali0123456789a"


def test_interface_prefix_from_felix() -> None:
    assert host_veth_name("cni", "default", "", "abcdef0123456", "tap,cali") == "tapabcdef01234"


def test_endpoint_labels_profiles_and_validation() -> None:
    conf = NetConf.parse(
        {
            "name": "net",
            "ipam": {"type": "calico-ipam"},
            "policy": {"type": "k8s"},
            "args": {
                "cni": {
                    "labels": [
                        {"key": "app", "value": "web"},
                        {"key": "pcns.spoof", "value": "x"},
                        {"key": "projectcalico.org/serviceaccount", "value": "sa1"},
                    ]
                }
            },
        }
    )
    workload = identify("n1", "net", "c1", "eth0", {"K8S_POD_NAMESPACE": "ns", "K8S_POD_NAME": "p"})
    address = ipaddress.ip_interface("10.0.0.5/32")
    endpoint = workload_endpoint(conf, workload, [address], "aa:bb:cc:dd:ee:ff")
    assert endpoint.metadata.labels == {
        "app": "web",
        "projectcalico.org/serviceaccount": "sa1",
        "projectcalico.org/namespace": "ns",
        "projectcalico.org/orchestrator": "k8s",
    }
    assert endpoint.spec.profiles == ["kns.ns", "ksa.ns.sa1"]
    assert endpoint.spec.ip_networks == ["10.0.0.5/32"]
    assert validate_resource(endpoint) == []


def test_unknown_policy_type_is_a_config_error() -> None:
    conf = NetConf.parse({"name": "net", "ipam": {"type": "x"}, "policy": {"type": "other"}})
    workload = identify("n1", "net", "c1", "eth0", {})
    with pytest.raises(CniError, match=r"policy\.type") as caught:
        workload_endpoint(conf, workload, [], "")
    assert caught.value.code == 7


def test_result_per_version() -> None:
    workload = identify("n1", "net", "c1", "eth0", {})
    addresses = [ipaddress.ip_interface("10.0.0.5/32"), ipaddress.ip_interface("fd00::5/128")]
    result = result_for(workload, "/var/run/netns/x", addresses, "aa:bb:cc:dd:ee:ff")
    old = render_result(result, "0.2.0")
    assert old["ip4"] == {
        "ip": "10.0.0.5/32",
        "routes": [{"dst": "0.0.0.0/0", "gw": "169.254.1.1"}],
    }
    assert old["ip6"]["routes"] == [{"dst": "::/0", "gw": "fe80::ecee:eeff:feee:eeee"}]
    new = render_result(result, "1.1.0")
    assert [ip["address"] for ip in new["ips"]] == ["10.0.0.5/32", "fd00::5/128"]
    assert new["interfaces"][1] == {
        "name": "eth0",
        "mac": "aa:bb:cc:dd:ee:ff",
        "sandbox": "/var/run/netns/x",
    }
    assert render_result(result, "0.4.0")["ips"][1]["version"] == "6"


def test_interface_names_and_attachments() -> None:
    assert interface_name_problem("eth0") is None
    for bad in ("", "a" * 16, "..", "a/b", "a:b", "a b"):
        assert interface_name_problem(bad), bad
    assert valid_attachments(
        {"cni.dev/valid-attachments": [{"containerID": "c", "ifname": "e"}]}
    ) == {("c", "e")}
    with pytest.raises(CniError):
        valid_attachments({"cni.dev/valid-attachments": "c"})


def test_host_sysctls_reuse_felix_and_add_ipv6() -> None:
    v4 = dict(host_sysctls("cali1", False))
    assert v4["net/ipv4/conf/cali1/proxy_arp"] == "1"
    assert v4["net/ipv4/neigh/cali1/proxy_delay"] == "0"
    assert "net/ipv6/conf/cali1/proxy_ndp" not in v4
    v6 = dict(host_sysctls("cali1", True))
    assert (
        v6["net/ipv6/conf/cali1/accept_dad"] == "0" and v6["net/ipv6/conf/cali1/proxy_ndp"] == "1"
    )

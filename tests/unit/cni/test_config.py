"""NetConf parsing: Calico's keys and defaults, and errors that name the key (CNI code 7)."""

from __future__ import annotations

from typing import Any

import pytest

from pycalico.cni.config import NetConf
from pycalico.cni.spec import CniError


def conf(**extra: Any) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "net",
        "type": "calico",
        "ipam": {"type": "calico-ipam"},
        **extra,
    }


def test_defaults_are_calicos() -> None:
    parsed = NetConf.parse(conf())
    assert parsed.mtu == 0 and parsed.nodename == "" and not parsed.nodename_file_optional
    assert parsed.log.level == "info" and parsed.log.file_path == "/var/log/calico/cni/cni.log"
    assert parsed.ipam.assign_ipv4 and not parsed.ipam.assign_ipv6
    assert not parsed.allow_ip_forwarding and parsed.policy.type == ""


def test_every_linux_key_is_read() -> None:
    parsed = NetConf.parse(
        conf(
            nodename="n1",
            nodename_file="/x/nodename",
            nodename_file_optional=True,
            log_level="debug",
            log_file_path="/tmp/cni.log",
            log_file_max_size=5,
            datastore_type="etcdv3",
            etcd_endpoints="http://127.0.0.1:2379",
            etcd_key_file="/k",
            etcd_cert_file="/c",
            etcd_ca_cert_file="/ca",
            mtu=1440,
            ipam={"type": "calico-ipam", "assign_ipv6": "true", "ipv4_pools": ["p1"]},
            container_settings={"allow_ip_forwarding": True},
            policy={"type": "k8s"},
            kubernetes={"kubeconfig": "/etc/cni/net.d/calico-kubeconfig"},
            feature_control={"floating_ips": True},
        )
    )
    assert (parsed.nodename, parsed.nodename_file, parsed.nodename_file_optional) == (
        "n1",
        "/x/nodename",
        True,
    )
    assert parsed.log.level == "debug" and parsed.log.max_size_mb == 5
    assert (parsed.etcd_key_file, parsed.etcd_cert_file, parsed.etcd_ca_cert_file) == (
        "/k",
        "/c",
        "/ca",
    )
    assert parsed.mtu == 1440 and parsed.ipam.assign_ipv6 and parsed.ipam.ipv4_pools == ("p1",)
    assert parsed.allow_ip_forwarding and parsed.policy.type == "k8s" and parsed.floating_ips
    assert parsed.kubernetes.kubeconfig == "/etc/cni/net.d/calico-kubeconfig"


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"name": ""}, "name"),
        ({"ipam": {}}, "ipam.type"),
        ({"ipam": {"type": "../evil"}}, "ipam.type"),
        ({"mtu": 20}, "mtu"),
        ({"mtu": "x"}, "mtu"),
        ({"datastore_type": "kubernetes"}, "datastore_type"),
        ({"log_level": "loud"}, "log_level"),
        ({"nodename_file_optional": "maybe"}, "nodename_file_optional"),
        (
            {"container_settings": {"allow_ip_forwarding": 3}},
            "container_settings.allow_ip_forwarding",
        ),
        ({"policy": "k8s"}, "policy"),
        ({"kubernetes": {"kubeconfig": 1}}, "kubernetes.kubeconfig"),
        ({"ipam": {"type": "calico-ipam", "assign_ipv4": "false"}}, "ipam.assign_ipv4"),
        ({"ipam": {"type": "calico-ipam", "ipv4_pools": "p"}}, "ipam.ipv4_pools"),
        ({"device_type": "netkit"}, "device_type"),
        ({"prevResult": []}, "prevResult"),
    ],
)
def test_errors_name_the_key(extra: dict[str, Any], key: str) -> None:
    with pytest.raises(CniError) as caught:
        NetConf.parse(conf(**extra))
    assert caught.value.code == 7
    assert caught.value.msg.startswith(f"{key}:"), caught.value.msg


def test_cni_labels_from_args() -> None:
    parsed = NetConf.parse(conf(args={"cni": {"labels": [{"key": "app", "value": "web"}]}}))
    assert parsed.cni_labels() == {"app": "web"}
    with pytest.raises(CniError, match=r"args.cni.labels\[0\]"):
        NetConf.parse(conf(args={"cni": {"labels": [{"key": "app"}]}})).cni_labels()

"""Neutron -> Calico translation (pure): names, keys, labels, rules, statuses; every object the
driver writes decodes as a valid resource with pycalico's own codec (what Felix reads)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pycalico.datastore import paths
from pycalico.felix.calc.endpoints import workload_endpoint_id
from pycalico.model.codec import decode_resource, decode_value
from pycalico.openstack import translate

SG = "5d1f0c9e-1111-4222-8333-944445555666"
PORT: dict[str, Any] = {
    "id": "8a7b6c5d-aaaa-4bbb-8ccc-ddddeeeeffff",
    "device_id": "vm-1",
    "device_owner": "compute:nova",
    "binding:host_id": "compute-1",
    "binding:vif_type": "tap",
    "mac_address": "fa:16:3e:00:00:01",
    "network_id": "net-1",
    "project_id": "proj1",
    "fixed_ips": [
        {"subnet_id": "s4", "ip_address": "10.28.0.5"},
        {"subnet_id": "s6", "ip_address": "fd00:28::5"},
    ],
    "security_groups": [SG],
    "allowed_address_pairs": [{"ip_address": "10.28.1.7"}, {"ip_address": "10.28.2.0/24"}],
}


def rule(**fields: Any) -> dict[str, Any]:
    base = {"security_group_id": SG, "direction": "ingress", "ethertype": "IPv4",
            "protocol": None, "port_range_min": None, "port_range_max": None,
            "remote_ip_prefix": None, "remote_group_id": None}  # fmt: skip
    return {**base, **fields}


def test_endpoint_names_keys_and_spec_as_networking_calico() -> None:
    wep = translate.endpoint(
        PORT, gateways={"s4": "10.28.0.1", "s6": "fd00:28::1"}, sg_names={SG: "web servers"},
        floating_ips=[("10.28.0.5", "172.24.4.9")],
    )  # fmt: skip
    assert wep is not None
    name = "compute--1-openstack-vm--1-8a7b6c5d--aaaa--4bbb--8ccc--ddddeeeeffff"
    assert wep["metadata"]["name"] == name
    assert translate.endpoint_key(PORT) == translate.WEP_PREFIX + name
    spec = wep["spec"]
    assert spec["interfaceName"] == "tap8a7b6c5d-aa"
    assert spec["ipNetworks"] == ["10.28.0.5/32", "fd00:28::5/128", "10.28.1.7/32"]
    assert (spec["ipv4Gateway"], spec["ipv6Gateway"]) == ("10.28.0.1", "fd00:28::1")
    assert spec["ipNATs"] == [{"internalIP": "10.28.0.5", "externalIP": "172.24.4.9"}]
    labels = wep["metadata"]["labels"]
    assert labels[translate.SG_LABEL_PREFIX + SG] == "web_servers"
    assert labels[translate.SG_NAME_LABEL_PREFIX + "web_servers"] == SG
    assert labels["projectcalico.org/openstack-project-id"] == "proj1"
    resource = decode_resource(wep)  # valid for pycalico, with Calico's write checks
    assert resource.metadata.namespace == "openstack"
    decoded = decode_value(translate.encode(wep), kind="WorkloadEndpoint")
    assert decoded.spec.interface_name == "tap8a7b6c5d-aa"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "change",
    [
        {"binding:host_id": ""},
        {"binding:vif_type": "binding_failed"},
        {"device_owner": "network:dhcp"},
    ],
)
def test_no_endpoint_for_unbound_or_non_vm_ports(change: dict[str, str]) -> None:
    port = {**PORT, **change}
    assert translate.endpoint(port) is None
    assert translate.endpoint_key(port) is None


def test_felix_status_key_for_the_endpoint_leads_back_to_the_port() -> None:
    wep = translate.endpoint(PORT)
    assert wep is not None
    wid = workload_endpoint_id(decode_value(translate.encode(wep), kind="WorkloadEndpoint"))  # type: ignore[arg-type]
    key = paths.workload_endpoint_status_key(
        "compute-1", wid.orchestrator, wid.workload, wid.endpoint
    )
    assert translate.status_key_port(key) == ("compute-1", PORT["id"])
    assert translate.status_key_port(paths.felix_status_key("compute-1")) is None


@pytest.mark.parametrize(
    ("value", "status"),
    [('{"status": "up"}', "ACTIVE"), ('{"status": "down"}', "DOWN"), ('{"status": "error"}', "ERROR"),
     (None, "ERROR"), ("not json", "ERROR")],
)  # fmt: skip
def test_port_status(value: str | None, status: str) -> None:
    assert translate.port_status(value) == status


def test_security_group_policy_rules() -> None:
    rules = [
        rule(protocol="tcp", port_range_min=22, port_range_max=22),
        rule(
            protocol="tcp", port_range_min=8000, port_range_max=8080, remote_ip_prefix="10.0.0.0/8"
        ),
        rule(protocol="icmp", port_range_min=8, port_range_max=0),
        rule(ethertype="IPv6", protocol="icmp"),
        rule(protocol=None, remote_group_id=SG),
        rule(
            direction="egress",
            protocol="udp",
            port_range_min=53,
            port_range_max=53,
            remote_ip_prefix="10.1.0.0/16",
        ),
        rule(security_group_id="other", protocol="tcp"),
    ]
    pol = translate.policy(SG, rules)
    spec = pol["spec"]
    assert pol["metadata"] == {"name": "ossg.default." + SG, "namespace": "openstack"}
    assert spec["selector"] == f"has(sg.projectcalico.org/openstack-{SG})"
    assert spec["ingress"] == [
        {"action": "Allow", "ipVersion": 4, "protocol": "TCP", "destination": {"ports": [22]}},
        {"action": "Allow", "ipVersion": 4, "protocol": "TCP", "destination": {"ports": ["8000:8080"]},
         "source": {"nets": ["10.0.0.0/8"]}},
        {"action": "Allow", "ipVersion": 4, "protocol": "ICMP", "icmp": {"type": 8, "code": 0}},
        {"action": "Allow", "ipVersion": 6, "protocol": "ICMPv6"},
        {"action": "Allow", "ipVersion": 4, "source": {"selector": f"has(sg.projectcalico.org/openstack-{SG})"}},
    ]  # fmt: skip
    assert spec["egress"] == [
        {"action": "Allow", "ipVersion": 4, "protocol": "UDP",
         "destination": {"ports": [53], "nets": ["10.1.0.0/16"]}},
    ]  # fmt: skip
    decode_resource(pol)


def test_subnet_view_and_owned_keys() -> None:
    sub = {"id": "s4", "network_id": "n", "cidr": "10.28.0.0/24", "gateway_ip": "10.28.0.1",
           "enable_dhcp": True, "dns_nameservers": ["10.0.0.53"], "host_routes": []}  # fmt: skip
    assert translate.subnet(sub) == {"network_id": "n", "cidr": "10.28.0.0/24",
                                     "gateway_ip": "10.28.0.1", "host_routes": [],
                                     "dns_servers": ["10.0.0.53"]}  # fmt: skip
    assert translate.subnet({**sub, "enable_dhcp": False}) is None
    assert translate.owned_key(translate.subnet_key("s4"))
    assert translate.owned_key(translate.policy_key(SG))
    assert not translate.owned_key(translate.POLICY_PREFIX + "my-own-policy")
    assert not translate.owned_key(paths.RESOURCE_ROOT + "workloadendpoints/default/pod-eth0")


def test_comparable_ignores_metadata_noise() -> None:
    wep = translate.endpoint(PORT)
    assert wep is not None
    noisy = json.loads(translate.encode(wep))
    noisy["metadata"].update(uid="u-1", creationTimestamp="2026-01-01T00:00:00Z")
    assert translate.comparable(json.dumps(noisy)) == translate.comparable(translate.encode(wep))
    noisy["spec"]["mac"] = "fa:16:3e:00:00:02"
    assert translate.comparable(json.dumps(noisy)) != translate.comparable(translate.encode(wep))

"""Calico's validation rules, one by one: each invalid resource is refused with the field path
and a message naming the problem; each valid variant next to it is accepted."""

from __future__ import annotations

from typing import Any

import pytest

from pycalico.model.codec import ValidationFailure, decode_resource


def _resource(
    kind: str, spec: dict[str, Any] | None, name: str = "r", **meta: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "apiVersion": "projectcalico.org/v3",
        "kind": kind,
        "metadata": {"name": name, **meta},
    }
    if spec is not None:
        data["spec"] = spec
    return data


def _problems(data: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationFailure) as caught:
        decode_resource(data, document="t.yaml document 1")
    return {problem.field: problem.message for problem in caught.value.problems}


def _fails(data: dict[str, Any], field: str, fragment: str) -> None:
    problems = _problems(data)
    assert field in problems, problems
    assert fragment in problems[field], problems[field]


def _policy(rule: dict[str, Any], direction: str = "ingress", **spec: Any) -> dict[str, Any]:
    return _resource("GlobalNetworkPolicy", {direction: [rule], **spec}, name="p")


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Foo", "-a", "a-", "a_b", "", "x" * 254])
def test_resource_names_are_dns_subdomains(name: str) -> None:
    assert "metadata.name" in _problems(_resource("IPPool", {"cidr": "10.0.0.0/16"}, name=name))


@pytest.mark.parametrize("name", ["a", "pool-1", "pool.a.b", "x" * 253])
def test_valid_subdomain_names(name: str) -> None:
    decode_resource(_resource("IPPool", {"cidr": "10.0.0.0/16"}, name=name))


def test_policy_names_allow_one_dot_but_tier_names_none() -> None:
    decode_resource(_resource("GlobalNetworkPolicy", {}, name="allow.dns"))
    decode_resource(_resource("NetworkPolicy", {}, name="knp.default.a.b", namespace="ns"))
    _fails(_resource("GlobalNetworkPolicy", {}, name="a.b.c"), "metadata.name", "valid policy")
    _fails(_resource("Tier", {}, name="a.b"), "metadata.name", "no dots")
    _fails(
        _resource("GlobalNetworkPolicy", {"tier": "security"}, name="other.x"),
        "metadata.name",
        "use 'security.x'",
    )


def test_singleton_kinds_must_be_named_default() -> None:
    for kind in ("IPAMConfiguration", "ClusterInformation", "KubeControllersConfiguration"):
        _fails(_resource(kind, {}, name="other"), "metadata.name", "named 'default'")


def test_namespace_required_for_namespaced_and_refused_for_cluster_kinds() -> None:
    _fails(
        _resource("IPPool", {"cidr": "10.0.0.0/16"}, namespace="ns"),
        "metadata.namespace",
        "not namespaced",
    )
    policy = decode_resource(_resource("NetworkPolicy", {}, name="p"), default_namespace="team")
    assert policy.namespace == "team"


def test_label_keys_and_values() -> None:
    _fails(_resource("Tier", {}, name="t", labels={"bad key": "v"}), "metadata.labels", "key")
    _fails(_resource("Tier", {}, name="t", labels={"k": "-bad"}), "metadata.labels", "value")


def test_workload_endpoint_name_must_match_spec() -> None:
    spec = {
        "node": "node-1",
        "orchestrator": "k8s",
        "pod": "web-0",
        "endpoint": "eth0",
        "interfaceName": "cali12345",
    }
    _fails(
        _resource("WorkloadEndpoint", spec, name="node-1-k8s-web-0-eth0", namespace="ns"),
        "metadata.name",
        "use 'node--1-k8s-web--0-eth0'",
    )
    ok = decode_resource(_resource("WorkloadEndpoint", spec, name="", namespace="ns"))
    assert ok.name == "node--1-k8s-web--0-eth0"


# --- IP pools ---------------------------------------------------------------------------------


def test_unmasked_pool_cidr() -> None:
    _fails(
        _resource("IPPool", {"cidr": "10.0.0.1/16"}),
        "spec.cidr",
        "10.0.0.1/16 is not a network address: use 10.0.0.0/16",
    )


@pytest.mark.parametrize(
    ("cidr", "block_size", "ok"),
    [
        ("10.0.0.0/16", 33, False),
        ("10.0.0.0/16", 19, False),
        ("10.0.0.0/16", 20, True),
        ("10.0.0.0/16", 32, True),
        ("fd00::/48", 115, False),
        ("fd00::/48", 116, True),
        ("fd00::/48", 128, True),
        ("fd00::/48", 26, False),
    ],
)
def test_block_size_ranges_by_family(cidr: str, block_size: int, ok: bool) -> None:
    data = _resource("IPPool", {"cidr": cidr, "blockSize": block_size})
    if ok:
        decode_resource(data)
    else:
        _fails(data, "spec.blockSize", f"blockSize {block_size} is out of range")


def test_pool_smaller_than_a_block_unless_disabled() -> None:
    _fails(_resource("IPPool", {"cidr": "10.0.0.0/28"}), "spec.cidr", "smaller than one block")
    decode_resource(_resource("IPPool", {"cidr": "10.0.0.0/28", "disabled": True}))


def test_ipip_rules() -> None:
    _fails(
        _resource("IPPool", {"cidr": "fd00::/48", "ipipMode": "Always"}), "spec.ipipMode", "IPv6"
    )
    _fails(
        _resource("IPPool", {"cidr": "10.0.0.0/16", "ipipMode": "Always", "vxlanMode": "Always"}),
        "spec.ipipMode",
        "cannot both be enabled",
    )
    decode_resource(_resource("IPPool", {"cidr": "10.0.0.0/16", "ipipMode": "CrossSubnet"}))


def test_pool_link_local_and_load_balancer_rules() -> None:
    _fails(_resource("IPPool", {"cidr": "169.254.0.0/16"}), "spec.cidr", "link-local")
    _fails(
        _resource("IPPool", {"cidr": "10.0.0.0/16", "allowedUses": ["LoadBalancer", "Workload"]}),
        "spec.allowedUses",
        "LoadBalancer cannot be combined with Workload",
    )


def test_pool_selector_must_parse() -> None:
    _fails(
        _resource("IPPool", {"cidr": "10.0.0.0/16", "nodeSelector": "rack == "}),
        "spec.nodeSelector",
        "does not parse",
    )


def test_ipam_configuration_combinations_are_valid_resources() -> None:
    # Calico's resource validator accepts these; only ``ipam configure`` refuses them.
    for spec in (
        {"maxBlocksPerHost": 4},
        {"maxBlocksPerHost": 4, "strictAffinity": True},
        {"autoAllocateBlocks": False},
    ):
        decode_resource(_resource("IPAMConfiguration", spec, name="default"))
    _fails(
        _resource("IPAMConfiguration", {"maxBlocksPerHost": -1}, name="default"),
        "spec.maxBlocksPerHost",
        "greater than or equal to 0",
    )


# --- rules: ports, protocols, ICMP, nets, selectors -------------------------------------------


def test_port_without_protocol() -> None:
    _fails(
        _policy({"action": "Allow", "destination": {"ports": [80]}}),
        "spec.ingress[0].destination.ports",
        "protocol to TCP, UDP or SCTP",
    )


@pytest.mark.parametrize("protocol", ["ICMP", "UDPLite", 1])
def test_port_with_a_protocol_without_ports(protocol: object) -> None:
    _fails(
        _policy({"action": "Allow", "protocol": protocol, "source": {"notPorts": [80]}}),
        "spec.ingress[0].source.notPorts",
        "protocol",
    )


@pytest.mark.parametrize("protocol", ["TCP", "udp", "SCTP", 6, 17, 132])
def test_ports_with_protocols_that_have_ports(protocol: object) -> None:
    decode_resource(
        _policy({"action": "Allow", "protocol": protocol, "destination": {"ports": [80]}})
    )


@pytest.mark.parametrize(
    ("port", "fragment"),
    [
        (0, "out of range"),
        (65536, "out of range"),
        ("90:80", "min greater than max"),
        ("1:70000", "out of range"),
        ("a:b", "min:max"),
        ("Not_A_Name", "not a valid port name"),
        ("1234567890abcdef", "not a valid port name"),
    ],
)
def test_bad_ports(port: object, fragment: str) -> None:
    _fails(
        _policy({"action": "Allow", "protocol": "TCP", "destination": {"ports": [22, port]}}),
        "spec.ingress[0].destination.ports[1]",
        fragment,
    )


def test_port_forms_are_normalised() -> None:
    policy = decode_resource(
        _policy(
            {
                "action": "Allow",
                "protocol": "tcp",
                "destination": {"ports": ["80", "443:443", "8000:9000", "http-alt"]},
            }
        )
    )
    rule = policy.spec.ingress[0]  # type: ignore[attr-defined]
    assert rule.protocol == "TCP"
    assert rule.destination.ports == [80, 443, "8000:9000", "http-alt"]


def test_unknown_protocol_and_protocol_number_range() -> None:
    _fails(_policy({"action": "Allow", "protocol": "GRE"}), "spec.ingress[0].protocol", "GRE")
    _fails(_policy({"action": "Allow", "protocol": 0}), "spec.ingress[0].protocol", "1-255")
    decode_resource(_policy({"action": "Allow", "protocol": 47}))


def test_icmp_rules() -> None:
    _fails(
        _policy({"action": "Allow", "protocol": "ICMP", "icmp": {"code": 0}}),
        "spec.ingress[0].icmp.code",
        "needs an ICMP type",
    )
    _fails(
        _policy({"action": "Allow", "protocol": "TCP", "icmp": {"type": 8}}),
        "spec.ingress[0].icmp",
        "ICMP or ICMPv6",
    )
    _fails(
        _policy({"action": "Allow", "protocol": "ICMP", "ipVersion": 6}),
        "spec.ingress[0].protocol",
        "ipVersion 4",
    )
    _fails(
        _policy({"action": "Allow", "protocol": "ICMP", "icmp": {"type": 255}}),
        "spec.ingress[0].icmp.type",
        "254",
    )
    decode_resource(
        _policy({"action": "Allow", "protocol": "ICMPv6", "notICMP": {"type": 128, "code": 0}})
    )


def test_mixed_family_rule_nets() -> None:
    _fails(
        _policy({"action": "Allow", "source": {"nets": ["10.0.0.0/8", "fd00::/64"]}}),
        "spec.ingress[0].source.nets",
        "all be IPv4 or all be IPv6",
    )
    _fails(
        _policy(
            {
                "action": "Allow",
                "source": {"nets": ["10.0.0.0/8"]},
                "destination": {"notNets": ["fd00::/64"]},
            }
        ),
        "spec.ingress[0].destination.notNets",
        "all be IPv4 or all be IPv6",
    )


def test_rule_nets_must_agree_with_ip_version_and_be_masked() -> None:
    _fails(
        _policy({"action": "Allow", "ipVersion": 6, "destination": {"nets": ["10.0.0.0/8"]}}),
        "spec.ingress[0].destination.nets",
        "not IPv6",
    )
    _fails(
        _policy({"action": "Allow", "destination": {"nets": ["10.0.0.1/8"]}}),
        "spec.ingress[0].destination.nets[0]",
        "use 10.0.0.0/8",
    )
    decode_resource(
        _policy({"action": "Allow", "ipVersion": 4, "destination": {"nets": ["10.0.0.1"]}})
    )


def test_selectors_must_parse() -> None:
    _fails(
        _resource("GlobalNetworkPolicy", {"selector": "app == 'web"}, name="p"),
        "spec.selector",
        "does not parse",
    )
    _fails(
        _policy({"action": "Allow", "source": {"selector": "has(", "namespaceSelector": "a =="}}),
        "spec.ingress[0].source.selector",
        "does not parse",
    )


def test_global_selector_only_in_namespace_selector_alone() -> None:
    _fails(
        _resource("GlobalNetworkPolicy", {"selector": "global()"}, name="p"),
        "spec.selector",
        "global()",
    )
    _fails(
        _policy({"action": "Allow", "source": {"namespaceSelector": "global() && a == 'b'"}}),
        "spec.ingress[0].source.namespaceSelector",
        "cannot be combined",
    )
    decode_resource(_policy({"action": "Allow", "source": {"namespaceSelector": "global()"}}))


def test_services_rules() -> None:
    _fails(
        _policy(
            {
                "action": "Allow",
                "destination": {"services": {"name": "kube-dns"}, "selector": "a == 'b'"},
            },
            direction="egress",
        ),
        "spec.egress[0].destination.services",
        "cannot be combined with selector",
    )
    _fails(
        _policy({"action": "Allow", "destination": {"services": {"name": "x", "namespace": "y"}}}),
        "spec.ingress[0].destination.services",
        "not allowed in an ingress rule destination",
    )


def test_http_match_only_on_allow_tcp_rules() -> None:
    _fails(
        _policy({"action": "Deny", "http": {"methods": ["GET"]}}),
        "spec.ingress[0].http",
        "only valid on Allow",
    )
    _fails(
        _policy({"action": "Allow", "protocol": "UDP", "http": {"paths": [{"exact": "/a"}]}}),
        "spec.ingress[0].protocol",
        "TCP",
    )


# --- policy ---------------------------------------------------------------------------------


def test_too_many_rules() -> None:
    rules = [{"action": "Allow"}] * 1025
    _fails(_resource("GlobalNetworkPolicy", {"egress": rules}, name="p"), "spec.egress", "1024")


def test_types_listed_twice() -> None:
    _fails(
        _resource("NetworkPolicy", {"types": ["Ingress", "Ingress"]}, name="p", namespace="n"),
        "spec.types",
        "more than once",
    )


def test_pre_dnat_and_do_not_track_rules() -> None:
    _fails(
        _resource("GlobalNetworkPolicy", {"preDNAT": True}, name="p"),
        "spec.applyOnForward",
        "must be true",
    )
    _fails(
        _resource("GlobalNetworkPolicy", {"doNotTrack": True}, name="p"),
        "spec.applyOnForward",
        "must be true",
    )
    _fails(
        _resource(
            "GlobalNetworkPolicy",
            {"preDNAT": True, "applyOnForward": True, "egress": [{"action": "Allow"}]},
            name="p",
        ),
        "spec.egress",
        "preDNAT",
    )
    _fails(
        _resource(
            "GlobalNetworkPolicy",
            {"preDNAT": True, "doNotTrack": True, "applyOnForward": True},
            name="p",
        ),
        "spec.preDNAT",
        "cannot both be true",
    )


def test_builtin_tier_orders_are_fixed() -> None:
    _fails(_resource("Tier", {"order": 5}, name="default"), "spec.order", "1000000")
    _fails(_resource("Tier", {"order": 5}, name="kube-admin"), "spec.order", "1000")
    decode_resource(_resource("Tier", {"order": 1_000_000}, name="default"))
    decode_resource(_resource("Tier", {"order": 5}, name="mine"))
    # An unset order becomes 1,000,000, which the built-in kube-admin tier may not have.
    _fails(_resource("Tier", {}, name="kube-admin"), "spec.order", "1000")


# --- BGP and nodes ----------------------------------------------------------------------------


def test_as_numbers_plain_and_as_dot() -> None:
    config = decode_resource(_resource("BGPConfiguration", {"asNumber": "1.10"}, name="default"))
    assert config.spec.as_number == 65546  # type: ignore[attr-defined]
    for bad in ("1.70000", "x", -1, 2**32):
        _fails(
            _resource("BGPConfiguration", {"asNumber": bad}, name="default"), "spec.asNumber", "AS"
        )


def test_bgp_peer_rules() -> None:
    # Calico 3.32: asNumber is not required with peerIP, and a peer naming neither is accepted.
    decode_resource(_resource("BGPPeer", {"peerIP": "10.0.0.1"}))
    decode_resource(_resource("BGPPeer", {}))
    _fails(
        _resource("BGPPeer", {"peerSelector": "rr == 'true'", "asNumber": 64512}),
        "spec.asNumber",
        "peerSelector",
    )
    _fails(
        _resource("BGPPeer", {"node": "a", "nodeSelector": "all()", "peerSelector": "all()"}),
        "spec.node",
        "cannot both be set",
    )
    _fails(
        _resource("BGPPeer", {"peerIP": "10.0.0.1:0", "asNumber": 1}), "spec.peerIP", "not an IP"
    )
    decode_resource(_resource("BGPPeer", {"peerIP": "[fd00::1]:1179", "asNumber": "64512"}))
    decode_resource(_resource("BGPPeer", {"nodeSelector": "all()", "peerSelector": "rr == 'true'"}))


def test_bgp_configuration_communities_and_mesh_password() -> None:
    _fails(
        _resource(
            "BGPConfiguration",
            {
                "communities": [{"name": "c", "value": "70000:1"}],
                "prefixAdvertisements": [{"cidr": "10.0.0.0/8", "communities": ["c"]}],
            },
            name="default",
        ),
        "spec.communities[0].value",
        "above 65535",
    )
    _fails(
        _resource(
            "BGPConfiguration",
            {
                "nodeToNodeMeshEnabled": False,
                "nodeMeshPassword": {"secretKeyRef": {"name": "s", "key": "k"}},
            },
            name="default",
        ),
        "spec.nodeMeshPassword",
        "nodeToNodeMeshEnabled",
    )


def test_node_addresses() -> None:
    _fails(
        _resource("Node", {"bgp": {"ipv4Address": "fd00::1/64"}}), "spec.bgp.ipv4Address", "IPv4"
    )
    _fails(
        _resource("Node", {"bgp": {"routeReflectorClusterID": "x"}}),
        "spec.bgp.routeReflectorClusterID",
        "not a valid IP",
    )
    _fails(_resource("Node", {"bgp": {}}), "spec.bgp", "empty")
    decode_resource(_resource("Node", {"bgp": {"ipv4Address": "10.0.0.5/24", "asNumber": 65001}}))


# --- endpoints and sets -----------------------------------------------------------------------


def _wep(**spec: Any) -> dict[str, Any]:
    base = {
        "node": "n1",
        "orchestrator": "k8s",
        "pod": "p1",
        "endpoint": "eth0",
        "interfaceName": "cali1",
        "ipNetworks": ["10.0.0.1/32"],
    }
    return _resource("WorkloadEndpoint", {**base, **spec}, name="n1-k8s-p1-eth0", namespace="ns")


def test_workload_endpoint_name_parts_are_required() -> None:
    problems = _problems(_wep(node=None, pod=None))
    assert problems["spec.node"].startswith("is required")
    assert problems["spec.pod"].startswith("is required")
    _fails(
        _resource(
            "WorkloadEndpoint",
            {"node": "n", "orchestrator": "cni", "endpoint": "eth0", "interfaceName": "c"},
            name="",
            namespace="ns",
        ),
        "spec.containerID",
        "is required",
    )
    assert "spec.pod" in _problems(_wep(pod="p-"))
    other = decode_resource(
        _resource(
            "WorkloadEndpoint",
            {
                "node": "n",
                "orchestrator": "openstack",
                "workload": "vm-1",
                "endpoint": "tap0",
                "interfaceName": "tap0",
            },
            name="",
            namespace="ns",
        )
    )
    assert other.name == "n-openstack-vm--1-tap0"


def test_workload_endpoint_rules() -> None:
    _fails(_wep(ipNetworks=["10.0.0.0/24"]), "spec.ipNetworks[0]", "more than one address")
    _fails(_wep(interfaceName=None), "spec.interfaceName", "required")
    _fails(_wep(mac="zz:zz"), "spec.mac", "MAC")
    _fails(
        _wep(ipNATs=[{"internalIP": "10.0.0.9", "externalIP": "172.16.0.1"}]),
        "spec.ipNATs[0].internalIP",
        "not one of the endpoint's ipNetworks",
    )
    _fails(
        _wep(ports=[{"name": "dns", "protocol": "ICMP", "port": 53}]),
        "spec.ports[0].protocol",
        "TCP, UDP or SCTP",
    )
    _fails(_wep(ports=[{"protocol": "TCP", "port": 53}]), "spec.ports[0].name", "required")
    decode_resource(_wep(ports=[{"protocol": "TCP", "port": 53, "hostPort": 5353}]))


def test_host_endpoint_rules() -> None:
    _fails(_resource("HostEndpoint", {"node": "n"}), "spec.interfaceName", "expectedIPs")
    _fails(_resource("HostEndpoint", {"interfaceName": "eth0"}), "spec.node", "required")
    _fails(
        _resource("HostEndpoint", {"node": "n", "interfaceName": "this-name-is-too-long"}),
        "spec.interfaceName",
        "interface",
    )
    decode_resource(_resource("HostEndpoint", {"node": "n", "interfaceName": "*"}))


def test_network_sets() -> None:
    _fails(_resource("GlobalNetworkSet", {"nets": ["10.0.0.300/8"]}), "spec.nets[0]", "CIDR")
    _fails(
        _resource("NetworkSet", {}, namespace="n", labels={"projectcalico.org/namespace": "x"}),
        "metadata.labels",
        "reserved",
    )


def test_felix_configuration_typed_fields() -> None:
    _fails(
        _resource("FelixConfiguration", {"logSeverityScreen": "Loud"}, name="default"),
        "spec.logSeverityScreen",
        "Info",
    )
    _fails(
        _resource("FelixConfiguration", {"reportingInterval": "soon"}, name="default"),
        "spec.reportingInterval",
        "duration",
    )
    _fails(
        _resource("FelixConfiguration", {"natOutgoingAddress": "fd00::1"}, name="default"),
        "spec.natOutgoingAddress",
        "IPv4",
    )


def test_pool_cidr_needs_a_prefix_and_other_problems_are_still_reported() -> None:
    problems = _problems(_resource("IPPool", {"cidr": "10.0.0.0", "nodeSelector": "a =="}))
    assert "prefix length" in problems["spec.cidr"]
    assert "does not parse" in problems["spec.nodeSelector"]

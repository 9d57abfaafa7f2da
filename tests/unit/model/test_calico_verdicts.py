"""Verdicts of Calico 3.32's resource validator (Go rules plus the CRD schema and CEL rules it
applies in etcd mode), one row per behaviour, written from the facts of Calico's validator tests."""

from __future__ import annotations

from typing import Any

import pytest

from pycalico.model.codec import decode_resource
from pycalico.model.kinds import KINDS
from pycalico.model.validation import ValidationFailure

SINGLETONS = {"FelixConfiguration", "BGPConfiguration", "IPAMConfiguration"}


def _resource(kind: str, spec: dict[str, Any], name: str = "") -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name or ("default" if kind in SINGLETONS else "r1")}
    if KINDS[kind].namespaced:
        metadata["namespace"] = "default"
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": metadata, "spec": spec}


def _rule(**fields: Any) -> dict[str, Any]:
    return _resource("GlobalNetworkPolicy", {"ingress": [{"action": "Allow", **fields}]})


def _felix(**spec: Any) -> dict[str, Any]:
    return _resource("FelixConfiguration", spec)


CASES: list[tuple[str, dict[str, Any], bool]] = [
    # BGPPeer: asNumber is not required with peerIP (a Calico node peer takes the node's AS).
    ("peerIP without asNumber", _resource("BGPPeer", {"peerIP": "10.0.0.1"}), True),
    ("peer naming no peer at all", _resource("BGPPeer", {}), True),
    (
        "asNumber with peerSelector",
        _resource("BGPPeer", {"peerSelector": "all()", "asNumber": 1}),
        False,
    ),
    # IPAMConfiguration: the strictAffinity rules belong to `ipam configure` only.
    (
        "maxBlocksPerHost, strictAffinity false",
        _resource("IPAMConfiguration", {"maxBlocksPerHost": 4}),
        True,
    ),
    (
        "autoAllocateBlocks false",
        _resource("IPAMConfiguration", {"autoAllocateBlocks": False}),
        True,
    ),
    # Rules: named ports match any protocol; numbers need TCP, UDP or SCTP.
    ("named destination port, no protocol", _rule(destination={"ports": ["http"]}), True),
    ("named source notPort, no protocol", _rule(source={"notPorts": ["http"]}), True),
    ("numeric port, no protocol", _rule(destination={"ports": [80]}), False),
    ("named port with ICMP", _rule(protocol="ICMP", destination={"ports": ["http"]}), False),
    # A catch-all network in notNets matches nothing.
    ("notNets 0.0.0.0/0", _rule(destination={"notNets": ["0.0.0.0/0"]}), False),
    ("notNets ::/0", _rule(destination={"notNets": ["::/0"]}), False),
    ("notNets ::/0 spelt 0:0::/0", _rule(destination={"notNets": ["0:0::/0"]}), False),
    ("notNets 0.0.0.0/1", _rule(destination={"notNets": ["0.0.0.0/1"]}), True),
    ("nets 0.0.0.0/0", _rule(destination={"nets": ["0.0.0.0/0"]}), True),
    # IPPool CEL rules.
    (
        "pool nodeSelector global()",
        _resource("IPPool", {"cidr": "10.0.0.0/16", "nodeSelector": "global()"}),
        False,
    ),
    (
        "pool namespaceSelector global()",
        _resource("IPPool", {"cidr": "10.0.0.0/16", "namespaceSelector": "global()"}),
        False,
    ),
    (
        "Tunnel pool with namespaceSelector",
        _resource(
            "IPPool",
            {"cidr": "10.0.0.0/16", "allowedUses": ["Tunnel"], "namespaceSelector": "a == 'b'"},
        ),
        False,
    ),
    (
        # Calico's client defaults allowedUses to Workload+Tunnel before validating, so only
        # a Workload-only pool may have one.
        "Workload pool with namespaceSelector",
        _resource(
            "IPPool",
            {"cidr": "10.0.0.0/16", "allowedUses": ["Workload"], "namespaceSelector": "a == 'b'"},
        ),
        True,
    ),
    # Policies.
    (
        "repeated performance hint",
        _resource(
            "NetworkPolicy",
            {"performanceHints": ["AssumeNeededOnEveryNode", "AssumeNeededOnEveryNode"]},
        ),
        False,
    ),
    ("empty stagedAction", _resource("StagedNetworkPolicy", {"stagedAction": ""}), True),
    (
        "default tier with Pass",
        _resource("Tier", {"order": 1e6, "defaultAction": "Pass"}, "default"),
        False,
    ),
    (
        "default tier with Deny",
        _resource("Tier", {"order": 1e6, "defaultAction": "Deny"}, "default"),
        True,
    ),
    (
        "kube-admin tier with Deny",
        _resource("Tier", {"order": 1e3, "defaultAction": "Deny"}, "kube-admin"),
        False,
    ),
    (
        "kube-admin tier with Pass",
        _resource("Tier", {"order": 1e3, "defaultAction": "Pass"}, "kube-admin"),
        True,
    ),
    (
        "kube-baseline tier with Pass",
        _resource("Tier", {"order": 1e7, "defaultAction": "Pass"}, "kube-baseline"),
        True,
    ),
    # BGPFilter operations: exactly one field each, only on Accept rules.
    (
        "operation setting one thing",
        _resource(
            "BGPFilter",
            {"exportV4": [{"action": "Accept", "operations": [{"setPriority": {"value": 256}}]}]},
        ),
        True,
    ),
    (
        "operation setting nothing",
        _resource("BGPFilter", {"exportV4": [{"action": "Accept", "operations": [{}]}]}),
        False,
    ),
    (
        "operation setting two things",
        _resource(
            "BGPFilter",
            {
                "exportV4": [
                    {
                        "action": "Accept",
                        "operations": [
                            {"setPriority": {"value": 256}, "prependASPath": {"prefix": [65000]}}
                        ],
                    }
                ]
            },
        ),
        False,
    ),
    (
        "operations on a Reject rule",
        _resource(
            "BGPFilter",
            {"exportV4": [{"action": "Reject", "operations": [{"setPriority": {"value": 256}}]}]},
        ),
        False,
    ),
    # Labels and annotations.
    ("labelsToApply with '!'", _resource("Profile", {"labelsToApply": {"a!": "b"}}), False),
    ("labelsToApply with leading '.'", _resource("Profile", {"labelsToApply": {".a": "b"}}), False),
    (
        "labelsToApply value too long",
        _resource("Profile", {"labelsToApply": {"a": "x" * 64}}),
        False,
    ),
    ("labelsToApply fine", _resource("Profile", {"labelsToApply": {"a": "x" * 63}}), True),
    (
        "host endpoint template annotations",
        _resource(
            "KubeControllersConfiguration",
            {
                "controllers": {
                    "node": {"hostEndpoint": {"templates": [{"annotations": {"a/b": "c"}}]}}
                }
            },
            "default",
        ),
        True,
    ),
    # BGPConfiguration.
    (
        "BGP log severity in lower case",
        _resource("BGPConfiguration", {"logSeverityScreen": "info"}),
        True,
    ),
    (
        "BGP log severity in upper case",
        _resource("BGPConfiguration", {"logSeverityScreen": "INFO"}),
        True,
    ),
    (
        "local workload peering addresses",
        _resource(
            "BGPConfiguration",
            {"localWorkloadPeeringIPV4": "169.254.0.1", "localWorkloadPeeringIPV6": "fe80::1"},
        ),
        True,
    ),
    (
        "local workload peering IPv4 given IPv6",
        _resource("BGPConfiguration", {"localWorkloadPeeringIPV4": "fe80::1"}),
        False,
    ),
    # FelixConfiguration: CRD patterns in any case, and the settings we keep untyped.
    ("defaultEndpointToHostAction drop", _felix(defaultEndpointToHostAction="drop"), True),
    ("iptablesBackend nft", _felix(iptablesBackend="nft"), True),
    ("openstackRegion of 46 characters", _felix(openstackRegion="r" * 46), True),
    ("openstackRegion of 47 characters", _felix(openstackRegion="r" * 47), False),
    ("openstackRegion not a DNS label", _felix(openstackRegion="Region_1"), False),
    (
        "iptablesNATOutgoingInterfaceFilter cali@123",
        _felix(iptablesNATOutgoingInterfaceFilter="cali@123"),
        False,
    ),
    (
        "iptablesNATOutgoingInterfaceFilter cali+",
        _felix(iptablesNATOutgoingInterfaceFilter="cali+"),
        True,
    ),
    ("bpfExternalServiceMode dsr", _felix(bpfExternalServiceMode="dsr"), True),
    ("bpfExternalServiceMode Foo", _felix(bpfExternalServiceMode="Foo"), False),
    ("bpfExtToServiceConnmark -1", _felix(bpfExtToServiceConnmark=-1), False),
    ("bpfExtToServiceConnmark 2^32", _felix(bpfExtToServiceConnmark=2**32), False),
    ("bpfExtToServiceConnmark 2^32-1", _felix(bpfExtToServiceConnmark=2**32 - 1), True),
    ("bpfDataIfacePattern '*'", _felix(bpfDataIfacePattern="*"), False),
    ("mtuIfacePattern '^eth.*'", _felix(mtuIfacePattern="^eth.*"), True),
    ("mtuIfacePattern '*'", _felix(mtuIfacePattern="*"), False),
    ("ipv4ElevatedRoutePriority 0", _felix(ipv4ElevatedRoutePriority=0), False),
    ("ipv4ElevatedRoutePriority 2147483647", _felix(ipv4ElevatedRoutePriority=2147483647), False),
    ("ipv6NormalRoutePriority 1024", _felix(ipv6NormalRoutePriority=1024), True),
    ("wireguardRoutingRulePriority 99999", _felix(wireguardRoutingRulePriority=99999), False),
    ("awsSrcDstCheck enable", _felix(awsSrcDstCheck="enable"), False),
    ("awsSrcDstCheck Enable", _felix(awsSrcDstCheck="Enable"), True),
    (
        "bpfHostNetworkedNATWithoutCTLB enabled",
        _felix(bpfHostNetworkedNATWithoutCTLB="enabled"),
        False,
    ),
    ("bpfConnectTimeLoadBalancing TCP", _felix(bpfConnectTimeLoadBalancing="TCP"), True),
    ("windowsManageFirewallRules blah", _felix(windowsManageFirewallRules="blah"), False),
    (
        "bpfForceTrackPacketsFromIfaces with '@'",
        _felix(bpfForceTrackPacketsFromIfaces=["cali-1", "cali@2"]),
        False,
    ),
    (
        "bpfForceTrackPacketsFromIfaces prefixes",
        _felix(bpfForceTrackPacketsFromIfaces=["docker+"]),
        True,
    ),
    (
        "healthTimeoutOverride negative",
        _felix(healthTimeoutOverrides=[{"name": "a", "timeout": "-1s"}]),
        False,
    ),
    (
        "healthTimeoutOverride bad name",
        _felix(healthTimeoutOverrides=[{"name": "%", "timeout": "1s"}]),
        False,
    ),
    (
        "healthTimeoutOverride fine",
        _felix(healthTimeoutOverrides=[{"name": "Int Graph", "timeout": "1s"}]),
        True,
    ),
    (
        "routeTableRanges of 65536 tables",
        _felix(routeTableRanges=[{"min": 1, "max": 0x10000}]),
        False,
    ),
    (
        "routeTableRanges of 65536 tables in three ranges",
        _felix(
            routeTableRanges=[
                {"min": 1, "max": 2},
                {"min": 3, "max": 4},
                {"min": 5, "max": 0x10000},
            ]
        ),
        False,
    ),
    (
        "routeTableRanges of 65535 tables",
        _felix(routeTableRanges=[{"min": 1, "max": 0xFFFF}]),
        True,
    ),
]


@pytest.mark.parametrize(("data", "valid"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_calico_verdict(data: dict[str, Any], valid: bool) -> None:
    if valid:
        decode_resource(data)
    else:
        with pytest.raises(ValidationFailure):
            decode_resource(data)


@pytest.mark.parametrize(
    ("kind", "spec", "field", "stored"),
    [
        ("BGPConfiguration", {"logSeverityScreen": "debug"}, "log_severity_screen", "Debug"),
        (
            "FelixConfiguration",
            {"defaultEndpointToHostAction": "ACCEPT"},
            "default_endpoint_to_host_action",
            "Accept",
        ),
        ("FelixConfiguration", {"bpfLogLevel": "off"}, "bpf_log_level", "Off"),
    ],
)
def test_any_case_values_are_stored_in_the_canonical_spelling(
    kind: str, spec: dict[str, Any], field: str, stored: str
) -> None:
    resource = decode_resource(_resource(kind, spec))
    assert getattr(resource.spec, field) == stored  # type: ignore[attr-defined]

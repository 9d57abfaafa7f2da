"""The kind registry: every kind registered once, calicoctl's aliases, and the unknown-kind error."""

from __future__ import annotations

import pytest

from pycalico.model.kinds import KINDS, UnknownKind, lookup_kind

EXPECTED = {
    "IPPool": ("ippools", False),
    "IPAMConfiguration": ("ipamconfigurations", False),
    "IPReservation": ("ipreservations", False),
    "Node": ("nodes", False),
    "BGPConfiguration": ("bgpconfigurations", False),
    "BGPPeer": ("bgppeers", False),
    "BGPFilter": ("bgpfilters", False),
    "FelixConfiguration": ("felixconfigurations", False),
    "ClusterInformation": ("clusterinformations", False),
    "Tier": ("tiers", False),
    "NetworkPolicy": ("networkpolicies", True),
    "GlobalNetworkPolicy": ("globalnetworkpolicies", False),
    "StagedNetworkPolicy": ("stagednetworkpolicies", True),
    "StagedGlobalNetworkPolicy": ("stagedglobalnetworkpolicies", False),
    "StagedKubernetesNetworkPolicy": ("stagedkubernetesnetworkpolicies", True),
    "Profile": ("profiles", False),
    "WorkloadEndpoint": ("workloadendpoints", True),
    "HostEndpoint": ("hostendpoints", False),
    "NetworkSet": ("networksets", True),
    "GlobalNetworkSet": ("globalnetworksets", False),
    "KubeControllersConfiguration": ("kubecontrollersconfigurations", False),
}


def test_every_kind_with_plural_and_scope() -> None:
    assert {kind: (info.plural, info.namespaced) for kind, info in KINDS.items()} == EXPECTED
    for kind, info in KINDS.items():
        assert kind == info.model.KIND
        assert info.model.model_fields["kind"].default == kind


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("ippool", "IPPool"),
        ("IPPools", "IPPool"),
        ("pool", "IPPool"),
        ("gnp", "GlobalNetworkPolicy"),
        ("globalnetworkpolicies", "GlobalNetworkPolicy"),
        ("np", "NetworkPolicy"),
        ("policy", "NetworkPolicy"),
        ("networkpolicy", "NetworkPolicy"),
        ("wep", "WorkloadEndpoint"),
        ("workloadendpoints", "WorkloadEndpoint"),
        ("hep", "HostEndpoint"),
        ("bgpconfig", "BGPConfiguration"),
        ("bgppeer", "BGPPeer"),
        ("bf", "BGPFilter"),
        ("BGPFilters", "BGPFilter"),
        ("felixconfig", "FelixConfiguration"),
        ("ipamconfig", "IPAMConfiguration"),
        ("clusterinfo", "ClusterInformation"),
        ("kcconfig", "KubeControllersConfiguration"),
        ("kubecontrollersconfiguration", "KubeControllersConfiguration"),
        ("profiles", "Profile"),
        ("tier", "Tier"),
        ("Tiers", "Tier"),
        ("node", "Node"),
        ("nodes", "Node"),
        ("netset", "NetworkSet"),
        ("networkset", "NetworkSet"),
        ("gns", "GlobalNetworkSet"),
        ("GlobalNetworkSet", "GlobalNetworkSet"),
        ("snp", "StagedNetworkPolicy"),
        ("spols", "StagedNetworkPolicy"),
        ("StagedNetworkPolicy", "StagedNetworkPolicy"),
        ("sgnp", "StagedGlobalNetworkPolicy"),
        ("stagedglobalnetworkpolicies", "StagedGlobalNetworkPolicy"),
        ("sknp", "StagedKubernetesNetworkPolicy"),
        ("skpol", "StagedKubernetesNetworkPolicy"),
        ("stagedkubernetespolicy", "StagedKubernetesNetworkPolicy"),
    ],
)
def test_lookup_by_kind_plural_or_alias(name: str, kind: str) -> None:
    assert lookup_kind(name).kind == kind


def test_unknown_kind_lists_the_valid_ones() -> None:
    with pytest.raises(UnknownKind) as caught:
        lookup_kind("widget")
    message = str(caught.value)
    assert "'widget'" in message
    for kind in KINDS:
        assert kind in message

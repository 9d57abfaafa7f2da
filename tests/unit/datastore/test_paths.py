"""Calico's etcd key layout: building keys and parsing them back."""

from __future__ import annotations

import pytest

from pycalico.datastore import paths
from pycalico.model.kinds import KINDS


def test_cluster_scoped_and_namespaced_resource_keys() -> None:
    assert (
        paths.resource_key(KINDS["IPPool"], "default-ipv4-ippool")
        == "/calico/resources/v3/projectcalico.org/ippools/default-ipv4-ippool"
    )
    assert (
        paths.resource_key(KINDS["WorkloadEndpoint"], "node1-k8s-pod-eth0", "default")
        == "/calico/resources/v3/projectcalico.org/workloadendpoints/default/node1-k8s-pod-eth0"
    )
    assert (
        paths.resource_key("networkpolicies", "allow", "ns1")
        == "/calico/resources/v3/projectcalico.org/networkpolicies/ns1/allow"
    )
    assert paths.resource_prefix(KINDS["NetworkPolicy"]) == (
        "/calico/resources/v3/projectcalico.org/networkpolicies/"
    )
    assert paths.resource_prefix(KINDS["NetworkPolicy"], "ns1") == (
        "/calico/resources/v3/projectcalico.org/networkpolicies/ns1/"
    )
    # A namespace means nothing for a cluster-scoped kind.
    assert paths.resource_prefix(KINDS["IPPool"], "ns1") == (
        "/calico/resources/v3/projectcalico.org/ippools/"
    )


def test_bgpfilters_keep_calicos_capitalised_segment() -> None:
    key = paths.resource_key("bgpfilters", "f1")
    assert key == "/calico/resources/v3/projectcalico.org/BGPFilters/f1"
    assert paths.parse_resource_key(key) == ("bgpfilters", None, "f1")


@pytest.mark.parametrize("info", list(KINDS.values()), ids=lambda info: info.kind)
def test_every_kind_round_trips(info: object) -> None:
    namespace = "ns" if info.namespaced else None
    key = paths.resource_key(info, "name-1", namespace)  # type: ignore[arg-type]
    assert paths.parse_resource_key(key) == (info.plural, namespace, "name-1")


def test_bad_names_and_keys_are_refused() -> None:
    with pytest.raises(paths.InvalidKey, match=r"metadata\.name"):
        paths.resource_key("ippools", "a/b")
    with pytest.raises(paths.InvalidKey, match=r"metadata\.namespace"):
        paths.resource_key("networkpolicies", "a")
    with pytest.raises(paths.InvalidKey):
        paths.parse_resource_key("/calico/ipam/v2/config")
    with pytest.raises(paths.InvalidKey):
        paths.parse_resource_key("/calico/resources/v3/projectcalico.org/ippools/a/b/c")


def test_ipam_keys() -> None:
    assert paths.block_key("10.65.0.0/26") == "/calico/ipam/v2/assignment/ipv4/block/10.65.0.0-26"
    assert paths.block_key("fd00::/122") == "/calico/ipam/v2/assignment/ipv6/block/fd00::-122"
    assert paths.parse_block_key("/calico/ipam/v2/assignment/ipv4/block/10.65.0.0-26") == (
        "10.65.0.0/26"
    )
    assert paths.block_prefix(4) == "/calico/ipam/v2/assignment/ipv4/block/"
    key = paths.affinity_key("node-1", "10.65.0.64/26")
    assert key == "/calico/ipam/v2/host/node-1/ipv4/block/10.65.0.64-26"
    assert paths.parse_affinity_key(key) == paths.AffinityKey("host", "node-1", "10.65.0.64/26")
    assert paths.affinity_prefix("node-1") == "/calico/ipam/v2/host/node-1/"
    assert paths.handle_key("k8s-pod-network.abc") == "/calico/ipam/v2/handle/k8s-pod-network.abc"
    assert paths.parse_handle_key("/calico/ipam/v2/handle/k8s-pod-network.abc") == (
        "k8s-pod-network.abc"
    )
    assert paths.IPAM_CONFIG_KEY == "/calico/ipam/v2/config"
    with pytest.raises(paths.InvalidKey):
        paths.parse_block_key("/calico/ipam/v2/handle/x")


def test_felix_status_keys() -> None:
    assert paths.felix_status_key("node-1") == "/calico/felix/v2/no-region/host/node-1/status"
    assert paths.felix_last_reported_status_key("node-1", region="eu") == (
        "/calico/felix/v2/region-eu/host/node-1/last_reported_status"
    )
    assert paths.workload_endpoint_status_key("node-1", "k8s", "default/pod-a", "eth0") == (
        "/calico/felix/v2/no-region/host/node-1/workload/k8s/default%2fpod-a/endpoint/eth0"
    )
    assert paths.host_endpoint_status_key("node-1", "hep1") == (
        "/calico/felix/v2/no-region/host/node-1/endpoint/hep1"
    )

"""explain for host endpoints: stages (untracked, pre-DNAT, normal, forward), failsafe ports,
DefaultEndpointToHostAction and the node's FelixConfiguration settings.

Pure: a ``Cluster`` of built resources, answers read from ``explain``.  That each stage's
semantics are those of the rendered nft chains is checked in ``test_explain_rules`` (the
chains' text) and ``tests/integration/felix/test_explain_host_felix.py`` (the kernel).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from pycalico.felix.calc.explain import Cluster, ExplainError, explain
from pycalico.felix.rules.model import FailsafePort, RenderConfig
from pycalico.model.node import Node
from pycalico.testing import felix_calc as build

NODE_IP = "192.168.77.1"
OTHER_NODE_IP = "192.168.78.1"
OUTSIDE = "192.0.2.9"
POD = "10.65.1.1"


def hep(name: str = "node-eth1", node: str = build.HOSTNAME, ip: str = NODE_IP, **kw: Any) -> Any:
    return build.host_endpoint(name, node=node, ips=[ip], labels={"host": "yes"}, **kw)


def gnp(name: str, **spec: Any) -> Any:
    return build.global_policy(name, selector="host == 'yes'", **spec)


ALLOW_8080 = gnp(
    "allow-8080",
    types=["Ingress"],
    ingress=[{"action": "Allow", "protocol": "TCP", "destination": {"ports": [8080]}}],
)
DENY_ALL_IN = gnp("deny-all", types=["Ingress"], ingress=[{"action": "Deny"}])


def cluster(*resources: Any, **kw: Any) -> Cluster:
    heps = [r for r in resources if r.kind == "HostEndpoint"]
    weps = [r for r in resources if r.kind == "WorkloadEndpoint"]
    policies = [r for r in resources if r.kind in ("GlobalNetworkPolicy", "NetworkPolicy")]
    profiles = [r for r in resources if r.kind == "Profile"]
    kw.setdefault("default_config", RenderConfig())
    return Cluster(
        workload_endpoints=weps,
        host_endpoints=heps,
        policies=policies,
        profiles=[build.namespace_profile("default"), *profiles],
        **kw,
    )


def stages(side: Any) -> list[tuple[str, str]]:
    return [(s.name, s.trace.verdict) for s in side.stages]


def test_an_ip_of_a_host_endpoint_is_explained_as_that_host_endpoint() -> None:
    answer = explain(cluster(hep(), ALLOW_8080), OUTSIDE, NODE_IP, "TCP", 8080)
    assert answer.verdict == "allow"
    assert answer.egress is None
    side = answer.ingress
    assert side is not None and side.kind == "host"
    assert side.endpoint == "hostendpoint/node-eth1"
    assert stages(side) == [("normal", "allow")]
    assert "allow-8080" in side.trace.reason
    assert explain(cluster(hep(), ALLOW_8080), OUTSIDE, NODE_IP, "TCP", 8081).verdict == "deny"


def test_hostendpoint_name_as_an_end_and_unknown_names() -> None:
    answer = explain(cluster(hep(), ALLOW_8080), OUTSIDE, "hostendpoint/node-eth1", "TCP", 8080)
    assert answer.destination.address == NODE_IP and answer.verdict == "allow"
    with pytest.raises(ExplainError, match="no HostEndpoint"):
        explain(cluster(hep()), OUTSIDE, "hostendpoint/nope")


def test_host_endpoint_without_policy_denies_all_but_failsafe_ports() -> None:
    world = cluster(hep())
    denied = explain(world, OUTSIDE, NODE_IP, "TCP", 8080)
    assert denied.verdict == "deny"
    assert denied.ingress is not None
    assert denied.ingress.trace.reason.startswith("no profile allowed it")
    ssh = explain(world, OUTSIDE, NODE_IP, "TCP", 22)
    assert ssh.verdict == "allow"
    assert ssh.ingress is not None and ssh.ingress.stages[-1].failsafe.startswith("tcp 22")
    # Output: failsafe outbound (etcd 2379) allowed, others denied by default.
    assert explain(world, NODE_IP, OUTSIDE, "TCP", 2379).verdict == "allow"
    assert explain(world, NODE_IP, OUTSIDE, "TCP", 9999).verdict == "deny"
    # A host endpoint with a profile that allows: its profile decides.
    allowing = cluster(hep(profiles=["projectcalico-default-allow"]),
                       build.profile("projectcalico-default-allow",
                                     ingress=[{"action": "Allow"}], egress=[{"action": "Allow"}]))  # fmt: skip
    assert explain(allowing, OUTSIDE, NODE_IP, "TCP", 8080).verdict == "allow"


def test_failsafe_port_is_open_despite_deny_all_and_follows_felix_configuration() -> None:
    world = cluster(hep(), DENY_ALL_IN)
    assert explain(world, OUTSIDE, NODE_IP, "TCP", 22).verdict == "allow"
    assert explain(world, OUTSIDE, NODE_IP, "TCP", 8080).verdict == "deny"
    no_failsafe = replace(RenderConfig(), failsafe_inbound=(FailsafePort("tcp", 8080),))
    configured = cluster(hep(), DENY_ALL_IN, render_configs={build.HOSTNAME: no_failsafe})
    assert explain(configured, OUTSIDE, NODE_IP, "TCP", 22).verdict == "deny"
    assert explain(configured, OUTSIDE, NODE_IP, "TCP", 8080).verdict == "allow"
    netted = replace(RenderConfig(), failsafe_inbound=(FailsafePort("tcp", 22, "10.0.0.0/8"),))
    restricted = cluster(hep(), DENY_ALL_IN, default_config=netted)
    assert explain(restricted, OUTSIDE, NODE_IP, "TCP", 22).verdict == "deny"


def test_untracked_then_pre_dnat_then_normal() -> None:
    untracked_allow = gnp(
        "untracked-allow", doNotTrack=True, applyOnForward=True, types=["Ingress"],
        ingress=[{"action": "Allow", "protocol": "TCP", "destination": {"ports": [7000]}}],
    )  # fmt: skip
    pre_dnat_deny = gnp(
        "pre-dnat-deny", preDNAT=True, applyOnForward=True, types=["Ingress"],
        ingress=[{"action": "Deny", "protocol": "TCP", "destination": {"ports": [7000, 7001]}}],
    )  # fmt: skip
    world = cluster(hep(), untracked_allow, pre_dnat_deny, ALLOW_8080)
    untracked = explain(world, OUTSIDE, NODE_IP, "TCP", 7000).ingress
    assert untracked is not None and untracked.trace.verdict == "allow"
    assert stages(untracked) == [("untracked", "allow")]
    assert "untracked policy" in untracked.trace.reason
    pre = explain(world, OUTSIDE, NODE_IP, "TCP", 7001).ingress
    assert pre is not None and stages(pre) == [
        ("untracked", "none"), ("preDNAT", "deny")
    ]  # fmt: skip
    normal = explain(world, OUTSIDE, NODE_IP, "TCP", 8080).ingress
    assert normal is not None
    assert stages(normal) == [("untracked", "none"), ("preDNAT", "none"), ("normal", "allow")]
    # The failsafe port goes through the untracked and pre-DNAT stages untouched.
    deny_all_untracked = gnp("untracked-deny", doNotTrack=True, applyOnForward=True,
                             types=["Ingress"], ingress=[{"action": "Deny"}])  # fmt: skip
    ssh = explain(cluster(hep(), deny_all_untracked), OUTSIDE, NODE_IP, "TCP", 22).ingress
    assert ssh is not None and stages(ssh) == [("untracked", "none"), ("normal", "allow")]
    assert ssh.stages[0].failsafe.startswith("tcp 22")


def test_untracked_egress_and_normal_egress_of_the_host() -> None:
    egress_allow = gnp("egress-9999", types=["Egress"],
                       egress=[{"action": "Allow", "protocol": "TCP",
                                "destination": {"ports": [9999]}}])  # fmt: skip
    untracked_deny = gnp("untracked-out", doNotTrack=True, applyOnForward=True, types=["Egress"],
                         egress=[{"action": "Deny", "destination": {"nets": [OUTSIDE + "/32"]}}])  # fmt: skip
    world = cluster(hep(), egress_allow)
    answer = explain(world, NODE_IP, OUTSIDE, "TCP", 9999)
    assert answer.verdict == "allow" and answer.egress is not None
    assert answer.egress.kind == "host" and answer.ingress is None
    world = cluster(hep(), egress_allow, untracked_deny)
    denied = explain(world, NODE_IP, OUTSIDE, "TCP", 9999).egress
    assert denied is not None and stages(denied) == [("untracked", "deny")]


def test_workload_to_its_own_host_is_default_endpoint_to_host_action() -> None:
    pod = build.workload("pod", ips=[POD], labels={"role": "web"})
    world = cluster(hep(profiles=["projectcalico-default-allow"]), pod)
    answer = explain(world, POD, NODE_IP, "TCP", 8080)
    assert answer.egress is not None and answer.egress.trace.verdict == "allow"
    assert answer.ingress is not None and answer.ingress.kind == "workload-to-host"
    assert answer.verdict == "deny"  # Felix's default: Drop
    assert "DefaultEndpointToHostAction Drop" in answer.ingress.trace.reason
    for action, verdict in (("Accept", "allow"), ("Return", "allow"), ("Drop", "deny")):
        config = replace(RenderConfig(), default_endpoint_to_host_action=action)  # type: ignore[arg-type]
        configured = cluster(hep(), pod, render_configs={build.HOSTNAME: config})
        assert explain(configured, POD, NODE_IP, "TCP", 8080).verdict == verdict, action
    # The workload's egress still comes first.
    deny_egress = build.global_policy("no-egress", selector="role == 'web'", types=["Egress"],
                                      egress=[{"action": "Deny"}])  # fmt: skip
    accept = replace(RenderConfig(), default_endpoint_to_host_action="Accept")
    denied = cluster(hep(), pod, deny_egress, default_config=accept)
    assert explain(denied, POD, NODE_IP, "TCP", 8080).verdict == "deny"


def test_host_to_local_workload_is_accepted_before_policy() -> None:
    pod = build.workload("pod", ips=[POD], labels={"role": "web"})
    deny_in = build.global_policy("no-ingress", selector="role == 'web'", types=["Ingress"],
                                  ingress=[{"action": "Deny"}])  # fmt: skip
    answer = explain(cluster(hep(), pod, deny_in), NODE_IP, POD, "TCP", 80)
    assert answer.verdict == "allow"
    assert answer.ingress is not None and answer.ingress.kind == "host-to-workload"


def test_forwarded_traffic_meets_the_nodes_host_endpoint_forward_policy() -> None:
    pod = build.workload("pod", ips=[POD], labels={"role": "web"})
    # No applyOnForward policy: forwarded traffic is not policed by the host endpoint.
    plain = explain(cluster(hep(), pod), OUTSIDE, POD, "TCP", 80)
    assert plain.verdict == "allow"
    assert plain.forward_in is not None and stages(plain.forward_in) == [("forward", "allow")]
    on_forward = gnp("fwd-deny-80", applyOnForward=True, types=["Ingress", "Egress"],
                     ingress=[{"action": "Deny", "protocol": "TCP",
                               "destination": {"ports": [80]}}],
                     egress=[{"action": "Deny", "protocol": "TCP",
                              "destination": {"ports": [443]}}])  # fmt: skip
    world = cluster(hep(), pod, on_forward)
    denied = explain(world, OUTSIDE, POD, "TCP", 80)
    assert denied.verdict == "deny" and denied.forward_in is not None
    assert denied.forward_in.kind == "forward" and denied.forward_in.trace.verdict == "deny"
    assert denied.ingress is not None and denied.ingress.trace.verdict == "allow"
    out = explain(world, POD, OUTSIDE, "TCP", 443)
    assert out.forward_out is not None and out.forward_out.trace.verdict == "deny"
    # Pod to pod on one node never crosses the host endpoint.
    other = build.workload("other", ips=["10.65.1.2"], labels={"role": "client"})
    local = explain(cluster(hep(), pod, other, on_forward), "10.65.1.2", POD, "TCP", 80)
    assert local.forward_in is None and local.forward_out is None and local.verdict == "allow"


def test_several_host_endpoints_on_a_node_leave_forward_policy_unexplained() -> None:
    pod = build.workload("pod", ips=[POD])
    world = cluster(hep(), hep("node-eth2", ip="192.168.79.1", interface="eth2"), pod)
    answer = explain(world, OUTSIDE, POD, "TCP", 80)
    assert answer.forward_in is None
    assert any("several host endpoints" in note for note in answer.notes)


def test_host_to_host_on_two_nodes_is_output_then_input() -> None:
    there = hep("node-b-eth1", node="node-b", ip=OTHER_NODE_IP)
    world = cluster(hep(), there, ALLOW_8080,
                    gnp("egress-all", types=["Egress"], egress=[{"action": "Allow"}]))  # fmt: skip
    answer = explain(world, NODE_IP, OTHER_NODE_IP, "TCP", 8080)
    assert answer.egress is not None and answer.egress.node == build.HOSTNAME
    assert answer.ingress is not None and answer.ingress.node == "node-b"
    assert answer.verdict == "allow"


def test_vxlan_port_and_allow_flags_follow_the_nodes_config() -> None:
    pod = build.workload("pod", ips=[POD], profiles=["kns.default"])
    world = cluster(pod, default_config=replace(RenderConfig(), vxlan_port=4790))
    dropped = explain(world, POD, OUTSIDE, "UDP", 4790)
    assert dropped.egress is not None and "4790" in dropped.egress.trace.reason
    assert explain(world, POD, OUTSIDE, "UDP", 4789).egress.trace.pre_policy == ()  # type: ignore[union-attr]
    allowed = replace(RenderConfig(), allow_vxlan_packets_from_workloads=True,
                      allow_ipip_packets_from_workloads=True)  # fmt: skip
    world = cluster(pod, default_config=allowed)
    assert explain(world, POD, OUTSIDE, "UDP", 4789).egress.trace.pre_policy == ()  # type: ignore[union-attr]


def test_a_nodes_own_address_without_host_endpoint() -> None:
    """A pod to its own node's address: DefaultEndpointToHostAction, host endpoint or not;
    ``node/<name>`` names the node's address; another node's address has no policy."""
    node = Node.model_validate(
        {"metadata": {"name": build.HOSTNAME}, "spec": {"bgp": {"ipv4Address": "192.168.5.1/24"}}}
    )
    pod = build.workload("pod", ips=[POD])
    world = cluster(pod, nodes=[node])
    answer = explain(world, POD, "192.168.5.1", "TCP", 8080)
    assert answer.verdict == "deny" and answer.ingress is not None
    assert answer.ingress.kind == "workload-to-host"
    assert answer.ingress.endpoint == f"node/{build.HOSTNAME}"
    assert answer.destination.label == f"192.168.5.1 (node {build.HOSTNAME}, no host endpoint)"
    named = explain(world, POD, f"node/{build.HOSTNAME}", "TCP", 8080)
    assert named.destination.address == "192.168.5.1" and named.verdict == "deny"
    # The host to its own pod: accepted before policy.
    assert explain(world, f"node/{build.HOSTNAME}", POD).ingress.kind == "host-to-workload"  # type: ignore[union-attr]
    with pytest.raises(ExplainError, match="no Node"):
        explain(world, POD, "node/nope")
    # With its host endpoint holding the address, the node name resolves to it.
    held = cluster(pod, hep(ip="192.168.5.1"), nodes=[node])
    assert explain(held, OUTSIDE, f"node/{build.HOSTNAME}").ingress.kind == "host"  # type: ignore[union-attr]


def test_an_address_of_a_nodes_interface_is_that_interfaces_host_endpoint() -> None:
    """By interface: the Node lists eth1's addresses; the host endpoint naming eth1 (or the
    wildcard one) is the end, though its expectedIPs do not list the address."""
    node = Node.model_validate(
        {"metadata": {"name": build.HOSTNAME},
         "spec": {"interfaces": [{"name": "eth1", "addresses": ["192.168.77.5/24"]},
                                 {"name": "eth2", "addresses": ["192.168.79.5"]}]}}
    )  # fmt: skip
    world = cluster(hep(), ALLOW_8080, nodes=[node])  # hep(): interface eth0, 192.168.77.1
    named = cluster(hep(interface="eth1"), ALLOW_8080, nodes=[node])
    answer = explain(named, OUTSIDE, "192.168.77.5", "TCP", 8081)
    assert answer.ingress is not None and answer.ingress.kind == "host"
    assert answer.verdict == "deny"
    assert any("interface eth1" in note for note in answer.notes)
    # eth2 has no host endpoint and there is no wildcard: no policy (eth0's does not apply).
    assert explain(world, OUTSIDE, "192.168.79.5", "TCP", 8081).ingress is None
    wildcard = cluster(hep(interface="*"), ALLOW_8080, nodes=[node])
    assert explain(wildcard, OUTSIDE, "192.168.79.5", "TCP", 8081).verdict == "deny"


def test_a_host_endpoint_without_interface_name_is_not_enforced_here() -> None:
    """This Felix binds host endpoints by interfaceName only (as its dataplane does)."""
    unbound = build.host_endpoint("unbound", ips=[NODE_IP], labels={"host": "yes"}, interface="")
    answer = explain(cluster(unbound, DENY_ALL_IN), OUTSIDE, NODE_IP, "TCP", 8080)
    assert answer.ingress is None and answer.verdict == "allow"
    assert answer.destination.host_node == build.HOSTNAME
    assert any("no interfaceName" in note for note in answer.notes)

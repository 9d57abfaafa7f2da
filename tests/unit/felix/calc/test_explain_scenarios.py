"""explain's verdicts equal the reachability the Felix policy matrix tests expect from packets.

Two tables: the resource scenarios of ``test_felix_daemon`` (real Felix from etcd: here the same
resources through ``explain``), and the message-level tests of ``test_dataplane_netns`` (the
dataplane fed with messages: here the same messages through ``verdicts.evaluate_direction``).
No root needed; the packets are the integration tests' business.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from tests.integration.felix.test_dataplane_netns import full_matrix
from tests.integration.felix.test_felix_daemon import ALL_PROBES, PODS, SCENARIO_PODS, SCENARIOS

from pycalico.felix import messages as m
from pycalico.felix.calc.explain import Cluster, explain, explain_side
from pycalico.felix.calc.verdicts import Packet, evaluate_direction
from pycalico.felix.rules.model import RenderConfig
from pycalico.model.meta import Resource
from pycalico.model.policy import GlobalNetworkPolicy, NetworkPolicy, Tier
from pycalico.testing import felix_calc as build
from pycalico.testing.connectivity import Probe

NODE = "felix-node"


def scenario_cluster(resources: Sequence[Resource]) -> Cluster:
    pods = [
        build.workload(f"pod-{key}", namespace=ns, node=NODE, labels=labels, ips=[PODS[key]])
        for key, (ns, labels) in SCENARIO_PODS.items()
    ]
    return Cluster(
        workload_endpoints=pods,
        policies=[r for r in resources if isinstance(r, NetworkPolicy | GlobalNetworkPolicy)],
        profiles=[build.namespace_profile("default"), build.namespace_profile("other")],
        tiers=[r for r in resources if isinstance(r, Tier)],
        default_config=RenderConfig(),
    )


def pod(key: str) -> str:
    return f"{SCENARIO_PODS[key][0]}/pod-{key}"


def verdicts(cluster: Cluster, probes: Sequence[Probe]) -> dict[Probe, bool]:
    out = {}
    for probe in probes:
        port = probe.port if probe.protocol != "icmp" else None
        answer = explain(cluster, pod(probe.source), pod(probe.destination), probe.protocol, port)
        out[probe] = answer.verdict == "allow"
    return out


def test_baseline_every_probe_is_allowed_by_the_namespace_profiles() -> None:
    assert all(verdicts(scenario_cluster([]), ALL_PROBES).values())


@pytest.mark.parametrize(("name", "resources", "blocked"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_felix_daemon_scenario(
    name: str, resources: list[Resource], blocked: Callable[[Probe], bool]
) -> None:
    expected = {probe: not blocked(probe) for probe in ALL_PROBES}
    actual = verdicts(scenario_cluster(resources), ALL_PROBES)
    wrong = {str(p): (actual[p], expected[p]) for p in ALL_PROBES if actual[p] != expected[p]}
    assert not wrong, f"{name}: probe -> (explain, expected): {wrong}"


def test_a_scenario_that_must_fail_does() -> None:
    """The check can fail: a deny-all policy is not what the baseline expects."""
    deny = build.global_policy("deny", selector="all()", ingress=[{"action": "Deny"}])
    actual = verdicts(scenario_cluster([deny]), ALL_PROBES)
    assert not any(actual.values())


# --- test_dataplane_netns: the same messages, evaluated -------------------------------------

NETNS_PODS = {"a": "10.65.0.1", "b": "10.65.0.2", "c": "10.65.0.3"}
ALLOW = m.ResolvedRule("allow")
PROFILE = m.ProfileID("kns.default")


def set_of(*keys: str) -> tuple[str, frozenset[str]]:
    return "s:" + "".join(keys), frozenset(f"{NETNS_PODS[k]}/32" for k in keys)


def tier(name: str, *policies: m.PolicyID, default: str = "deny") -> m.TierInfo:
    return m.TierInfo(name, default, tuple(policies), ())  # type: ignore[arg-type]


class Dataplane:
    """The messages a netns test sends, per pod: tiers, profiles, policies, profiles, sets."""

    def __init__(self) -> None:
        self.tiers: dict[str, tuple[m.TierInfo, ...]] = {}
        self.profiles: dict[str, tuple[m.ProfileID, ...]] = {}
        self.policies: dict[
            m.PolicyID, tuple[tuple[m.ResolvedRule, ...], tuple[m.ResolvedRule, ...]]
        ] = {}
        self.profile_rules = {PROFILE: ((ALLOW,), (ALLOW,))}
        self.sets: dict[str, frozenset[str]] = {}

    def allowed(self, src: str, dst: str, port: int) -> bool:
        packet = Packet(NETNS_PODS[src], NETNS_PODS[dst], "tcp", 40000, port)
        return all(
            self._direction(key, ingress, packet) for key, ingress in ((src, False), (dst, True))
        )

    def _direction(self, key: str, ingress: bool, packet: Packet) -> bool:
        pick = 0 if ingress else 1
        trace = evaluate_direction(
            ingress=ingress,
            tiers=self.tiers.get(key, ()),
            profile_ids=self.profiles.get(key, (PROFILE,)),
            policy_rules=lambda p: self.policies.get(p, ((), ()))[pick],
            profile_rules=lambda p: self.profile_rules.get(p, ((), ()))[pick],
            packet=packet,
            sets=self.sets,
        )
        return trace.verdict == "allow"

    def matrix(self, ports: tuple[int, ...] = (80, 81)) -> dict[Probe, bool]:
        return {
            probe: self.allowed(probe.source, probe.destination, probe.port)
            for probe in full_matrix(ports=ports)
        }


def test_netns_deny_ingress_from_one_source_blocks_exactly_it() -> None:
    plane = Dataplane()
    attacker, members = set_of("a")
    plane.sets[attacker] = members
    policy = m.PolicyID("default", "deny-attacker")
    plane.policies[policy] = ((m.ResolvedRule("deny", source_ip_set_ids=(attacker,)), ALLOW), ())
    plane.tiers["b"] = (tier("default", policy),)
    assert plane.matrix() == full_matrix({("a", "b", 80), ("a", "b", 81)})


def test_netns_pass_goes_to_the_next_tier() -> None:
    plane = Dataplane()
    from_c, members = set_of("c")
    plane.sets[from_c] = members
    passer, web = m.PolicyID("security", "pass-c"), m.PolicyID("default", "web-only")
    plane.policies[passer] = ((m.ResolvedRule("pass", source_ip_set_ids=(from_c,)),), ())
    plane.policies[web] = (
        (m.ResolvedRule("allow", protocol="tcp", destination_ports=(m.PortRange(80, 80),)),),
        (),
    )
    plane.tiers["b"] = (tier("security", passer), tier("default", web))
    assert plane.matrix() == full_matrix({("a", "b", 80), ("a", "b", 81), ("c", "b", 81)})


def test_netns_tier_default_action_pass_and_profile_fallback() -> None:
    plane = Dataplane()
    from_a, members = set_of("a")
    plane.sets[from_a] = members
    noop, only_a = m.PolicyID("observe", "log-only"), m.ProfileID("only-a")
    plane.policies[noop] = ((m.ResolvedRule("log"),), ())
    plane.profile_rules[only_a] = (
        (m.ResolvedRule("allow", source_ip_set_ids=(from_a,)),),
        (ALLOW,),
    )
    plane.tiers["b"] = (tier("observe", noop, default="pass"),)
    plane.profiles["b"] = (only_a,)
    assert plane.matrix() == full_matrix({("c", "b", 80), ("c", "b", 81)})


def test_netns_deny_before_allow_by_order() -> None:
    plane = Dataplane()
    deny_80, allow_all = m.PolicyID("default", "deny-80"), m.PolicyID("default", "allow-all")
    plane.policies[deny_80] = (
        (m.ResolvedRule("deny", protocol="tcp", destination_ports=(m.PortRange(80, 80),)),),
        (),
    )
    plane.policies[allow_all] = ((ALLOW,), ())
    plane.tiers["b"] = (tier("default", deny_80, allow_all),)
    assert plane.matrix() == full_matrix({("a", "b", 80), ("c", "b", 80)})
    plane.tiers["b"] = (tier("default", allow_all, deny_80),)
    assert plane.matrix() == full_matrix()


def test_netns_egress_rule_with_port_range_and_nets() -> None:
    plane = Dataplane()
    egress = m.PolicyID("default", "egress")
    rule = m.ResolvedRule(
        "allow",
        protocol="tcp",
        destination_nets=("10.65.0.0/24",),
        not_destination_nets=(f"{NETNS_PODS['c']}/32",),
        destination_ports=(m.PortRange(79, 80),),
    )
    plane.policies[egress] = ((), (rule,))
    plane.tiers["a"] = (m.TierInfo("default", "deny", (), (egress,)),)
    assert plane.matrix() == full_matrix({("a", "b", 81), ("a", "c", 80), ("a", "c", 81)})


# --- test_dataplane_netns: what the endpoint chain drops before any policy --------------------


def netns_cluster(**spoofed: list[str]) -> Cluster:
    pods = []
    for key, ip in NETNS_PODS.items():
        pod = build.workload(f"pod-{key}", ips=[ip])
        if key in spoofed:
            spec = pod.spec.model_copy(update={"allow_spoofed_source_prefixes": spoofed[key]})
            pod = pod.model_copy(update={"spec": spec})
        pods.append(pod)
    return Cluster(
        workload_endpoints=pods,
        profiles=[build.namespace_profile("default")],
        default_config=RenderConfig(),
    )


def test_netns_vxlan_from_workloads_is_dropped() -> None:
    world = netns_cluster()
    denied = explain(world, "default/pod-a", "default/pod-b", "UDP", 4789)
    assert denied.verdict == "deny"
    assert denied.egress is not None and "VXLAN" in denied.egress.trace.reason
    assert explain(world, "default/pod-a", "default/pod-b", "UDP", 4790).verdict == "allow"


def test_netns_forged_source_address_is_dropped_unless_allowed() -> None:
    forged = Packet("10.65.0.99", NETNS_PODS["b"], "tcp", 40000, 80)
    world = netns_cluster()
    pod_a = world.workload_endpoints[0]
    side = explain_side(world, pod_a, forged, ingress=False)
    assert side.trace.verdict == "deny" and "anti-spoofing" in side.trace.reason
    allowed = netns_cluster(a=["10.65.0.99/32"])
    side = explain_side(allowed, allowed.workload_endpoints[0], forged, ingress=False)
    assert side.trace.verdict == "allow"

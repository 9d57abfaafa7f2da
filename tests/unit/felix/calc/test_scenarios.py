"""Calc-graph scenarios in Calico policy terms: what the dataplane is told for each situation."""

from __future__ import annotations

from pycalico.felix.messages import PolicyID, PortRange, ProfileID
from pycalico.testing.felix_calc import (
    Harness,
    global_network_set,
    global_policy,
    host_endpoint,
    namespace_profile,
    network_set,
    policy,
    profile,
    service_account_profile,
    tier,
    workload,
)

ALLOW_FROM_WEB = [{"action": "Allow", "source": {"selector": "app == 'web'"}}]


def test_namespaced_policy_selects_only_its_own_namespace(harness: Harness) -> None:
    harness.put(
        workload("a1", namespace="a", labels={"app": "x"}, ips=["10.0.0.1"]),
        workload("b1", namespace="b", labels={"app": "x"}, ips=["10.0.0.2"]),
        policy("p", namespace="a", selector="app == 'x'", ingress=[{"action": "Allow"}]),
    )
    assert harness.ingress("a1", "a") == [("default", ["a/p"])]
    assert harness.ingress("b1", "b") == []
    assert PolicyID("default", "a/p", "NetworkPolicy") in harness.dataplane.policies


def test_rule_selector_of_namespaced_policy_stays_in_namespace(harness: Harness) -> None:
    harness.put(
        workload("a1", namespace="a", labels={"app": "web"}, ips=["10.0.0.1"]),
        workload("b1", namespace="b", labels={"app": "web"}, ips=["10.0.0.2"]),
        policy("p", namespace="a", selector="all()", ingress=ALLOW_FROM_WEB),
    )
    assert harness.rule_members({"selector": "app == 'web'"}, "a") == {"10.0.0.1"}


def test_rule_namespace_selector_uses_namespace_labels_from_profiles(harness: Harness) -> None:
    harness.put(
        namespace_profile("prod", {"env": "prod"}),
        namespace_profile("dev", {"env": "dev"}),
        workload("p1", namespace="prod", labels={"app": "web"}, ips=["10.0.1.1"]),
        workload("d1", namespace="dev", labels={"app": "web"}, ips=["10.0.2.1"]),
        global_policy(
            "from-prod",
            selector="all()",
            ingress=[{"action": "Allow", "source": {"namespaceSelector": "env == 'prod'"}}],
        ),
    )
    assert harness.members("pcns.env == 'prod'") == {"10.0.1.1"}
    # Relabelling the namespace (its profile) moves its pods into the set.
    harness.put(namespace_profile("dev", {"env": "prod"}))
    assert harness.members("pcns.env == 'prod'") == {"10.0.1.1", "10.0.2.1"}


def test_namespace_selector_global_matches_only_non_namespaced_objects(harness: Harness) -> None:
    harness.put(
        workload("p1", ips=["10.0.0.1"]),
        global_network_set("outside", ["192.0.2.0/24"], kind="external"),
        global_policy(
            "g",
            selector="all()",
            ingress=[{"action": "Allow", "source": {"namespaceSelector": "global()"}}],
        ),
    )
    assert harness.members("!has(projectcalico.org/namespace)") == {"192.0.2.0/24"}


def test_service_account_selectors(harness: Harness) -> None:
    harness.put(
        service_account_profile("default", "api", {"role": "backend"}),
        workload("api", labels={}, ips=["10.0.0.1"], service_account="api"),
        workload("ui", labels={}, ips=["10.0.0.2"], service_account="ui"),
        global_policy(
            "sa", serviceAccountSelector="role == 'backend'", ingress=[{"action": "Allow"}]
        ),
        policy(
            "from-ui",
            selector="all()",
            ingress=[{"action": "Allow", "source": {"serviceAccounts": {"names": ["ui"]}}}],
        ),
    )
    assert harness.ingress("api") == [("default", ["default/from-ui", "sa"])]
    assert harness.ingress("ui") == [("default", ["default/from-ui"])]
    entity = {"serviceAccounts": {"names": ["ui"]}}
    assert harness.rule_members(entity, "default") == {"10.0.0.2"}


def test_profile_labels_are_inherited_and_the_endpoint_label_wins(harness: Harness) -> None:
    harness.put(
        profile("shared", labels_to_apply={"team": "blue", "app": "from-profile"}),
        workload("w1", labels={"app": "own"}, ips=["10.0.0.1"], profiles=["shared"]),
        global_policy("blue", selector="team == 'blue'", ingress=[{"action": "Allow"}]),
        global_policy(
            "profile-app", selector="app == 'from-profile'", ingress=[{"action": "Allow"}]
        ),
    )
    assert harness.ingress("w1") == [("default", ["blue"])]
    harness.put(profile("shared", labels_to_apply={"team": "red"}))
    assert harness.ingress("w1") == []
    assert PolicyID("default", "blue", "GlobalNetworkPolicy") not in harness.dataplane.policies


def test_pcns_labels_on_the_endpoint_itself_are_ignored(harness: Harness) -> None:
    harness.put(
        workload("spoof", labels={"pcns.env": "prod"}, ips=["10.0.0.1"]),
        global_policy(
            "g",
            selector="all()",
            ingress=[{"action": "Allow", "source": {"namespaceSelector": "env == 'prod'"}}],
        ),
    )
    assert harness.members("pcns.env == 'prod'") == set()


def test_tiers_order_default_actions_and_policy_order(harness: Harness) -> None:
    harness.put(
        tier("security", order=100, default_action="Pass"),
        tier("platform", order=200),
        tier("zz-unordered"),
        tier("aa-unordered"),
        workload("w", labels={"app": "x"}, ips=["10.0.0.1"]),
        global_policy("d-last", selector="all()", ingress=[{"action": "Allow"}]),
        global_policy("d-b", order=10, selector="all()", ingress=[{"action": "Allow"}]),
        global_policy("d-a", order=10, selector="all()", ingress=[{"action": "Allow"}]),
        global_policy("d-first", order=1, selector="all()", ingress=[{"action": "Pass"}]),
        global_policy(
            "security.s", tier="security", selector="all()", ingress=[{"action": "Pass"}]
        ),
        global_policy(
            "platform.p", tier="platform", selector="all()", ingress=[{"action": "Deny"}]
        ),
        global_policy("zz-unordered.z", tier="zz-unordered", selector="all()", ingress=[]),
        global_policy("aa-unordered.a", tier="aa-unordered", selector="all()", ingress=[]),
    )
    assert harness.ingress("w") == [
        ("security", ["security.s"]),
        ("platform", ["platform.p"]),
        ("default", ["d-first", "d-a", "d-b", "d-last"]),
        ("aa-unordered", ["aa-unordered.a"]),
        ("zz-unordered", ["zz-unordered.z"]),
    ]
    actions = {t.name: t.default_action for t in harness.tiers("w")}
    assert actions["security"] == "pass" and actions["platform"] == "deny"
    pass_rule = harness.dataplane.policies[PolicyID("default", "d-first")].inbound_rules[0]
    assert pass_rule.action == "pass"
    # A tier order change re-sorts the endpoint's tiers.
    harness.put(tier("platform", order=50))
    assert [name for name, _ in harness.ingress("w")][:2] == ["platform", "security"]


def test_policies_of_a_missing_tier_are_skipped_until_it_exists(harness: Harness) -> None:
    harness.put(
        workload("w", ips=["10.0.0.1"]),
        global_policy("later.p", tier="later", selector="all()", ingress=[{"action": "Deny"}]),
        global_policy("d", selector="all()", ingress=[{"action": "Allow"}]),
    )
    assert harness.ingress("w") == [("default", ["d"])]
    harness.put(tier("later", order=10))
    assert harness.ingress("w") == [("later", ["later.p"]), ("default", ["d"])]
    harness.delete(tier("later"))
    assert harness.ingress("w") == [("default", ["d"])]


def test_policy_types_split_directions(harness: Harness) -> None:
    harness.put(
        workload("w", ips=["10.0.0.1"]),
        global_policy("in", selector="all()", ingress=[{"action": "Allow"}]),
        global_policy("out", selector="all()", egress=[{"action": "Allow"}]),
        global_policy("both", selector="all()", types=["Ingress", "Egress"]),
    )
    assert harness.ingress("w") == [("default", ["both", "in"])]
    assert harness.egress("w") == [("default", ["both", "out"])]
    both = harness.dataplane.policies[PolicyID("default", "both")]
    assert both.inbound_rules == () and both.outbound_rules == ()


def test_policy_without_types_governs_both_directions(harness: Harness) -> None:
    from pycalico.model.policy import GlobalNetworkPolicy

    raw = GlobalNetworkPolicy.model_validate(
        {
            "metadata": {"name": "legacy"},
            "spec": {"selector": "all()", "ingress": [{"action": "Allow"}]},
        }
    )
    harness.put(workload("w", ips=["10.0.0.1"]), raw)
    assert harness.ingress("w") == [("default", ["legacy"])]
    assert harness.egress("w") == [("default", ["legacy"])]


def test_two_policies_sharing_a_selector_share_one_reference_counted_set(harness: Harness) -> None:
    harness.put(
        workload("web", labels={"app": "web"}, ips=["10.0.0.1"]),
        workload("db", labels={"app": "db"}, ips=["10.0.0.2"]),
    )
    one = global_policy("one", selector="app == 'db'", ingress=ALLOW_FROM_WEB)
    two = global_policy("two", selector="app == 'db'", order=5, ingress=ALLOW_FROM_WEB)
    harness.put(one, two)
    set_ids = {s for s in harness.dataplane.ip_sets}
    assert len(set_ids) == 1
    assert harness.members("app == 'web'") == {"10.0.0.1"}
    harness.delete(one)
    assert harness.members("app == 'web'") == {"10.0.0.1"}
    harness.delete(two)
    assert harness.dataplane.ip_sets == {}


def test_ip_sets_are_sent_only_while_referenced_by_an_active_policy(harness: Harness) -> None:
    harness.put(
        workload("web", labels={"app": "web"}, ips=["10.0.0.1"], node="elsewhere"),
        global_policy("p", selector="app == 'db'", ingress=ALLOW_FROM_WEB),
    )
    assert harness.dataplane.ip_sets == {} and harness.dataplane.policies == {}
    harness.put(workload("db", labels={"app": "db"}, ips=["10.0.0.2"]))
    assert harness.members("app == 'web'") == {"10.0.0.1"}  # remote endpoints are members too


def test_a_member_claimed_twice_stays_until_both_are_gone(harness: Harness) -> None:
    first = workload("a", labels={"app": "web"}, ips=["10.0.0.1"])
    second = workload("b", labels={"app": "web"}, ips=["10.0.0.1"], node="node-b")
    netset = global_network_set("n", ["10.0.0.1/32"], app="web")
    harness.put(
        workload("anchor", labels={"app": "db"}, ips=["10.0.0.9"]),
        first,
        second,
        netset,
        global_policy("p", selector="app == 'db'", ingress=ALLOW_FROM_WEB),
    )
    assert harness.members("app == 'web'") == {"10.0.0.1"}
    harness.delete(first)
    harness.delete(netset)
    assert harness.members("app == 'web'") == {"10.0.0.1"}
    harness.delete(second)
    assert harness.members("app == 'web'") == set()


def test_named_ports(harness: Harness) -> None:
    harness.put(
        workload(
            "db",
            labels={"app": "db"},
            ips=["10.0.0.2"],
            ports=[{"name": "pg", "protocol": "TCP", "port": 5432}],
        ),
        workload(
            "db-udp",
            labels={"app": "db"},
            ips=["10.0.0.3"],
            ports=[{"name": "pg", "protocol": "UDP", "port": 5432}],
        ),
        global_policy(
            "to-db",
            selector="all()",
            egress=[
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "destination": {"selector": "app == 'db'", "ports": ["pg", "8000:8010"]},
                }
            ],
        ),
    )
    rule = harness.dataplane.policies[PolicyID("default", "to-db")].outbound_rules[0]
    assert rule.destination_ports == (PortRange(8000, 8010),)
    (named,) = rule.destination_named_port_ip_set_ids
    assert harness.dataplane.ip_sets[named] == {"10.0.0.2,tcp:5432"}
    assert rule.destination_ip_set_ids  # numeric ports too, so the selector set is kept


def test_network_sets_are_selected_by_rules_not_by_policies(harness: Harness) -> None:
    harness.put(
        network_set("partners", ["198.51.100.0/24"], namespace="a", role="partner"),
        global_network_set("cdn", ["203.0.113.0/24", "2001:db8::/32"], role="partner"),
        workload("w", namespace="a", labels={"role": "partner"}, ips=["10.0.0.1"]),
        policy(
            "p",
            namespace="a",
            selector="role == 'partner'",
            ingress=[{"action": "Allow", "source": {"selector": "role == 'partner'"}}],
        ),
        global_policy(
            "g",
            selector="all()",
            ingress=[{"action": "Allow", "source": {"selector": "role == 'partner'"}}],
        ),
    )
    assert harness.rule_members({"selector": "role == 'partner'"}, "a") == {
        "198.51.100.0/24",
        "10.0.0.1",
    }
    assert harness.members("role == 'partner'") == {
        "198.51.100.0/24",
        "203.0.113.0/24",
        "2001:db8::/32",
        "10.0.0.1",
    }
    assert harness.ingress("w", "a") == [("default", ["g", "a/p"])]


def test_not_selector_alone(harness: Harness) -> None:
    harness.put(
        workload("a", namespace="a", labels={"app": "bad"}, ips=["10.0.0.1"]),
        workload("b", namespace="b", labels={"app": "bad"}, ips=["10.0.0.2"]),
        workload("c", namespace="a", labels={"app": "good"}, ips=["10.0.0.3"]),
        policy(
            "p",
            namespace="a",
            selector="all()",
            ingress=[{"action": "Deny", "source": {"notSelector": "app == 'bad'"}}],
        ),
        global_policy(
            "g",
            selector="all()",
            ingress=[{"action": "Deny", "source": {"notSelector": "app == 'bad'"}}],
        ),
    )
    # In a namespaced policy the side is scoped to the namespace, which the notSelector narrows.
    rule = harness.dataplane.policies[PolicyID("default", "a/p", "NetworkPolicy")].inbound_rules[0]
    assert rule.not_source_ip_set_ids == ()
    assert harness.dataplane.ip_sets[rule.source_ip_set_ids[0]] == {"10.0.0.3"}
    # In a global policy it is a negated set: anything, Calico endpoint or not, except these.
    rule = harness.dataplane.policies[PolicyID("default", "g")].inbound_rules[0]
    assert rule.source_ip_set_ids == ()
    assert harness.dataplane.ip_sets[rule.not_source_ip_set_ids[0]] == {"10.0.0.1", "10.0.0.2"}


def test_selector_and_not_selector_fold_into_one_set(harness: Harness) -> None:
    harness.put(
        workload("a", labels={"app": "web", "bad": "yes"}, ips=["10.0.0.1"]),
        workload("b", labels={"app": "web"}, ips=["10.0.0.2"]),
        global_policy(
            "g",
            selector="all()",
            ingress=[
                {
                    "action": "Allow",
                    "source": {"selector": "app == 'web'", "notSelector": "has(bad)"},
                }
            ],
        ),
    )
    rule = harness.dataplane.policies[PolicyID("default", "g")].inbound_rules[0]
    assert rule.not_source_ip_set_ids == ()
    assert harness.dataplane.ip_sets[rule.source_ip_set_ids[0]] == {"10.0.0.2"}


def test_label_change_moves_a_pod_in_and_out(harness: Harness) -> None:
    harness.put(
        workload("w", labels={"role": "client"}, ips=["10.0.0.1"]),
        workload("server", labels={"role": "server"}, ips=["10.0.0.9"]),
        global_policy(
            "deny-attackers",
            selector="role == 'server'",
            ingress=[{"action": "Deny", "source": {"selector": "role == 'attacker'"}}],
        ),
        global_policy("attackers", selector="role == 'attacker'", egress=[{"action": "Deny"}]),
    )
    assert harness.members("role == 'attacker'") == set()
    assert harness.egress("w") == []
    harness.put(workload("w", labels={"role": "attacker"}, ips=["10.0.0.1"]))
    assert harness.members("role == 'attacker'") == {"10.0.0.1"}
    assert harness.egress("w") == [("default", ["attackers"])]
    harness.put(workload("w", labels={"role": "client"}, ips=["10.0.0.1"]))
    assert harness.members("role == 'attacker'") == set()
    assert harness.egress("w") == []
    assert PolicyID("default", "attackers") not in harness.dataplane.policies


def test_endpoint_address_change_updates_sets(harness: Harness) -> None:
    harness.put(
        workload("web", labels={"app": "web"}, ips=["10.0.0.1"]),
        global_policy("p", selector="all()", ingress=ALLOW_FROM_WEB),
    )
    harness.put(workload("web", labels={"app": "web"}, ips=["10.0.0.7", "fd00::7"]))
    assert harness.members("app == 'web'") == {"10.0.0.7", "fd00::7"}
    assert harness.workload("web").ipv6_nets == ("fd00::7/128",)


def test_host_endpoints_local_only_and_policy_groups(harness: Harness) -> None:
    harness.put(
        host_endpoint("mine", labels={"host": "yes"}, ips=["192.168.0.1"]),
        host_endpoint("theirs", node="node-b", labels={"host": "yes"}, ips=["192.168.0.2"]),
        global_policy("normal", selector="host == 'yes'", ingress=[{"action": "Allow"}]),
        global_policy(
            "untracked",
            selector="host == 'yes'",
            doNotTrack=True,
            applyOnForward=True,
            ingress=[{"action": "Allow"}],
        ),
        global_policy(
            "prednat",
            selector="host == 'yes'",
            preDNAT=True,
            applyOnForward=True,
            ingress=[{"action": "Deny", "source": {"selector": "host == 'yes'"}}],
        ),
        global_policy(
            "fwd", selector="host == 'yes'", applyOnForward=True, ingress=[{"action": "Allow"}]
        ),
    )
    assert set(harness.dataplane.hosts) == {next(iter(harness.dataplane.hosts))}
    (hep,) = harness.dataplane.hosts.values()
    assert hep.id.name == "mine" and hep.expected_ipv4_addrs == ("192.168.0.1",)
    assert [p.name for t in hep.tiers for p in t.ingress_policies] == ["fwd", "normal"]
    assert [p.name for t in hep.untracked_tiers for p in t.ingress_policies] == ["untracked"]
    assert [p.name for t in hep.pre_dnat_tiers for p in t.ingress_policies] == ["prednat"]
    assert [p.name for t in hep.forward_tiers for p in t.ingress_policies] == ["fwd"]
    assert harness.members("host == 'yes'") == {"192.168.0.1", "192.168.0.2"}


def test_profiles_fallback_missing_profile_and_default_allow(harness: Harness) -> None:
    harness.put(
        workload("w", ips=["10.0.0.1"], profiles=["kns.default", "projectcalico-default-allow"])
    )
    assert harness.workload("w").profile_ids == (
        ProfileID("kns.default"),
        ProfileID("projectcalico-default-allow"),
    )
    assert harness.dataplane.profiles[ProfileID("kns.default")].inbound_rules == ()
    allow = harness.dataplane.profiles[ProfileID("projectcalico-default-allow")]
    assert [r.action for r in allow.inbound_rules] == ["allow"]
    harness.put(namespace_profile("default"))
    assert [
        r.action for r in harness.dataplane.profiles[ProfileID("kns.default")].inbound_rules
    ] == ["allow"]
    harness.delete(workload("w"))
    assert harness.dataplane.profiles == {} and harness.dataplane.workloads == {}


def test_a_workload_without_addresses_is_not_an_endpoint_yet(harness: Harness) -> None:
    harness.put(workload("w", ips=[]))
    assert harness.dataplane.workloads == {}
    harness.put(workload("w", ips=["10.0.0.1"]))
    assert harness.has_workload("w")
    harness.put(workload("w", ips=[]))
    assert harness.dataplane.workloads == {}


def test_global_policy_namespace_and_service_account_selectors(harness: Harness) -> None:
    harness.put(
        namespace_profile("prod", {"env": "prod"}),
        service_account_profile("prod", "api", {"role": "api"}),
        workload("api", namespace="prod", ips=["10.0.0.1"], service_account="api"),
        workload("other", namespace="prod", ips=["10.0.0.2"]),
        host_endpoint("h", labels={"env": "prod"}, ips=["192.168.0.1"]),
        global_policy("ns-all", namespaceSelector="all()", ingress=[{"action": "Allow"}]),
        global_policy("ns-prod", namespaceSelector="env == 'prod'", ingress=[{"action": "Allow"}]),
        global_policy("sa-all", serviceAccountSelector="all()", ingress=[{"action": "Allow"}]),
        global_policy(
            "sa-api", serviceAccountSelector="role == 'api'", ingress=[{"action": "Allow"}]
        ),
    )
    assert harness.ingress("api", "prod") == [
        ("default", ["ns-all", "ns-prod", "sa-all", "sa-api"])
    ]
    assert harness.ingress("other", "prod") == [("default", ["ns-all", "ns-prod"])]
    (hep,) = harness.dataplane.hosts.values()
    assert hep.tiers == ()  # namespace selectors never select host endpoints


def test_rule_fields_are_resolved(harness: Harness) -> None:
    harness.put(
        workload("w", ips=["10.0.0.1"]),
        global_policy(
            "r",
            selector="all()",
            ingress=[
                {
                    "action": "Log",
                    "ipVersion": 4,
                    "protocol": "ICMP",
                    "icmp": {"type": 8, "code": 0},
                    "source": {"nets": ["10.1.2.3/8"], "notNets": ["10.9.0.0/16"]},
                },
                {
                    "action": "Deny",
                    "protocol": 17,
                    "notProtocol": "TCP",
                    "destination": {"notPorts": [53]},
                },
            ],
        ),
    )
    log_rule, deny_rule = harness.dataplane.policies[PolicyID("default", "r")].inbound_rules
    assert (log_rule.action, log_rule.ip_version, log_rule.protocol) == ("log", 4, "icmp")
    assert (log_rule.icmp_type, log_rule.icmp_code) == (8, 0)
    assert log_rule.source_nets == ("10.0.0.0/8",) and log_rule.not_source_nets == ("10.9.0.0/16",)
    assert (deny_rule.protocol, deny_rule.not_protocol) == (17, "tcp")
    assert deny_rule.not_destination_ports == (PortRange(53, 53),)
    assert log_rule.rule_id and log_rule.rule_id != deny_rule.rule_id


def test_policy_moved_to_another_tier_is_a_new_policy(harness: Harness) -> None:
    harness.put(workload("w", ips=["10.0.0.1"]), tier("t", order=1))
    harness.put(global_policy("t.p", tier="t", selector="all()", ingress=[{"action": "Allow"}]))
    assert harness.ingress("w") == [("t", ["t.p"])]
    harness.put(
        global_policy("t.p", tier="default", selector="all()", ingress=[{"action": "Allow"}])
    )
    assert harness.ingress("w") == [("default", ["t.p"])]
    assert set(harness.dataplane.policies) == {PolicyID("default", "t.p")}


def test_a_pod_that_moves_off_this_node_stays_in_ip_sets(harness: Harness) -> None:
    harness.put(
        workload("anchor", labels={"app": "db"}, ips=["10.0.0.9"]),
        workload("web", labels={"app": "web"}, ips=["10.0.0.1"]),
        global_policy("p", selector="app == 'db'", ingress=ALLOW_FROM_WEB),
    )
    assert harness.has_workload("web")
    # The same WorkloadEndpoint (same key) now names another node.
    web = workload("web", labels={"app": "web"}, ips=["10.0.0.1"])
    moved = web.model_copy(update={"spec": web.spec.model_copy(update={"node": "node-b"})})
    messages = harness.put(moved)
    assert [type(m).__name__ for m in messages] == ["WorkloadEndpointRemove"]
    assert harness.members("app == 'web'") == {"10.0.0.1"}


def test_assume_needed_on_every_node_keeps_a_policy_and_its_sets(harness: Harness) -> None:
    hinted = global_policy(
        "hinted",
        selector="app == 'db'",
        performanceHints=["AssumeNeededOnEveryNode"],
        ingress=ALLOW_FROM_WEB,
    )
    harness.put(workload("web", labels={"app": "web"}, ips=["10.0.0.1"], node="node-b"), hinted)
    assert PolicyID("default", "hinted") in harness.dataplane.policies
    assert harness.members("app == 'web'") == {"10.0.0.1"}
    harness.put(global_policy("hinted", selector="app == 'db'", ingress=ALLOW_FROM_WEB))
    assert harness.dataplane.policies == {} and harness.dataplane.ip_sets == {}
    harness.put(hinted)
    harness.delete(hinted)
    assert harness.dataplane.policies == {} and harness.dataplane.ip_sets == {}

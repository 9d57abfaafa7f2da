"""Felix's dataplane on real namespaces, veths and nftables: verdicts from packets.

Each test drives a fresh in-process ``Dataplane`` with messages (no etcd) and checks a
connectivity matrix.  Requires root.
"""

from __future__ import annotations

import itertools
import json
import socket
import time

import pytest

from pycalico.felix import messages as m
from pycalico.felix.dataplane.loop import DataplaneOptions
from pycalico.felix.drivers.errors import NftError
from pycalico.felix.drivers.routes import Route
from pycalico.felix.rules.model import Chain, RenderConfig
from pycalico.testing import netns
from pycalico.testing.connectivity import ConnectivityChecker, Endpoint, Probe

from .conftest import ALLOW, PODS, PROFILE, Node, wep_id

pytestmark = pytest.mark.root


def full_matrix(
    blocked: set[tuple[str, str, int]] = frozenset(),  # type: ignore[assignment]
    ports: tuple[int, ...] = (80, 81),
) -> dict[Probe, bool]:
    """Every pod pair on the given TCP ports; ``blocked`` lists (src, dst, port) expected dropped."""
    out = {}
    for src, dst in itertools.permutations(PODS, 2):
        for port in ports:
            out[Probe(src, dst, port)] = (src, dst, port) not in blocked
    return out


def set_of(*keys: str) -> m.IPSetUpdate:
    return m.IPSetUpdate(
        "s:" + "".join(keys), m.IPSetType.IP, frozenset(f"{PODS[k]}/32" for k in keys)
    )


def tier(name: str, *policies: m.PolicyID, default: str = "deny") -> m.TierInfo:
    return m.TierInfo(name, default, tuple(policies), ())  # type: ignore[arg-type]


def test_allow_all_profile_tcp_udp_icmp_v4_and_v6(node: Node, matrix: ConnectivityChecker) -> None:
    node.start()
    expected = full_matrix()
    for src, dst in itertools.permutations(PODS, 2):
        expected[Probe(src, dst, 53, "udp")] = True
        expected[Probe(src, dst, 0, "icmp")] = True
        expected[Probe(f"{src}6", f"{dst}6", 80)] = True
    matrix.check(expected)


def test_routes_and_sysctls_follow_workloads(node: Node, topology: netns.Topology) -> None:
    node.start()
    routes = netns.netns_run(topology.node, "ip", "route", "show", "proto", "80")
    for key, ip in PODS.items():
        assert f"{ip} dev {topology.pods[key].interface} scope link" in routes
    interface = topology.pods["a"].interface
    for path, value in (
        (f"ipv4/conf/{interface}/proxy_arp", "1"),
        (f"ipv4/conf/{interface}/rp_filter", "1"),
        (f"ipv6/conf/{interface}/accept_ra", "0"),
        (f"ipv4/neigh/{interface}/proxy_delay", "0"),
    ):
        got = netns.netns_run(topology.node, "cat", f"/proc/sys/net/{path}").strip()
        assert got == value, path
    node.send(m.WorkloadEndpointRemove(wep_id("c")))
    routes = netns.netns_run(topology.node, "ip", "route", "show", "proto", "80")
    assert PODS["c"] not in routes


def test_deny_ingress_from_one_source_blocks_exactly_it(
    node: Node, matrix: ConnectivityChecker
) -> None:
    attacker = set_of("a")
    policy = m.PolicyID("default", "deny-attacker")
    node.start()
    matrix.check(full_matrix())
    node.send(
        attacker,
        m.ActivePolicyUpdate(
            policy,
            (m.ResolvedRule("deny", source_ip_set_ids=(attacker.id,)), ALLOW),
            (),
        ),
        node.workload("b", (tier("default", policy),)),
    )
    matrix.check(full_matrix({("a", "b", 80), ("a", "b", 81)}), deadline=10.0)
    node.send(node.workload("b"), m.ActivePolicyRemove(policy), m.IPSetRemove(attacker.id))
    matrix.check(full_matrix(), deadline=10.0)
    assert "cali-pi-deny-attacker" not in node.nft("list", "table", "inet", "calico")


def test_pass_goes_to_the_next_tier(node: Node, matrix: ConnectivityChecker) -> None:
    from_c = set_of("c")
    passer = m.PolicyID("security", "pass-c")
    web = m.PolicyID("default", "web-only")
    node.start(
        from_c,
        m.ActivePolicyUpdate(passer, (m.ResolvedRule("pass", source_ip_set_ids=(from_c.id,)),), ()),
        m.ActivePolicyUpdate(
            web,
            (m.ResolvedRule("allow", protocol="tcp", destination_ports=(m.PortRange(80, 80),)),),
            (),
        ),
        tiers={"b": (tier("security", passer), tier("default", web))},
    )
    # a hits the end of tier "security" (deny); c passes to "default", which allows only 80.
    matrix.check(full_matrix({("a", "b", 80), ("a", "b", 81), ("c", "b", 81)}))


def test_tier_default_action_pass_and_profile_fallback(
    node: Node, matrix: ConnectivityChecker
) -> None:
    from_a = set_of("a")
    noop = m.PolicyID("observe", "log-only")
    only_a = m.ProfileID("only-a")
    node.start(
        from_a,
        m.ActivePolicyUpdate(noop, (m.ResolvedRule("log"),), ()),
        m.ActiveProfileUpdate(
            only_a, (m.ResolvedRule("allow", source_ip_set_ids=(from_a.id,)),), (ALLOW,)
        ),
    )
    node.send(node.workload("b", (tier("observe", noop, default="pass"),), profiles=(only_a,)))
    matrix.check(full_matrix({("c", "b", 80), ("c", "b", 81)}))


def test_deny_before_allow_by_order(node: Node, matrix: ConnectivityChecker) -> None:
    deny_80 = m.PolicyID("default", "deny-80")
    allow_all = m.PolicyID("default", "allow-all")
    node.start(
        m.ActivePolicyUpdate(
            deny_80,
            (m.ResolvedRule("deny", protocol="tcp", destination_ports=(m.PortRange(80, 80),)),),
            (),
        ),
        m.ActivePolicyUpdate(allow_all, (ALLOW,), ()),
        tiers={"b": (tier("default", deny_80, allow_all),)},
    )
    matrix.check(full_matrix({("a", "b", 80), ("c", "b", 80)}))
    node.send(node.workload("b", (tier("default", allow_all, deny_80),)))
    matrix.check(full_matrix())


def test_egress_rule_with_port_range_and_nets(node: Node, matrix: ConnectivityChecker) -> None:
    egress = m.PolicyID("default", "egress")
    node.start(
        m.ActivePolicyUpdate(
            egress,
            (),
            (
                m.ResolvedRule(
                    "allow",
                    protocol="tcp",
                    destination_nets=("10.65.0.0/24",),
                    not_destination_nets=(f"{PODS['c']}/32",),
                    destination_ports=(m.PortRange(79, 80),),
                ),
            ),
        ),
        tiers={"a": (m.TierInfo("default", "deny", (), (egress,)),)},
    )
    blocked = {("a", "b", 81), ("a", "c", 80), ("a", "c", 81)}
    matrix.check(full_matrix(blocked))


def test_forged_source_address_is_dropped_unless_allowed(
    node: Node, matrix: ConnectivityChecker, topology: netns.Topology
) -> None:
    forged = "10.65.0.99"
    pod = topology.pods["a"]
    netns.netns_run(pod.name, "ip", "addr", "add", f"{forged}/32", "dev", "eth0")
    # Route the forged address back to a, so only Felix's rules (not the kernel's strict
    # rp_filter) can stop it.
    netns.netns_run(topology.node, "ip", "route", "replace", forged, "dev", pod.interface)
    try:
        node.start()
        probes = {
            Probe("a", "b", 80, source_ip=forged): False,
            Probe("a", "b", 53, "udp", source_ip=forged): False,
            Probe("a", "b", 80): True,
        }
        matrix.check(probes)
        node.send(node.workload("a", allow_spoofed=(f"{forged}/32",)))
        matrix.check({p: True for p in probes})
    finally:
        netns.netns_run(pod.name, "ip", "addr", "del", f"{forged}/32", "dev", "eth0", check=False)
        netns.netns_run(topology.node, "ip", "route", "del", forged, check=False)


def test_cali_interface_without_endpoint_passes_nothing(
    node: Node, matrix: ConnectivityChecker, topology: netns.Topology
) -> None:
    node.start()
    matrix.check(full_matrix())
    # c's veth loses its endpoint: it becomes an unknown cali interface; give it a route and
    # proxy ARP by hand so only the dispatch drop can stop it.
    node.send(m.WorkloadEndpointRemove(wep_id("c")))
    pod_c = topology.pods["c"]
    netns.netns_run(topology.node, "ip", "route", "replace", PODS["c"], "dev", pod_c.interface)
    try:
        expected = full_matrix({(s, "c", p) for s in PODS for p in (80, 81)} |
                               {("c", d, p) for d in PODS for p in (80, 81)})  # fmt: skip
        matrix.check(expected)
    finally:
        netns.netns_run(topology.node, "ip", "route", "del", PODS["c"], check=False)


def test_bad_batch_leaves_the_previous_ruleset(node: Node, matrix: ConnectivityChecker) -> None:
    attacker = set_of("a")
    policy = m.PolicyID("default", "deny-attacker")
    node.start(
        attacker,
        m.ActivePolicyUpdate(
            policy, (m.ResolvedRule("deny", source_ip_set_ids=(attacker.id,)), ALLOW), ()
        ),
        tiers={"b": (tier("default", policy),)},
    )
    before = node.nft("list", "table", "inet", "calico")
    matrix.check(full_matrix({("a", "b", 80), ("a", "b", 81)}))
    table = node.dataplane.nft
    # A valid change and an invalid rule in the same apply: neither may reach the kernel.
    node.dataplane.on_update(node.workload("b"))
    node.dataplane.endpoints.complete_deferred_work()
    table.set_chain(Chain("cali-broken", ("this is not nft",)))
    with netns.enter(node.topology.node), pytest.raises(NftError):
        table.apply()
    assert node.nft("list", "table", "inet", "calico") == before
    matrix.check(full_matrix({("a", "b", 80), ("a", "b", 81)}))
    table.remove_chain("cali-broken")
    with netns.enter(node.topology.node):
        stats = table.apply()
    assert stats is not None and stats.full
    matrix.check(full_matrix())


def test_restart_keeps_established_flow_and_sweeps_deleted_policy(
    node: Node, matrix: ConnectivityChecker, topology: netns.Topology
) -> None:
    attacker = set_of("c")
    stale = m.PolicyID("default", "deleted-while-down")
    node.start(
        attacker,
        m.ActivePolicyUpdate(
            stale, (m.ResolvedRule("deny", source_ip_set_ids=(attacker.id,)), ALLOW), ()
        ),
        tiers={"b": (tier("default", stale),)},
    )
    matrix.check(full_matrix({("c", "b", 80), ("c", "b", 81)}))
    # An established TCP flow a -> b (server in b echoes).
    listener = netns.echo_server(topology.pods["b"].name, 8080)
    try:
        with netns.enter(topology.pods["a"].name):
            client = socket.create_connection((PODS["b"], 8080), timeout=2)
        client.sendall(b"before")
        assert client.recv(64) == b"before"
        # "Restart": a brand-new dataplane whose first apply replaces the table atomically.
        # The new world denies NEW connections a -> b; the policy on c was deleted meanwhile.
        deny_a = m.PolicyID("default", "deny-a")
        from_a = set_of("a")
        fresh = Node(topology)
        fresh.start(
            from_a,
            m.ActivePolicyUpdate(
                deny_a, (m.ResolvedRule("deny", source_ip_set_ids=(from_a.id,)), ALLOW), ()
            ),
            tiers={"b": (tier("default", deny_a),)},
        )
        for round_trip in range(20):
            client.sendall(b"after%d" % round_trip)
            assert client.recv(64) == b"after%d" % round_trip
        client.close()
        assert "deleted-while-down" not in fresh.nft("list", "table", "inet", "calico")
        matrix.check(full_matrix({("a", "b", 80), ("a", "b", 81)}))
    finally:
        listener.close()


def test_every_rule_form_is_accepted_by_the_kernel(node: Node, topology: netns.Topology) -> None:
    """Each match kind the renderer can emit, loaded into the real nft in one transaction."""
    ports = (m.PortRange(80, 80), m.PortRange(1000, 2000))
    rules = (
        m.ResolvedRule("allow", protocol="tcp", destination_ports=ports, source_ports=ports),
        m.ResolvedRule("deny", protocol="udp", not_destination_ports=ports, not_source_ports=ports),
        m.ResolvedRule("allow", protocol="tcp", destination_named_port_ip_set_ids=("n:web",)),
        m.ResolvedRule(
            "allow",
            protocol="tcp",
            source_named_port_ip_set_ids=("n:web",),
            not_destination_named_port_ip_set_ids=("n:web",),
        ),
        m.ResolvedRule("deny", protocol="icmp", icmp_type=8, icmp_code=0),
        m.ResolvedRule("deny", protocol="icmp", not_icmp_type=8, not_icmp_code=0),
        m.ResolvedRule("deny", protocol="icmpv6", icmp_type=128, not_icmp_type=129),
        m.ResolvedRule("deny", protocol=132, not_protocol="udp"),
        m.ResolvedRule(
            "deny",
            source_nets=("10.0.0.0/8", "fd00::/8"),
            not_source_nets=("10.1.0.0/16",),
            destination_nets=("0.0.0.0/0",),
            not_destination_nets=("10.2.0.0/16",),
        ),
        m.ResolvedRule("deny", source_ip_set_ids=("s:x",), not_destination_ip_set_ids=("s:y",)),
        m.ResolvedRule("log", log_prefix="calico-packet"),
        m.ResolvedRule("pass", ip_version=6, rule_id="abcdef0123"),
    )
    policy = m.PolicyID("default", "every-form")
    node.start(
        m.IPSetUpdate("s:x", m.IPSetType.IP, frozenset({"10.65.0.1/32", "fd00:65::1/128"})),
        m.IPSetUpdate("s:y", m.IPSetType.NET, frozenset({"10.0.0.0/8", "10.1.0.0/16"})),
        m.IPSetUpdate(
            "n:web", m.IPSetType.IP_AND_PORT, frozenset({"10.65.0.2,tcp:80", "fd00:65::2,tcp:80"})
        ),
        m.ActivePolicyUpdate(policy, rules, rules),
        tiers={"b": (tier("default", policy),)},
    )
    assert node.dataplane.nft.last is not None and node.dataplane.nft.failures == 0
    listing = node.nft("list", "table", "inet", "calico")
    assert "@cali40n_web" in listing and "10.65.0.2 . tcp . 80" in listing


def test_vxlan_from_workloads_is_dropped(node: Node, topology: netns.Topology) -> None:
    checker = ConnectivityChecker(
        {key: Endpoint(pod.name, pod.ipv4) for key, pod in topology.pods.items()}
    )
    try:
        checker.serve(["b"], udp_ports=(4789, 4790))
        node.start()
        checker.check({Probe("a", "b", 4789, "udp"): False, Probe("a", "b", 4790, "udp"): True})
    finally:
        checker.stop()


def test_default_endpoint_to_host_action(topology: netns.Topology) -> None:
    host_ip = "10.65.255.1"
    netns.netns_run(topology.node, "ip", "addr", "add", f"{host_ip}/32", "dev", "lo")
    endpoints = {key: Endpoint(pod.name, pod.ipv4) for key, pod in topology.pods.items()}
    checker = ConnectivityChecker({**endpoints, "host": Endpoint(topology.node, host_ip)})
    try:
        checker.serve(["host"], tcp_ports=(8080,))
        checker.serve(["b"], tcp_ports=(8081,))
        Node(topology).start()  # Felix's default: Drop
        checker.check({Probe("a", "host", 8080): False, Probe("a", "b", 8081): True})
        accept = Node(topology, DataplaneOptions(render=RenderConfig(
            default_endpoint_to_host_action="Accept")))  # fmt: skip
        accept.start()
        checker.check({Probe("a", "host", 8080): True, Probe("a", "b", 8081): True})
        # The host always reaches its own workloads (kubelet probes).
        checker.check({Probe("host", "a", 80): False})  # nothing listens on a:80 here
    finally:
        checker.stop()
        netns.netns_run(
            topology.node, "ip", "addr", "del", f"{host_ip}/32", "dev", "lo", check=False
        )


def test_route_resync_in_bulk_sweeps_stale_and_keeps_foreign_routes(
    node: Node, topology: netns.Topology
) -> None:
    for i in range(5):
        netns.netns_run(topology.node, "ip", "route", "add", "blackhole", f"10.77.{i}.0/24",
                        "proto", "80")  # fmt: skip
    netns.netns_run(
        topology.node, "ip", "route", "add", "blackhole", "10.78.0.0/24", "proto", "static"
    )
    try:
        # Felix's own routes of a previous run (proto 80) are desired again before the first
        # apply, whose resync must keep them, sweep the rest of proto 80, and leave others.
        for i in range(20):
            node.dataplane.route_table.set_route(
                Route(f"10.79.{i}.0/26", type="blackhole", protocol=80)
            )
        node.start()
        routes = netns.netns_run(topology.node, "ip", "route", "show", "proto", "80")
        assert all(f"blackhole 10.79.{i}.0/26" in routes for i in range(20)), routes
        assert "10.77." not in routes
        assert "10.78.0.0/24" in netns.netns_run(topology.node, "ip", "route")
        node.dataplane.route_table.remove_route("10.79.0.0/26")
        node.send()
        assert "10.79.0.0/26" not in netns.netns_run(topology.node, "ip", "route")
    finally:
        netns.netns_run(
            topology.node, "ip", "route", "del", "blackhole", "10.78.0.0/24", check=False
        )
        netns.netns_run(topology.node, "ip", "route", "flush", "proto", "80", check=False)


def test_link_watcher_configures_an_interface_created_after_its_endpoint(
    node: Node, topology: netns.Topology
) -> None:
    import queue

    from pycalico.felix.drivers.interfaces import LinkWatcher

    events: queue.Queue[tuple[str, bool]] = queue.Queue()
    with netns.enter(topology.node):
        watcher = LinkWatcher(lambda name, present: events.put((name, present)))
    late = "calilate0000001"
    try:
        node.start(
            m.WorkloadEndpointUpdate(
                m.WorkloadEndpointID("k8s", "default/late", "eth0"), late, "", ("10.65.0.50/32",),
                (), (PROFILE,), (),
            )
        )  # fmt: skip
        report = node.dataplane.last_report
        assert report is not None and report.interfaces_missing == 1 and report.routes_pending == 1
        netns.netns_run(topology.node, "ip", "link", "add", late, "type", "veth", "peer", "name",
                        "late-peer")  # fmt: skip
        netns.netns_run(topology.node, "ip", "link", "set", late, "up")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            name, present = events.get(timeout=5)
            if name == late and present:
                break
        with netns.enter(topology.node):
            node.dataplane.on_link(late, True)
        report = node.send()
        assert report is not None and report.interfaces_missing == 0 and report.routes_pending == 0
        assert (
            netns.netns_run(
                topology.node, "cat", f"/proc/sys/net/ipv4/conf/{late}/proxy_arp"
            ).strip()
            == "1"
        )
        assert "10.65.0.50 dev calilate0000001" in netns.netns_run(topology.node, "ip", "route")
    finally:
        watcher.close()
        netns.netns_run(topology.node, "ip", "link", "del", late, check=False)


def test_conntrack_entries_of_a_departed_address_are_flushed(
    node: Node, topology: netns.Topology, matrix: ConnectivityChecker
) -> None:
    node.start()
    matrix.check({Probe("a", "c", 53, "udp"): True, Probe("b", "c", 53, "udp"): True})
    listing = netns.netns_run(topology.node, "conntrack", "-L", "-d", PODS["c"], check=False)
    assert PODS["c"] in listing
    node.send(m.WorkloadEndpointRemove(wep_id("c")))
    listing = netns.netns_run(topology.node, "conntrack", "-L", "-d", PODS["c"], check=False)
    assert PODS["c"] not in listing


def host_routes(topology: netns.Topology, address: str) -> list[tuple[str, int, str]]:
    """(protocol, metric, device) of every main-table route to ``address`` on the node."""
    family = "-6" if ":" in address else "-4"
    shown = netns.netns_run(topology.node, "ip", "-j", family, "route", "show", address)
    return sorted(
        (str(r.get("protocol", "")), int(r.get("metric", 0)), str(r.get("dev", "")))
        for r in json.loads(shown or "[]")
    )


def test_workload_routes_at_the_normal_priority_take_over_the_cni_route(
    node: Node, topology: netns.Topology
) -> None:
    pod_a, pod_c = topology.pods["a"], topology.pods["c"]
    flush_workload_routes(topology)  # earlier tests' Felix left its routes
    try:
        # What the CNI plugin leaves before Felix sees the endpoint: proto boot, no metric.
        for address in (pod_a.ipv4, pod_a.ipv6):
            netns.netns_run(topology.node, "ip", "route", "add", address, "dev", pod_a.interface,
                            "proto", "boot")  # fmt: skip
        node.start()  # the first apply's resync
        assert host_routes(topology, pod_a.ipv4) == [("80", 1024, pod_a.interface)]
        assert host_routes(topology, pod_a.ipv6) == [("80", 1024, pod_a.interface)]
        # A workload arriving later (the incremental path) on a node already running.
        node.send(m.WorkloadEndpointRemove(wep_id("c")))
        assert host_routes(topology, pod_c.ipv4) == []
        netns.netns_run(topology.node, "ip", "route", "add", pod_c.ipv4, "dev", pod_c.interface,
                        "proto", "boot")  # fmt: skip
        node.send(node.workload("c"))
        assert host_routes(topology, pod_c.ipv4) == [("80", 1024, pod_c.interface)]
        # A configured priority: a restarted Felix sweeps its metric-1024 routes.
        configured = Node(
            topology, DataplaneOptions(route_priority_v4=2000, route_priority_v6=3000)
        )
        configured.start()
        for pod in topology.pods.values():
            assert host_routes(topology, pod.ipv4) == [("80", 2000, pod.interface)]
            assert host_routes(topology, pod.ipv6) == [("80", 3000, pod.interface)]
    finally:
        flush_workload_routes(topology)


def flush_workload_routes(topology: netns.Topology) -> None:
    """Every route to a pod address (Felix's and the stand-in CNI's); the node's default route
    (also ``proto boot``) stays: proxy ARP needs it."""
    for pod in topology.pods.values():
        for family, address in (("-4", pod.ipv4), ("-6", pod.ipv6)):
            netns.netns_run(topology.node, "ip", family, "route", "flush", "to", "exact", address,
                            check=False)  # fmt: skip

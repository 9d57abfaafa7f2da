"""Managers and drivers against the stateful fake kernel (pure: no root, no kernel)."""

from __future__ import annotations

import pytest

from pycalico.felix import messages as m
from pycalico.felix.dataplane.loop import Dataplane, DataplaneOptions
from pycalico.felix.drivers.errors import NftError
from pycalico.felix.drivers.routes import Route
from pycalico.felix.rules import names
from pycalico.testing.fake_kernel import FakeKernel

ALLOW = m.ResolvedRule(action="allow")
PROFILE = m.ProfileID("kns.default")


def wep(key: str, ip: str, tiers: tuple[m.TierInfo, ...] = ()) -> m.WorkloadEndpointUpdate:
    return m.WorkloadEndpointUpdate(
        m.WorkloadEndpointID("k8s", f"default/{key}", "eth0"),
        f"cali{key}",
        "",
        (f"{ip}/32",),
        (),
        (PROFILE,),
        tiers,
    )


@pytest.fixture
def kernel() -> FakeKernel:
    k = FakeKernel()
    k.links.update({"calia", "calib"})
    return k


@pytest.fixture
def dataplane(kernel: FakeKernel) -> Dataplane:
    return Dataplane(
        DataplaneOptions(), kernel.nft, kernel.routes, kernel.sysctls, kernel.conntrack
    )


def start(dataplane: Dataplane) -> None:
    dataplane.on_updates(
        [
            m.ActiveProfileUpdate(PROFILE, (ALLOW,), (ALLOW,)),
            wep("a", "10.65.0.1"),
            wep("b", "10.65.0.2"),
        ]
    )


def test_nothing_touches_the_kernel_before_in_sync(
    dataplane: Dataplane, kernel: FakeKernel
) -> None:
    start(dataplane)
    assert dataplane.apply() is None
    assert kernel.nft.scripts == [] and kernel.routes.calls == 0 and not kernel.sysctls.values
    dataplane.on_update(m.InSync())
    report = dataplane.apply()
    assert report is not None and report.nft_full
    assert kernel.nft.scripts[0].startswith("add table inet calico\ndelete table inet calico\n")
    assert kernel.nft.map_entries(names.MAP_FROM_WL) == {
        "calia": "goto cali-fw-calia",
        "calib": "goto cali-fw-calib",
    }
    assert kernel.routes.destinations() == {"10.65.0.1/32", "10.65.0.2/32"}
    (route,) = kernel.routes.by_destination("10.65.0.1/32")
    assert route.protocol == 80 and route.metric == 1024
    assert kernel.sysctls.values["net/ipv4/conf/calia/proxy_arp"] == "1"
    assert kernel.sysctls.values["net/ipv4/conf/calia/rp_filter"] == "1"
    assert kernel.sysctls.values["net/ipv6/conf/calia/accept_ra"] == "0"


@pytest.mark.parametrize(
    ("ip_forwarding", "ipv6", "expected"),
    [
        (True, True, {"net/ipv4/ip_forward": "1", "net/ipv6/conf/all/forwarding": "1"}),
        (True, False, {"net/ipv4/ip_forward": "1"}),
        (False, True, {}),
    ],
)
def test_ip_forwarding_is_written_at_the_first_apply_unless_disabled(
    kernel: FakeKernel, ip_forwarding: bool, ipv6: bool, expected: dict[str, str]
) -> None:
    options = DataplaneOptions(ip_forwarding=ip_forwarding, ipv6_support=ipv6)
    dataplane = Dataplane(options, kernel.nft, kernel.routes, kernel.sysctls, kernel.conntrack)
    dataplane.on_update(m.InSync())
    dataplane.apply()
    written = {k: v for k, v in kernel.sysctls.values.items() if "/all/" in k or "ip_forward" in k}
    assert written == expected


def test_incremental_apply_sends_only_what_changed(
    dataplane: Dataplane, kernel: FakeKernel
) -> None:
    start(dataplane)
    dataplane.on_update(m.InSync())
    dataplane.apply()
    assert dataplane.apply() is not None  # nothing dirty: no transaction
    assert len(kernel.nft.scripts) == 1
    pid = m.PolicyID("default", "p")
    dataplane.on_updates(
        [
            m.IPSetUpdate("s:x", m.IPSetType.IP, frozenset({"10.65.0.1/32"})),
            m.ActivePolicyUpdate(pid, (m.ResolvedRule("deny", source_ip_set_ids=("s:x",)),), ()),
            wep("b", "10.65.0.2", (m.TierInfo("default", "deny", (pid,), ()),)),
        ]
    )
    dataplane.apply()
    script = kernel.nft.scripts[-1]
    assert "delete table" not in script
    assert "cali-tw-calib" in script and "cali-tw-calia" not in script
    assert kernel.nft.elements("cali40s_x") == {"10.65.0.1"}
    # A member delta sends one element, nothing else.
    dataplane.on_update(m.IPSetDeltaUpdate("s:x", frozenset({"10.65.0.3/32"}), frozenset()))
    dataplane.apply()
    assert kernel.nft.scripts[-1] == "add element inet calico cali40s_x { 10.65.0.3 }\n"
    # Removal in reverse order: endpoint stops using the policy, policy and set go.
    dataplane.on_updates([wep("b", "10.65.0.2"), m.ActivePolicyRemove(pid), m.IPSetRemove("s:x")])
    dataplane.apply()
    table = kernel.nft.table()
    assert "cali40s_x" not in table.sets
    assert names.policy_chain(pid, True) not in table.chains


def test_endpoint_removal_clears_dispatch_routes_and_conntrack(
    dataplane: Dataplane, kernel: FakeKernel
) -> None:
    start(dataplane)
    dataplane.on_update(m.InSync())
    dataplane.apply()
    dataplane.on_update(m.WorkloadEndpointRemove(wep("a", "10.65.0.1").id))
    report = dataplane.apply()
    assert report is not None and report.conntrack_flushed == 1
    assert "calia" not in kernel.nft.map_entries(names.MAP_FROM_WL)
    assert "cali-fw-calia" not in kernel.nft.table().chains
    assert "10.65.0.1/32" not in kernel.routes.destinations()
    assert kernel.conntrack.flushed == ["10.65.0.1"]


def test_failed_incremental_apply_resyncs_the_whole_table(
    dataplane: Dataplane, kernel: FakeKernel
) -> None:
    start(dataplane)
    dataplane.on_update(m.InSync())
    dataplane.apply()
    dataplane.on_update(wep("c", "10.65.0.3"))
    kernel.nft.fail_next = 1
    dataplane.apply()
    assert kernel.nft.scripts[-1].startswith("add table inet calico\ndelete table")
    assert "calic" in kernel.nft.map_entries(names.MAP_TO_WL)


def test_a_refused_transaction_changes_nothing(kernel: FakeKernel) -> None:
    kernel.nft.run("add table inet calico\nadd chain inet calico x\n")
    with pytest.raises(NftError, match="undeclared chain"):
        kernel.nft.run("add chain inet calico y\nadd rule inet calico x jump nowhere\n")
    assert set(kernel.nft.table().chains) == {"x"}
    with pytest.raises(NftError, match="referenced"):
        kernel.nft.run(
            "add chain inet calico y\nadd rule inet calico x jump y\ndelete chain inet calico y\n"
        )


def test_route_resync_sweeps_stale_routes_of_our_protocol_only(
    dataplane: Dataplane, kernel: FakeKernel
) -> None:
    kernel.routes.add(Route("10.65.0.9/32", "calia", protocol=80))
    kernel.routes.add(Route("192.168.0.0/24", "eth0", protocol=2))
    start(dataplane)
    dataplane.on_update(m.InSync())
    dataplane.apply()
    assert kernel.routes.destinations() == {"10.65.0.1/32", "10.65.0.2/32", "192.168.0.0/24"}


def test_missing_interface_is_retried_when_it_appears(
    dataplane: Dataplane, kernel: FakeKernel
) -> None:
    start(dataplane)
    dataplane.on_update(wep("c", "10.65.0.3"))
    dataplane.on_update(m.InSync())
    report = dataplane.apply()
    assert report is not None and report.routes_pending == 1 and report.interfaces_missing == 1
    assert dataplane.endpoint_statuses()[wep("c", "10.65.0.3").id] == "down"
    kernel.links.add("calic")
    dataplane.on_link("calic", True)
    report = dataplane.apply()
    assert report is not None and report.routes_pending == 0 and report.interfaces_missing == 0
    assert "10.65.0.3/32" in kernel.routes.destinations()
    assert dataplane.endpoint_statuses()[wep("c", "10.65.0.3").id] == "up"


def test_counts(dataplane: Dataplane) -> None:
    start(dataplane)
    dataplane.on_update(m.InSync())
    dataplane.apply()
    counts = dataplane.counts()
    assert counts["endpoints"] == 2 and counts["profiles"] == 1 and counts["rules"] > 0


def test_static_arp_entry_follows_the_workload_mac(
    dataplane: Dataplane, kernel: FakeKernel
) -> None:
    start(dataplane)
    with_mac = m.WorkloadEndpointUpdate(
        m.WorkloadEndpointID("k8s", "default/a", "eth0"), "calia", "aa:bb:cc:dd:ee:01",
        ("10.65.0.1/32",), (), (PROFILE,), (),
    )  # fmt: skip
    dataplane.on_updates([with_mac, m.InSync()])
    dataplane.apply()
    neighbor = kernel.routes.neighbors["10.65.0.1"]
    assert (neighbor.interface, neighbor.mac) == ("calia", "aa:bb:cc:dd:ee:01")
    dataplane.on_update(m.WorkloadEndpointRemove(with_mac.id))
    dataplane.apply()
    assert "10.65.0.1" not in kernel.routes.neighbors


def test_a_network_joining_an_address_set_recreates_it_as_an_interval_set(
    dataplane: Dataplane, kernel: FakeKernel
) -> None:
    start(dataplane)
    dataplane.on_updates(
        [m.IPSetUpdate("s:x", m.IPSetType.IP, frozenset({"10.65.0.1/32"})), m.InSync()]
    )
    dataplane.apply()
    assert kernel.nft.table().sets["cali40s_x"].type == "ipv4_addr"
    dataplane.on_update(m.IPSetDeltaUpdate("s:x", frozenset({"10.70.0.0/30"}), frozenset()))
    report = dataplane.apply()
    assert report is not None and report.nft_full  # a set's type changed: replace atomically
    assert "flags interval" in kernel.nft.scripts[-1]
    assert kernel.nft.elements("cali40s_x") == {"10.65.0.1", "10.70.0.0/30"}


def test_host_endpoints_named_and_wildcard(dataplane: Dataplane, kernel: FakeKernel) -> None:
    start(dataplane)
    named = m.HostEndpointUpdate(m.HostEndpointID("eth0-hep"), "eth0", ("10.0.0.1",), (), (), ())
    wildcard = m.HostEndpointUpdate(m.HostEndpointID("all"), "*", (), (), (PROFILE,), ())
    dataplane.on_updates([named, wildcard, m.InSync()])
    dataplane.apply()
    assert kernel.nft.map_entries(names.MAP_FROM_HEP) == {"eth0": "goto cali-fh-eth0-hep"}
    assert "goto cali-fh-all" in kernel.nft.chain(names.CHAIN_FROM_HEP_DISPATCH)
    assert "goto cali-th-all" in kernel.nft.chain(names.CHAIN_TO_HEP_DISPATCH)
    dataplane.on_updates([m.HostEndpointRemove(wildcard.id), m.HostEndpointRemove(named.id)])
    dataplane.apply()
    assert kernel.nft.map_entries(names.MAP_FROM_HEP) == {}
    assert kernel.nft.chain(names.CHAIN_FROM_HEP_DISPATCH) == [
        f"iifname vmap @{names.MAP_FROM_HEP}"
    ]
    assert "cali-fh-all" not in kernel.nft.table().chains


async def test_the_kernel_apply_runs_off_the_event_loop_thread(kernel: FakeKernel) -> None:
    """The nft transaction blocks until a coroutine on the loop releases it: an apply on the
    loop's own thread would never see the release (and the wait would time out)."""
    import asyncio
    import threading

    release = threading.Event()
    applied_on: list[str] = []
    real_run = kernel.nft.run

    def blocking_run(text: str) -> None:
        applied_on.append(threading.current_thread().name)
        assert release.wait(5), "the loop was blocked while the kernel was programmed"
        real_run(text)

    kernel.nft.run = blocking_run  # type: ignore[method-assign]
    dataplane = Dataplane(
        DataplaneOptions(), kernel.nft, kernel.routes, kernel.sysctls, kernel.conntrack
    )
    applied = asyncio.Event()
    dataplane.on_applied.append(lambda _report: applied.set())
    queue: asyncio.Queue[list[m.Message]] = asyncio.Queue()
    queue.put_nowait([m.ActiveProfileUpdate(PROFILE, (ALLOW,), (ALLOW,)), m.InSync()])
    task = asyncio.ensure_future(dataplane.run(queue))
    try:
        while not applied_on:
            await asyncio.sleep(0.01)
        assert dataplane.applying
        dataplane.on_link("calia", True)  # a link event meanwhile is held, not applied
        assert dataplane._held_links == [("calia", True)]
        release.set()
        await asyncio.wait_for(applied.wait(), 5)
        assert applied_on[0].startswith("felix-apply")
        await asyncio.sleep(0)
        assert not dataplane.applying and dataplane.last_report is not None
        assert dataplane._held_links == []  # replayed after the apply
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

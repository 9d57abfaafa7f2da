"""The IPAM GC's decisions (``node_ipam_plan``) on plain data: Calico's decision tree, the grace
period, sequence numbers, all-or-none per handle, empty blocks."""

from __future__ import annotations

import ipaddress

import pytest

from pycalico.ipam.records import IPAddress
from pycalico.kubecontrollers.node_ipam_plan import (
    Allocation,
    BlockView,
    LeakTracker,
    Verdict,
    World,
    classify,
    still_leaked,
)

BLOCK = ipaddress.ip_network("10.65.0.0/26")


def alloc(
    last: int,
    *,
    seq: int = 1,
    handle: str | None = "h",
    node: str = "n1",
    pod: str | None = "p",
    namespace: str = "ns",
    type_: str | None = None,
) -> Allocation:
    attrs = {"node": node} if node else {}
    if pod:
        attrs.update(pod=pod, namespace=namespace)
    if type_:
        attrs["type"] = type_
    return Allocation(ipaddress.ip_address(f"10.65.0.{last}"), BLOCK, seq, handle, attrs)


def world(
    nodes: tuple[str, ...] = ("n1",),
    pods: dict[tuple[str, str], str] | None = None,
    wep: dict[tuple[str, str], frozenset[IPAddress]] | None = None,
    mapping: dict[str, str] | None = None,
) -> World:
    return World(frozenset(nodes), mapping or {}, pods or {}, wep or {})


WITH_POD = world(pods={("ns", "p"): "n1"})


@pytest.mark.parametrize(
    ("allocation", "seen", "verdict"),
    [
        (alloc(1), WITH_POD, Verdict.VALID),
        (alloc(1), world(), Verdict.CANDIDATE),  # pod gone
        (alloc(1), world(pods={("ns", "p"): "n2"}), Verdict.CANDIDATE),  # pod elsewhere
        (alloc(1), world(pods={("ns", "p"): ""}), Verdict.VALID),  # not scheduled yet
        (alloc(1), world(nodes=()), Verdict.NODE_GONE),
        (alloc(1, pod=None), world(nodes=()), Verdict.VALID),  # not a pod's: assume valid
        (alloc(1, node=""), world(), Verdict.VALID),  # no node attribute
        (alloc(1, handle="windows-reserved-ipam-handle", node="gone"), world(), Verdict.VALID),
        (alloc(1, pod=None, type_="vxlanTunnelAddress"), world(), Verdict.VALID),
        (alloc(1, pod=None, type_="ipipTunnelAddress"), world(nodes=()), Verdict.NODE_GONE),
        (alloc(1, pod=None, handle="ipip-tunnel-addr-n1"), world(nodes=()), Verdict.NODE_GONE),
        # WorkloadEndpoints known: the address must be one of theirs (Multus: any of them).
        (
            alloc(1),
            world(pods={("ns", "p"): "n1"}, wep={("ns", "p"): frozenset({alloc(2).address})}),
            Verdict.CANDIDATE,
        ),
        (
            alloc(1),
            world(
                pods={("ns", "p"): "n1"},
                wep={("ns", "p"): frozenset({alloc(1).address, alloc(2).address})},
            ),
            Verdict.VALID,
        ),
        # Calico node "n1" is Kubernetes node "kube-1": judged by that name.
        (alloc(1), world(nodes=("kube-1",), mapping={"n1": "kube-1"}), Verdict.CANDIDATE),
        (
            alloc(1),
            world(nodes=("kube-1",), mapping={"n1": "kube-1"}, pods={("ns", "p"): "kube-1"}),
            Verdict.VALID,
        ),
    ],
)
def test_classify(allocation: Allocation, seen: World, verdict: Verdict) -> None:
    assert classify(allocation, seen) is verdict


def test_addresses_of_a_calico_node_kubernetes_does_not_manage_are_never_collected() -> None:
    bare = World(frozenset(), {}, {}, unmanaged=frozenset({"bare"}))
    for allocation in (
        alloc(1, node="bare"),
        alloc(2, node="bare", pod=None, type_="vxlanTunnelAddress"),
    ):
        assert classify(allocation, bare) is Verdict.VALID
    tracker = LeakTracker()
    blocks = [block(1, "bare"), block(2, "bare")]
    tracker.plan([], blocks, bare, now=0, leak_grace_period=1)
    assert len(tracker.plan([], blocks, bare, now=1, leak_grace_period=1).release_blocks) == 1


def test_pod_leak_released_only_after_the_grace_period() -> None:
    tracker = LeakTracker()
    gone = alloc(1)
    for now in (0.0, 5.0, 9.9):
        plan = tracker.plan([gone], [], world(), now=now, leak_grace_period=10.0)
        assert plan.release == () and plan.candidates == (gone,)
    plan = tracker.plan([gone], [], world(), now=10.0, leak_grace_period=10.0)
    assert plan.release == ((gone,),) and plan.candidates == ()


def test_revalidated_allocation_forgets_its_timer() -> None:
    tracker = LeakTracker()
    tracker.plan([alloc(1)], [], world(), now=0.0, leak_grace_period=10.0)
    tracker.plan([alloc(1)], [], WITH_POD, now=5.0, leak_grace_period=10.0)  # pod visible
    plan = tracker.plan([alloc(1)], [], world(), now=12.0, leak_grace_period=10.0)
    assert plan.release == ()  # the timer started again at 12


def test_reassigned_address_starts_a_new_timer() -> None:
    tracker = LeakTracker()
    tracker.plan([alloc(1, seq=1)], [], world(), now=0.0, leak_grace_period=10.0)
    plan = tracker.plan([alloc(1, seq=2)], [], world(), now=11.0, leak_grace_period=10.0)
    assert plan.release == ()
    plan = tracker.plan([alloc(1, seq=2)], [], world(), now=21.0, leak_grace_period=10.0)
    assert plan.release == ((alloc(1, seq=2),),)


def test_disabled_grace_keeps_pod_leaks_but_frees_vanished_nodes_at_once() -> None:
    tracker = LeakTracker()
    pod_leak, node_gone = alloc(1, handle="a"), alloc(2, handle="b", node="n2")
    plan = tracker.plan([pod_leak, node_gone], [], world(), now=1e9, leak_grace_period=None)
    assert plan.release == ((node_gone,),)
    assert plan.candidates == (pod_leak,)


def test_all_or_none_per_handle() -> None:
    tracker = LeakTracker()
    leaked = alloc(1, handle="h", pod="gone")
    valid = alloc(2, handle="h")  # same handle, pod present
    plan = tracker.plan([leaked, valid], [], WITH_POD, now=0.0, leak_grace_period=0.0)
    assert plan.release == ()
    both = tracker.plan([leaked], [], WITH_POD, now=1.0, leak_grace_period=0.0)
    assert both.release == ((leaked,),)


def test_still_leaked_refuses_changed_or_valid_allocations() -> None:
    planned = alloc(1, seq=3)
    assert still_leaked(planned, planned, world())
    assert not still_leaked(planned, None, world())  # released meanwhile
    assert not still_leaked(planned, alloc(1, seq=4), world())  # re-assigned
    assert not still_leaked(planned, alloc(1, seq=3, handle="other"), world())
    assert not still_leaked(planned, planned, WITH_POD)  # the pod showed up


def block(last: int, host: str | None, *, empty: bool = True, seq: int = 1) -> BlockView:
    return BlockView(ipaddress.ip_network(f"10.65.{last}.0/26"), host, empty, seq)


def test_empty_block_released_on_second_observation_and_node_keeps_one() -> None:
    tracker = LeakTracker()
    blocks = [block(1, "n1"), block(2, "n1"), block(3, "n1", empty=False)]
    assert tracker.plan([], blocks, world(), now=0, leak_grace_period=1).release_blocks == ()
    released = tracker.plan([], blocks, world(), now=1, leak_grace_period=1).release_blocks
    assert released == (block(1, "n1"), block(2, "n1"))  # n1 keeps its non-empty block
    only_empty = [block(1, "n1"), block(2, "n1")]
    tracker = LeakTracker()
    tracker.plan([], only_empty, world(), now=0, leak_grace_period=1)
    released = tracker.plan([], only_empty, world(), now=1, leak_grace_period=1).release_blocks
    assert released == (block(1, "n1"),)  # one block stays


def test_block_used_between_observations_is_not_released() -> None:
    tracker = LeakTracker()
    tracker.plan([], [block(1, "n1"), block(2, "n1")], world(), now=0, leak_grace_period=1)
    later = [block(1, "n1", seq=2), block(2, "n1", empty=False)]
    assert tracker.plan([], later, world(), now=1, leak_grace_period=1).release_blocks == ()


def test_vanished_node_keeps_no_block() -> None:
    tracker = LeakTracker()
    blocks = [block(1, "gone")]
    tracker.plan([], blocks, world(), now=0, leak_grace_period=1)
    assert tracker.plan([], blocks, world(), now=1, leak_grace_period=1).release_blocks == (
        block(1, "gone"),
    )

"""No interleaving of pod creation, pod deletion, re-assignment and GC passes makes the IPAM GC
free an address that is in use (a "false free").

A small model: four addresses on one live node, pods created (a CNI ADD allocates at once, but
the pod may stay invisible to the GC -- a stale list, and, worse than reality, a stale live read
too), shown, deleted with or without a CNI DEL, and the clock ticking.  A GC pass is split in
two steps that other events may separate: ``snapshot`` (read and plan, ``LeakTracker.plan``)
and ``release`` (``still_leaked`` on a fresh read, then a release that quotes the sequence
number seen, as ``IPAM.release_ips`` does).

Property: whenever an address is freed, the allocation freed is the one planned (same sequence
number), and its pod is deleted, or has existed unseen for at least the grace period (Calico's
definition of a leak: a pod the GC never saw for ``leakGracePeriod``).  In particular a pod seen
at release time, or created less than the grace period ago, never loses its address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from pycalico.ipam.records import IPAddress
from pycalico.kubecontrollers.node_ipam_plan import (
    Allocation,
    LeakTracker,
    World,
    still_leaked,
)

GRACE = 10.0
BLOCK = ipaddress.ip_network("10.65.0.0/30")
ADDRESSES: list[IPAddress] = [ipaddress.ip_address(a) for a in BLOCK]


@dataclass
class Pod:
    created: float
    visible: bool = False
    alive: bool = True


@dataclass
class Model:
    now: float = 0.0
    sequence: int = 0
    held: dict[int, Allocation] = field(default_factory=dict)  # address index -> allocation
    pods: dict[str, Pod] = field(default_factory=dict)
    tracker: LeakTracker = field(default_factory=LeakTracker)
    pending: tuple[tuple[Allocation, ...], ...] = ()
    freed: int = 0

    def world(self) -> World:
        seen = {("ns", name): "n1" for name, pod in self.pods.items() if pod.visible}
        return World(frozenset({"n1"}), {}, seen)

    def create(self, index: int) -> None:
        if index in self.held:
            return
        self.sequence += 1
        name = f"pod{len(self.pods)}"
        self.pods[name] = Pod(created=self.now)
        attrs = {"node": "n1", "namespace": "ns", "pod": name}
        self.held[index] = Allocation(
            ADDRESSES[index], BLOCK, self.sequence, f"handle-{name}", attrs
        )

    def reassign(self, index: int) -> None:
        """The address is released (its pod's CNI DEL, at last) and at once allocated again."""
        self.held.pop(index, None)
        self.create(index)

    def pod_of(self, pick: int) -> str | None:
        names = sorted(self.pods)
        return names[pick % len(names)] if names else None

    def show(self, pick: int) -> None:
        name = self.pod_of(pick)
        if name and self.pods[name].alive:
            self.pods[name].visible = True

    def delete(self, pick: int, *, cni_del: bool) -> None:
        name = self.pod_of(pick)
        if not name:
            return
        pod = self.pods[name]
        pod.alive = pod.visible = False
        if cni_del:
            for index, allocation in list(self.held.items()):
                if allocation.attrs["pod"] == name:
                    del self.held[index]

    def snapshot(self) -> None:
        plan = self.tracker.plan(
            list(self.held.values()), [], self.world(), now=self.now, leak_grace_period=GRACE
        )
        self.pending = plan.release

    def release(self) -> None:
        for group in self.pending:
            for planned in group:
                index = ADDRESSES.index(planned.address)
                current = self.held.get(index)
                if not still_leaked(planned, current, self.world()):
                    continue
                assert current is not None
                # The re-read alone already refuses a re-assigned address ...
                assert current.key == planned.key, f"re-assigned {current} passed the re-read"
                # ... and IPAM.release_ips with sequence_number and handle_id: a mismatch frees nothing.
                if current.sequence != planned.sequence or current.handle != planned.handle:
                    continue
                self.check_not_in_use(current)
                del self.held[index]
                self.freed += 1
        self.pending = ()

    def check_not_in_use(self, allocation: Allocation) -> None:
        pod = self.pods[allocation.attrs["pod"]]
        if not pod.alive:
            return
        assert not pod.visible, f"false free: {allocation} belongs to a pod the GC can see"
        assert self.now - pod.created >= GRACE, (
            f"false free: {allocation} freed {self.now - pod.created}s after its pod was created"
        )


operations = st.lists(
    st.one_of(
        st.tuples(st.just("create"), st.integers(0, len(ADDRESSES) - 1)),
        st.tuples(st.just("reassign"), st.integers(0, len(ADDRESSES) - 1)),
        st.tuples(st.just("show"), st.integers(0, 20)),
        st.tuples(st.just("delete"), st.integers(0, 20)),
        st.tuples(st.just("cni_del"), st.integers(0, 20)),
        st.tuples(st.just("tick"), st.sampled_from([0.0, 0.5, 3.0, 9.9, 10.0, 25.0])),
        st.tuples(st.just("snapshot"), st.just(0)),
        st.tuples(st.just("release"), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=400, deadline=None)
@given(operations)
def test_no_interleaving_frees_an_address_in_use(steps: list[tuple[str, float]]) -> None:
    model = Model()
    for name, argument in steps:
        if name == "create":
            model.create(int(argument))
        elif name == "reassign":
            model.reassign(int(argument))
        elif name == "show":
            model.show(int(argument))
        elif name == "delete":
            model.delete(int(argument), cni_del=False)
        elif name == "cni_del":
            model.delete(int(argument), cni_del=True)
        elif name == "tick":
            model.now += argument
        elif name == "snapshot":
            model.snapshot()
        else:
            model.release()


def test_the_model_does_free_real_leaks() -> None:
    """The property is not vacuous: a deleted pod's address is freed after the grace period."""
    model = Model()
    model.create(0)
    model.show(0)
    model.delete(0, cni_del=False)
    model.snapshot()
    model.release()
    assert model.freed == 0
    model.now += GRACE
    model.snapshot()
    model.release()
    assert model.freed == 1 and not model.held


def test_the_model_meets_a_reassignment_between_plan_and_release() -> None:
    model = Model()
    model.create(0)
    model.delete(0, cni_del=False)
    model.snapshot()
    model.now += GRACE
    model.snapshot()  # the leak is confirmed: planned for release
    assert model.pending
    model.reassign(0)  # a new pod takes the address before the release runs
    model.release()
    assert model.freed == 0 and model.held[0].sequence == 2

"""IPAM garbage collection decisions (PURE): which allocations are leaked, which to release now,
which empty blocks to give up -- Calico's kube-controllers IPAM GC (``design/ipam/ipam-gc.md``).

Input is a snapshot: every allocation (address, block, sequence number, handle, attributes) and
every block (affinity, emptiness, sequence number), plus what Kubernetes and Calico say exists
(``World``).  ``classify`` judges one allocation; ``LeakTracker.plan`` turns a snapshot into a
``Plan`` and remembers, between passes, when each leak was first seen.  ``still_leaked`` is the
check made again, on freshly read data, just before a release.  No I/O and no clock: callers
pass ``now`` (seconds, any monotonic origin).

Rules, as Calico's:

* An allocation is valid until proven leaked: no ``node`` attribute, no ``pod``/``namespace``
  (and not a tunnel address), or the Windows-reserved handle -- all valid.
* Its Kubernetes node is the Calico node's ``orchRefs`` k8s ``nodeName``; a Calico node that
  exists without one is not Kubernetes' and its addresses are never collected; a Calico node
  that is gone is assumed to have had its own name (Calico's same-name fallback).
* Node gone from Kubernetes: a *confirmed* leak at once (pod and tunnel addresses alike).
* Tunnel addresses are judged by node existence only, never by pods.
* Pod gone, pod on another node, or the pod's WorkloadEndpoints known and none holding the
  address: a *candidate* leak, confirmed only once it has been seen leaked for
  ``leak_grace_period`` seconds at the **same sequence number** (a re-assigned address has a
  new sequence number, so its timer starts again); ``None`` disables pod-leak GC.
* All or none per handle: a handle's addresses are released only when every one is confirmed.
* An empty block is released only when seen empty on two consecutive passes at the same
  sequence number; a live node keeps at least one block; a vanished node's blocks all go.

Invariants (tested with hypothesis): nothing is released that was not seen leaked for the
grace period at that sequence number (or whose node is gone); ``still_leaked`` refuses an
allocation whose sequence number or handle changed, or that a live read finds valid again.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pycalico.ipam.blocks import AllocationBlock
from pycalico.ipam.records import (
    ATTRIBUTE_NAMESPACE,
    ATTRIBUTE_NODE,
    ATTRIBUTE_POD,
    ATTRIBUTE_TYPE,
    WINDOWS_RESERVED_HANDLE,
    IPAddress,
    IPNetwork,
    sanitize_handle,
)

TUNNEL_TYPES = frozenset(
    {
        "ipipTunnelAddress",
        "vxlanTunnelAddress",
        "vxlanV6TunnelAddress",
        "wireguardTunnelAddress",
        "wireguardV6TunnelAddress",
    }
)
TUNNEL_HANDLE_PREFIXES = ("ipip-tunnel-addr-", "vxlan-tunnel-addr-", "wireguard-tunnel-addr-")

PodKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True, slots=True)
class Allocation:
    """One allocated address as read from its block."""

    address: IPAddress
    block: IPNetwork
    sequence: int
    handle: str | None
    attrs: Mapping[str, str] = field(default_factory=dict)

    @property
    def node(self) -> str:
        return self.attrs.get(ATTRIBUTE_NODE, "")

    @property
    def pod(self) -> PodKey | None:
        namespace, pod = self.attrs.get(ATTRIBUTE_NAMESPACE), self.attrs.get(ATTRIBUTE_POD)
        return (namespace, pod) if namespace and pod else None

    @property
    def tunnel(self) -> bool:
        if self.attrs.get(ATTRIBUTE_TYPE, "") in TUNNEL_TYPES:
            return True
        return bool(self.handle and self.handle.startswith(TUNNEL_HANDLE_PREFIXES))

    @property
    def key(self) -> tuple[IPAddress, int]:
        """Identity of this allocation: an address re-assigned gets a new sequence number."""
        return self.address, self.sequence


@dataclass(frozen=True, slots=True)
class BlockView:
    cidr: IPNetwork
    host: str | None  # the affine node (host affinity), None if none
    empty: bool
    sequence: int


@dataclass(frozen=True, slots=True)
class World:
    """What exists, as read for one pass."""

    kube_nodes: frozenset[str]
    calico_to_kube: Mapping[str, str]  # Calico node name -> its k8s orchRef nodeName
    pods: Mapping[PodKey, str]  # pod -> spec.nodeName ("" when not scheduled)
    # pod -> addresses of its WorkloadEndpoints; a pod without any WEP is absent (unknown).
    pod_addresses: Mapping[PodKey, frozenset[IPAddress]] = field(default_factory=dict)
    # Calico Nodes that exist without a k8s orchRef: not Kubernetes', never collected.
    unmanaged: frozenset[str] = frozenset()

    def kube_node(self, calico_node: str) -> str:
        return self.calico_to_kube.get(calico_node) or calico_node

    def node_exists(self, calico_node: str) -> bool:
        return calico_node in self.unmanaged or self.kube_node(calico_node) in self.kube_nodes


def read_block(block: AllocationBlock) -> tuple[BlockView, list[Allocation]]:
    """A block as the GC sees it: its view and its live allocations (cooling ones excluded)."""
    allocations = []
    for ordinal in block.in_use_ordinals():
        attribute = block.attributes[block.allocations[ordinal]]  # type: ignore[index]
        allocations.append(
            Allocation(
                address=block.address(ordinal),
                block=block.cidr,
                sequence=block.sequence_for(ordinal),
                handle=sanitize_handle(attribute.handle_id) if attribute.handle_id else None,
                attrs=dict(attribute.secondary or {}),
            )
        )
    view = BlockView(
        cidr=block.cidr, host=block.host, empty=block.empty(), sequence=block.sequence_number
    )
    return view, allocations


class Verdict(enum.Enum):
    VALID = "valid"
    CANDIDATE = "candidate"  # pod leak: released after the grace period
    NODE_GONE = "node-gone"  # confirmed at once


def classify(allocation: Allocation, world: World) -> Verdict:
    """Calico's ``checkAllocations`` decision tree for one allocation."""
    handle = (allocation.handle or "").lower()
    if handle == WINDOWS_RESERVED_HANDLE or not allocation.node:
        return Verdict.VALID
    if allocation.node in world.unmanaged:
        return Verdict.VALID  # a node Kubernetes does not manage (Calico skips it)
    node_exists = world.node_exists(allocation.node)
    if allocation.tunnel:
        return Verdict.VALID if node_exists else Verdict.NODE_GONE
    pod = allocation.pod
    if pod is None:
        return Verdict.VALID  # not a pod's address: assume valid (Calico: "can't delete node")
    if not node_exists:
        return Verdict.NODE_GONE
    scheduled = world.pods.get(pod)
    if scheduled is None:
        return Verdict.CANDIDATE
    if scheduled and scheduled != world.kube_node(allocation.node):
        return Verdict.CANDIDATE
    known = world.pod_addresses.get(pod)
    if known is not None and allocation.address not in known:
        return Verdict.CANDIDATE
    return Verdict.VALID


def still_leaked(planned: Allocation, current: Allocation | None, live: World) -> bool:
    """The last check before a release, on data read just now.

    ``current`` is the address's allocation as its block holds it now (None: not allocated);
    ``live`` what a live read of the allocation's node, pod and WorkloadEndpoints found.  The
    release itself must still quote ``planned.sequence`` and ``planned.handle``, so that a
    change after this check frees nothing.
    """
    if current is None or current.key != planned.key or current.handle != planned.handle:
        return False  # released or re-assigned since it was seen
    return classify(current, live) is not Verdict.VALID


@dataclass(frozen=True, slots=True)
class Plan:
    candidates: tuple[Allocation, ...]  # pod leaks still within the grace period
    release: tuple[tuple[Allocation, ...], ...]  # confirmed leaks, grouped by handle
    release_blocks: tuple[BlockView, ...]  # empty blocks whose affinity goes
    valid: int


@dataclass
class LeakTracker:
    """What the GC remembers between passes (in memory, as Calico's controller)."""

    first_seen: dict[tuple[IPAddress, int], float] = field(default_factory=dict)
    empty_seen: dict[IPNetwork, int] = field(default_factory=dict)  # block -> sequence

    def plan(
        self,
        allocations: Iterable[Allocation],
        blocks: Iterable[BlockView],
        world: World,
        *,
        now: float,
        leak_grace_period: float | None,
    ) -> Plan:
        listed = list(allocations)
        verdicts = {a.key: classify(a, world) for a in listed}
        seen: dict[tuple[IPAddress, int], float] = {}
        confirmed: set[tuple[IPAddress, int]] = set()
        candidates: list[Allocation] = []
        for allocation in listed:
            verdict = verdicts[allocation.key]
            if verdict is Verdict.NODE_GONE:
                confirmed.add(allocation.key)
            elif verdict is Verdict.CANDIDATE:
                first = self.first_seen.get(allocation.key, now)
                seen[allocation.key] = first
                if leak_grace_period is not None and now - first >= leak_grace_period:
                    confirmed.add(allocation.key)
                else:
                    candidates.append(allocation)
        self.first_seen = seen  # re-validated or vanished allocations forget their timer
        groups = handle_groups(listed, confirmed)
        valid = sum(1 for v in verdicts.values() if v is Verdict.VALID)
        return Plan(
            candidates=tuple(candidates),
            release=groups,
            release_blocks=self._empty_blocks(blocks, world),
            valid=valid,
        )

    def _empty_blocks(self, blocks: Iterable[BlockView], world: World) -> tuple[BlockView, ...]:
        """Empty blocks seen empty at the same sequence number on the previous pass too; a live
        node keeps its last block (a vanished node keeps none)."""
        listed = list(blocks)
        previous, self.empty_seen = self.empty_seen, {}
        ready: list[BlockView] = []
        for block in listed:
            if not block.empty or block.host is None:
                continue
            self.empty_seen[block.cidr] = block.sequence
            if previous.get(block.cidr) == block.sequence:
                ready.append(block)
        by_host: dict[str, int] = {}
        for block in listed:
            if block.host is not None:
                by_host[block.host] = by_host.get(block.host, 0) + 1
        out: list[BlockView] = []
        kept: dict[str, int] = {}
        for block in sorted(ready, key=lambda b: (b.host or "", b.cidr.version, b.cidr)):
            host = block.host or ""
            left = by_host[host] - kept.get(host, 0)
            if world.node_exists(host) and left <= 1:
                continue  # a live node's only remaining block stays
            kept[host] = kept.get(host, 0) + 1
            out.append(block)
        return tuple(out)


def handle_groups(
    allocations: list[Allocation], confirmed: set[tuple[IPAddress, int]]
) -> tuple[tuple[Allocation, ...], ...]:
    """Confirmed leaks grouped by handle, keeping only handles whose every address is
    confirmed (an address without a handle is its own group)."""
    by_handle: dict[str, list[Allocation]] = {}
    groups: list[tuple[Allocation, ...]] = []
    for allocation in allocations:
        if allocation.handle:
            by_handle.setdefault(allocation.handle, []).append(allocation)
        elif allocation.key in confirmed:
            groups.append((allocation,))
    for members in by_handle.values():
        if all(member.key in confirmed for member in members):
            groups.append(tuple(members))
    return tuple(groups)

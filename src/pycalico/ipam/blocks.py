"""Calico's IPAM allocation block as stored in etcd, and the algorithms on one block.

This module is the pure data model and the per-block algorithms (assign, release, cooldown),
byte-compatible with libcalico-go's ``model.AllocationBlock`` JSON so a store written by Calico is
read here and the other way round.  It is not the allocator: reading, writing, compare-and-swap
and retries live in ``pycalico.ipam.allocator``; it never reads a clock (callers pass ``now``).
The smaller values stored beside blocks (summaries, affinities, handles, config) and the shared
address types and vocabulary are in ``pycalico.ipam.records``.

Invariants of an ``AllocationBlock`` (checked by ``validate``):

* ``len(allocations) == size``; ``allocations[ordinal]`` is None (free or cooling is told apart by
  the attribute) or an index into ``attributes``.
* ``unallocated`` holds each free ordinal exactly once, in FIFO order: allocation pops from the
  head, release appends to the tail, so the address free the longest is reused first.
* An ordinal is in exactly one state: allocated (slot -> attribute without ``releasedAt``),
  cooling (slot -> attribute with ``releasedAt``; not free, not in use), or free (slot None and
  in ``unallocated``).
* ``sequenceNumberForAllocation[str(ordinal)]`` is the block's ``sequenceNumber`` at the moment the
  ordinal was allocated; the allocator bumps ``sequenceNumber`` on every write, so a release that
  quotes an old sequence number never frees an address that was since reused.

A block object is deliberately mutable: each one is decoded from a single read, changed by one
algorithm and encoded for one compare-and-swap write, never shared between tasks.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pycalico.ipam.records import (
    AFFINITY_TYPE_HOST,
    WINDOWS_RESERVED_HANDLE,
    IPAddress,
    IPInterface,
    IPNetwork,
    affinity_string,
    format_time,
    parse_time,
    sanitize_handle,
)

# --- errors raised by block algorithms ---------------------------------------------------------


class BlockError(Exception):
    """A block refused an operation; the message is the user-facing reason."""


class AffinityMismatch(BlockError):
    pass


class AddressInUse(BlockError):
    def __init__(self, address: IPAddress) -> None:
        super().__init__(f"Address already assigned in block: {address}")
        self.address = address


class AddressNotInBlock(BlockError):
    pass


class StaleRelease(BlockError):
    """A release quoted a sequence number or handle that no longer matches the allocation."""


class CorruptBlock(BlockError):
    pass


# --- allocation block ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AllocationAttribute:
    """One entry of a block's ``attributes``; several allocations may share one entry."""

    handle_id: str | None = None
    secondary: Mapping[str, str] | None = None
    alternate: Mapping[str, str] | None = None
    released_at: str | None = None
    # The wire form, built once: a block is re-encoded on every write, attributes rarely change.
    _wire: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    def to_json(self) -> dict[str, Any]:
        if self._wire is not None:
            return self._wire
        out: dict[str, Any] = {}
        if self.handle_id is not None:
            out["handle_id"] = self.handle_id
        if self.secondary:
            out["secondary"] = dict(self.secondary)
        if self.alternate:
            out["alternate"] = dict(self.alternate)
        if self.released_at is not None:
            out["releasedAt"] = self.released_at
        object.__setattr__(self, "_wire", out)
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> AllocationAttribute:
        attribute = cls(
            handle_id=raw.get("handle_id"),
            secondary=dict(raw["secondary"]) if raw.get("secondary") else None,
            alternate=dict(raw["alternate"]) if raw.get("alternate") else None,
            released_at=raw.get("releasedAt"),
        )
        return attribute

    @property
    def cooling(self) -> bool:
        return self.released_at is not None


@dataclass(frozen=True, slots=True)
class ReleaseOption:
    """One address to release; a given ``sequence_number`` or ``handle_id`` must still match."""

    address: IPAddress
    sequence_number: int | None = None
    handle_id: str | None = None


@dataclass(frozen=True, slots=True)
class ReleaseOutcome:
    not_allocated: tuple[IPAddress, ...]
    released_by_handle: Mapping[str, int]
    released: tuple[IPAddress, ...]


@dataclass(slots=True)
class AllocationBlock:
    cidr: IPNetwork
    affinity: str | None = None
    affinity_claim_time: str | None = None
    allocations: list[int | None] = field(default_factory=list)
    unallocated: list[int] = field(default_factory=list)
    attributes: list[AllocationAttribute] = field(default_factory=list)
    sequence_number: int = 0
    sequence_number_for_allocation: dict[str, int] = field(default_factory=dict)
    deleted: bool = False
    # Fields we do not interpret (e.g. the deprecated ``strictAffinity``) survive a round trip.
    extra: dict[str, Any] = field(default_factory=dict)

    # -- construction and codec --

    @classmethod
    def new(
        cls,
        cidr: IPNetwork,
        *,
        affinity: str | None,
        claim_time: datetime | None,
        sequence_number: int,
    ) -> AllocationBlock:
        """A fresh block with every ordinal free in ascending order.

        ``sequence_number`` should come from a clock (Calico uses Unix nanoseconds) so a block
        deleted and recreated never repeats the sequence numbers of its previous life.
        """
        size = cidr.num_addresses
        return cls(
            cidr=cidr,
            affinity=affinity,
            affinity_claim_time=format_time(claim_time) if claim_time else None,
            allocations=[None] * size,
            unallocated=list(range(size)),
            sequence_number=sequence_number,
        )

    @classmethod
    def from_json(cls, data: bytes | str) -> AllocationBlock:
        raw = json.loads(data)
        if not isinstance(raw, dict) or "cidr" not in raw:
            raise CorruptBlock("block value is not a JSON object with a 'cidr' field")
        known = {
            "cidr",
            "affinity",
            "affinity_claim_time",
            "allocations",
            "unallocated",
            "attributes",
            "sequenceNumber",
            "sequenceNumberForAllocation",
            "deleted",
            "hostAffinity",
        }
        affinity = raw.get("affinity")
        if affinity is None and raw.get("hostAffinity"):
            affinity = affinity_string(raw["hostAffinity"])
        block = cls(
            cidr=ipaddress.ip_network(raw["cidr"]),
            affinity=affinity,
            affinity_claim_time=raw.get("affinity_claim_time"),
            allocations=list(raw.get("allocations") or []),
            unallocated=list(raw.get("unallocated") or []),
            attributes=[AllocationAttribute.from_json(a) for a in raw.get("attributes") or []],
            sequence_number=int(raw.get("sequenceNumber") or 0),
            sequence_number_for_allocation={
                str(k): int(v) for k, v in (raw.get("sequenceNumberForAllocation") or {}).items()
            },
            deleted=bool(raw.get("deleted", False)),
            extra={k: v for k, v in raw.items() if k not in known},
        )
        if not block.allocations:
            block.allocations = [None] * block.size
        return block

    def to_json(self) -> bytes:
        out: dict[str, Any] = dict(self.extra)
        out.update(
            {
                "cidr": str(self.cidr),
                "affinity": self.affinity,
                "allocations": self.allocations,
                "unallocated": self.unallocated,
                "attributes": [a.to_json() for a in self.attributes],
                "sequenceNumber": self.sequence_number,
                "sequenceNumberForAllocation": self.sequence_number_for_allocation,
                "deleted": self.deleted,
            }
        )
        if self.affinity_claim_time is not None:
            out["affinity_claim_time"] = self.affinity_claim_time
        return json.dumps(out, separators=(",", ":")).encode()

    # -- ordinal maths --

    @property
    def size(self) -> int:
        return self.cidr.num_addresses

    @property
    def version(self) -> int:
        return self.cidr.version

    def ordinal(self, address: IPAddress) -> int:
        ordinal = int(address) - int(self.cidr.network_address)
        if address.version != self.cidr.version or not 0 <= ordinal < self.size:
            raise AddressNotInBlock(f"IP {address} not in block {self.cidr}")
        return ordinal

    def address(self, ordinal: int) -> IPAddress:
        if not 0 <= ordinal < self.size:
            raise AddressNotInBlock(f"ordinal {ordinal} not in block {self.cidr}")
        return self.cidr.network_address + ordinal

    def interface(self, ordinal: int) -> IPInterface:
        """The address with the block's prefix length, which is what Calico's IPAM returns."""
        if not 0 <= ordinal < self.size:
            raise AddressNotInBlock(f"ordinal {ordinal} not in block {self.cidr}")
        # Built from the integer: ipaddress re-parses an address object given as a tuple part.
        value = int(self.cidr.network_address) + ordinal
        kind = ipaddress.IPv4Interface if self.cidr.version == 4 else ipaddress.IPv6Interface
        return kind((value, self.cidr.prefixlen))

    # -- affinity --

    @property
    def host(self) -> str | None:
        if self.affinity and self.affinity.startswith(f"{AFFINITY_TYPE_HOST}:"):
            return self.affinity[len(AFFINITY_TYPE_HOST) + 1 :]
        return None

    def affine_to(self, host: str, affinity_type: str = AFFINITY_TYPE_HOST) -> bool:
        return self.affinity == affinity_string(host, affinity_type)

    def claim_time(self) -> datetime | None:
        return parse_time(self.affinity_claim_time)

    def _check_affinity(self, host: str | None, affinity_type: str) -> None:
        """With strict affinity (``host`` given) only our own blocks may be assigned from."""
        if host is None:
            return
        if self.affinity is None:
            raise AffinityMismatch(f"Attempt to assign from block {self.cidr} with no affinity")
        if not self.affine_to(host, affinity_type):
            raise AffinityMismatch(
                f"Block affinity ({self.affinity}) does not match provided ({host}:{affinity_type})"
            )

    # -- state queries --

    def _attribute_of(self, ordinal: int) -> AllocationAttribute | None:
        index = self.allocations[ordinal]
        if index is None:
            return None
        if not 0 <= index < len(self.attributes):
            raise CorruptBlock(f"block {self.cidr}: ordinal {ordinal} points at missing attribute")
        return self.attributes[index]

    def is_allocated(self, ordinal: int) -> bool:
        attribute = self._attribute_of(ordinal)
        return attribute is not None and not attribute.cooling

    def num_free(self, reserved: Iterable[IPAddress] = ()) -> int:
        if not reserved:
            return len(self.unallocated)
        skip = {self.ordinal(a) for a in reserved if a in self.cidr}
        return sum(1 for o in self.unallocated if o not in skip)

    def in_use_ordinals(self) -> list[int]:
        return [o for o in range(self.size) if self.is_allocated(o)]

    def cooling_ordinals(self) -> list[int]:
        out = []
        for ordinal in range(self.size):
            attribute = self._attribute_of(ordinal)
            if attribute is not None and attribute.cooling:
                out.append(ordinal)
        return out

    def in_use_addresses(self) -> list[IPAddress]:
        return [self.address(o) for o in self.in_use_ordinals()]

    def empty(self) -> bool:
        """No address is held (cooling addresses count as held: deleting the block would let
        them be handed out at once); Windows' reserved addresses do not count."""
        for ordinal in range(self.size):
            attribute = self._attribute_of(ordinal)
            if attribute is None:
                continue
            handle = attribute.handle_id
            if handle is None or handle.lower() != WINDOWS_RESERVED_HANDLE:
                return False
        return True

    def attribute_for(self, address: IPAddress) -> AllocationAttribute | None:
        """The live allocation's attribute for ``address``, or None if it is not in use."""
        attribute = self._attribute_of(self.ordinal(address))
        if attribute is None or attribute.cooling:
            return None
        return attribute

    def sequence_for(self, ordinal: int) -> int:
        return self.sequence_number_for_allocation.get(str(ordinal), 0)

    def addresses_by_handle(self, handle_id: str) -> list[IPAddress]:
        return [
            self.address(o)
            for o in range(self.size)
            if (a := self._attribute_of(o)) is not None
            and not a.cooling
            and a.handle_id is not None
            and sanitize_handle(a.handle_id) == handle_id
        ]

    def handle_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for ordinal in self.in_use_ordinals():
            attribute = self.attributes[self.allocations[ordinal]]  # type: ignore[index]
            if attribute.handle_id is not None:
                handle = sanitize_handle(attribute.handle_id)
                counts[handle] = counts.get(handle, 0) + 1
        return counts

    # -- mutations --

    def _find_or_add_attribute(self, attribute: AllocationAttribute) -> int:
        handle = attribute.handle_id
        for index, existing in enumerate(self.attributes):
            # Handles are nearly always distinct: compare them before the whole attribute.
            if existing.handle_id == handle and existing == attribute:
                return index
        self.attributes.append(attribute)
        return len(self.attributes) - 1

    def auto_assign(
        self,
        count: int,
        handle_id: str | None,
        attrs: Mapping[str, str] | None,
        *,
        strict_host: str | None = None,
        affinity_type: str = AFFINITY_TYPE_HOST,
        reserved: Iterable[IPAddress] = (),
    ) -> list[IPInterface]:
        """Take up to ``count`` free addresses from the head of ``unallocated``.

        ``strict_host`` set means strict affinity: the block must be affine to that host.
        Returns the addresses with the block's prefix length (empty when the block is full).
        """
        self._check_affinity(strict_host, affinity_type)
        skip = {self.ordinal(a) for a in reserved if a in self.cidr}
        attribute = AllocationAttribute(handle_id=handle_id, secondary=dict(attrs or {}) or None)
        taken: list[IPInterface] = []
        remaining: list[int] = []
        index: int | None = None
        for ordinal in self.unallocated:
            if len(taken) >= count or ordinal in skip:
                remaining.append(ordinal)
                continue
            if index is None:
                index = self._find_or_add_attribute(attribute)
            self.allocations[ordinal] = index
            self.sequence_number_for_allocation[str(ordinal)] = self.sequence_number
            taken.append(self.interface(ordinal))
        self.unallocated = remaining
        return taken

    def assign(
        self,
        address: IPAddress,
        handle_id: str | None,
        attrs: Mapping[str, str] | None,
        *,
        strict_host: str | None = None,
        affinity_type: str = AFFINITY_TYPE_HOST,
    ) -> None:
        """Allocate one given address; AddressInUse if it is taken (or still cooling down)."""
        self._check_affinity(strict_host, affinity_type)
        ordinal = self.ordinal(address)
        if self.allocations[ordinal] is not None:
            raise AddressInUse(address)
        attribute = AllocationAttribute(handle_id=handle_id, secondary=dict(attrs or {}) or None)
        self.allocations[ordinal] = self._find_or_add_attribute(attribute)
        self.sequence_number_for_allocation[str(ordinal)] = self.sequence_number
        self.unallocated = [o for o in self.unallocated if o != ordinal]

    def _free_ordinals(
        self, ordinals: list[int], *, cooldown_seconds: int, now: datetime | None
    ) -> None:
        """Free (or start cooling) the given allocated ordinals and tidy the attribute list."""
        for ordinal in ordinals:
            self.sequence_number_for_allocation.pop(str(ordinal), None)
        if cooldown_seconds > 0:
            if now is None:
                raise ValueError("a cooldown needs the current time")
            stamp = format_time(now)
            for ordinal in ordinals:
                previous = self.attributes[self.allocations[ordinal]]  # type: ignore[index]
                cooling = AllocationAttribute(secondary=previous.secondary, released_at=stamp)
                self.allocations[ordinal] = self._find_or_add_attribute(cooling)
        else:
            for ordinal in ordinals:
                self.allocations[ordinal] = None
                self.unallocated.append(ordinal)
        self._compact_attributes()

    def _compact_attributes(self) -> None:
        """Drop attributes no allocation refers to, renumbering the survivors in order."""
        used = sorted({i for i in self.allocations if i is not None})
        if used == list(range(len(self.attributes))):
            return
        renumber = {old: new for new, old in enumerate(used)}
        self.attributes = [self.attributes[old] for old in used]
        self.allocations = [None if i is None else renumber[i] for i in self.allocations]

    def release(
        self,
        options: Iterable[ReleaseOption],
        *,
        cooldown_seconds: int = 0,
        now: datetime | None = None,
    ) -> ReleaseOutcome:
        """Release the given addresses, all or nothing.

        A mismatched sequence number or handle means the caller's view is stale: StaleRelease
        is raised and nothing changes.  Addresses that are not allocated are reported back.
        """
        unique: dict[IPAddress, ReleaseOption] = {}
        for option in options:
            unique[option.address] = option
        not_allocated: list[IPAddress] = []
        ordinals: list[int] = []
        counts: dict[str, int] = {}
        for address, option in unique.items():
            ordinal = self.ordinal(address)
            recorded = self.sequence_for(ordinal)
            if option.sequence_number is not None and option.sequence_number != recorded:
                raise StaleRelease(
                    f"update conflict on {address}: sequence number {option.sequence_number} "
                    f"does not match the allocation's {recorded}"
                )
            attribute = self._attribute_of(ordinal)
            if attribute is None or attribute.cooling:
                not_allocated.append(address)
                continue
            handle = sanitize_handle(attribute.handle_id) if attribute.handle_id else ""
            if option.handle_id and option.handle_id != handle:
                raise StaleRelease(
                    f"update conflict on {address}: handle {option.handle_id!r} does not match "
                    f"the allocation's {handle!r}"
                )
            ordinals.append(ordinal)
            if handle:
                counts[handle] = counts.get(handle, 0) + 1
        self._free_ordinals(ordinals, cooldown_seconds=cooldown_seconds, now=now)
        return ReleaseOutcome(
            not_allocated=tuple(not_allocated),
            released_by_handle=counts,
            released=tuple(self.address(o) for o in ordinals),
        )

    def release_by_handle(
        self,
        handle_id: str,
        *,
        sequence_number: int | None = None,
        cooldown_seconds: int = 0,
        now: datetime | None = None,
    ) -> list[IPAddress]:
        """Release every live address of ``handle_id`` (skipping ones whose sequence number
        differs from a given one); returns the released addresses."""
        ordinals = []
        for ordinal in range(self.size):
            attribute = self._attribute_of(ordinal)
            if attribute is None or attribute.cooling or attribute.handle_id is None:
                continue
            if sanitize_handle(attribute.handle_id) != handle_id:
                continue
            if sequence_number is not None and self.sequence_for(ordinal) != sequence_number:
                continue
            ordinals.append(ordinal)
        self._free_ordinals(ordinals, cooldown_seconds=cooldown_seconds, now=now)
        return [self.address(o) for o in ordinals]

    def collect_cooled(self, *, cooldown_seconds: int, now: datetime) -> int:
        """Move addresses whose cooldown has passed back to the tail of ``unallocated``.

        Returns how many moved.  With ``cooldown_seconds == 0`` everything cooling is freed
        (the cooldown was switched off, so nothing should stay held).
        """
        if not any(a.released_at is not None for a in self.attributes):
            return 0
        limit = now - timedelta(seconds=cooldown_seconds)
        due = []
        for ordinal in self.cooling_ordinals():
            stamp = parse_time(self.attributes[self.allocations[ordinal]].released_at)  # type: ignore[index]
            if cooldown_seconds <= 0 or stamp is None or stamp <= limit:
                due.append((stamp or now, ordinal))
        for _, ordinal in sorted(due):
            self.allocations[ordinal] = None
            self.unallocated.append(ordinal)
        if due:
            self._compact_attributes()
        return len(due)

    def validate(self) -> list[str]:
        """Every broken invariant, as a sentence (empty when the block is well formed)."""
        problems = []
        if len(self.allocations) != self.size:
            problems.append(
                f"block {self.cidr}: {len(self.allocations)} allocation slots, expected {self.size}"
            )
            return problems
        seen: set[int] = set()
        for ordinal in self.unallocated:
            if ordinal in seen:
                problems.append(f"block {self.cidr}: ordinal {ordinal} listed twice as free")
            seen.add(ordinal)
            if not 0 <= ordinal < self.size:
                problems.append(f"block {self.cidr}: free ordinal {ordinal} out of range")
            elif self.allocations[ordinal] is not None:
                problems.append(f"block {self.cidr}: ordinal {ordinal} both free and allocated")
        for ordinal, index in enumerate(self.allocations):
            if index is None and ordinal not in seen:
                problems.append(f"block {self.cidr}: ordinal {ordinal} neither free nor allocated")
            if index is not None and not 0 <= index < len(self.attributes):
                problems.append(f"block {self.cidr}: ordinal {ordinal} has no attribute")
        return problems

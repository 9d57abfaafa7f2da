"""IPAM's small values: address types, Calico's attribute and affinity vocabulary, and the
records stored beside the blocks (block summaries, block affinities, handles, IPAM config).

Pure data and JSON codecs, byte-compatible with libcalico-go's ``model`` types, with no I/O and
no clock (callers pass times in).  It is not the allocation block and its algorithms
(``pycalico.ipam.blocks``) and not the datastore access (``pycalico.ipam.store``).

Invariants:

* Every record is a frozen dataclass; a change produces a new value (``IPAMHandle.incremented``).
* An ``IPAMHandle`` never holds a zero or negative count: ``decremented`` drops the entry at zero.
* ``IPAMConfig`` never holds a cooldown above ``MAX_IP_COOLDOWN_SECONDS`` when decoded, and
  ``validate`` names every field that breaks Calico's rules.
* Affinity strings are ``<type>:<name>`` (``affinity_string``), as Calico writes them.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

ATTRIBUTE_NODE = "node"
ATTRIBUTE_POD = "pod"
ATTRIBUTE_NAMESPACE = "namespace"
ATTRIBUTE_TIMESTAMP = "timestamp"
ATTRIBUTE_TYPE = "type"

AFFINITY_TYPE_HOST = "host"
AFFINITY_TYPE_VIRTUAL = "virtual"

STATE_PENDING = "pending"
STATE_CONFIRMED = "confirmed"
STATE_PENDING_DELETION = "pendingDeletion"

WINDOWS_RESERVED_HANDLE = "windows-reserved-ipam-handle"
DEFAULT_MAX_BLOCKS_PER_HOST = 20
MAX_IP_COOLDOWN_SECONDS = 1200


# --- small helpers ----------------------------------------------------------------------------


def sanitize_handle(handle_id: str) -> str:
    """Calico cuts handle ids at the first carriage return (old host-local migration damage)."""
    return handle_id.split("\r", 1)[0]


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, as Go's ``metav1.Time`` marshals it."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def affinity_string(host: str, affinity_type: str = AFFINITY_TYPE_HOST) -> str:
    return f"{affinity_type}:{host}"


def block_cidr_for(address: IPAddress, block_size: int) -> IPNetwork:
    """The block of ``block_size`` prefix length that holds ``address``."""
    return ipaddress.ip_network(f"{address}/{block_size}", strict=False)


# --- block summary ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlockSummary:
    """What choosing a block needs, read without building the whole block (scans of every
    block in a cluster decode many of them)."""

    cidr: IPNetwork
    affinity: str | None
    affinity_claim_time: str | None
    free: int
    empty: bool
    cooling: bool
    sequence_number: int
    # Only read when a reservation overlaps the block (free addresses that may be handed out).
    unallocated: tuple[int, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def from_json(cls, data: bytes | str) -> BlockSummary:
        raw = json.loads(data)
        attributes = raw.get("attributes") or []
        affinity = raw.get("affinity")
        if affinity is None and raw.get("hostAffinity"):
            affinity = affinity_string(raw["hostAffinity"])
        empty = True
        for index in raw.get("allocations") or []:
            if index is None:
                continue
            handle = attributes[index].get("handle_id") if index < len(attributes) else None
            if handle is None or handle.lower() != WINDOWS_RESERVED_HANDLE:
                empty = False
                break
        return cls(
            cidr=ipaddress.ip_network(raw["cidr"]),
            affinity=affinity,
            affinity_claim_time=raw.get("affinity_claim_time"),
            free=len(raw.get("unallocated") or []),
            empty=empty,
            cooling=any(a.get("releasedAt") for a in attributes),
            sequence_number=int(raw.get("sequenceNumber") or 0),
            unallocated=tuple(raw.get("unallocated") or ()),
        )

    def free_excluding(self, reserved: Iterable[IPAddress]) -> int:
        """Free addresses that are not reserved (Calico's NumFreeAddresses)."""
        base = int(self.cidr.network_address)
        skip = {int(a) - base for a in reserved if a in self.cidr}
        if not skip:
            return self.free
        return sum(1 for o in self.unallocated if o not in skip)

    @property
    def maybe_free(self) -> bool:
        """Free addresses now, or cooling ones that may have become free."""
        return self.free > 0 or self.cooling


# --- affinity, handle and config values ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BlockAffinity:
    """Value of ``/calico/ipam/v2/host/<node>/ipv4/block/<cidr>``."""

    state: str = STATE_CONFIRMED
    deleted: bool = False

    @classmethod
    def from_json(cls, data: bytes | str) -> BlockAffinity:
        # An empty value is the old format: implicitly confirmed.
        if not data or not data.strip():
            return cls(state=STATE_CONFIRMED)
        raw = json.loads(data)
        state = raw.get("state") or STATE_CONFIRMED
        return cls(state=state, deleted=bool(raw.get("deleted", False)))

    def to_json(self) -> bytes:
        return json.dumps({"state": self.state, "deleted": self.deleted}).encode()

    @property
    def confirmed(self) -> bool:
        return self.state == STATE_CONFIRMED


@dataclass(frozen=True, slots=True)
class IPAMHandle:
    """Value of ``/calico/ipam/v2/handle/<id>``: how many addresses the handle holds per block."""

    block: Mapping[str, int] = field(default_factory=dict)
    deleted: bool = False

    @classmethod
    def from_json(cls, data: bytes | str) -> IPAMHandle:
        raw = json.loads(data)
        return cls(
            block={str(k): int(v) for k, v in (raw.get("block") or {}).items()},
            deleted=bool(raw.get("deleted", False)),
        )

    def to_json(self) -> bytes:
        return json.dumps({"block": dict(self.block), "deleted": self.deleted}).encode()

    def incremented(self, block_cidr: str, count: int) -> IPAMHandle:
        counts = dict(self.block)
        counts[block_cidr] = counts.get(block_cidr, 0) + count
        return IPAMHandle(block=counts, deleted=self.deleted)

    def decremented(self, block_cidr: str, count: int) -> IPAMHandle:
        """Fewer addresses in ``block_cidr``; the entry goes at zero (never below)."""
        counts = dict(self.block)
        left = counts.get(block_cidr, 0) - count
        if left > 0:
            counts[block_cidr] = left
        else:
            counts.pop(block_cidr, None)
        return IPAMHandle(block=counts, deleted=self.deleted)

    @property
    def empty(self) -> bool:
        return not self.block


@dataclass(frozen=True, slots=True)
class IPAMConfig:
    """Value of ``/calico/ipam/v2/config``; defaults apply when the key is absent."""

    strict_affinity: bool = False
    auto_allocate_blocks: bool = True
    max_blocks_per_host: int = 0
    ip_cooldown_seconds: int = 0
    kube_virt_vm_address_persistence: str | None = None

    @classmethod
    def from_json(cls, data: bytes | str) -> IPAMConfig:
        raw = json.loads(data)
        return cls(
            strict_affinity=bool(raw.get("strict_affinity", False)),
            auto_allocate_blocks=bool(raw.get("auto_allocate_blocks", True)),
            max_blocks_per_host=int(raw.get("maxBlocksPerHost") or 0),
            ip_cooldown_seconds=min(
                int(raw.get("ipCooldownSeconds") or 0), MAX_IP_COOLDOWN_SECONDS
            ),
            kube_virt_vm_address_persistence=raw.get("kubeVirtVMAddressPersistence"),
        )

    @classmethod
    def from_resource_json(cls, data: bytes | str) -> IPAMConfig:
        """From a stored v3 ``IPAMConfiguration`` (camelCase spec fields)."""
        spec = json.loads(data).get("spec") or {}
        strict = spec.get("strictAffinity")
        auto = spec.get("autoAllocateBlocks")
        return cls(
            strict_affinity=bool(strict) if strict is not None else False,
            auto_allocate_blocks=bool(auto) if auto is not None else True,
            max_blocks_per_host=int(spec.get("maxBlocksPerHost") or 0),
            ip_cooldown_seconds=min(
                int(spec.get("ipCooldownSeconds") or 0), MAX_IP_COOLDOWN_SECONDS
            ),
            kube_virt_vm_address_persistence=spec.get("kubeVirtVMAddressPersistence"),
        )

    def to_json(self) -> bytes:
        out: dict[str, Any] = {
            "strict_affinity": self.strict_affinity,
            "auto_allocate_blocks": self.auto_allocate_blocks,
            "maxBlocksPerHost": self.max_blocks_per_host,
            "ipCooldownSeconds": self.ip_cooldown_seconds,
        }
        if self.kube_virt_vm_address_persistence is not None:
            out["kubeVirtVMAddressPersistence"] = self.kube_virt_vm_address_persistence
        return json.dumps(out).encode()

    def validate(self) -> list[str]:
        problems = []
        if not self.strict_affinity and not self.auto_allocate_blocks:
            problems.append("autoAllocateBlocks: cannot be false when strictAffinity is false")
        if self.max_blocks_per_host < 0:
            problems.append("maxBlocksPerHost: must not be negative")
        if self.max_blocks_per_host > 0 and not self.strict_affinity:
            problems.append("maxBlocksPerHost: a limit needs strictAffinity true")
        if not 0 <= self.ip_cooldown_seconds <= MAX_IP_COOLDOWN_SECONDS:
            problems.append(
                f"ipCooldownSeconds: must be between 0 and {MAX_IP_COOLDOWN_SECONDS} seconds"
            )
        return problems

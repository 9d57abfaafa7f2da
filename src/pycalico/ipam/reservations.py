"""The addresses IPReservation resources keep from auto-assignment, as IPAM consults them.

What it is: the reserved networks of every stored ``IPReservation`` (read from their v3 JSON), and
the three questions libcalico-go's address filter answers while choosing addresses: is this
address reserved, is this whole block CIDR reserved, which addresses of a block are reserved.
What it is not: the resource's validation (``pycalico.model.ipam.IPReservation``) or the
allocator; this module does no I/O.

Calico's rules, kept here:

* An entry is a CIDR (host bits ignored: "10.0.0.5/30" reserves 10.0.0.4/30) or a bare address
  (a /32 or /128), trimmed of blanks; an entry that does not parse is skipped (validation should
  have refused it), as ``getReservedIPs`` does.
* Reservations only steer auto-assignment: a block whose every address is reserved is never
  claimed or borrowed from, reserved ordinals are skipped (and stay free, in place) when a block
  hands out addresses.  Assigning a given address and releasing ignore them.

Invariant: a ``Reservations`` value is immutable; ``reserved_in`` is memoised per block CIDR, so a
long-lived allocator that caches one value pays the overlap scan once per block.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from pycalico.ipam.records import IPAddress, IPNetwork


def parse_reserved(text: str) -> IPNetwork | None:
    """Calico's ParseCIDROrIP on one trimmed entry; None when it does not parse."""
    text = text.strip() if isinstance(text, str) else ""
    if not text or "%" in text or text.count("/") > 1:
        return None
    _, _, prefix = text.partition("/")
    if prefix and not prefix.isdigit():
        return None
    try:
        return ipaddress.ip_interface(text).network
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Reservations:
    networks: tuple[IPNetwork, ...] = ()
    _by_block: dict[IPNetwork, tuple[IPAddress, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def from_cidrs(cls, cidrs: Iterable[str]) -> Reservations:
        parsed = (parse_reserved(text) for text in cidrs)
        return cls(tuple(dict.fromkeys(n for n in parsed if n is not None)))

    @classmethod
    def from_resource_json(cls, values: Iterable[bytes | str]) -> Reservations:
        """From stored ``projectcalico.org/v3`` IPReservation objects."""
        cidrs: list[str] = []
        for value in values:
            raw = json.loads(value)
            spec = (raw.get("spec") if isinstance(raw, dict) else None) or {}
            cidrs.extend(c for c in spec.get("reservedCIDRs") or [] if isinstance(c, str))
        return cls.from_cidrs(cidrs)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def matches_ip(self, address: IPAddress) -> bool:
        return any(address.version == n.version and address in n for n in self.networks)

    def _overlapping(self, cidr: IPNetwork) -> list[IPNetwork]:
        return [n for n in self.networks if n.version == cidr.version and n.overlaps(cidr)]

    def matches_whole(self, cidr: IPNetwork) -> bool:
        """Every address of ``cidr`` is reserved (by one reservation or several together)."""
        overlapping = self._overlapping(cidr)
        if not overlapping:
            return False
        if any(cidr.subnet_of(n) for n in overlapping):  # type: ignore[arg-type]
            return True
        # The rest lie inside ``cidr``: they cover it when, without nesting, they add up to it.
        inside = sorted(overlapping, key=lambda n: n.prefixlen)
        kept: list[IPNetwork] = []
        for network in inside:
            if not any(network.subnet_of(k) for k in kept):  # type: ignore[arg-type]
                kept.append(network)
        return sum(n.num_addresses for n in kept) == cidr.num_addresses

    def reserved_in(self, block: IPNetwork) -> tuple[IPAddress, ...]:
        """The reserved addresses inside ``block`` (block-sized at most, so small)."""
        if not self.networks:
            return ()
        cached = self._by_block.get(block)
        if cached is not None:
            return cached
        found: dict[IPAddress, None] = {}
        for network in self._overlapping(block):
            inner = block if block.subnet_of(network) else network  # type: ignore[arg-type]
            found.update(dict.fromkeys(inner))
        out = tuple(found)
        self._by_block[block] = out
        return out

"""Netlink framing shared by our two netfilter netlink readers.

What it is: the pure parts both ``felix.rules.flows`` (NFLOG packets) and ``ctl.explain_trace``
(nftables trace events) need: attribute alignment and the walk of a message's attributes.
What it is not: a socket or a message decoder (each reader knows its own message types).

Invariants: attributes are 4-byte aligned; a nested attribute's flags (NLA_F_NESTED,
NLA_F_NET_BYTEORDER, the top two bits of its type) are masked off, so callers look types up by
their plain number; a truncated attribute ends the walk rather than raising.
"""

from __future__ import annotations

import struct

_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED and NLA_F_NET_BYTEORDER


def align(length: int) -> int:
    """``length`` rounded up to netlink's 4-byte alignment."""
    return (length + 3) & ~3


def attributes(data: bytes) -> dict[int, bytes]:
    """The attributes in ``data`` by type (the last one wins), their payloads without headers."""
    out: dict[int, bytes] = {}
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        out[kind & _TYPE_MASK] = data[offset + 4 : offset + length]
        offset += align(length)
    return out

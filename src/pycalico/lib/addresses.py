"""Ordering helpers for IP addresses and networks of mixed families.

``ipaddress`` refuses to compare an IPv4 with an IPv6 object, so any sort over a dual-stack
collection needs a key.  Pure; no I/O.  Invariant: every IPv4 value sorts before every IPv6 value,
and within a family the order is numeric.
"""

from __future__ import annotations

import ipaddress

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def address_order(address: Address) -> tuple[int, int]:
    """Sort key for addresses of either family."""
    return address.version, int(address)


def network_order(network: Network) -> tuple[int, int, int]:
    """Sort key for networks of either family: family, then address, then prefix length."""
    return network.version, int(network.network_address), network.prefixlen

"""IP-set ids and members → nft named sets (pure).

What it is: for one IP-set id from the calculation graph, the two typed nft sets (IPv4 and IPv6,
see ``rules.names``) and their elements in nft syntax.  What it is not: delta tracking (the nft
driver diffs element sets).

Invariants:

* Sets holding a network carry ``flags interval``; their elements never overlap (nft refuses
  overlapping intervals), which holds because members are collapsed unless they are all
  distinct host addresses.  Sets of single addresses are plain hash sets (see ``set_defs`` for
  why that matters).
* Named-port members ``"addr,proto:port"`` become ``addr . proto . port`` concatenations.
* A member of the wrong shape raises ``ValueError`` naming the set and the member.
"""

from __future__ import annotations

import ipaddress

from pycalico.felix.messages import IPSetType
from pycalico.felix.rules import names
from pycalico.felix.rules.model import SetDef

_ADDRESS_TYPES = {4: "ipv4_addr", 6: "ipv6_addr"}


def set_defs(
    set_id: str, set_type: IPSetType, members: frozenset[str] = frozenset()
) -> tuple[SetDef, SetDef]:
    """The (IPv4, IPv6) set declarations for one IP-set id.

    Address and net sets whose members are all single addresses (the usual case: selector sets
    of workload addresses) are plain hash sets; only sets holding a network get ``flags
    interval``, and a set is recreated (atomically, by a full table replace) when that changes.  That is not cosmetic: while any interval set holds
    elements, nft (1.0.6) reads every interval set's elements from the kernel before each
    transaction that touches an element, which made a one-member change cost time in
    proportion to the whole cluster.
    """
    interval = set_type is not IPSetType.IP_AND_PORT and not all(map(_is_host, members))
    defs: list[SetDef] = []
    for family in (4, 6):
        name = names.ip_set_name(set_id, family)
        if set_type is IPSetType.IP_AND_PORT:
            defs.append(SetDef(name, f"{_ADDRESS_TYPES[family]} . inet_proto . inet_service"))
        else:
            defs.append(SetDef(name, _ADDRESS_TYPES[family], ("interval",) if interval else ()))
    return defs[0], defs[1]


def _is_host(member: str) -> bool:
    if "/" not in member:
        return True
    _, _, length = member.partition("/")
    return length == ("128" if ":" in member else "32")


def _render_network(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    if net.prefixlen == net.max_prefixlen:
        return str(net.network_address)
    return str(net)


def set_elements(
    set_id: str, set_type: IPSetType, members: frozenset[str]
) -> tuple[frozenset[str], frozenset[str]]:
    """The (IPv4, IPv6) elements, in nft syntax, for ``members``."""
    if set_type is IPSetType.IP_AND_PORT:
        return _named_port_elements(set_id, members)
    by_family: dict[int, list[ipaddress.IPv4Network | ipaddress.IPv6Network]] = {4: [], 6: []}
    all_hosts = True
    for member in members:
        try:
            net = ipaddress.ip_network(member, strict=False)
        except ValueError as error:
            raise ValueError(f"IP set {set_id}: bad member {member!r}: {error}") from None
        all_hosts = all_hosts and net.prefixlen == net.max_prefixlen
        by_family[net.version].append(net)
    out: list[frozenset[str]] = []
    for family in (4, 6):
        nets = by_family[family]
        if not all_hosts:
            nets = list(ipaddress.collapse_addresses(nets))  # type: ignore[type-var]
        out.append(frozenset(_render_network(net) for net in nets))
    return out[0], out[1]


def _named_port_elements(
    set_id: str, members: frozenset[str]
) -> tuple[frozenset[str], frozenset[str]]:
    v4: set[str] = set()
    v6: set[str] = set()
    for member in members:
        try:
            address, proto_port = member.rsplit(",", 1)
            protocol, port = proto_port.split(":", 1)
            ip = ipaddress.ip_network(address, strict=False).network_address
            port_number = int(port)
        except ValueError:
            raise ValueError(
                f"IP set {set_id}: bad named-port member {member!r} (want 'addr,proto:port')"
            ) from None
        protocol = protocol.lower()
        if protocol not in ("tcp", "udp", "sctp"):
            raise ValueError(f"IP set {set_id}: bad protocol in member {member!r}")
        (v6 if ip.version == 6 else v4).add(f"{ip} . {protocol} . {port_number}")
    return frozenset(v4), frozenset(v6)

"""NAT outgoing: the pool sets and the chains that masquerade pod traffic leaving the pools (pure).

What it is: Calico's ``natOutgoing`` (``felix/rules/nat.go``).  Traffic from an address in a
pool with ``natOutgoing: true`` (set ``cali40masq-ipam-pools``, v6 ``cali60...``) to anywhere
outside *every* pool (``cali40all-ipam-pools``) is masqueraded to the outgoing interface's
address, or SNATed to FelixConfiguration ``natOutgoingAddress`` when that is set (for its own
family; the other family still masquerades).  The base chain ``nat-POSTROUTING`` (hook
postrouting, srcnat) jumps to ``nat-outgoing``, Calico's ``cali-nat-outgoing``.

What it is not: DNAT or service NAT, and not the decision of which pools count (the NAT manager
passes every pool, disabled ones included, to the all-pools set, as Calico does).

Invariants: the sets always exist (possibly empty), so the chain never references a missing
set; pools are collapsed per family before they become elements (nft refuses overlapping
intervals), so pod-to-pod traffic between any two pools never matches.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from pycalico.felix.rules.model import Chain, SetDef
from pycalico.felix.rules.policy import nets_for_family

CHAIN_POSTROUTING = "nat-POSTROUTING"
CHAIN_NAT_OUTGOING = "nat-outgoing"
MASQ_POOLS = "masq-ipam-pools"
ALL_POOLS = "all-ipam-pools"
_TYPES = {4: "ipv4_addr", 6: "ipv6_addr"}
_FAMILIES = ((4, "ip"), (6, "ip6"))


def set_name(base: str, family: int) -> str:
    return f"cali{family}0{base}"


def pool_sets() -> tuple[SetDef, ...]:
    return tuple(
        SetDef(set_name(base, family), _TYPES[family], ("interval",))
        for base in (MASQ_POOLS, ALL_POOLS)
        for family in (4, 6)
    )


def pool_elements(masquerade: Iterable[str], all_pools: Iterable[str]) -> dict[str, frozenset[str]]:
    masquerade, all_pools = list(masquerade), list(all_pools)
    out: dict[str, frozenset[str]] = {}
    for family in (4, 6):
        out[set_name(MASQ_POOLS, family)] = frozenset(nets_for_family(masquerade, family))
        out[set_name(ALL_POOLS, family)] = frozenset(nets_for_family(all_pools, family))
    return out


def _action(family: int, fam: str, nat_outgoing_address: str) -> str:
    if nat_outgoing_address and ipaddress.ip_address(nat_outgoing_address).version == family:
        return f"snat {fam} to {nat_outgoing_address}"
    return "masquerade"


def nat_outgoing_chain(nat_outgoing_address: str = "") -> Chain:
    """``cali-nat-outgoing``: one rule per family; ``natOutgoingAddress`` must be a valid
    address (the config layer validates it)."""
    rules = tuple(
        f"{fam} saddr @{set_name(MASQ_POOLS, family)} "
        f"{fam} daddr != @{set_name(ALL_POOLS, family)} "
        f"{_action(family, fam, nat_outgoing_address)}"
        for family, fam in _FAMILIES
    )
    return Chain(CHAIN_NAT_OUTGOING, rules)


def postrouting_chain() -> Chain:
    return Chain(
        CHAIN_POSTROUTING,
        (f"jump {CHAIN_NAT_OUTGOING}",),
        "type nat hook postrouting priority srcnat; policy accept;",
    )

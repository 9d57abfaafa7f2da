"""NAT outgoing: the pool sets and the postrouting chain that masquerades pod traffic (pure).

What it is: Calico's ``natOutgoing`` — traffic from an address in a pool with natOutgoing
(``cali40masq-ipam-pools``) to anywhere outside every pool (``cali40all-ipam-pools``) is
masqueraded to the outgoing interface's address.  What it is not: DNAT or service NAT.

Invariants: the sets always exist (possibly empty), so the chain never references a missing
set; pools are collapsed per family before they become elements.
"""

from __future__ import annotations

from collections.abc import Iterable

from pycalico.felix.rules.model import Chain, SetDef
from pycalico.felix.rules.policy import nets_for_family

CHAIN_POSTROUTING = "nat-POSTROUTING"
MASQ_POOLS = "masq-ipam-pools"
ALL_POOLS = "all-ipam-pools"
_TYPES = {4: "ipv4_addr", 6: "ipv6_addr"}


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


def postrouting_chain() -> Chain:
    rules = tuple(
        f"{fam} saddr @{set_name(MASQ_POOLS, family)} "
        f"{fam} daddr != @{set_name(ALL_POOLS, family)} masquerade"
        for family, fam in ((4, "ip"), (6, "ip6"))
    )
    return Chain(
        CHAIN_POSTROUTING, rules, "type nat hook postrouting priority srcnat; policy accept;"
    )

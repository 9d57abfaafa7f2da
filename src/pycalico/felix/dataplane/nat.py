"""The NAT manager: IP pools → the pool sets and chains behind outgoing NAT.

What it is: keeps the pools from ``IPPoolUpdate``/``IPPoolRemove`` (Go Felix's masquerade
manager) and, when they change, declares the four pool sets (masquerade and all pools, per
family) with their new elements; the nft driver turns the difference into element adds and
deletes inside the one transaction, so a pool change never rewrites a chain.  Owns
``nat-POSTROUTING`` and ``nat-outgoing`` (rendered once, with ``natOutgoingAddress``).

What it is not: routing for pools (BIRD and the route manager) nor IPIP (``dataplane/ipip``).

Invariants: the chains and sets are declared on the first ``complete_deferred_work`` even with
no pools, so the table always has the same shape; every pool, disabled or not, is in the
all-pools set (Calico: a disabled pool's addresses are still cluster addresses) except pools
only for LoadBalancer addresses (``allowedUses: [LoadBalancer]``: traffic to them still leaves
the cluster, as in Calico), and only ``natOutgoing`` pools are in the masquerade set.
"""

from __future__ import annotations

from pycalico.felix.drivers.nft import NftTable
from pycalico.felix.messages import IPPoolRemove, IPPoolUpdate, Message
from pycalico.felix.rules import nat


def _nat_fields(pool: IPPoolUpdate) -> tuple[str, bool, bool]:
    return pool.cidr, pool.masquerade, pool.load_balancer_only


class NatManager:
    def __init__(self, nft: NftTable, nat_outgoing_address: str = "") -> None:
        self.nft = nft
        self.nat_outgoing_address = nat_outgoing_address
        self._pools: dict[str, IPPoolUpdate] = {}
        self._dirty = True
        self._chains_done = False

    def on_update(self, message: Message) -> None:
        if isinstance(message, IPPoolUpdate):
            old = self._pools.get(message.id)
            self._pools[message.id] = message
            if old is None or _nat_fields(old) != _nat_fields(message):
                self._dirty = True
        elif isinstance(message, IPPoolRemove) and self._pools.pop(message.id, None) is not None:
            self._dirty = True

    @property
    def dirty(self) -> bool:
        return self._dirty

    def complete_deferred_work(self) -> None:
        if not self._dirty:
            return
        elements = nat.pool_elements(
            (p.cidr for p in self._pools.values() if p.masquerade),
            (p.cidr for p in self._pools.values() if not p.load_balancer_only),
        )
        for definition in nat.pool_sets():
            self.nft.set_set(definition, elements[definition.name])
        if not self._chains_done:
            self.nft.set_chain(nat.nat_outgoing_chain(self.nat_outgoing_address))
            self.nft.set_chain(nat.postrouting_chain())
            self._chains_done = True
        self._dirty = False

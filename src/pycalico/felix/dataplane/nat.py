"""The NAT manager: IP pools → the pool sets behind NAT outgoing.

What it is: keeps the pools from ``IPPoolUpdate``/``IPPoolRemove`` and rewrites the two pool sets
(per family) when they change; owns the ``nat-POSTROUTING`` chain.  What it is not: routing
for pools (BIRD and the route manager).

Invariant: the chain and sets are declared on the first ``complete_deferred_work`` even with no
pools, so the table always has the same shape.
"""

from __future__ import annotations

from pycalico.felix.drivers.nft import NftTable
from pycalico.felix.messages import IPPoolRemove, IPPoolUpdate, Message
from pycalico.felix.rules import nat


class NatManager:
    def __init__(self, nft: NftTable) -> None:
        self.nft = nft
        self._pools: dict[str, IPPoolUpdate] = {}
        self._dirty = True

    def on_update(self, message: Message) -> None:
        if isinstance(message, IPPoolUpdate):
            if self._pools.get(message.id) != message:
                self._pools[message.id] = message
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
            (p.cidr for p in self._pools.values()),
        )
        for definition in nat.pool_sets():
            self.nft.set_set(definition, elements[definition.name])
        self.nft.set_chain(nat.postrouting_chain())
        self._dirty = False

"""The IP-set manager: IP-set messages → typed nft sets (one per family per id).

What it is: keeps each id's type and members; ``complete_deferred_work`` hands the changed
ones to the nft driver (which diffs elements, so only deltas reach the kernel).
What it is not: a deleter of in-use sets — the driver deletes sets after the chains that used
them are rewritten, inside the same transaction.

Invariant: ``on_update`` does no rendering and no I/O; a delta for an unknown id is an error in
the sequencer's ordering and is logged and ignored.
"""

from __future__ import annotations

import logging

from pycalico.felix.drivers.nft import NftTable
from pycalico.felix.messages import IPSetDeltaUpdate, IPSetRemove, IPSetType, IPSetUpdate, Message
from pycalico.felix.rules import sets
from pycalico.felix.rules.names import ip_set_name

log = logging.getLogger(__name__)


class IPSetManager:
    def __init__(self, nft: NftTable) -> None:
        self.nft = nft
        self._types: dict[str, IPSetType] = {}
        self._members: dict[str, set[str]] = {}
        self._dirty: set[str] = set()

    def on_update(self, message: Message) -> None:
        if isinstance(message, IPSetUpdate):
            self._types[message.id] = message.type
            self._members[message.id] = set(message.members)
            self._dirty.add(message.id)
        elif isinstance(message, IPSetDeltaUpdate):
            members = self._members.get(message.id)
            if members is None:
                log.error("IP set delta for unknown set %s ignored", message.id)
                return
            members.difference_update(message.removed)
            members.update(message.added)
            self._dirty.add(message.id)
        elif isinstance(message, IPSetRemove):
            self._types.pop(message.id, None)
            self._members.pop(message.id, None)
            self._dirty.add(message.id)

    def __len__(self) -> int:
        return len(self._types)

    @property
    def dirty(self) -> bool:
        return bool(self._dirty)

    def complete_deferred_work(self) -> None:
        for set_id in self._dirty:
            set_type = self._types.get(set_id)
            if set_type is None:
                for family in (4, 6):
                    self.nft.remove_set(ip_set_name(set_id, family))
                continue
            members = frozenset(self._members[set_id])
            definitions = sets.set_defs(set_id, set_type, members)
            elements = sets.set_elements(set_id, set_type, members)
            for definition, family_elements in zip(definitions, elements, strict=True):
                self.nft.set_set(definition, family_elements)
        self._dirty.clear()

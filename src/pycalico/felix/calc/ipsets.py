"""The IP-set member index: one shared, deduplicated, reference-counted index of selector sets.

What it is: Go Felix's ``SelectorAndNamedPortIndex`` + ``IPSetMemberIndex``.  Rules (via the rule
scanner) reference IP sets by ``IPSetSpec``; a set is *active* while at least one active policy
or profile references it.  Members come from every endpoint in the cluster (WorkloadEndpoint
ipNetworks, HostEndpoint expectedIPs) and from NetworkSets/GlobalNetworkSets (their nets), matched
through one ``InheritIndex`` (profile labels included) against the selectors of active sets only.
What it is not: deciding which sets are referenced (the graph) or ordering messages
(``sequencer.py``).

Invariants:

* Two rules (of any policies) with the same selector share one set: the id is the selector's
  unique id (named-port sets: selector, protocol and port name).
* A member is counted once per contributing object: an address claimed by two endpoints stays
  until both are gone.
* The sink hears ``on_ipset_update`` (the full members) when a set becomes active, then only
  ``on_ipset_delta`` with real changes, and ``on_ipset_remove`` when it becomes inactive.
  Selectors of inactive sets are not in the index, so they cost nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from pycalico.datastore.updates import ResourceKey
from pycalico.felix.calc.index import InheritIndex, SelectorIndex
from pycalico.felix.calc.rules import IPSetSpec
from pycalico.felix.messages import IPSetType


class IPSetSink(Protocol):
    def on_ipset_update(
        self, set_id: str, set_type: IPSetType, members: frozenset[str]
    ) -> None: ...

    def on_ipset_delta(
        self, set_id: str, added: frozenset[str], removed: frozenset[str]
    ) -> None: ...

    def on_ipset_remove(self, set_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Contribution:
    """What one labelled object adds to the sets whose selectors match it."""

    addresses: frozenset[str] = frozenset()  # endpoint addresses (bare) or network-set CIDRs
    named_ports: tuple[tuple[str, str, int], ...] = ()  # (protocol, port name, port number)

    def members(self, spec: IPSetSpec) -> frozenset[str]:
        if spec.named_port is None:
            return self.addresses
        protocol, name = spec.named_port
        # Each member carries the protocol the endpoint declares the port with: "any" (a rule
        # without a protocol) takes the port under every protocol it is declared with.
        return frozenset(
            f"{address},{port_protocol}:{number}"
            for (port_protocol, port_name, number) in self.named_ports
            if protocol in ("any", port_protocol) and port_name == name
            for address in self.addresses
        )


_NOTHING = Contribution()


class IPSetMemberIndex:
    def __init__(self, sink: IPSetSink) -> None:
        self._sink = sink
        self.selector_index: SelectorIndex[str, ResourceKey] = SelectorIndex(
            self._on_match_started, self._on_match_stopped
        )
        self._inherit: InheritIndex[str, ResourceKey] = InheritIndex(self.selector_index)
        self._contributions: dict[ResourceKey, Contribution] = {}
        self._specs: dict[str, IPSetSpec] = {}
        self._references: dict[str, int] = {}
        self._sets_by_selector: dict[str, set[str]] = {}
        self._members: dict[str, dict[str, int]] = {}
        self._announced: set[str] = set()

    # --- queries ------------------------------------------------------------------------------

    @property
    def active_set_ids(self) -> frozenset[str]:
        return frozenset(self._specs)

    def member_count(self) -> int:
        """Members summed over all active sets."""
        return sum(len(counts) for counts in self._members.values())

    def members(self, set_id: str) -> frozenset[str]:
        return frozenset(self._members.get(set_id, ()))

    # --- references from rules ----------------------------------------------------------------

    def reference(self, spec: IPSetSpec) -> None:
        count = self._references.get(spec.id, 0)
        self._references[spec.id] = count + 1
        if count:
            return
        selector_id = spec.selector.unique_id
        self._specs[spec.id] = spec
        self._members[spec.id] = {}
        sharing = self._sets_by_selector.setdefault(selector_id, set())
        sharing.add(spec.id)
        if len(sharing) == 1:
            self.selector_index.update_selector(selector_id, spec.selector)  # fills via callbacks
        else:
            for item in self.selector_index.matches(selector_id):
                self._add(spec.id, self._contributions.get(item, _NOTHING).members(spec))
        self._announced.add(spec.id)
        self._sink.on_ipset_update(spec.id, spec.type, frozenset(self._members[spec.id]))

    def release(self, set_id: str) -> None:
        count = self._references.get(set_id, 0)
        if count > 1:
            self._references[set_id] = count - 1
            return
        if count == 0:
            return
        del self._references[set_id]
        spec = self._specs.pop(set_id)
        del self._members[set_id]
        self._announced.discard(set_id)
        selector_id = spec.selector.unique_id
        sharing = self._sets_by_selector[selector_id]
        sharing.discard(set_id)
        if not sharing:
            del self._sets_by_selector[selector_id]
            self.selector_index.delete_selector(selector_id)
        self._sink.on_ipset_remove(set_id)

    # --- labelled objects ---------------------------------------------------------------------

    def update_item(
        self,
        key: ResourceKey,
        labels: Mapping[str, str],
        parents: Iterable[str],
        contribution: Contribution,
    ) -> None:
        old = self._contributions.get(key)
        if old == contribution:
            self._inherit.update_item(key, labels, parents)
            return
        # Take the old contribution out of every set, re-match with nothing to contribute,
        # then put the new one into every set that matches now.
        if old is not None:
            self._contribute(key, old, add=False)
        self._contributions[key] = _NOTHING
        self._inherit.update_item(key, labels, parents)
        self._contributions[key] = contribution
        self._contribute(key, contribution, add=True)

    def delete_item(self, key: ResourceKey) -> None:
        if key not in self._contributions:
            return
        self._inherit.delete_item(key)
        del self._contributions[key]

    def update_parent(self, name: str, labels: Mapping[str, str] | None) -> None:
        self._inherit.update_parent(name, labels)

    # --- member counting ----------------------------------------------------------------------

    def _contribute(self, key: ResourceKey, contribution: Contribution, *, add: bool) -> None:
        for selector_id in self.selector_index.selectors_matching(key):
            for set_id in self._sets_by_selector.get(selector_id, ()):
                members = contribution.members(self._specs[set_id])
                if add:
                    self._add(set_id, members)
                else:
                    self._remove(set_id, members)

    def _on_match_started(self, selector_id: str, key: ResourceKey) -> None:
        contribution = self._contributions.get(key, _NOTHING)
        for set_id in self._sets_by_selector.get(selector_id, ()):
            self._add(set_id, contribution.members(self._specs[set_id]))

    def _on_match_stopped(self, selector_id: str, key: ResourceKey) -> None:
        contribution = self._contributions.get(key, _NOTHING)
        for set_id in self._sets_by_selector.get(selector_id, ()):
            self._remove(set_id, contribution.members(self._specs[set_id]))

    def _add(self, set_id: str, members: frozenset[str]) -> None:
        if not members:
            return
        counts = self._members[set_id]
        added = []
        for member in members:
            count = counts.get(member, 0)
            counts[member] = count + 1
            if not count:
                added.append(member)
        if added and set_id in self._announced:
            self._sink.on_ipset_delta(set_id, frozenset(added), frozenset())

    def _remove(self, set_id: str, members: frozenset[str]) -> None:
        if not members:
            return
        counts = self._members[set_id]
        removed = []
        for member in members:
            count = counts[member]
            if count == 1:
                del counts[member]
                removed.append(member)
            else:
                counts[member] = count - 1
        if removed and set_id in self._announced:
            self._sink.on_ipset_delta(set_id, frozenset(), frozenset(removed))

"""The event sequencer: coalesces calc-graph output and releases it in dependency order.

What it is: Go Felix's ``EventSequencer``.  The graph reports changes as they happen; the
sequencer keeps at most one pending update per object (a later update replaces an earlier one,
IP-set deltas merge, an add then remove of something never sent cancels out) and ``flush``
returns them in an order where the dataplane never sees a reference before its target:

    DatastoreNotReady, ConfigUpdate, IPPool and host-metadata updates, IP-set updates/deltas, policy updates, profile updates,
    endpoint updates, then endpoint removes, profile removes, policy removes, IP-set removes,
    IPPool and host-metadata removes, and finally InSync (once, at the first flush after ``on_in_sync``).

What it is not: the computation of what to send (the graph) nor the dataplane.

Invariants: an update equal to what was last sent for the same id is not sent again; a remove is
sent only for an id that was sent; IP-set deltas never add a member already sent or remove one
never sent (within what the graph reported).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pycalico.felix.messages import (
    ActivePolicyRemove,
    ActivePolicyUpdate,
    ActiveProfileRemove,
    ActiveProfileUpdate,
    ConfigUpdate,
    DatastoreNotReady,
    HostEndpointID,
    HostEndpointRemove,
    HostEndpointUpdate,
    InSync,
    IPPoolRemove,
    IPPoolUpdate,
    IPSetDeltaUpdate,
    IPSetRemove,
    IPSetType,
    IPSetUpdate,
    Message,
    PolicyID,
    ProfileID,
    WorkloadEndpointID,
    WorkloadEndpointRemove,
    WorkloadEndpointUpdate,
)

K = TypeVar("K", bound=Hashable)
U = TypeVar("U")

_REMOVE = object()


class _Channel(Generic[K, U]):
    """Pending updates/removes of one kind of object, with what was last sent per id."""

    def __init__(self) -> None:
        self.pending: dict[K, object] = {}
        self.sent: dict[K, U] = {}

    def update(self, key: K, message: U) -> None:
        self.pending[key] = message

    def remove(self, key: K) -> None:
        if key in self.sent:
            self.pending[key] = _REMOVE
        else:
            self.pending.pop(key, None)

    def take_updates(self) -> list[U]:
        out: list[U] = []
        for key, message in list(self.pending.items()):
            if message is _REMOVE:
                continue
            del self.pending[key]
            if self.sent.get(key) != message:
                self.sent[key] = message  # type: ignore[assignment]
                out.append(message)  # type: ignore[arg-type]
        return out

    def take_removes(self) -> list[K]:
        out = [key for key, message in self.pending.items() if message is _REMOVE]
        for key in out:
            del self.pending[key]
            del self.sent[key]
        return out


@dataclass
class _PendingSet:
    full: set[str] | None = None  # a full update with these members
    set_type: IPSetType = IPSetType.NET
    added: set[str] = field(default_factory=set)
    removed: set[str] = field(default_factory=set)
    remove: bool = False


class EventSequencer:
    def __init__(self) -> None:
        self._config: ConfigUpdate | None = None
        self._sent_config: ConfigUpdate | None = None
        self._pools: _Channel[str, IPPoolUpdate] = _Channel()
        self._sets: dict[str, _PendingSet] = {}
        self._sent_sets: set[str] = set()
        self._policies: _Channel[PolicyID, ActivePolicyUpdate] = _Channel()
        self._profiles: _Channel[ProfileID, ActiveProfileUpdate] = _Channel()
        self._workloads: _Channel[WorkloadEndpointID, WorkloadEndpointUpdate] = _Channel()
        self._hosts: _Channel[HostEndpointID, HostEndpointUpdate] = _Channel()
        self._in_sync = False
        self._in_sync_sent = False
        self._not_ready = False

    # --- input --------------------------------------------------------------------------------

    def on_config(self, message: ConfigUpdate) -> None:
        self._config = message

    def on_in_sync(self) -> None:
        self._in_sync = True

    def on_datastore_not_ready(self) -> None:
        """The ready flag turned false; like Go's, this is not taken back if it turns true
        again before the flush: the daemon restarts and re-reads the flag anyway."""
        self._not_ready = True

    def on_pool_update(self, message: IPPoolUpdate) -> None:
        self._pools.update(message.id, message)

    def on_pool_remove(self, pool_id: str) -> None:
        self._pools.remove(pool_id)

    def on_ipset_update(self, set_id: str, set_type: IPSetType, members: frozenset[str]) -> None:
        self._sets[set_id] = _PendingSet(full=set(members), set_type=set_type)

    def on_ipset_delta(self, set_id: str, added: frozenset[str], removed: frozenset[str]) -> None:
        pending = self._sets.get(set_id)
        if pending is None:
            pending = self._sets[set_id] = _PendingSet()
        if pending.full is not None:
            pending.full.difference_update(removed)
            pending.full.update(added)
            return
        # A member added then removed (or the reverse) since the last flush nets out.
        for member in added:
            if member in pending.removed:
                pending.removed.discard(member)
            else:
                pending.added.add(member)
        for member in removed:
            if member in pending.added:
                pending.added.discard(member)
            else:
                pending.removed.add(member)

    def on_ipset_remove(self, set_id: str) -> None:
        if set_id in self._sent_sets:
            self._sets[set_id] = _PendingSet(remove=True)
        else:
            self._sets.pop(set_id, None)

    def on_policy_update(self, message: ActivePolicyUpdate) -> None:
        self._policies.update(message.id, message)

    def on_policy_remove(self, policy_id: PolicyID) -> None:
        self._policies.remove(policy_id)

    def on_profile_update(self, message: ActiveProfileUpdate) -> None:
        self._profiles.update(message.id, message)

    def on_profile_remove(self, profile_id: ProfileID) -> None:
        self._profiles.remove(profile_id)

    def on_workload_endpoint_update(self, message: WorkloadEndpointUpdate) -> None:
        self._workloads.update(message.id, message)

    def on_workload_endpoint_remove(self, endpoint_id: WorkloadEndpointID) -> None:
        self._workloads.remove(endpoint_id)

    def on_host_endpoint_update(self, message: HostEndpointUpdate) -> None:
        self._hosts.update(message.id, message)

    def on_host_endpoint_remove(self, endpoint_id: HostEndpointID) -> None:
        self._hosts.remove(endpoint_id)

    # --- output -------------------------------------------------------------------------------

    def flush(self) -> list[Message]:
        out: list[Message] = []
        if self._not_ready:
            # First, as Go's flushReadyFlag: the daemon must see it before anything else.
            out.append(DatastoreNotReady())
            self._not_ready = False
        if self._config is not None and self._config != self._sent_config:
            out.append(self._config)
            self._sent_config = self._config
        self._config = None
        out.extend(self._pools.take_updates())
        set_removes: list[str] = []
        for set_id, pending in self._sets.items():
            if pending.remove:
                set_removes.append(set_id)
            elif pending.full is not None:
                out.append(IPSetUpdate(set_id, pending.set_type, frozenset(pending.full)))
                self._sent_sets.add(set_id)
            elif pending.added or pending.removed:
                out.append(
                    IPSetDeltaUpdate(set_id, frozenset(pending.added), frozenset(pending.removed))
                )
        self._sets.clear()
        out.extend(self._policies.take_updates())
        out.extend(self._profiles.take_updates())
        out.extend(self._workloads.take_updates())
        out.extend(self._hosts.take_updates())
        out.extend(WorkloadEndpointRemove(key) for key in self._workloads.take_removes())
        out.extend(HostEndpointRemove(key) for key in self._hosts.take_removes())
        out.extend(ActiveProfileRemove(key) for key in self._profiles.take_removes())
        out.extend(ActivePolicyRemove(key) for key in self._policies.take_removes())
        for set_id in set_removes:
            self._sent_sets.discard(set_id)
            out.append(IPSetRemove(set_id))
        out.extend(IPPoolRemove(key) for key in self._pools.take_removes())
        if self._in_sync and not self._in_sync_sent:
            out.append(InSync())
            self._in_sync_sent = True
        return out

"""The policy manager: active policies and profiles → their nft chains.

What it is: remembers each active policy/profile message and, on ``complete_deferred_work``,
renders only the changed ones into ``cali-pi``/``cali-po``/``cali-pri``/``cali-pro`` chains.
What it is not: the decider of which endpoint uses which policy (the calculation graph, via
``TierInfo`` in endpoint messages) — a policy chain exists while the graph says it is active.

Invariant: an update equal to the last one is a no-op (messages are comparable).
"""

from __future__ import annotations

from pycalico.felix.drivers.nft import NftTable
from pycalico.felix.messages import (
    ActivePolicyRemove,
    ActivePolicyUpdate,
    ActiveProfileRemove,
    ActiveProfileUpdate,
    Message,
    PolicyID,
    ProfileID,
)
from pycalico.felix.rules import names, policy
from pycalico.felix.rules.model import RenderConfig


class PolicyManager:
    def __init__(self, nft: NftTable, config: RenderConfig) -> None:
        self.nft = nft
        self.config = config
        self._policies: dict[PolicyID, ActivePolicyUpdate] = {}
        self._profiles: dict[ProfileID, ActiveProfileUpdate] = {}
        self._dirty_policies: set[PolicyID] = set()
        self._dirty_profiles: set[ProfileID] = set()

    def on_update(self, message: Message) -> None:
        if isinstance(message, ActivePolicyUpdate):
            if self._policies.get(message.id) != message:
                self._policies[message.id] = message
                self._dirty_policies.add(message.id)
        elif isinstance(message, ActivePolicyRemove):
            if self._policies.pop(message.id, None) is not None:
                self._dirty_policies.add(message.id)
        elif isinstance(message, ActiveProfileUpdate):
            if self._profiles.get(message.id) != message:
                self._profiles[message.id] = message
                self._dirty_profiles.add(message.id)
        elif isinstance(message, ActiveProfileRemove) and (
            self._profiles.pop(message.id, None) is not None
        ):
            self._dirty_profiles.add(message.id)

    @property
    def policy_count(self) -> int:
        return len(self._policies)

    @property
    def profile_count(self) -> int:
        return len(self._profiles)

    @property
    def dirty(self) -> bool:
        return bool(self._dirty_policies) or bool(self._dirty_profiles)

    def complete_deferred_work(self) -> None:
        for policy_id in self._dirty_policies:
            update = self._policies.get(policy_id)
            if update is None:
                self.nft.remove_chain(names.policy_chain(policy_id, inbound=True))
                self.nft.remove_chain(names.policy_chain(policy_id, inbound=False))
                continue
            for chain in policy.policy_chains(
                policy_id, update.inbound_rules, update.outbound_rules, self.config
            ):
                self.nft.set_chain(chain)
        for profile_id in self._dirty_profiles:
            profile = self._profiles.get(profile_id)
            if profile is None:
                self.nft.remove_chain(names.profile_chain(profile_id, inbound=True))
                self.nft.remove_chain(names.profile_chain(profile_id, inbound=False))
                continue
            for chain in policy.profile_chains(
                profile_id, profile.inbound_rules, profile.outbound_rules, self.config
            ):
                self.nft.set_chain(chain)
        self._dirty_policies.clear()
        self._dirty_profiles.clear()

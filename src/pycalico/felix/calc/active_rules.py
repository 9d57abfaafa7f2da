"""The active-rules calculator: which policies and profiles this host needs, and their rules.

What it is: Go Felix's ``ActiveRulesCalculator`` + the rule-scanning half of ``RuleScanner``.
Local endpoints (with their profiles' ``labelsToApply``) live in a label index whose selectors
are the policies' effective selectors; a policy is *active* while it matches at least one local
endpoint (or always, with the ``AssumeNeededOnEveryNode`` performance hint), a profile while a
local endpoint names it.  An active policy or profile is sent to the
sequencer with its resolved rules, and holds a reference on every IP set those rules use (in
the shared member index).  What it is not: the endpoint messages (the graph builds those from
``policies_for``) or the dispatch of raw datastore updates.

Invariants:

* A policy's or profile's rules are resolved once, when it arrives; one that does not parse
  (selector, net) counts as deleted, as with Go's validation filter.
* When an active policy or profile changes, the IP sets of its new rules are referenced before
  those of its old rules are released, so a set both use is never removed and re-sent.
* Every local endpoint whose set of matching policies may have changed, or whose matching
  policies' order/types changed, is added to ``dirty_endpoints``.
* A referenced profile that does not exist is still sent (with no rules: it allows nothing), so
  that no endpoint references a profile the dataplane lacks; ``projectcalico-default-allow`` is
  Calico's synthetic allow-all profile unless the datastore holds one of that name.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from pycalico.datastore.updates import ResourceKey
from pycalico.felix.calc.endpoints import DEFAULT_ALLOW_PROFILE
from pycalico.felix.calc.index import InheritIndex, SelectorIndex
from pycalico.felix.calc.ipsets import IPSetMemberIndex
from pycalico.felix.calc.labels import policy_selector
from pycalico.felix.calc.policies import PolicyInfo, policy_info
from pycalico.felix.calc.rules import IPSetSpec, resolve_rules
from pycalico.felix.calc.sequencer import EventSequencer
from pycalico.felix.calc.stats import GraphStats
from pycalico.felix.messages import (
    ActivePolicyUpdate,
    ActiveProfileUpdate,
    PolicyID,
    ProfileID,
    ResolvedRule,
)
from pycalico.model.endpoints import Profile, ProfileSpec
from pycalico.model.meta import ObjectMeta
from pycalico.model.policy import GlobalNetworkPolicy, NetworkPolicy
from pycalico.model.rules import Rule
from pycalico.model.selectors import Selector

log = logging.getLogger(__name__)

_DEFAULT_ALLOW = Profile(
    metadata=ObjectMeta(name=DEFAULT_ALLOW_PROFILE),
    spec=ProfileSpec(ingress=[Rule(action="Allow")], egress=[Rule(action="Allow")]),
)


@dataclass
class ResolvedRules:
    """A policy's or profile's rules, resolved, and the IP sets they reference."""

    inbound: tuple[ResolvedRule, ...]
    outbound: tuple[ResolvedRule, ...]
    sets: dict[str, IPSetSpec]


def resolve(
    ingress: list[Rule] | None, egress: list[Rule] | None, namespace: str | None, owner: str
) -> ResolvedRules:
    inbound, in_sets = resolve_rules(ingress, namespace, owner, "inbound")
    outbound, out_sets = resolve_rules(egress, namespace, owner, "outbound")
    return ResolvedRules(inbound, outbound, {**in_sets, **out_sets})


def policy_owner(policy: PolicyID) -> str:
    """The owner a policy's rule ids are hashed with (``calc.rules.rule_id``)."""
    return f"{policy.kind}/{policy.tier}/{policy.name}"


def profile_owner(name: str) -> str:
    """The owner a profile's rule ids are hashed with."""
    return f"Profile/{name}"


def builtin_profile(name: str) -> Profile | None:
    """Calico's synthetic ``projectcalico-default-allow`` (None for any other name)."""
    return _DEFAULT_ALLOW if name == DEFAULT_ALLOW_PROFILE else None


def _needed_everywhere(policy: NetworkPolicy | GlobalNetworkPolicy) -> bool:
    """Calico's ``performanceHints: [AssumeNeededOnEveryNode]``: keep the policy (and its IP
    sets) programmed even while no local endpoint needs it, so that the first one that does
    is enforced without waiting for them."""
    return "AssumeNeededOnEveryNode" in (policy.spec.performance_hints or ())


class ActiveRulesCalculator:
    def __init__(
        self,
        sequencer: EventSequencer,
        members: IPSetMemberIndex,
        dirty_endpoints: set[ResourceKey],
        stats: GraphStats,
    ) -> None:
        self._sequencer = sequencer
        self._members = members
        self._dirty = dirty_endpoints
        self._stats = stats
        self.local_index: SelectorIndex[PolicyID, ResourceKey] = SelectorIndex(
            self._on_match_started, self._on_match_stopped
        )
        self._inherit: InheritIndex[PolicyID, ResourceKey] = InheritIndex(self.local_index)
        self._endpoint_profiles: dict[ResourceKey, tuple[str, ...]] = {}
        self._policy_ids_by_key: dict[ResourceKey, PolicyID] = {}
        self._policy_infos: dict[PolicyID, PolicyInfo] = {}
        self._policy_rules: dict[PolicyID, ResolvedRules] = {}
        self.active_policies: dict[PolicyID, ResolvedRules] = {}
        self._needed_everywhere: set[PolicyID] = set()
        self._profiles: dict[str, Profile] = {}
        self._profile_rules: dict[str, ResolvedRules] = {}
        self._profile_references: dict[str, int] = {}
        self.active_profiles: dict[str, ResolvedRules] = {}

    # --- queries ------------------------------------------------------------------------------

    def policies_for(self, endpoint_key: ResourceKey) -> list[PolicyInfo]:
        """The policies whose selectors match a local endpoint (unordered)."""
        return [self._policy_infos[p] for p in self.local_index.selectors_matching(endpoint_key)]

    def endpoints_of_tier(self, tier: str) -> set[ResourceKey]:
        return {
            endpoint
            for policy in self._policy_infos
            if policy.tier == tier
            for endpoint in self.local_index.matches(policy)
        }

    def rule_count(self) -> int:
        owners = [*self.active_policies.values(), *self.active_profiles.values()]
        return sum(len(o.inbound) + len(o.outbound) for o in owners)

    # --- local endpoints ----------------------------------------------------------------------

    def update_endpoint(
        self, key: ResourceKey, labels: dict[str, str], profiles: Iterable[str]
    ) -> None:
        new_profiles = tuple(profiles)
        for profile in new_profiles:
            self._reference_profile(profile)
        for profile in self._endpoint_profiles.get(key, ()):
            self._release_profile(profile)
        self._endpoint_profiles[key] = new_profiles
        self._inherit.update_item(key, labels, new_profiles)
        self._dirty.add(key)

    def delete_endpoint(self, key: ResourceKey) -> None:
        profiles = self._endpoint_profiles.pop(key, None)
        if profiles is None:
            return
        self._inherit.delete_item(key)  # deactivates policies it alone matched
        self._dirty.discard(key)
        for profile in profiles:
            self._release_profile(profile)

    # --- policies -----------------------------------------------------------------------------

    def update_policy(
        self, key: ResourceKey, resource: NetworkPolicy | GlobalNetworkPolicy | None
    ) -> None:
        old_id = self._policy_ids_by_key.get(key)
        parsed = None if resource is None else self._parse_policy(key, resource)
        if resource is None or parsed is None:
            if old_id is not None:
                self._delete_policy(key, old_id)
            return
        info, selector, rules = parsed
        if old_id is not None and old_id != info.id:
            self._delete_policy(key, old_id)  # moved to another tier: a different policy
        self._policy_ids_by_key[key] = info.id
        previous_info = self._policy_infos.get(info.id)
        self._policy_infos[info.id] = info
        self._policy_rules[info.id] = rules
        was_active = info.id in self.active_policies
        if _needed_everywhere(resource):
            self._needed_everywhere.add(info.id)
        else:
            self._needed_everywhere.discard(info.id)
        self.local_index.update_selector(info.id, selector)
        if info.id in self.active_policies:
            if was_active:
                self._activate_policy(info.id)  # the new rules, in place
            if not self._keeps_active(info.id):
                self._deactivate_policy(info.id)
        elif self._keeps_active(info.id):
            self._activate_policy(info.id)
        if previous_info != info:
            self._dirty.update(self.local_index.matches(info.id))

    def _keeps_active(self, policy: PolicyID) -> bool:
        return policy in self._needed_everywhere or self.local_index.has_matches(policy)

    def _parse_policy(
        self, key: ResourceKey, resource: NetworkPolicy | GlobalNetworkPolicy
    ) -> tuple[PolicyInfo, Selector, ResolvedRules] | None:
        info = policy_info(resource)
        namespace = resource.metadata.namespace if isinstance(resource, NetworkPolicy) else None
        owner = policy_owner(info.id)
        try:
            selector = policy_selector(resource)
            rules = resolve(
                resource.spec.ingress if info.ingress else None,
                resource.spec.egress if info.egress else None,
                namespace,
                owner,
            )
        except ValueError as error:
            self._stats.invalid_resources += 1
            log.warning("Treating policy %s as deleted: %s", key, error)
            return None
        return info, selector, rules

    def _delete_policy(self, key: ResourceKey, policy: PolicyID) -> None:
        del self._policy_ids_by_key[key]
        self._needed_everywhere.discard(policy)
        self.local_index.delete_selector(policy)  # deactivates it via the callbacks
        if policy in self.active_policies:  # it matched nothing, but was needed everywhere
            self._deactivate_policy(policy)
        self._policy_rules.pop(policy, None)
        self._policy_infos.pop(policy, None)

    def _on_match_started(self, policy: PolicyID, endpoint_key: ResourceKey) -> None:
        self._dirty.add(endpoint_key)
        if policy not in self.active_policies:
            self._activate_policy(policy)

    def _on_match_stopped(self, policy: PolicyID, endpoint_key: ResourceKey) -> None:
        self._dirty.add(endpoint_key)
        if policy in self.active_policies and not self._keeps_active(policy):
            self._deactivate_policy(policy)

    def _deactivate_policy(self, policy: PolicyID) -> None:
        active = self.active_policies.pop(policy)
        self._sequencer.on_policy_remove(policy)
        self._release_sets(active.sets)

    def _activate_policy(self, policy: PolicyID) -> None:
        active = self._policy_rules[policy]
        self._stats.policy_activations += 1
        self._reference_sets(active.sets)
        previous = self.active_policies.get(policy)
        self.active_policies[policy] = active
        self._sequencer.on_policy_update(
            ActivePolicyUpdate(policy, active.inbound, active.outbound)
        )
        if previous is not None:
            self._release_sets(previous.sets)

    # --- profiles -----------------------------------------------------------------------------

    def _profile(self, name: str) -> Profile | None:
        profile = self._profiles.get(name)
        return builtin_profile(name) if profile is None else profile

    def update_profile(self, name: str, resource: Profile | None) -> None:
        self._profiles.pop(name, None)
        self._profile_rules.pop(name, None)
        if resource is not None:
            try:
                rules = resolve(
                    resource.spec.ingress, resource.spec.egress, None, profile_owner(name)
                )
            except ValueError as error:
                self._stats.invalid_resources += 1
                log.warning("Treating profile %s as deleted: %s", name, error)
            else:
                self._profiles[name] = resource
                self._profile_rules[name] = rules
        profile = self._profile(name)
        labels = profile.spec.labels_to_apply if profile is not None else None
        self._members.update_parent(name, labels)
        self._inherit.update_parent(name, labels)
        if name in self.active_profiles:
            self._activate_profile(name)

    def _reference_profile(self, name: str) -> None:
        count = self._profile_references.get(name, 0)
        self._profile_references[name] = count + 1
        if not count:
            self._activate_profile(name)

    def _release_profile(self, name: str) -> None:
        count = self._profile_references[name]
        if count > 1:
            self._profile_references[name] = count - 1
            return
        del self._profile_references[name]
        active = self.active_profiles.pop(name)
        self._sequencer.on_profile_remove(ProfileID(name))
        self._release_sets(active.sets)

    def _activate_profile(self, name: str) -> None:
        active = self._profile_rules.get(name)
        if active is None:  # the synthetic default-allow profile, or a missing one
            profile = self._profile(name)
            ingress = profile.spec.ingress if profile is not None else None
            egress = profile.spec.egress if profile is not None else None
            active = resolve(ingress, egress, None, profile_owner(name))
        self._reference_sets(active.sets)
        previous = self.active_profiles.get(name)
        self.active_profiles[name] = active
        self._sequencer.on_profile_update(
            ActiveProfileUpdate(ProfileID(name), active.inbound, active.outbound)
        )
        if previous is not None:
            self._release_sets(previous.sets)

    # --- IP-set references --------------------------------------------------------------------

    def _reference_sets(self, sets: dict[str, IPSetSpec]) -> None:
        for spec in sets.values():
            self._members.reference(spec)

    def _release_sets(self, sets: dict[str, IPSetSpec]) -> None:
        for set_id in sets:
            self._members.release(set_id)

"""``CalcGraph``: datastore updates in, ordered dataplane messages out (Felix's calculation graph).

What it is: the wiring of Go Felix's calc graph for one host.  ``on_update(key, value)`` takes the
syncer's raw ``(key, bytes | None)`` pairs for v3 resources, decodes them (the trusted codec
path; an undecodable value counts as a delete, like Go's validation filter) and dispatches by
kind:

* endpoints → the IP-set member index (every endpoint in the cluster) and, if on this host, the
  local-endpoint label index (with profile ``labelsToApply`` inherited);
* policies → their effective selector in the local index (the *active-rules calculator*: a policy
  is active while it matches a local endpoint); active policies and profiles are scanned into
  ``ResolvedRule`` s whose IP sets are reference-counted in the member index;
* tiers, FelixConfiguration, IPPools, Nodes → the sorter, the config, pools and host metadata.

Everything goes to the ``EventSequencer``; endpoint messages are computed lazily at ``flush``
for the endpoints that changed.  What it is not: I/O of any kind (the daemon feeds it and hands
``flush()`` to the dataplane) or kernel rendering.

Invariants (tested as properties): after any sequence of updates, the messages flushed so far
describe exactly what a fresh graph computes from the final datastore state, and no message
references an IP set, policy or profile the dataplane has not been sent.  Work per update is
bounded by what could change: a policy update evaluates its selector only against candidate
endpoints; an endpoint label change evaluates only selectors reading a changed label.
"""

from __future__ import annotations

import gc
import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass

from pycalico.datastore.paths import RESOURCE_ROOT, InvalidKey, parse_resource_key, resource_key
from pycalico.felix.calc.config import GLOBAL_CONFIG_NAME, effective_config, node_config_name
from pycalico.felix.calc.endpoints import (
    DEFAULT_ALLOW_PROFILE,
    host_contribution,
    host_endpoint_update,
    host_profiles,
    network_set_contribution,
    workload_contribution,
    workload_endpoint_id,
    workload_endpoint_update,
    workload_profiles,
)
from pycalico.felix.calc.index import InheritIndex, SelectorIndex
from pycalico.felix.calc.ipsets import IPSetMemberIndex
from pycalico.felix.calc.labels import (
    host_endpoint_labels,
    network_set_labels,
    network_set_parents,
    policy_selector,
    workload_endpoint_labels,
)
from pycalico.felix.calc.policies import (
    PolicyInfo,
    TierSettings,
    host_tiers,
    policy_info,
    tier_settings,
    workload_tiers,
)
from pycalico.felix.calc.rules import IPSetSpec, resolve_rules
from pycalico.felix.calc.sequencer import EventSequencer
from pycalico.felix.messages import (
    ActivePolicyUpdate,
    ActiveProfileUpdate,
    HostEndpointID,
    HostMetadataUpdate,
    IPPoolUpdate,
    Message,
    PolicyID,
    ProfileID,
    ResolvedRule,
    WorkloadEndpointID,
)
from pycalico.model.codec import decode_value
from pycalico.model.endpoints import (
    GlobalNetworkSet,
    HostEndpoint,
    NetworkSet,
    Profile,
    ProfileSpec,
    WorkloadEndpoint,
)
from pycalico.model.ipam import IPPool
from pycalico.model.kinds import KINDS, KindInfo
from pycalico.model.meta import ObjectMeta, Resource
from pycalico.model.node import FelixConfiguration, Node
from pycalico.model.policy import GlobalNetworkPolicy, NetworkPolicy, Tier
from pycalico.model.rules import Rule
from pycalico.model.selectors import Selector
from pycalico.model.validation import ValidationFailure

log = logging.getLogger(__name__)

_KINDS_BY_PLURAL: dict[str, KindInfo] = {info.plural: info for info in KINDS.values()}
_HANDLED_PLURALS = frozenset(
    {
        "workloadendpoints",
        "hostendpoints",
        "networkpolicies",
        "globalnetworkpolicies",
        "tiers",
        "profiles",
        "networksets",
        "globalnetworksets",
        "felixconfigurations",
        "ippools",
        "nodes",
    }
)

_DEFAULT_ALLOW = Profile(
    metadata=ObjectMeta(name=DEFAULT_ALLOW_PROFILE),
    spec=ProfileSpec(ingress=[Rule(action="Allow")], egress=[Rule(action="Allow")]),
)


@dataclass
class _Active:
    """An active policy or profile: its resolved rules and the IP sets they reference."""

    inbound: tuple[ResolvedRule, ...]
    outbound: tuple[ResolvedRule, ...]
    sets: dict[str, IPSetSpec]


def _resolve(
    ingress: list[Rule] | None, egress: list[Rule] | None, namespace: str | None, owner: str
) -> _Active:
    inbound, in_sets = resolve_rules(ingress, namespace, owner, "inbound")
    outbound, out_sets = resolve_rules(egress, namespace, owner, "outbound")
    return _Active(inbound, outbound, {**in_sets, **out_sets})


def key_of(resource: Resource) -> str:
    """The etcd key of ``resource`` (what the syncer would report it under)."""
    info = KINDS[resource.kind or type(resource).KIND]
    return resource_key(info, resource.metadata.name, resource.metadata.namespace)


@dataclass
class _LocalEndpoint:
    resource: WorkloadEndpoint | HostEndpoint
    profiles: tuple[str, ...]


@dataclass
class GraphStats:
    """Counters for tests, benchmarks and metrics."""

    updates: int = 0
    decode_failures: int = 0
    invalid_resources: int = 0
    policy_activations: int = 0
    endpoint_computations: int = 0


@dataclass(frozen=True, slots=True)
class GraphSummary:
    """Sizes of the current desired state, for Felix's metrics (endpoints, policies, sets, rules)."""

    local_endpoints: int
    active_policies: int
    active_profiles: int
    ip_sets: int
    ip_set_members: int
    rules: int


class CalcGraph:
    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self.stats = GraphStats()
        self.sequencer = EventSequencer()
        self.members = IPSetMemberIndex(self.sequencer)
        self.local_index: SelectorIndex[PolicyID, str] = SelectorIndex(
            self._on_policy_match_started, self._on_policy_match_stopped
        )
        self._local_inherit: InheritIndex[PolicyID, str] = InheritIndex(self.local_index)
        self._policy_rules: dict[PolicyID, _Active] = {}
        self._policy_infos: dict[PolicyID, PolicyInfo] = {}
        self._policy_ids_by_key: dict[str, PolicyID] = {}
        self._active_policies: dict[PolicyID, _Active] = {}
        self._tier_resources: dict[str, Tier] = {}
        self._tiers: dict[str, TierSettings] = {}
        self._profiles: dict[str, Profile] = {}
        self._profile_rules: dict[str, _Active] = {}
        self._profile_references: dict[str, int] = {}
        self._active_profiles: dict[str, _Active] = {}
        self._local: dict[str, _LocalEndpoint] = {}
        self._dirty_endpoints: set[str] = set()
        self._felix_configs: dict[str, FelixConfiguration] = {}
        self._pool_ids_by_key: dict[str, str] = {}
        self._node_names: set[str] = set()
        self._config_dirty = True

    # --- input --------------------------------------------------------------------------------

    def on_update(self, key: str, value: bytes | str | None) -> None:
        """One syncer update; keys outside the v3 resources this graph uses are ignored."""
        if not key.startswith(RESOURCE_ROOT):
            return
        try:
            plural, _, _ = parse_resource_key(key)
        except InvalidKey:
            return
        if plural not in _HANDLED_PLURALS:
            return
        resource: Resource | None = None
        if value is not None:
            try:
                resource = decode_value(value, kind=_KINDS_BY_PLURAL[plural])
            except ValidationFailure as error:
                self.stats.decode_failures += 1
                log.warning("Treating %s as deleted: its value does not decode: %s", key, error)
        self.on_resource(resource, key)

    def on_updates(self, updates: Iterable[tuple[str, bytes | str | None]]) -> None:
        """``on_update`` for a whole syncer batch, with the cyclic garbage collector paused.

        A snapshot of thousands of resources allocates many objects and no cyclic garbage; left
        running, the collector rescans the growing heap again and again (about a third of a
        cold start, see ``bench.felix_calc``).  The collector is restored even on error.
        """
        paused = gc.isenabled()
        if paused:
            gc.disable()
        try:
            for key, value in updates:
                self.on_update(key, value)
        finally:
            if paused:
                gc.enable()

    def on_in_sync(self) -> None:
        """The syncer has delivered its whole snapshot: the next flush ends with ``InSync``."""
        self.sequencer.on_in_sync()

    def on_resource(self, resource: Resource | None, key: str | None = None) -> None:
        """A decoded resource (None: deleted; then ``key`` is required)."""
        if key is None:
            if resource is None:
                raise ValueError("on_resource: a deletion needs the resource's key")
            key = key_of(resource)
        self.stats.updates += 1
        plural, _, name = parse_resource_key(key)
        if plural in ("workloadendpoints", "hostendpoints"):
            self._on_endpoint(key, resource)
        elif plural in ("networkpolicies", "globalnetworkpolicies"):
            self._on_policy(key, resource)
        elif plural == "profiles":
            self._on_profile(name, resource)
        elif plural in ("networksets", "globalnetworksets"):
            self._on_network_set(key, resource)
        elif plural == "tiers":
            self._on_tier(name, resource)
        elif plural == "felixconfigurations":
            self._on_felix_configuration(name, resource)
        elif plural == "ippools":
            self._on_pool(key, resource)
        elif plural == "nodes":
            self._on_node(name, resource)

    # --- output -------------------------------------------------------------------------------

    def flush(self) -> list[Message]:
        """Everything that changed since the last flush, in dependency order."""
        if self._config_dirty:
            self._config_dirty = False
            self.sequencer.on_config(
                effective_config(
                    self._felix_configs.get(GLOBAL_CONFIG_NAME),
                    self._felix_configs.get(node_config_name(self.hostname)),
                )
            )
        for key in self._dirty_endpoints:
            self._send_endpoint(key)
        self._dirty_endpoints.clear()
        return self.sequencer.flush()

    def summary(self) -> GraphSummary:
        owners = [*self._active_policies.values(), *self._active_profiles.values()]
        return GraphSummary(
            local_endpoints=len(self._local),
            active_policies=len(self._active_policies),
            active_profiles=len(self._active_profiles),
            ip_sets=len(self.members.active_set_ids),
            ip_set_members=self.members.member_count(),
            rules=sum(len(a.inbound) + len(a.outbound) for a in owners),
        )

    # --- endpoints ----------------------------------------------------------------------------

    def _on_endpoint(self, key: str, resource: Resource | None) -> None:
        if isinstance(resource, WorkloadEndpoint) and not resource.spec.ip_networks:
            # Like Go's processor: a workload without addresses yet is not an endpoint yet
            # (rules cannot be rendered for it), so it is treated as absent.
            resource = None
        if isinstance(resource, WorkloadEndpoint):
            labels = workload_endpoint_labels(resource)
            profiles = workload_profiles(resource)
            self.members.update_item(key, labels, profiles, workload_contribution(resource))
            local = resource.spec.node == self.hostname
        elif isinstance(resource, HostEndpoint):
            labels = host_endpoint_labels(resource)
            profiles = host_profiles(resource)
            self.members.update_item(key, labels, profiles, host_contribution(resource))
            local = resource.spec.node == self.hostname
        else:
            self.members.delete_item(key)
            local = False
        if not local:
            self._remove_local_endpoint(key)
            return
        assert isinstance(resource, WorkloadEndpoint | HostEndpoint)
        previous = self._local.get(key)
        if previous is not None and self._endpoint_id(previous.resource) != self._endpoint_id(
            resource
        ):
            self._remove_local_endpoint(key)
            previous = None
        for profile in profiles:
            self._reference_profile(profile)
        if previous is not None:
            for profile in previous.profiles:
                self._release_profile(profile)
        self._local[key] = _LocalEndpoint(resource, profiles)
        self._local_inherit.update_item(key, labels, profiles)
        self._dirty_endpoints.add(key)

    @staticmethod
    def _endpoint_id(resource: WorkloadEndpoint | HostEndpoint) -> object:
        if isinstance(resource, WorkloadEndpoint):
            return workload_endpoint_id(resource)
        return HostEndpointID(resource.metadata.name)

    def _remove_local_endpoint(self, key: str) -> None:
        previous = self._local.pop(key, None)
        if previous is None:
            return
        self._dirty_endpoints.discard(key)
        self._local_inherit.delete_item(key)
        endpoint_id = self._endpoint_id(previous.resource)
        if isinstance(endpoint_id, WorkloadEndpointID):
            self.sequencer.on_workload_endpoint_remove(endpoint_id)
        elif isinstance(endpoint_id, HostEndpointID):
            self.sequencer.on_host_endpoint_remove(endpoint_id)
        for profile in previous.profiles:
            self._release_profile(profile)

    def _send_endpoint(self, key: str) -> None:
        endpoint = self._local.get(key)
        if endpoint is None:
            return
        self.stats.endpoint_computations += 1
        infos = [self._policy_infos[p] for p in self.local_index.selectors_matching(key)]
        if isinstance(endpoint.resource, WorkloadEndpoint):
            self.sequencer.on_workload_endpoint_update(
                workload_endpoint_update(endpoint.resource, workload_tiers(infos, self._tiers))
            )
        else:
            self.sequencer.on_host_endpoint_update(
                host_endpoint_update(endpoint.resource, host_tiers(infos, self._tiers))
            )

    def _on_network_set(self, key: str, resource: Resource | None) -> None:
        if isinstance(resource, NetworkSet | GlobalNetworkSet):
            self.members.update_item(
                key,
                network_set_labels(resource),
                network_set_parents(resource),
                network_set_contribution(resource),
            )
        else:
            self.members.delete_item(key)

    # --- policies (the active-rules calculator) ----------------------------------------------

    def _on_policy(self, key: str, resource: Resource | None) -> None:
        old_id = self._policy_ids_by_key.get(key)
        parsed: tuple[PolicyInfo, Selector, _Active] | None = None
        if isinstance(resource, NetworkPolicy | GlobalNetworkPolicy):
            parsed = self._parse_policy(key, resource)
        if parsed is None:
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
        was_active = info.id in self._active_policies
        self.local_index.update_selector(info.id, selector)
        if was_active and info.id in self._active_policies:
            self._activate_policy(info.id)  # the new rules, in place
        if previous_info != info:
            self._dirty_endpoints.update(self.local_index.matches(info.id))

    def _parse_policy(
        self, key: str, resource: NetworkPolicy | GlobalNetworkPolicy
    ) -> tuple[PolicyInfo, Selector, _Active] | None:
        """Everything the graph needs from a policy, or None (logged) if a selector or net
        does not parse: like Go's validation filter, an invalid policy counts as deleted."""
        info = policy_info(resource)
        namespace = resource.metadata.namespace if isinstance(resource, NetworkPolicy) else None
        owner = f"{info.id.kind}/{info.id.tier}/{info.id.name}"
        try:
            selector = policy_selector(resource)
            rules = _resolve(
                resource.spec.ingress if info.ingress else None,
                resource.spec.egress if info.egress else None,
                namespace,
                owner,
            )
        except ValueError as error:
            self.stats.invalid_resources += 1
            log.warning("Treating policy %s as deleted: %s", key, error)
            return None
        return info, selector, rules

    def _delete_policy(self, key: str, policy: PolicyID) -> None:
        del self._policy_ids_by_key[key]
        self.local_index.delete_selector(policy)  # deactivates it via the callbacks
        self._policy_rules.pop(policy, None)
        self._policy_infos.pop(policy, None)

    def _on_policy_match_started(self, policy: PolicyID, endpoint_key: str) -> None:
        self._dirty_endpoints.add(endpoint_key)
        if policy not in self._active_policies:
            self._activate_policy(policy)

    def _on_policy_match_stopped(self, policy: PolicyID, endpoint_key: str) -> None:
        self._dirty_endpoints.add(endpoint_key)
        if policy in self._active_policies and not self.local_index.has_matches(policy):
            active = self._active_policies.pop(policy)
            self.sequencer.on_policy_remove(policy)
            self._release_sets(active.sets)

    def _activate_policy(self, policy: PolicyID) -> None:
        """Send the policy's rules, referencing their IP sets (new ones before old ones go)."""
        active = self._policy_rules[policy]
        self.stats.policy_activations += 1
        self._reference_sets(active.sets)
        previous = self._active_policies.get(policy)
        self._active_policies[policy] = active
        self.sequencer.on_policy_update(ActivePolicyUpdate(policy, active.inbound, active.outbound))
        if previous is not None:
            self._release_sets(previous.sets)

    def _reference_sets(self, sets: dict[str, IPSetSpec]) -> None:
        for spec in sets.values():
            self.members.reference(spec)

    def _release_sets(self, sets: dict[str, IPSetSpec]) -> None:
        for set_id in sets:
            self.members.release(set_id)

    # --- profiles -----------------------------------------------------------------------------

    def _profile(self, name: str) -> Profile | None:
        profile = self._profiles.get(name)
        if profile is None and name == DEFAULT_ALLOW_PROFILE:
            return _DEFAULT_ALLOW
        return profile

    def _on_profile(self, name: str, resource: Resource | None) -> None:
        self._profiles.pop(name, None)
        self._profile_rules.pop(name, None)
        if isinstance(resource, Profile):
            try:
                rules = _resolve(
                    resource.spec.ingress, resource.spec.egress, None, f"Profile/{name}"
                )
            except ValueError as error:
                self.stats.invalid_resources += 1
                log.warning("Treating profile %s as deleted: %s", name, error)
            else:
                self._profiles[name] = resource
                self._profile_rules[name] = rules
        profile = self._profile(name)
        labels = profile.spec.labels_to_apply if profile is not None else None
        self.members.update_parent(name, labels)
        self._local_inherit.update_parent(name, labels)
        if name in self._active_profiles:
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
        active = self._active_profiles.pop(name)
        self.sequencer.on_profile_remove(ProfileID(name))
        self._release_sets(active.sets)

    def _activate_profile(self, name: str) -> None:
        active = self._profile_rules.get(name)
        if active is None:
            # The synthetic default-allow profile, or a referenced profile that does not exist:
            # the latter allows nothing, and is still sent so that endpoints never reference a
            # profile the dataplane lacks.
            profile = self._profile(name)
            ingress = profile.spec.ingress if profile is not None else None
            egress = profile.spec.egress if profile is not None else None
            active = _resolve(ingress, egress, None, f"Profile/{name}")
        self._reference_sets(active.sets)
        previous = self._active_profiles.get(name)
        self._active_profiles[name] = active
        self.sequencer.on_profile_update(
            ActiveProfileUpdate(ProfileID(name), active.inbound, active.outbound)
        )
        if previous is not None:
            self._release_sets(previous.sets)

    # --- tiers, configuration, pools, nodes ---------------------------------------------------

    def _on_tier(self, name: str, resource: Resource | None) -> None:
        if isinstance(resource, Tier):
            self._tier_resources[name] = resource
        else:
            self._tier_resources.pop(name, None)
        settings = tier_settings(name, self._tier_resources.get(name))
        if self._tiers.get(name) == settings:
            return
        if settings is None:
            del self._tiers[name]
        else:
            self._tiers[name] = settings
        for policy, info in self._policy_infos.items():
            if info.id.tier == name:
                self._dirty_endpoints.update(self.local_index.matches(policy))

    def _on_felix_configuration(self, name: str, resource: Resource | None) -> None:
        if name not in (GLOBAL_CONFIG_NAME, node_config_name(self.hostname)):
            return
        if isinstance(resource, FelixConfiguration):
            self._felix_configs[name] = resource
        else:
            self._felix_configs.pop(name, None)
        self._config_dirty = True

    def _on_pool(self, key: str, resource: Resource | None) -> None:
        old = self._pool_ids_by_key.pop(key, None)
        if isinstance(resource, IPPool):
            spec = resource.spec
            try:
                pool_id = str(ipaddress.ip_network(spec.cidr, strict=False))
            except ValueError:
                pool_id = ""
            if pool_id:
                if old is not None and old != pool_id:
                    self.sequencer.on_pool_remove(old)
                self._pool_ids_by_key[key] = pool_id
                self.sequencer.on_pool_update(
                    IPPoolUpdate(
                        id=pool_id,
                        cidr=pool_id,
                        masquerade=spec.nat_outgoing,
                        ipip_mode=spec.ipip_mode or "Never",
                        vxlan_mode=spec.vxlan_mode or "Never",
                        disabled=spec.disabled,
                        disable_bgp_export=spec.disable_bgp_export,
                    )
                )
                return
        if old is not None:
            self.sequencer.on_pool_remove(old)

    def _on_node(self, name: str, resource: Resource | None) -> None:
        if not isinstance(resource, Node):
            if name in self._node_names:
                self._node_names.discard(name)
                self.sequencer.on_host_metadata_remove(name)
            return
        bgp = resource.spec.bgp
        ipv4 = (bgp.ipv4_address or "").split("/")[0] if bgp is not None else ""
        ipv6 = (bgp.ipv6_address or "").split("/")[0] if bgp is not None else ""
        self._node_names.add(name)
        self.sequencer.on_host_metadata_update(HostMetadataUpdate(name, ipv4, ipv6))

"""``CalcGraph``: typed datastore updates in, ordered dataplane messages out (Felix's calc graph).

What it is: the wiring of Go Felix's calc graph for one host.  ``on_updates`` takes the typed
stream's ``ResourceUpdate`` s (``datastore.resource_syncer``: decoding and validation happen
there, once) and dispatches each to the handler registered for its kind (as Go Felix's
dispatcher does; kinds with no handler are ignored):

* endpoints and network sets → the IP-set member index (every one in the cluster); endpoints on
  this host (the local-endpoint filter: ``spec.node`` is the hostname) also → the active-rules
  calculator (``active_rules``), whose label index matches them against policy selectors;
* policies and profiles → the active-rules calculator, which sends the active ones with their
  ``ResolvedRule`` s and reference-counts their IP sets in the member index;
* tiers, FelixConfiguration, IPPools → the sorter, the config and the pools;
* Nodes, IPPools and every node's block affinities → the VXLAN resolver (``vxlan``): VTEPs and
  routes to other nodes' blocks;
* ClusterInformation ``default`` → the datastore ready flag (``ready``): when it turns to
  not-ready (``datastoreReady: false``, ``calicoctl datastore migrate lock``) the next flush
  starts with ``DatastoreNotReady``.

Endpoints, policies and items of the member index are keyed by ``ResourceKey``.  Everything
goes to the ``EventSequencer``; endpoint messages are computed lazily at ``flush`` for the
endpoints that changed.  What it is not: I/O or decoding of any kind (the daemon feeds it and
hands ``flush()`` to the dataplane) or kernel rendering.

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
from collections.abc import Callable, Iterable

from pycalico.datastore.paths import AffinityKey
from pycalico.datastore.updates import BlockAffinity, ResourceKey, ResourceUpdate
from pycalico.felix.calc.active_rules import ActiveRulesCalculator
from pycalico.felix.calc.config import GLOBAL_CONFIG_NAME, effective_config, node_config_name
from pycalico.felix.calc.endpoints import (
    host_contribution,
    host_endpoint_update,
    host_profiles,
    network_set_contribution,
    workload_contribution,
    workload_endpoint_id,
    workload_endpoint_update,
    workload_profiles,
)
from pycalico.felix.calc.index import SelectorIndex
from pycalico.felix.calc.ipsets import IPSetMemberIndex
from pycalico.felix.calc.labels import (
    host_endpoint_labels,
    network_set_labels,
    network_set_parents,
    workload_endpoint_labels,
)
from pycalico.felix.calc.policies import (
    TierSettings,
    host_tiers,
    tier_settings,
    workload_tiers,
)
from pycalico.felix.calc.ready import CLUSTER_INFORMATION_NAME, datastore_ready
from pycalico.felix.calc.sequencer import EventSequencer
from pycalico.felix.calc.stats import GraphStats, GraphSummary
from pycalico.felix.calc.vxlan import VXLANResolver
from pycalico.felix.messages import (
    HostEndpointID,
    InSync,
    IPPoolUpdate,
    Message,
    PolicyID,
    WorkloadEndpointID,
)
from pycalico.model.endpoints import (
    GlobalNetworkSet,
    HostEndpoint,
    NetworkSet,
    Profile,
    WorkloadEndpoint,
)
from pycalico.model.ipam import IPPool
from pycalico.model.meta import Resource
from pycalico.model.node import ClusterInformation, FelixConfiguration, Node
from pycalico.model.policy import GlobalNetworkPolicy, NetworkPolicy, Tier

log = logging.getLogger(__name__)


def _endpoint_id(resource: WorkloadEndpoint | HostEndpoint) -> WorkloadEndpointID | HostEndpointID:
    if isinstance(resource, WorkloadEndpoint):
        return workload_endpoint_id(resource)
    return HostEndpointID(resource.metadata.name)


def key_of(resource: Resource) -> str:
    """The etcd key of ``resource`` (what the syncer would report it under)."""
    return ResourceKey.of(resource).path


Handler = Callable[[ResourceKey, Resource | None], None]


class CalcGraph:
    """Felix's calculation graph for the host ``hostname``.

    Use: feed every batch of the typed stream with ``on_updates`` (``on_resource`` and
    ``on_delete`` for one resource), call ``on_in_sync()`` when the stream reports in-sync, and
    hand ``flush()`` to the dataplane after each batch.  ``summary()`` and ``stats`` feed the
    metrics.
    """

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self.stats = GraphStats()
        self.sequencer = EventSequencer()
        self.members = IPSetMemberIndex(self.sequencer)
        self._dirty_endpoints: set[ResourceKey] = set()
        self.rules = ActiveRulesCalculator(
            self.sequencer, self.members, self._dirty_endpoints, self.stats
        )
        self._tier_resources: dict[str, Tier] = {}
        self._tiers: dict[str, TierSettings] = {}
        self._local: dict[ResourceKey, WorkloadEndpoint | HostEndpoint] = {}
        self._felix_configs: dict[str, FelixConfiguration] = {}
        self._pool_ids_by_key: dict[ResourceKey, str] = {}
        self._config_dirty = True
        self.datastore_ready = True  # until ClusterInformation default says otherwise
        self.vxlan = VXLANResolver(hostname)
        self._handlers: dict[str, Handler] = {
            "WorkloadEndpoint": self._on_endpoint,
            "HostEndpoint": self._on_endpoint,
            "NetworkPolicy": self._on_policy,
            "GlobalNetworkPolicy": self._on_policy,
            "Profile": self._on_profile,
            "NetworkSet": self._on_network_set,
            "GlobalNetworkSet": self._on_network_set,
            "Tier": self._on_tier,
            "FelixConfiguration": self._on_felix_configuration,
            "IPPool": self._on_pool,
            "ClusterInformation": self._on_cluster_information,
            "Node": self._on_node,
        }

    @property
    def kinds(self) -> frozenset[str]:
        """The kinds this graph reads: the daemon's stream follows exactly these."""
        return frozenset(self._handlers)

    # --- input --------------------------------------------------------------------------------

    def on_update(self, update: ResourceUpdate) -> None:
        """One typed update; keys of kinds without a handler (and affinities) are ignored."""
        key = update.key
        if isinstance(key, AffinityKey):
            if key.affinity_type == "host":
                value = update.resource
                state = value.state if isinstance(value, BlockAffinity) else None
                self.vxlan.on_affinity(key.host, key.cidr, state)
            return
        if not isinstance(key, ResourceKey):
            return
        handler = self._handlers.get(key.kind)
        if handler is None:
            return
        self.stats.updates += 1
        resource = update.resource
        handler(key, resource if isinstance(resource, Resource) else None)

    def on_updates(self, updates: Iterable[ResourceUpdate]) -> None:
        """``on_update`` for a whole batch, with the cyclic garbage collector paused.

        A snapshot of thousands of resources allocates many objects and no cyclic garbage; left
        running, the collector rescans the growing heap again and again (about a third of a
        cold start, see ``bench.felix_calc``).  The collector is restored even on error.
        """
        paused = gc.isenabled()
        if paused:
            gc.disable()
        try:
            for update in updates:
                self.on_update(update)
        finally:
            if paused:
                gc.enable()

    def on_batch(self, updates: Iterable[ResourceUpdate], in_sync: bool) -> list[Message]:
        """One batch of the stream, then the flush: what the daemon does with every batch (and
        what ``bench.felix_calc`` times).  ``in_sync``: the batch's status is in-sync."""
        self.on_updates(updates)
        if in_sync:
            self.on_in_sync()
        return self.flush()

    def on_in_sync(self) -> None:
        """The stream has delivered its whole snapshot: the next flush ends with ``InSync``."""
        self.sequencer.on_in_sync()

    def on_resource(self, resource: Resource) -> None:
        """One resource created or changed (tests and benchmarks: the stream's update)."""
        self.on_update(ResourceUpdate(ResourceKey.of(resource), resource, 0))

    def on_delete(self, key: ResourceKey) -> None:
        """One resource deleted."""
        self.on_update(ResourceUpdate(key, None, 0))

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
        out = self.sequencer.flush()
        overlay = self.vxlan.flush()
        if overlay:
            # After pools and config, before InSync (which must stay last).
            at = len(out) - 1 if out and isinstance(out[-1], InSync) else len(out)
            out[at:at] = overlay
        return out

    @property
    def local_index(self) -> SelectorIndex[PolicyID, ResourceKey]:
        """The label index of local endpoints against policy selectors (for tests/metrics)."""
        return self.rules.local_index

    def summary(self) -> GraphSummary:
        return GraphSummary(
            local_endpoints=len(self._local),
            active_policies=len(self.rules.active_policies),
            active_profiles=len(self.rules.active_profiles),
            ip_sets=len(self.members.active_set_ids),
            ip_set_members=self.members.member_count(),
            rules=self.rules.rule_count(),
        )

    # --- endpoints ----------------------------------------------------------------------------

    def _on_endpoint(self, key: ResourceKey, resource: Resource | None) -> None:
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
        if previous is not None and _endpoint_id(previous) != _endpoint_id(resource):
            self._remove_local_endpoint(key)
        self._local[key] = resource
        self.rules.update_endpoint(key, labels, profiles)

    def _remove_local_endpoint(self, key: ResourceKey) -> None:
        previous = self._local.pop(key, None)
        if previous is None:
            return
        endpoint_id = _endpoint_id(previous)
        if isinstance(endpoint_id, WorkloadEndpointID):
            self.sequencer.on_workload_endpoint_remove(endpoint_id)
        else:
            self.sequencer.on_host_endpoint_remove(endpoint_id)
        self.rules.delete_endpoint(key)

    def _send_endpoint(self, key: ResourceKey) -> None:
        endpoint = self._local.get(key)
        if endpoint is None:
            return
        self.stats.endpoint_computations += 1
        infos = self.rules.policies_for(key)
        if isinstance(endpoint, WorkloadEndpoint):
            self.sequencer.on_workload_endpoint_update(
                workload_endpoint_update(endpoint, workload_tiers(infos, self._tiers))
            )
        else:
            self.sequencer.on_host_endpoint_update(
                host_endpoint_update(endpoint, host_tiers(infos, self._tiers))
            )

    def _on_policy(self, key: ResourceKey, resource: Resource | None) -> None:
        policy = resource if isinstance(resource, NetworkPolicy | GlobalNetworkPolicy) else None
        self.rules.update_policy(key, policy)

    def _on_profile(self, key: ResourceKey, resource: Resource | None) -> None:
        self.rules.update_profile(key.name, resource if isinstance(resource, Profile) else None)

    def _on_network_set(self, key: ResourceKey, resource: Resource | None) -> None:
        if isinstance(resource, NetworkSet | GlobalNetworkSet):
            self.members.update_item(
                key,
                network_set_labels(resource),
                network_set_parents(resource),
                network_set_contribution(resource),
            )
        else:
            self.members.delete_item(key)

    # --- tiers, configuration, pools ---------------------------------------------------

    def _on_tier(self, key: ResourceKey, resource: Resource | None) -> None:
        name = key.name
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
        self._dirty_endpoints.update(self.rules.endpoints_of_tier(name))

    def _on_felix_configuration(self, key: ResourceKey, resource: Resource | None) -> None:
        name = key.name
        if name not in (GLOBAL_CONFIG_NAME, node_config_name(self.hostname)):
            return
        if isinstance(resource, FelixConfiguration):
            self._felix_configs[name] = resource
        else:
            self._felix_configs.pop(name, None)
        self._config_dirty = True

    def _on_cluster_information(self, key: ResourceKey, resource: Resource | None) -> None:
        if key.name != CLUSTER_INFORMATION_NAME:
            return
        info = resource if isinstance(resource, ClusterInformation) else None
        ready = datastore_ready(info)
        if self.datastore_ready and not ready:
            log.warning("Ready flag updated: datastoreReady=false (the datastore is locked)")
            self.sequencer.on_datastore_not_ready()
        elif ready and not self.datastore_ready:
            log.info("Ready flag updated: the datastore is ready again")
        self.datastore_ready = ready

    def _on_node(self, key: ResourceKey, resource: Resource | None) -> None:
        self.vxlan.on_node(key.name, resource if isinstance(resource, Node) else None)

    def _on_pool(self, key: ResourceKey, resource: Resource | None) -> None:
        self.vxlan.on_pool(
            key.name,
            resource.spec.cidr if isinstance(resource, IPPool) else None,
            (resource.spec.vxlan_mode or "Never") if isinstance(resource, IPPool) else "Never",
        )
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
                        load_balancer_only=spec.allowed_uses == ["LoadBalancer"],
                    )
                )
                return
        if old is not None:
            self.sequencer.on_pool_remove(old)

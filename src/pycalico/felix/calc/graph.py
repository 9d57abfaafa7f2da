"""``CalcGraph``: datastore updates in, ordered dataplane messages out (Felix's calculation graph).

What it is: the wiring of Go Felix's calc graph for one host.  ``on_update(key, value)`` takes the
syncer's raw ``(key, bytes | None)`` pairs for v3 resources, decodes them (the trusted codec
path; an undecodable value counts as a delete, like Go's validation filter) and dispatches by
kind:

* endpoints and network sets → the IP-set member index (every one in the cluster); endpoints on
  this host (the local-endpoint filter: ``spec.node`` is the hostname) also → the active-rules
  calculator (``active_rules``), whose label index matches them against policy selectors;
* policies and profiles → the active-rules calculator, which sends the active ones with their
  ``ResolvedRule`` s and reference-counts their IP sets in the member index;
* tiers, FelixConfiguration, IPPools, Nodes → the sorter, the config, pools and host metadata;
* ClusterInformation ``default`` → the datastore ready flag (``ready``): when it turns to
  not-ready (``datastoreReady: false``, ``calicoctl datastore migrate lock``) the next flush
  starts with ``DatastoreNotReady``.

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

from pycalico.datastore.paths import RESOURCE_ROOT, InvalidKey, parse_resource_key, resource_key
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
from pycalico.felix.messages import (
    HostEndpointID,
    HostMetadataUpdate,
    IPPoolUpdate,
    Message,
    PolicyID,
    WorkloadEndpointID,
)
from pycalico.model.codec import decode_value
from pycalico.model.endpoints import (
    GlobalNetworkSet,
    HostEndpoint,
    NetworkSet,
    Profile,
    WorkloadEndpoint,
)
from pycalico.model.ipam import IPPool
from pycalico.model.kinds import KINDS, KindInfo
from pycalico.model.meta import Resource
from pycalico.model.node import ClusterInformation, FelixConfiguration, Node
from pycalico.model.policy import GlobalNetworkPolicy, NetworkPolicy, Tier
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
        "clusterinformations",
    }
)


def _endpoint_id(resource: WorkloadEndpoint | HostEndpoint) -> WorkloadEndpointID | HostEndpointID:
    if isinstance(resource, WorkloadEndpoint):
        return workload_endpoint_id(resource)
    return HostEndpointID(resource.metadata.name)


def key_of(resource: Resource) -> str:
    """The etcd key of ``resource`` (what the syncer would report it under)."""
    info = KINDS[resource.kind or type(resource).KIND]
    return resource_key(info, resource.metadata.name, resource.metadata.namespace)


class CalcGraph:
    """Felix's calculation graph for the host ``hostname``.

    Use: feed every syncer batch with ``on_updates([(key, value), ...])`` (or ``on_update``),
    call ``on_in_sync()`` when the syncer reports in-sync, and hand ``flush()`` to the
    dataplane after each batch.  ``summary()`` and ``stats`` feed the metrics.
    """

    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self.stats = GraphStats()
        self.sequencer = EventSequencer()
        self.members = IPSetMemberIndex(self.sequencer)
        self._dirty_endpoints: set[str] = set()
        self.rules = ActiveRulesCalculator(
            self.sequencer, self.members, self._dirty_endpoints, self.stats
        )
        self._tier_resources: dict[str, Tier] = {}
        self._tiers: dict[str, TierSettings] = {}
        self._local: dict[str, WorkloadEndpoint | HostEndpoint] = {}
        self._felix_configs: dict[str, FelixConfiguration] = {}
        self._pool_ids_by_key: dict[str, str] = {}
        self._node_names: set[str] = set()
        self._config_dirty = True
        self.datastore_ready = True  # until ClusterInformation default says otherwise

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
            policy = resource if isinstance(resource, NetworkPolicy | GlobalNetworkPolicy) else None
            self.rules.update_policy(key, policy)
        elif plural == "profiles":
            self.rules.update_profile(name, resource if isinstance(resource, Profile) else None)
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
        elif plural == "clusterinformations":
            self._on_cluster_information(name, resource)

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

    @property
    def local_index(self) -> SelectorIndex[PolicyID, str]:
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
        if previous is not None and _endpoint_id(previous) != _endpoint_id(resource):
            self._remove_local_endpoint(key)
        self._local[key] = resource
        self.rules.update_endpoint(key, labels, profiles)

    def _remove_local_endpoint(self, key: str) -> None:
        previous = self._local.pop(key, None)
        if previous is None:
            return
        endpoint_id = _endpoint_id(previous)
        if isinstance(endpoint_id, WorkloadEndpointID):
            self.sequencer.on_workload_endpoint_remove(endpoint_id)
        else:
            self.sequencer.on_host_endpoint_remove(endpoint_id)
        self.rules.delete_endpoint(key)

    def _send_endpoint(self, key: str) -> None:
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
        self._dirty_endpoints.update(self.rules.endpoints_of_tier(name))

    def _on_felix_configuration(self, name: str, resource: Resource | None) -> None:
        if name not in (GLOBAL_CONFIG_NAME, node_config_name(self.hostname)):
            return
        if isinstance(resource, FelixConfiguration):
            self._felix_configs[name] = resource
        else:
            self._felix_configs.pop(name, None)
        self._config_dirty = True

    def _on_cluster_information(self, name: str, resource: Resource | None) -> None:
        if name != CLUSTER_INFORMATION_NAME:
            return
        info = resource if isinstance(resource, ClusterInformation) else None
        ready = datastore_ready(info)
        if self.datastore_ready and not ready:
            log.warning("Ready flag updated: datastoreReady=false (the datastore is locked)")
            self.sequencer.on_datastore_not_ready()
        elif ready and not self.datastore_ready:
            log.info("Ready flag updated: the datastore is ready again")
        self.datastore_ready = ready

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

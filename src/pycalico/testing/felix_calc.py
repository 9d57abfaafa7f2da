"""Builders and a dataplane model for testing Felix's calculation graph (pure, no I/O).

What it is: short constructors for the v3 resources the graph consumes (``workload``,
``global_policy``, ``profile``...), and ``DataplaneModel``, which applies flushed messages the way
a dataplane would and *checks the sequencing contract* while doing so: it raises
``SequencingError`` if a message references an IP set, policy or profile it was not sent, if a
delta touches an unknown set, or if something is removed while still referenced; and ``Harness``,
a ``CalcGraph`` flushed into a ``DataplaneModel`` after every change, with queries in Calico
terms (a pod's ingress tiers, the members of a selector's set).  What it is not: a real
dataplane or a datastore fake.

The dataplane engineer can use ``DataplaneModel`` to check that a message stream they build by
hand respects the same contract the sequencer guarantees.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pycalico.datastore.resource_syncer import decode_updates
from pycalico.datastore.syncer import SyncerUpdate
from pycalico.datastore.updates import ResourceKey, ResourceUpdate
from pycalico.felix.calc import CalcGraph
from pycalico.felix.calc.labels import entity_selector
from pycalico.felix.messages import (
    ActivePolicyRemove,
    ActivePolicyUpdate,
    ActiveProfileRemove,
    ActiveProfileUpdate,
    ConfigUpdate,
    HostEndpointID,
    HostEndpointRemove,
    HostEndpointUpdate,
    InSync,
    IPPoolRemove,
    IPPoolUpdate,
    IPSetDeltaUpdate,
    IPSetRemove,
    IPSetUpdate,
    Message,
    PolicyID,
    ProfileID,
    ResolvedRule,
    TierInfo,
    WorkloadEndpointID,
    WorkloadEndpointRemove,
    WorkloadEndpointUpdate,
)
from pycalico.model.endpoints import (
    GlobalNetworkSet,
    HostEndpoint,
    NetworkSet,
    NetworkSetSpec,
    Profile,
    WorkloadEndpoint,
    workload_endpoint_name,
)
from pycalico.model.meta import ObjectMeta, Resource
from pycalico.model.policy import GlobalNetworkPolicy, NetworkPolicy, Tier
from pycalico.model.rules import EntityRule
from pycalico.model.selectors import parse

HOSTNAME = "node-a"


def _single_address_network(ip: str) -> str:
    if "/" in ip:
        return ip
    return f"{ip}/128" if ":" in ip else f"{ip}/32"


def workload(
    pod: str,
    *,
    namespace: str = "default",
    node: str = HOSTNAME,
    labels: Mapping[str, str] | None = None,
    ips: Iterable[str] = (),
    profiles: Iterable[str] | None = None,
    service_account: str | None = None,
    ports: Iterable[Mapping[str, Any]] = (),
    interface: str | None = None,
) -> WorkloadEndpoint:
    """A k8s WorkloadEndpoint; profiles default to Calico's ``kns.<ns>`` (+ ``ksa.<ns>.<sa>``)."""
    if profiles is None:
        profiles = [f"kns.{namespace}"]
        if service_account:
            profiles.append(f"ksa.{namespace}.{service_account}")
    return WorkloadEndpoint.model_validate(
        {
            "metadata": {
                "name": workload_endpoint_name(node, "k8s", pod, "eth0"),
                "namespace": namespace,
                "labels": dict(labels or {}),
            },
            "spec": {
                "orchestrator": "k8s",
                "node": node,
                "pod": pod,
                "endpoint": "eth0",
                "ipNetworks": [_single_address_network(ip) for ip in ips],
                "profiles": list(profiles),
                "interfaceName": interface
                or f"cali{zlib.crc32(f'{namespace}/{pod}'.encode()):011d}",
                "serviceAccountName": service_account,
                "ports": list(ports),
            },
        }
    )


def host_endpoint(
    name: str,
    *,
    node: str = HOSTNAME,
    labels: Mapping[str, str] | None = None,
    interface: str = "eth0",
    ips: Iterable[str] = (),
    profiles: Iterable[str] = (),
) -> HostEndpoint:
    return HostEndpoint.model_validate(
        {
            "metadata": {"name": name, "labels": dict(labels or {})},
            "spec": {
                "node": node,
                "interfaceName": interface,
                "expectedIPs": list(ips),
                "profiles": list(profiles),
            },
        }
    )


def global_policy(name: str, **spec: Any) -> GlobalNetworkPolicy:
    """A GlobalNetworkPolicy as stored (Calico's write defaults applied: tier, types)."""
    return GlobalNetworkPolicy.model_validate(
        {"metadata": {"name": name}, "spec": spec}
    ).with_defaults()


def policy(name: str, namespace: str = "default", **spec: Any) -> NetworkPolicy:
    """A NetworkPolicy as stored (Calico's write defaults applied: tier, types)."""
    return NetworkPolicy.model_validate(
        {"metadata": {"name": name, "namespace": namespace}, "spec": spec}
    ).with_defaults(namespace=namespace)


def tier(name: str, order: float | None = None, default_action: str = "Deny") -> Tier:
    return Tier.model_validate(
        {"metadata": {"name": name}, "spec": {"order": order, "defaultAction": default_action}}
    )


def profile(
    name: str,
    *,
    labels_to_apply: Mapping[str, str] | None = None,
    ingress: list[dict[str, Any]] | None = None,
    egress: list[dict[str, Any]] | None = None,
) -> Profile:
    return Profile.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "labelsToApply": dict(labels_to_apply) if labels_to_apply else None,
                "ingress": ingress,
                "egress": egress,
            },
        }
    )


def namespace_profile(namespace: str, labels: Mapping[str, str] | None = None) -> Profile:
    """What Calico's namespace controller stores for a namespace: allow-all, pcns. labels."""
    applied = {f"pcns.{k}": v for k, v in (labels or {}).items()}
    applied["pcns.projectcalico.org/name"] = namespace
    return profile(
        f"kns.{namespace}",
        labels_to_apply=applied,
        ingress=[{"action": "Allow"}],
        egress=[{"action": "Allow"}],
    )


def service_account_profile(
    namespace: str, account: str, labels: Mapping[str, str] | None = None
) -> Profile:
    applied = {f"pcsa.{k}": v for k, v in (labels or {}).items()}
    applied["pcsa.projectcalico.org/name"] = account
    return profile(f"ksa.{namespace}.{account}", labels_to_apply=applied)


def network_set(
    name: str, nets: Iterable[str], namespace: str = "default", **labels: str
) -> NetworkSet:
    return NetworkSet(
        metadata=ObjectMeta(name=name, namespace=namespace, labels=dict(labels)),
        spec=NetworkSetSpec(nets=list(nets)),
    )


def global_network_set(name: str, nets: Iterable[str], **labels: str) -> GlobalNetworkSet:
    return GlobalNetworkSet(
        metadata=ObjectMeta(name=name, labels=dict(labels)),
        spec=NetworkSetSpec(nets=list(nets)),
    )


# --- a dataplane that checks the sequencing contract ------------------------------------------


class SequencingError(AssertionError):
    """A message broke the event sequencer's ordering contract."""


def _rule_sets(rule: ResolvedRule) -> set[str]:
    return {
        *rule.source_ip_set_ids,
        *rule.not_source_ip_set_ids,
        *rule.source_named_port_ip_set_ids,
        *rule.not_source_named_port_ip_set_ids,
        *rule.destination_ip_set_ids,
        *rule.not_destination_ip_set_ids,
        *rule.destination_named_port_ip_set_ids,
        *rule.not_destination_named_port_ip_set_ids,
    }


def _tier_policies(tiers: Iterable[TierInfo]) -> set[PolicyID]:
    return {p for t in tiers for p in (*t.ingress_policies, *t.egress_policies)}


@dataclass
class DataplaneModel:
    """The dataplane's view after applying messages; every apply checks the ordering contract."""

    config: dict[str, str] | None = None
    in_sync: bool = False
    ip_sets: dict[str, set[str]] = field(default_factory=dict)
    policies: dict[PolicyID, ActivePolicyUpdate] = field(default_factory=dict)
    profiles: dict[ProfileID, ActiveProfileUpdate] = field(default_factory=dict)
    workloads: dict[WorkloadEndpointID, WorkloadEndpointUpdate] = field(default_factory=dict)
    hosts: dict[HostEndpointID, HostEndpointUpdate] = field(default_factory=dict)
    pools: dict[str, IPPoolUpdate] = field(default_factory=dict)

    def apply(self, messages: Iterable[Message]) -> None:
        for message in messages:
            self._apply(message)

    def _references_to_sets(self) -> set[str]:
        out: set[str] = set()
        owners: list[ActivePolicyUpdate | ActiveProfileUpdate] = [
            *self.policies.values(),
            *self.profiles.values(),
        ]
        for owner in owners:
            for rule in (*owner.inbound_rules, *owner.outbound_rules):
                out |= _rule_sets(rule)
        return out

    def _endpoint_references(self) -> tuple[set[PolicyID], set[ProfileID]]:
        policies: set[PolicyID] = set()
        profiles: set[ProfileID] = set()
        for workload_update in self.workloads.values():
            policies |= _tier_policies(workload_update.tiers)
            profiles.update(workload_update.profile_ids)
        for host_update in self.hosts.values():
            for tiers in (
                host_update.tiers,
                host_update.untracked_tiers,
                host_update.pre_dnat_tiers,
                host_update.forward_tiers,
            ):
                policies |= _tier_policies(tiers)
            profiles.update(host_update.profile_ids)
        return policies, profiles

    def _check_rules(self, what: object, rules: Iterable[ResolvedRule]) -> None:
        for rule in rules:
            missing = _rule_sets(rule) - self.ip_sets.keys()
            if missing:
                raise SequencingError(f"{what} references unknown IP sets {sorted(missing)}")

    def _check_endpoint(self, what: object, tiers: set[PolicyID], profiles: set[ProfileID]) -> None:
        if tiers - self.policies.keys():
            raise SequencingError(
                f"{what} references unknown policies {tiers - self.policies.keys()}"
            )
        if profiles - self.profiles.keys():
            raise SequencingError(
                f"{what} references unknown profiles {profiles - self.profiles.keys()}"
            )

    def _apply(self, message: Message) -> None:
        match message:
            case ConfigUpdate(values):
                self.config = dict(values)
            case InSync():
                self.in_sync = True
            case IPSetUpdate(set_id, _, members):
                self.ip_sets[set_id] = set(members)
            case IPSetDeltaUpdate(set_id, added, removed):
                if set_id not in self.ip_sets:
                    raise SequencingError(f"delta for unknown IP set {set_id}")
                self.ip_sets[set_id] = (self.ip_sets[set_id] - removed) | added
            case IPSetRemove(set_id):
                if set_id in self._references_to_sets():
                    raise SequencingError(f"IP set {set_id} removed while referenced")
                if self.ip_sets.pop(set_id, None) is None:
                    raise SequencingError(f"remove of unknown IP set {set_id}")
            case ActivePolicyUpdate(policy_id, inbound, outbound):
                self._check_rules(policy_id, (*inbound, *outbound))
                self.policies[policy_id] = message
            case ActivePolicyRemove(policy_id):
                if policy_id in self._endpoint_references()[0]:
                    raise SequencingError(f"policy {policy_id} removed while referenced")
                if self.policies.pop(policy_id, None) is None:
                    raise SequencingError(f"remove of unknown policy {policy_id}")
            case ActiveProfileUpdate(profile_id, inbound, outbound):
                self._check_rules(profile_id, (*inbound, *outbound))
                self.profiles[profile_id] = message
            case ActiveProfileRemove(profile_id):
                if profile_id in self._endpoint_references()[1]:
                    raise SequencingError(f"profile {profile_id} removed while referenced")
                if self.profiles.pop(profile_id, None) is None:
                    raise SequencingError(f"remove of unknown profile {profile_id}")
            case WorkloadEndpointUpdate():
                self._check_endpoint(
                    message.id, _tier_policies(message.tiers), set(message.profile_ids)
                )
                self.workloads[message.id] = message
            case WorkloadEndpointRemove(endpoint_id):
                if self.workloads.pop(endpoint_id, None) is None:
                    raise SequencingError(f"remove of unknown workload endpoint {endpoint_id}")
            case HostEndpointUpdate():
                policies = _tier_policies(
                    (
                        *message.tiers,
                        *message.untracked_tiers,
                        *message.pre_dnat_tiers,
                        *message.forward_tiers,
                    )
                )
                self._check_endpoint(message.id, policies, set(message.profile_ids))
                self.hosts[message.id] = message
            case HostEndpointRemove(endpoint_id):
                if self.hosts.pop(endpoint_id, None) is None:
                    raise SequencingError(f"remove of unknown host endpoint {endpoint_id}")
            case IPPoolUpdate():
                self.pools[message.id] = message
            case IPPoolRemove(pool_id):
                self.pools.pop(pool_id, None)
            case _:
                pass

    def snapshot(self) -> dict[str, Any]:
        """Comparable state (everything but the in-sync flag)."""
        return {
            "config": self.config,
            "ip_sets": {k: frozenset(v) for k, v in self.ip_sets.items()},
            "policies": dict(self.policies),
            "profiles": dict(self.profiles),
            "workloads": dict(self.workloads),
            "hosts": dict(self.hosts),
            "pools": dict(self.pools),
        }


# --- a graph driven into a checking dataplane ----------------------------------------------


def stored(*items: tuple[str, bytes | str | None]) -> tuple[ResourceUpdate, ...]:
    """Raw ``(etcd key, stored value)`` pairs through the typed stream's decoder, as the
    daemon's ``ResourceSyncer`` delivers them (revisions 1, 2, ...)."""
    raw = [
        SyncerUpdate(key, value.encode() if isinstance(value, str) else value, revision)
        for revision, (key, value) in enumerate(items, start=1)
    ]
    return decode_updates(raw)


class Harness:
    """A graph for ``HOSTNAME`` whose every flush is applied to a checking ``DataplaneModel``."""

    def __init__(self) -> None:
        self.graph = CalcGraph(HOSTNAME)
        self.dataplane = DataplaneModel()
        self.last: list[Message] = []

    def put(self, *resources: Resource) -> list[Message]:
        for resource in resources:
            self.graph.on_resource(resource)
        return self.sync()

    def delete(self, *resources: Resource) -> list[Message]:
        for resource in resources:
            self.graph.on_delete(ResourceKey.of(resource))
        return self.sync()

    def sync(self) -> list[Message]:
        self.last = self.graph.flush()
        self.dataplane.apply(self.last)
        return self.last

    def workload(self, pod: str, namespace: str = "default") -> WorkloadEndpointUpdate:
        return self.dataplane.workloads[WorkloadEndpointID("k8s", f"{namespace}/{pod}", "eth0")]

    def has_workload(self, pod: str, namespace: str = "default") -> bool:
        return WorkloadEndpointID("k8s", f"{namespace}/{pod}", "eth0") in self.dataplane.workloads

    def tiers(self, pod: str, namespace: str = "default") -> tuple[TierInfo, ...]:
        return self.workload(pod, namespace).tiers

    def ingress(self, pod: str, namespace: str = "default") -> list[tuple[str, list[str]]]:
        """[(tier, [policy names in order])] for ingress; tiers without ingress policies left
        out."""
        return [
            (t.name, [p.name for p in t.ingress_policies])
            for t in self.tiers(pod, namespace)
            if t.ingress_policies
        ]

    def egress(self, pod: str, namespace: str = "default") -> list[tuple[str, list[str]]]:
        return [
            (t.name, [p.name for p in t.egress_policies])
            for t in self.tiers(pod, namespace)
            if t.egress_policies
        ]

    def members(self, selector: str) -> set[str]:
        """Members of the (active) IP set of a Felix-side selector string."""
        return self.dataplane.ip_sets[parse(selector).unique_id]

    def rule_members(self, entity: dict[str, object], namespace: str | None = None) -> set[str]:
        selector = entity_selector(EntityRule.model_validate(entity), namespace)
        assert selector is not None
        return self.dataplane.ip_sets[selector.unique_id]

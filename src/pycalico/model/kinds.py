"""The registry of v3 kinds: Kind name, plural, scope, model class and calicoctl's aliases.

What it is: one ``KindInfo`` per kind and ``lookup_kind`` for the names a user types
(``calicoctl get gnp``).  What it is not: the codec (``pycalico.model.codec``) or the etcd key
layout (``pycalico.datastore.paths``).

Invariants: ``KINDS`` is keyed by the exact Kind; every alias, plural and Kind resolves
case-insensitively to exactly one kind.
"""

from __future__ import annotations

from dataclasses import dataclass

from pycalico.model.bgp import BGPConfiguration, BGPPeer
from pycalico.model.bgpfilter import BGPFilter
from pycalico.model.endpoints import (
    GlobalNetworkSet,
    HostEndpoint,
    NetworkSet,
    Profile,
    WorkloadEndpoint,
)
from pycalico.model.ipam import IPAMConfiguration, IPPool, IPReservation
from pycalico.model.node import (
    ClusterInformation,
    FelixConfiguration,
    KubeControllersConfiguration,
    Node,
)
from pycalico.model.policy import GlobalNetworkPolicy, NetworkPolicy, Tier
from pycalico.model.staged import (
    StagedGlobalNetworkPolicy,
    StagedKubernetesNetworkPolicy,
    StagedNetworkPolicy,
)
from pycalico.model.validation import CheckedResource


@dataclass(frozen=True)
class KindInfo:
    kind: str
    plural: str
    namespaced: bool
    model: type[CheckedResource]
    aliases: tuple[str, ...]


class UnknownKind(ValueError):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"unknown resource type {name!r}: valid types are {', '.join(sorted(KINDS))}"
        )


# Aliases are calicoctl's (resourcemgr), plus a few short forms people commonly type.
_ALIASES: dict[type[CheckedResource], tuple[str, ...]] = {
    IPPool: ("ippool", "ippools", "ipp", "ipps", "pool", "pools"),
    IPAMConfiguration: ("ipamconfiguration", "ipamconfigurations", "ipamconfig", "ipamconfigs"),
    IPReservation: ("ipreservation", "ipreservations", "reservation", "reservations"),
    Node: ("node", "nodes", "no", "nos"),
    BGPConfiguration: ("bgpconfiguration", "bgpconfigurations", "bgpconfig", "bgpconfigs"),
    BGPPeer: ("bgppeer", "bgppeers", "bgpp", "bgpps", "bp", "bps"),
    BGPFilter: ("bgpfilter", "bgpf", "bgpfs", "bf", "bfs"),
    FelixConfiguration: (
        "felixconfiguration",
        "felixconfigurations",
        "felixconfig",
        "felixconfigs",
    ),
    ClusterInformation: (
        "clusterinformation",
        "clusterinformations",
        "clusterinfo",
        "clusterinfos",
    ),
    Tier: ("tier", "tiers"),
    NetworkPolicy: (
        "networkpolicy",
        "networkpolicies",
        "policy",
        "np",
        "policies",
        "pol",
        "pols",
    ),
    GlobalNetworkPolicy: ("globalnetworkpolicy", "globalnetworkpolicies", "gnp", "gnps"),
    StagedNetworkPolicy: (
        "stagednetworkpolicy",
        "stagednetworkpolicies",
        "stagedpolicy",
        "snp",
        "stagedpolicies",
        "spol",
        "spols",
    ),
    StagedGlobalNetworkPolicy: (
        "stagedglobalnetworkpolicy",
        "stagedglobalnetworkpolicies",
        "sgnp",
        "sgnps",
    ),
    StagedKubernetesNetworkPolicy: (
        "stagedkubernetesnetworkpolicy",
        "stagedkubernetesnetworkpolicies",
        "stagedkubernetespolicy",
        "sknp",
        "stagedkubernetespolicies",
        "skpol",
        "skpols",
    ),
    Profile: ("profile", "profiles", "pro", "pros"),
    WorkloadEndpoint: ("workloadendpoint", "workloadendpoints", "wep", "weps"),
    HostEndpoint: ("hostendpoint", "hostendpoints", "hep", "heps"),
    NetworkSet: ("networkset", "networksets", "netsets", "netset"),
    GlobalNetworkSet: ("globalnetworkset", "globalnetworksets", "gns", "gnss"),
    KubeControllersConfiguration: (
        "kubecontrollersconfiguration",
        "kubecontrollersconfigurations",
        "kubecontrollersconfig",
        "kubecontrollersconfigs",
        "kcc",
        "kccs",
        "kcconfig",
    ),
}

KINDS: dict[str, KindInfo] = {
    model.KIND: KindInfo(model.KIND, model.PLURAL, model.NAMESPACED, model, aliases)
    for model, aliases in _ALIASES.items()
}

_BY_NAME: dict[str, KindInfo] = {}
for _info in KINDS.values():
    for _name in (_info.kind, _info.plural, *_info.aliases):
        existing = _BY_NAME.setdefault(_name.lower(), _info)
        assert existing is _info, f"alias {_name!r} names two kinds"


def lookup_kind(name: str) -> KindInfo:
    """The kind a user means by ``name`` (Kind, plural or calicoctl alias; any case)."""
    info = _BY_NAME.get(name.strip().lower())
    if info is None:
        raise UnknownKind(name)
    return info

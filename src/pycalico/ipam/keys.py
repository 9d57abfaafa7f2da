"""IPAM's view of Calico's etcd key layout (reference §1.3), typed with ``ipaddress`` networks.

Pure string functions, no I/O.  The layout itself is owned by ``pycalico.datastore.paths``;
this module adapts it to IPAM's types and adds the prefixes IPAM lists.  Keys, as Calico's
libcalico-go writes them:

* block     ``/calico/ipam/v2/assignment/ipv4/block/10.65.0.0-26``
* affinity  ``/calico/ipam/v2/<host|virtual>/<node>/ipv4/block/10.65.0.0-26``
* handle    ``/calico/ipam/v2/handle/<handleID>``
* config    ``/calico/ipam/v2/config``

IPPool and Node values are read from their v3 resource keys (reference §1.2).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pycalico.datastore import paths
from pycalico.ipam.records import AFFINITY_TYPE_HOST, IPNetwork

IPAM_ROOT = paths.IPAM_ROOT
CONFIG_KEY = paths.IPAM_CONFIG_KEY
HANDLES_PREFIX = paths.HANDLE_ROOT
IPPOOLS_PREFIX = paths.resource_prefix("ippools")
IPRESERVATIONS_PREFIX = paths.resource_prefix("ipreservations")
NODES_PREFIX = paths.resource_prefix("nodes")
IPAM_CONFIGURATION_KEY = paths.resource_key("ipamconfigurations", "default")


def _segment(cidr: IPNetwork) -> str:
    # paths.cidr_to_segment's result, without re-parsing a network we already hold.
    return f"{cidr.network_address}-{cidr.prefixlen}"


def block_key(cidr: IPNetwork) -> str:
    return f"{paths.BLOCK_ROOT}ipv{cidr.version}/block/{_segment(cidr)}"


def blocks_prefix(version: int | None = None) -> str:
    return paths.block_prefix(version)


def handle_key(handle_id: str) -> str:
    return paths.handle_key(handle_id)


def affinity_key(host: str, cidr: IPNetwork, affinity_type: str = AFFINITY_TYPE_HOST) -> str:
    prefix = paths.affinity_prefix(host, affinity_type)  # checks the node name
    return f"{prefix}ipv{cidr.version}/block/{_segment(cidr)}"


def host_affinities_prefix(
    host: str | None = None, version: int | None = None, affinity_type: str = AFFINITY_TYPE_HOST
) -> str:
    base = paths.affinity_prefix(host, affinity_type)
    return base if version is None or host is None else f"{base}ipv{version}/block/"


def ippool_key(name: str) -> str:
    return paths.resource_key("ippools", name)


def node_key(name: str) -> str:
    return paths.resource_key("nodes", name)


@dataclass(frozen=True, slots=True)
class AffinityKey:
    host: str
    cidr: IPNetwork
    affinity_type: str = AFFINITY_TYPE_HOST


def parse_affinity_key(key: str) -> AffinityKey | None:
    """An affinity key's parts; None for anything else."""
    try:
        parsed = paths.parse_affinity_key(key)
    except ValueError:
        return None
    return AffinityKey(
        host=parsed.host,
        cidr=ipaddress.ip_network(parsed.cidr),
        affinity_type=parsed.affinity_type,
    )


def parse_block_key(key: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(paths.parse_block_key(key))
    except ValueError:
        return None


def parse_handle_key(key: str) -> str | None:
    try:
        return paths.parse_handle_key(key)
    except ValueError:
        return None

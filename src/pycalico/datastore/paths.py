"""Calico's etcd v3 key layout (reference §1.2 and §1.3): building keys and parsing them back.

PURE: string manipulation only.  This module knows where things live in etcd, not what their
values look like (``pycalico.model``) nor how to read them (``etcd``, ``resources``).

Layout:

* v3 resources: ``/calico/resources/v3/projectcalico.org/<plural>/<name>`` and, for namespaced
  kinds, ``.../<plural>/<namespace>/<name>``.  Plurals are the lower-case Kubernetes plurals,
  except ``BGPFilters`` (Calico's own quirk, kept for compatibility).
* IPAM: blocks ``/calico/ipam/v2/assignment/ipv4/block/10.65.0.0-26``, affinities
  ``/calico/ipam/v2/host/<node>/ipv4/block/<cidr-dashed>``, handles
  ``/calico/ipam/v2/handle/<id>``, configuration ``/calico/ipam/v2/config``.  A CIDR is stored
  with ``/`` replaced by ``-``.
* Felix status: ``/calico/felix/v2/<region>/host/<host>/status`` (and
  ``.../last_reported_status``), endpoint status below the same host.

Invariants: ``parse_resource_key(resource_key(p, n, ns)) == (p, ns, n)`` for every plural, and
the same round trip holds for the IPAM keys.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol

CALICO_ROOT = "/calico/"
RESOURCE_ROOT = "/calico/resources/v3/projectcalico.org/"
IPAM_ROOT = "/calico/ipam/v2/"
BLOCK_ROOT = "/calico/ipam/v2/assignment/"
HANDLE_ROOT = "/calico/ipam/v2/handle/"
IPAM_CONFIG_KEY = "/calico/ipam/v2/config"
FELIX_STATUS_ROOT = "/calico/felix/v2/"
NO_REGION = "no-region"

# Namespaced kinds' plurals, used when the caller gives a bare plural rather than a KindInfo.
NAMESPACED_PLURALS = frozenset(
    {
        "networkpolicies",
        "networksets",
        "workloadendpoints",
        "stagednetworkpolicies",
        "stagedkubernetesnetworkpolicies",
    }
)


# Plurals whose key segment differs from the Kubernetes plural (Calico's etcd backend quirk).
_KEY_SEGMENTS = {"bgpfilters": "BGPFilters"}
_PLURALS_BY_SEGMENT = {segment: plural for plural, segment in _KEY_SEGMENTS.items()}


def key_segment(plural: str) -> str:
    """The key segment for a plural: ``bgpfilters`` → ``BGPFilters``, others unchanged."""
    return _KEY_SEGMENTS.get(plural.lower(), plural)


class HasPlural(Protocol):
    @property
    def plural(self) -> str: ...

    @property
    def namespaced(self) -> bool: ...


class InvalidKey(ValueError):
    """A key or key part that does not follow Calico's layout; ``field`` names the part."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _plural_and_scope(kind: HasPlural | str) -> tuple[str, bool]:
    if isinstance(kind, str):
        return key_segment(kind), kind in NAMESPACED_PLURALS
    return key_segment(kind.plural), kind.namespaced


def _check_segment(what: str, value: str) -> None:
    if not value or "/" in value:
        raise InvalidKey(
            f"{what}: {value!r} cannot be part of an etcd key (empty or contains '/')", what
        )


# --- v3 resources -------------------------------------------------------------------------


def resource_prefix(kind: HasPlural | str, namespace: str | None = None) -> str:
    """Every key of a kind (``namespace=None``) or of one namespace of a namespaced kind."""
    plural, namespaced = _plural_and_scope(kind)
    if namespace is not None and namespaced:
        _check_segment("metadata.namespace", namespace)
        return f"{RESOURCE_ROOT}{plural}/{namespace}/"
    return f"{RESOURCE_ROOT}{plural}/"


def resource_key(kind: HasPlural | str, name: str, namespace: str | None = None) -> str:
    plural, namespaced = _plural_and_scope(kind)
    _check_segment("metadata.name", name)
    if namespaced:
        if not namespace:
            raise InvalidKey(f"metadata.namespace: required for {plural}", "metadata.namespace")
        _check_segment("metadata.namespace", namespace)
        return f"{RESOURCE_ROOT}{plural}/{namespace}/{name}"
    return f"{RESOURCE_ROOT}{plural}/{name}"


def parse_resource_key(key: str) -> tuple[str, str | None, str]:
    """``(plural, namespace or None, name)`` of a v3 resource key; the plural is the lower-case
    Kubernetes plural even for ``BGPFilters``."""
    if not key.startswith(RESOURCE_ROOT):
        raise InvalidKey(f"not a v3 resource key: {key!r}")
    parts = key[len(RESOURCE_ROOT) :].split("/")
    plural = _PLURALS_BY_SEGMENT.get(parts[0], parts[0])
    if len(parts) == 2 and all(parts):
        return plural, None, parts[1]
    if len(parts) == 3 and all(parts):
        return plural, parts[1], parts[2]
    raise InvalidKey(f"not a v3 resource key: {key!r}")


# --- IPAM ---------------------------------------------------------------------------------


def cidr_to_segment(cidr: str) -> str:
    """``10.65.0.0/26`` → ``10.65.0.0-26`` (normalised network address)."""
    network = ipaddress.ip_network(cidr, strict=False)
    return f"{network.network_address}-{network.prefixlen}"


def segment_to_cidr(segment: str) -> str:
    address, _, prefix = segment.rpartition("-")
    if not address or not prefix.isdigit():
        raise InvalidKey(f"not a dashed CIDR: {segment!r}")
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def _family(cidr: str) -> str:
    return f"ipv{ipaddress.ip_network(cidr, strict=False).version}"


def block_prefix(version: int | None = None) -> str:
    return BLOCK_ROOT if version is None else f"{BLOCK_ROOT}ipv{version}/block/"


def block_key(cidr: str) -> str:
    return f"{BLOCK_ROOT}{_family(cidr)}/block/{cidr_to_segment(cidr)}"


def parse_block_key(key: str) -> str:
    """The block CIDR of a block key."""
    parts = key.split("/")
    # ['', 'calico', 'ipam', 'v2', 'assignment', 'ipv4', 'block', '10.65.0.0-26']
    if not key.startswith(BLOCK_ROOT) or len(parts) != 8 or parts[6] != "block":
        raise InvalidKey(f"not an IPAM block key: {key!r}")
    return segment_to_cidr(parts[7])


def affinity_prefix(host: str | None = None, affinity_type: str = "host") -> str:
    if host is None:
        return f"{IPAM_ROOT}{affinity_type}/"
    _check_segment("node", host)
    return f"{IPAM_ROOT}{affinity_type}/{host}/"


def affinity_key(host: str, cidr: str, affinity_type: str = "host") -> str:
    _check_segment("node", host)
    return f"{IPAM_ROOT}{affinity_type}/{host}/{_family(cidr)}/block/{cidr_to_segment(cidr)}"


@dataclass(frozen=True, slots=True)
class AffinityKey:
    affinity_type: str  # "host" or "virtual"
    host: str
    cidr: str


def parse_affinity_key(key: str) -> AffinityKey:
    parts = key.split("/")
    # ['', 'calico', 'ipam', 'v2', 'host', '<node>', 'ipv4', 'block', '10.65.0.0-26']
    if (
        not key.startswith(IPAM_ROOT)
        or len(parts) != 9
        or parts[4] not in ("host", "virtual")
        or parts[7] != "block"
    ):
        raise InvalidKey(f"not an IPAM affinity key: {key!r}")
    return AffinityKey(affinity_type=parts[4], host=parts[5], cidr=segment_to_cidr(parts[8]))


def handle_key(handle_id: str) -> str:
    _check_segment("handle", handle_id)
    return f"{HANDLE_ROOT}{handle_id}"


def parse_handle_key(key: str) -> str:
    if not key.startswith(HANDLE_ROOT) or "/" in key[len(HANDLE_ROOT) :]:
        raise InvalidKey(f"not an IPAM handle key: {key!r}")
    return key[len(HANDLE_ROOT) :]


# --- Felix status -------------------------------------------------------------------------


def region_segment(region: str | None = None) -> str:
    return f"region-{region}" if region else NO_REGION


def felix_host_prefix(host: str, region: str | None = None) -> str:
    _check_segment("host", host)
    return f"{FELIX_STATUS_ROOT}{region_segment(region)}/host/{host}/"


def felix_status_key(host: str, region: str | None = None) -> str:
    """The heartbeat key (written with a lease of ReportingTTL)."""
    return felix_host_prefix(host, region) + "status"


def felix_last_reported_status_key(host: str, region: str | None = None) -> str:
    """The same heartbeat without a lease."""
    return felix_host_prefix(host, region) + "last_reported_status"


def workload_endpoint_status_key(
    host: str, orchestrator: str, workload: str, endpoint: str, region: str | None = None
) -> str:
    """``workload`` is the workload ID (``<namespace>/<pod>`` for Kubernetes); like Calico, its
    ``/`` is escaped as ``%2f`` so the ID stays one key segment."""
    _check_segment("orchestrator", orchestrator)
    _check_segment("endpoint", endpoint)
    if not workload:
        raise InvalidKey("workload: empty workload ID")
    escaped = workload.replace("/", "%2f")
    return f"{felix_host_prefix(host, region)}workload/{orchestrator}/{escaped}/endpoint/{endpoint}"


def host_endpoint_status_key(host: str, endpoint: str, region: str | None = None) -> str:
    _check_segment("endpoint", endpoint)
    return f"{felix_host_prefix(host, region)}endpoint/{endpoint}"

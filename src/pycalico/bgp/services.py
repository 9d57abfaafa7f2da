"""Service advertisement over BGP, as Calico's confd does it: which Service addresses this node
announces, from the BGPConfiguration's service ranges and the Kubernetes Services and
EndpointSlices it is given.

PURE: it reads Services and EndpointSlices in the API's wire form (camelCase dicts, as
``pycalico.k8s.services`` keeps them) and the BGPConfiguration model; it watches nothing and
prints nothing (the processor puts the result into ``FamilyConfig``, the template prints it).

Calico's semantics (confd ``routes.go`` and ``client.go``; the golden files of its
``mesh/static-routes`` case are the reference):

* The ``default`` BGPConfiguration's ``serviceClusterIPs``, ``serviceExternalIPs`` and
  ``serviceLoadBalancerIPs`` CIDRs are announced by every node, as blackhole static routes, and
  never programmed into the kernel (the kernel filter rejects them first).  An entry without a
  ``cidr`` is ignored.
* A node labelled ``node.kubernetes.io/exclude-from-external-load-balancers: "true"`` announces
  nothing, but still keeps those ranges out of its kernel.
* A Service (type ClusterIP, NodePort or LoadBalancer, with a cluster IP) is announced as /32
  (/128) routes from a node when its ``externalTrafficPolicy`` is ``Local`` and one of its
  ready endpoints of the cluster IP's family is on that node (``nodeName``, Kubernetes' name of
  the node: ``CALICO_K8S_NODE_REF``), or when its policy is ``Cluster`` and it has a
  LoadBalancer or external IP that is a whole /32 (/128) entry of the allowed ranges.  Its
  routes are then: the cluster IP (only when ``serviceClusterIPs`` is set), the external IPs
  inside ``serviceExternalIPs``, the LoadBalancer ingress IPs inside ``serviceLoadBalancerIPs``.

Invariants: nothing here raises on odd objects (a bad address is skipped); results are sorted as
Calico's templates list them (datastore key order), so a render is deterministic.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pycalico.model.bgp import BGPConfigurationSpec, ServiceIPBlock
from pycalico.model.node import Node

EXCLUDE_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _networks(blocks: list[ServiceIPBlock] | None) -> tuple[Network, ...]:
    found: list[Network] = []
    for block in blocks or ():
        if not block.cidr:
            continue  # Calico's mock data has "- {}" entries: ignored
        try:
            found.append(ipaddress.ip_network(block.cidr, strict=False))
        except ValueError:
            continue
    return tuple(dict.fromkeys(found))


@dataclass(frozen=True)
class ServiceRanges:
    """The service CIDRs of the ``default`` BGPConfiguration."""

    cluster: tuple[Network, ...] = ()
    external: tuple[Network, ...] = ()
    load_balancer: tuple[Network, ...] = ()

    @classmethod
    def of(cls, spec: BGPConfigurationSpec | None) -> ServiceRanges:
        if spec is None:
            return cls()
        return cls(
            cluster=_networks(spec.service_cluster_ips),
            external=_networks(spec.service_external_ips),
            load_balancer=_networks(spec.service_load_balancer_ips),
        )

    @property
    def wanted(self) -> bool:
        """Does this configuration advertise Services at all (so Kubernetes must be watched)?"""
        return bool(self.cluster or self.external or self.load_balancer)

    @property
    def all(self) -> tuple[Network, ...]:
        return tuple(dict.fromkeys(self.cluster + self.external + self.load_balancer))


def _address(text: object) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return ipaddress.ip_address(text.split("/")[0])
    except ValueError:
        return None


def _inside(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, nets: Iterable[Network]
) -> bool:
    return any(address.version == n.version and address in n for n in nets)


def _single(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, nets: Iterable[Network]
) -> bool:
    """Inside a /32 (/128) entry of ``nets``."""
    return any(
        address.version == n.version and address in n and n.prefixlen == n.max_prefixlen
        for n in nets
    )


def _host_route(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return f"{address}/{address.max_prefixlen}"


def service_key(obj: Mapping[str, Any]) -> str:
    """``namespace/name`` of a Service (or of the Service an EndpointSlice belongs to)."""
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or 'default'}/{meta.get('name') or ''}"


def slice_service_key(endpoint_slice: Mapping[str, Any]) -> str | None:
    """The ``namespace/name`` of the Service an EndpointSlice belongs to (its label)."""
    meta = endpoint_slice.get("metadata") or {}
    name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    if not name:
        return None
    return f"{meta.get('namespace') or 'default'}/{name}"


def local_families(slices: Iterable[Mapping[str, Any]], node_name: str) -> frozenset[int]:
    """The IP versions of the ready endpoints on ``node_name`` (a missing ``ready`` condition
    means ready, as the EndpointSlice API says)."""
    versions: set[int] = set()
    for endpoint_slice in slices:
        for endpoint in endpoint_slice.get("endpoints") or ():
            if endpoint.get("nodeName") != node_name:
                continue
            if (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            for text in endpoint.get("addresses") or ():
                address = _address(text)
                if address is not None:
                    versions.add(address.version)
    return frozenset(versions)


def _lb_ips(service: Mapping[str, Any]) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    ingress = ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress") or ()
    found = [_address(entry.get("ip")) for entry in ingress if isinstance(entry, Mapping)]
    return [a for a in found if a is not None]


def _advertise(service: Mapping[str, Any], ranges: ServiceRanges, families: frozenset[int]) -> bool:
    """Calico's ``advertiseThisService`` (the node exclusion is the caller's)."""
    spec = service.get("spec") or {}
    if spec.get("type", "ClusterIP") not in _TYPES:
        return False
    cluster_ip = _address(spec.get("clusterIP"))
    if cluster_ip is None:  # "", "None" (headless) or garbage
        return False
    policy = spec.get("externalTrafficPolicy")
    if policy == "Cluster":
        lb = [_address(spec.get("loadBalancerIP")), *_lb_ips(service)]
        if spec.get("type") == "LoadBalancer" and any(
            a is not None and _single(a, ranges.load_balancer) for a in lb
        ):
            return True
        externals = [_address(text) for text in spec.get("externalIPs") or ()]
        if any(a is not None and _single(a, ranges.external) for a in externals):
            return True
    if policy != "Local":
        return False
    return cluster_ip.version in families


def service_routes(
    service: Mapping[str, Any], ranges: ServiceRanges, families: frozenset[int]
) -> frozenset[str]:
    """The /32 (/128) routes this node announces for one Service whose local endpoints have
    the IP versions ``families``."""
    if not _advertise(service, ranges, families):
        return frozenset()
    spec = service.get("spec") or {}
    routes: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    cluster_ip = _address(spec.get("clusterIP"))
    if ranges.cluster and cluster_ip is not None:
        routes.append(cluster_ip)
    for text in spec.get("externalIPs") or ():
        address = _address(text)
        if address is not None and _inside(address, ranges.external):
            routes.append(address)
    routes.extend(a for a in _lb_ips(service) if _inside(a, ranges.load_balancer))
    return frozenset(_host_route(a) for a in routes)


def excluded(node: Node | None) -> bool:
    """Is this node excluded from service advertisement by its label?"""
    labels = (node.metadata.labels or {}) if node is not None else {}
    return labels.get(EXCLUDE_LABEL) == "true"


def advertised_routes(
    ranges: ServiceRanges,
    services: Iterable[Mapping[str, Any]],
    slices: Iterable[Mapping[str, Any]],
    node_name: str,
) -> frozenset[str]:
    """Every Service /32 (/128) route this node announces (``node_name``: its Kubernetes
    name), given all Services and EndpointSlices."""
    if not ranges.wanted:
        return frozenset()
    by_service: dict[str, list[Mapping[str, Any]]] = {}
    for endpoint_slice in slices:
        key = slice_service_key(endpoint_slice)
        if key is not None:
            by_service.setdefault(key, []).append(endpoint_slice)
    routes: set[str] = set()
    for service in services:
        families = local_families(by_service.get(service_key(service), ()), node_name)
        routes |= service_routes(service, ranges, families)
    return frozenset(routes)


def _key_order(cidr: str) -> str:
    return cidr.replace("/", "-")  # Calico's templates list static routes in key order


def family_statics(
    ranges: ServiceRanges, routes: Iterable[str], node_excluded: bool, version: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(static routes announced, CIDRs kept out of the kernel) for one IP version: the
    ranges and the Service routes, in Calico's order."""
    rejects = tuple(sorted((str(n) for n in ranges.all if n.version == version), key=_key_order))
    if node_excluded:
        return (), rejects
    announced: set[str] = set(rejects)
    for route in routes:
        try:
            network = ipaddress.ip_network(route, strict=False)
        except ValueError:
            continue
        if network.version == version:
            announced.add(str(network))
    return tuple(sorted(announced, key=_key_order)), rejects


def node_statics(
    spec: BGPConfigurationSpec | None, node: Node | None, routes: Iterable[str], version: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``family_statics`` for a node (its labels may exclude it) under the ``default``
    BGPConfiguration ``spec``."""
    return family_statics(ServiceRanges.of(spec), routes, excluded(node), version)

"""What calico-node tells Kubernetes about its node, as pure data: the Node's
``NetworkUnavailable`` condition and the ``projectcalico.org/*`` BGP annotations.

Calico's facts followed here:

* When Calico is up on a node it sets ``NetworkUnavailable`` to ``False`` with reason
  ``CalicoIsUp`` and message "Calico is running on this node"; when it shuts down, ``True`` with
  ``CalicoIsDown`` / "Calico is shutting down on this node".  Both times are "now".
* The Node's BGP spec is mirrored into annotations: ``projectcalico.org/IPv4Address`` and
  ``IPv6Address`` (CIDR form, as in ``spec.bgp``), ``ASNumber`` (decimal), ``IPv4IPIPTunnelAddr``
  and ``RouteReflectorClusterID``; a field that is unset removes its annotation, and a Node
  without ``spec.bgp`` removes them all.

This module does no I/O; ``pycalico.k8s.node_feedback`` sends these patches.
Invariant: the annotation patch names every BGP annotation, with ``None`` meaning "remove", so
applying it leaves no stale value behind.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pycalico.model.node import NodeBGPSpec

ANNOTATION_PREFIX = "projectcalico.org/"
IPV4_ADDRESS = ANNOTATION_PREFIX + "IPv4Address"
IPV6_ADDRESS = ANNOTATION_PREFIX + "IPv6Address"
AS_NUMBER = ANNOTATION_PREFIX + "ASNumber"
IPV4_IPIP_TUNNEL_ADDR = ANNOTATION_PREFIX + "IPv4IPIPTunnelAddr"
ROUTE_REFLECTOR_CLUSTER_ID = ANNOTATION_PREFIX + "RouteReflectorClusterID"

NETWORK_UNAVAILABLE = "NetworkUnavailable"
_UP = ("False", "CalicoIsUp", "Calico is running on this node")
_DOWN = ("True", "CalicoIsDown", "Calico is shutting down on this node")


def _timestamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def network_condition(*, calico_up: bool, now: datetime) -> dict[str, str]:
    """The Node condition, in the API's wire form (camelCase keys, RFC 3339 times)."""
    status, reason, message = _UP if calico_up else _DOWN
    stamp = _timestamp(now)
    return {
        "type": NETWORK_UNAVAILABLE,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": stamp,
        "lastHeartbeatTime": stamp,
    }


def condition_status_patch(*, calico_up: bool, now: datetime) -> dict[str, Any]:
    """A strategic-merge patch for the Node's status: conditions merge by ``type``, so the
    kubelet's other conditions are kept."""
    return {"status": {"conditions": [network_condition(calico_up=calico_up, now=now)]}}


def bgp_annotations(bgp: NodeBGPSpec | None) -> dict[str, str | None]:
    """Every BGP annotation's new value; ``None`` removes it."""
    if bgp is None:
        bgp = NodeBGPSpec.model_construct()  # all unset: remove every annotation
    return {
        IPV4_ADDRESS: bgp.ipv4_address or None,
        IPV6_ADDRESS: bgp.ipv6_address or None,
        AS_NUMBER: str(bgp.as_number) if bgp.as_number is not None else None,
        IPV4_IPIP_TUNNEL_ADDR: bgp.ipv4_ipip_tunnel_addr or None,
        ROUTE_REFLECTOR_CLUSTER_ID: bgp.route_reflector_cluster_id or None,
    }


def annotation_patch(bgp: NodeBGPSpec | None) -> dict[str, Any]:
    """A merge patch of the Node's metadata carrying ``bgp_annotations``."""
    return {"metadata": {"annotations": bgp_annotations(bgp)}}

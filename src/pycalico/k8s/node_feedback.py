"""calico-node's feedback to Kubernetes: write the Node's ``NetworkUnavailable`` condition and
its ``projectcalico.org/*`` BGP annotations (the patches come from ``node_report``), and read
the Node's addresses (``node_addresses``, for ``kubernetes-internal-ip`` autodetection).

This module only sends patches; it decides nothing.  Calico's behaviour it keeps: the condition
goes through the Node's ``status`` subresource as a strategic-merge patch (conditions merge by
``type``, so the kubelet's Ready/MemoryPressure... are untouched) and the annotations through a
patch of the Node itself, so neither overwrites fields that other writers own.

Invariants: a Node that does not exist is a ``KubeError`` with ``not_found`` set (calico-node
does not create Kubernetes Nodes; the kubelet does); nothing is retried here.
"""

from __future__ import annotations

from datetime import UTC, datetime

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from pycalico.k8s.client import KubeClient, kube_error
from pycalico.k8s.node_report import annotation_patch, condition_status_patch
from pycalico.model.node import NodeBGPSpec


async def set_network_condition(
    kube: KubeClient, node_name: str, *, calico_up: bool = True, now: datetime | None = None
) -> None:
    """Mark the Node's network available (Calico up) or unavailable (Calico shutting down)."""
    patch = condition_status_patch(calico_up=calico_up, now=now or datetime.now(UTC))
    try:
        await kube.core.patch_node_status(node_name, patch)
    except (ApiException, aiohttp.ClientError, OSError, TimeoutError) as error:
        raise kube_error(f"patch node {node_name!r} status", error) from error


async def set_bgp_annotations(kube: KubeClient, node_name: str, bgp: NodeBGPSpec | None) -> None:
    """Mirror the Calico Node's BGP spec into the Kubernetes Node's annotations."""
    try:
        await kube.core.patch_node(node_name, annotation_patch(bgp))
    except (ApiException, aiohttp.ClientError, OSError, TimeoutError) as error:
        raise kube_error(f"annotate node {node_name!r}", error) from error


async def node_addresses(kube: KubeClient, node_name: str, kind: str = "InternalIP") -> list[str]:
    """The Node's ``status.addresses`` of type ``kind`` (``InternalIP``, ``ExternalIP``...), in
    the Node's order (calico-node's ``kubernetes-internal-ip`` autodetection reads them)."""
    try:
        node = await kube.core.read_node(node_name)
    except (ApiException, aiohttp.ClientError, OSError, TimeoutError) as error:
        raise kube_error(f"read node {node_name!r}", error) from error
    addresses = (node.status.addresses if node.status else None) or []
    return [str(a.address) for a in addresses if a.type == kind and a.address]

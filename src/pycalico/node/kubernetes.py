"""calico-node and Kubernetes: the feedback calico-node gives the Kubernetes Node, and what it
reads from it.

What it is: the wiring of ``pycalico.k8s.node_feedback`` (the patches, built by
``pycalico.k8s.node_report``) into calico-node, configured by Calico's environment:

* ``KUBECONFIG``: the API server to talk to.  Without it none of this runs (an etcd-only
  cluster has no Kubernetes Node to report to).
* ``CALICO_K8S_NODE_REF``: the Kubernetes Node's name, when it differs from Calico's node name
  (default: the Calico node name).  Startup also records it as the Calico Node's ``orchRefs``
  ``[{orchestrator: k8s, nodeName}]``, which kube-controllers' node controller relies on.
* ``IP_AUTODETECTION_METHOD`` / ``IP6_AUTODETECTION_METHOD`` ``kubernetes-internal-ip``: the
  node's address is its Kubernetes Node's ``InternalIP`` of that family
  (``internal_addresses``).

``NodeFeedback.report_up`` sets the Node's ``NetworkUnavailable`` condition to False
(``CalicoIsUp``) and mirrors the Calico Node's BGP spec into the ``projectcalico.org/*``
annotations; the agent calls it once BIRD answers (at once without BIRD).
``report_down`` (clean stop, and ``calico-node -shutdown``) sets ``CalicoIsDown``.

What it is not: the patches (``node_report``), the HTTP calls (``node_feedback``), or deciding
when Calico is up (``agent``).  Invariants: ``report_up`` retries with a capped back-off until the
API server takes the patches, so a Kubernetes outage at start only delays the feedback; a Node
that does not exist is retried too (the kubelet may register it later); nothing here raises into
the agent except cancellation.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

from pycalico.k8s.client import KubeClient, KubeError
from pycalico.k8s.node_feedback import (
    node_addresses,
    set_bgp_annotations,
    set_network_condition,
)
from pycalico.model.node import NodeBGPSpec

log = logging.getLogger(__name__)

K8S_INTERNAL_IP = "kubernetes-internal-ip"
INITIAL_RETRY = 0.2
MAX_RETRY = 5.0


def kubeconfig(env: Mapping[str, str]) -> str | None:
    """The kubeconfig file named by ``KUBECONFIG`` (its first entry), or None."""
    first = (env.get("KUBECONFIG") or "").strip().split(":")[0]
    return first or None


def k8s_node_name(env: Mapping[str, str], node_name: str) -> str:
    """The Kubernetes Node's name: ``CALICO_K8S_NODE_REF``, else Calico's node name."""
    return (env.get("CALICO_K8S_NODE_REF") or "").strip() or node_name


async def internal_addresses(path: str, name: str) -> list[str]:
    """The Kubernetes Node's ``InternalIP`` addresses, in its order.  Raises ``KubeError``
    (naming the Node) when it cannot be read."""
    async with await KubeClient.from_kubeconfig(path) as kube:
        return await node_addresses(kube, name, "InternalIP")


class NodeFeedback:
    """Reports this node's state to its Kubernetes Node (see the module docstring)."""

    def __init__(self, kubeconfig_path: str, name: str) -> None:
        self.kubeconfig_path = kubeconfig_path
        self.name = name
        self.reported_up = asyncio.Event()

    @classmethod
    def from_env(cls, env: Mapping[str, str], node_name: str) -> NodeFeedback | None:
        path = kubeconfig(env)
        return cls(path, k8s_node_name(env, node_name)) if path else None

    async def _up_once(self, bgp: NodeBGPSpec | None) -> None:
        async with await KubeClient.from_kubeconfig(self.kubeconfig_path) as kube:
            await set_bgp_annotations(kube, self.name, bgp)
            await set_network_condition(kube, self.name, calico_up=True)

    async def report_up(self, bgp: NodeBGPSpec | None) -> None:
        """Annotations, then ``NetworkUnavailable=False``; retried until the API takes them."""
        delay = INITIAL_RETRY
        while True:
            try:
                await self._up_once(bgp)
            except KubeError as error:
                log.warning(
                    "Kubernetes node %s: feedback not written (%s); retrying in %.1fs",
                    self.name,
                    error,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY)
                continue
            log.info("Kubernetes node %s: NetworkUnavailable=False (CalicoIsUp)", self.name)
            self.reported_up.set()
            return

    async def report_down(self, timeout: float = 5.0) -> bool:
        """``NetworkUnavailable=True`` (``CalicoIsDown``), one attempt within ``timeout``;
        False (logged) when the API server did not take it."""
        try:
            async with asyncio.timeout(timeout):
                async with await KubeClient.from_kubeconfig(self.kubeconfig_path) as kube:
                    await set_network_condition(kube, self.name, calico_up=False)
        except (KubeError, TimeoutError) as error:
            log.warning("Kubernetes node %s: CalicoIsDown not written: %s", self.name, error)
            return False
        log.info("Kubernetes node %s: NetworkUnavailable=True (CalicoIsDown)", self.name)
        return True

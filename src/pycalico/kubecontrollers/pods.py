"""The pod (workloadendpoint) controller: WorkloadEndpoint labels and service account kept in
step with their pod.

The CNI plugin creates and deletes WorkloadEndpoints; this controller only rewrites, on the
WorkloadEndpoints of a pod (``spec.orchestrator`` k8s, ``spec.pod`` the pod's name, in its
namespace), the labels and ``serviceAccountName`` that ``pycalico.k8s.conversion.pods`` derives
from the pod -- so a ``kubectl label pod`` reaches Felix on every node.  It never creates or
deletes anything, so it owns no keys at a full reconcile beyond the pods Kubernetes lists.

Invariants: a WorkloadEndpoint whose labels and service account already match is not written;
an update is a compare-and-swap on the revision read (a lost race is retried by the worker).
"""

from __future__ import annotations

import logging

from pycalico.datastore.resources import ResourceStore
from pycalico.k8s.client import KubeClient
from pycalico.k8s.conversion.objects import ConversionError, KubeObject
from pycalico.k8s.conversion.pods import WorkloadEndpointData, trim_pod, workload_endpoint_data
from pycalico.k8s.paging import paged
from pycalico.kubecontrollers.controllers import RECONCILER_PERIOD, Controller, Source
from pycalico.model.endpoints import WorkloadEndpoint

log = logging.getLogger(__name__)

POD_SOURCE = Source(
    "workloadendpoint",
    True,
    lambda kube: paged(kube.core.list_pod_for_all_namespaces, trim_pod),
    trim=trim_pod,
)


def _stale(endpoint: WorkloadEndpoint, data: WorkloadEndpointData) -> bool:
    labels = endpoint.metadata.labels or {}
    account = endpoint.spec.service_account_name or ""
    return labels != dict(data.labels) or account != data.service_account


class PodReconciler:
    def __init__(self, store: ResourceStore) -> None:
        self.store = store
        self.objects: dict[str, KubeObject] = {}
        self.writes = 0
        # A full reconcile's one listing of every WorkloadEndpoint, by pod key ("ns/pod"); each
        # entry is used once, by that pod's next reconcile, instead of a read per namespace.
        self._hints: dict[str, list[WorkloadEndpoint]] = {}

    async def owned_keys(self) -> set[str]:
        """None: WorkloadEndpoints belong to the CNI plugin, nothing is deleted here.  The
        listing becomes one-use hints (a stale one costs a failed compare-and-swap)."""
        by_pod: dict[str, list[WorkloadEndpoint]] = {}
        for endpoint in (await self.store.list("WorkloadEndpoint")).items:
            assert isinstance(endpoint, WorkloadEndpoint)
            if endpoint.spec.orchestrator == "k8s":
                key = f"{endpoint.metadata.namespace}/{endpoint.spec.pod}"
                by_pod.setdefault(key, []).append(endpoint)
        self._hints = {key: by_pod.get(key, []) for key in self.objects}
        return set()

    async def _endpoints(self, key: str, namespace: str) -> list[WorkloadEndpoint]:
        if key in self._hints:
            return self._hints.pop(key)
        listed = await self.store.list("WorkloadEndpoint", namespace)
        return [e for e in listed.items if isinstance(e, WorkloadEndpoint)]

    async def reconcile(self, key: str) -> None:
        wire = self.objects.get(key)
        if wire is None:
            return  # the pod is gone: the CNI plugin's DEL removes its WorkloadEndpoint
        try:
            data = workload_endpoint_data(wire)
        except ConversionError as error:
            log.error("workloadendpoint controller: cannot convert pod %s: %s", key, error)
            return
        for endpoint in await self._endpoints(key, data.namespace):
            spec = endpoint.spec
            if spec.orchestrator != "k8s" or spec.pod != data.pod or not _stale(endpoint, data):
                continue
            metadata = endpoint.metadata.model_copy(update={"labels": dict(data.labels)})
            account = spec.model_copy(update={"service_account_name": data.service_account or None})
            await self.store.update(
                endpoint.model_copy(update={"metadata": metadata, "spec": account})
            )
            self.writes += 1
            log.info("workloadendpoint controller: labels of %s updated", endpoint.metadata.name)


def pod_controller(
    kube: KubeClient, store: ResourceStore, *, reconciler_period: float = RECONCILER_PERIOD
) -> Controller:
    return Controller(kube, POD_SOURCE, PodReconciler(store), reconciler_period=reconciler_period)

"""Does Calico's datastore match Kubernetes?  What the controllers should have written, checked.

What it is: ``differences(kube, store)`` lists, from scratch (a fresh list of every collection
and of etcd, no controller state), every way in which the Calico resources the policy,
namespace, serviceaccount and workloadendpoint controllers own differ from what Kubernetes
says they should be -- a resource missing, one left over, a spec that differs, a
WorkloadEndpoint whose labels or service account are stale.  An empty list means in sync.
Tests use it after restarts and outages; the benchmark uses it to confirm a run ended in sync.

What it is not: a controller (it writes nothing).  ``diff`` is the pure comparison.
Invariant: it judges only resources the controllers own (the ``knp.default.``, ``kns.`` and
``ksa.`` prefixes, and WorkloadEndpoints of pods that exist), as the controllers do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pycalico.datastore.resources import ResourceStore
from pycalico.k8s.client import KubeClient
from pycalico.k8s.conversion.objects import ConversionError, KubeObject
from pycalico.k8s.conversion.pods import workload_endpoint_data
from pycalico.kubecontrollers.controllers import (
    NAMESPACE,
    POLICY,
    SERVICE_ACCOUNT,
    Binding,
    wire_spec,
)
from pycalico.model.codec import apply_defaults
from pycalico.model.endpoints import WorkloadEndpoint
from pycalico.model.meta import Resource

Key = tuple[str, str, str]  # (kind, namespace or "", name)


def diff(expected: Mapping[Key, Any], actual: Mapping[Key, Any]) -> list[str]:
    """Every key missing, left over or different, as sorted readable lines."""
    lines = []
    for key in sorted(set(expected) | set(actual)):
        what = "/".join(part for part in key if part)
        if key not in actual:
            lines.append(f"missing {what}")
        elif key not in expected:
            lines.append(f"left over {what}")
        elif expected[key] != actual[key]:
            lines.append(f"different {what}: expected {expected[key]!r}, got {actual[key]!r}")
    return lines


def _key(binding: Binding, resource: Resource) -> Key:
    return (binding.kind, resource.metadata.namespace or "", resource.metadata.name)


async def _wires(kube: KubeClient, binding: Binding) -> list[KubeObject]:
    reply = await binding.source.list_method(kube)()
    return [kube.to_wire(item) for item in reply.items]


async def _binding_state(
    kube: KubeClient, store: ResourceStore, binding: Binding
) -> tuple[dict[Key, Any], dict[Key, Any]]:
    expected: dict[Key, Any] = {}
    for wire in await _wires(kube, binding):
        try:
            resource = apply_defaults(binding.convert(wire))
        except ConversionError:
            continue  # the controller leaves these alone too
        expected[_key(binding, resource)] = wire_spec(resource)
    listed = await store.list(binding.kind)
    actual = {
        _key(binding, item): wire_spec(item)
        for item in listed.items
        if binding.owned_key(item) is not None
    }
    return expected, actual


async def _endpoint_state(
    kube: KubeClient, store: ResourceStore
) -> tuple[dict[Key, Any], dict[Key, Any]]:
    pods: dict[tuple[str, str], Any] = {}
    reply = await kube.core.list_pod_for_all_namespaces()
    for item in reply.items:
        try:
            data = workload_endpoint_data(kube.to_wire(item))
        except ConversionError:
            continue
        pods[(data.namespace, data.pod)] = (dict(data.labels), data.service_account or None)
    expected: dict[Key, Any] = {}
    actual: dict[Key, Any] = {}
    for endpoint in (await store.list("WorkloadEndpoint")).items:
        assert isinstance(endpoint, WorkloadEndpoint)
        spec = endpoint.spec
        wanted = pods.get((endpoint.metadata.namespace or "", spec.pod or ""))
        if spec.orchestrator != "k8s" or wanted is None:
            continue
        key: Key = ("WorkloadEndpoint", endpoint.metadata.namespace or "", endpoint.metadata.name)
        expected[key] = wanted
        actual[key] = (dict(endpoint.metadata.labels or {}), spec.service_account_name)
    return expected, actual


async def differences(kube: KubeClient, store: ResourceStore) -> list[str]:
    """Every difference between Kubernetes and the Calico resources the controllers own."""
    expected: dict[Key, Any] = {}
    actual: dict[Key, Any] = {}
    for binding in (POLICY, NAMESPACE, SERVICE_ACCOUNT):
        wanted, held = await _binding_state(kube, store, binding)
        expected.update(wanted)
        actual.update(held)
    wanted, held = await _endpoint_state(kube, store)
    expected.update(wanted)
    actual.update(held)
    return diff(expected, actual)

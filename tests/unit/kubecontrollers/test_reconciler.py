"""Reconciler: one key's Calico resource made to match its Kubernetes object, over an
in-memory datastore (the datastore's semantics, without etcd)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from pycalico.datastore.api import KeyNotFound
from pycalico.datastore.resources import ResourceStore
from pycalico.kubecontrollers.compare import differences
from pycalico.kubecontrollers.controllers import NAMESPACE, POLICY, SERVICE_ACCOUNT, Reconciler
from pycalico.kubecontrollers.pods import PodReconciler
from pycalico.model.endpoints import WorkloadEndpoint
from pycalico.model.policy import NetworkPolicy
from pycalico.testing.memory_kv import MemoryKVStore


def k8s_policy(name: str, namespace: str, app: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": "u", "resourceVersion": "7"},
        "spec": {"podSelector": {"matchLabels": {"app": app}}, "policyTypes": ["Ingress"]},
    }


@pytest.fixture
def store() -> ResourceStore:
    return ResourceStore(MemoryKVStore())


async def test_create_then_no_write_while_unchanged_then_update_keeps_metadata(
    store: ResourceStore,
) -> None:
    reconciler = Reconciler(store, POLICY)
    reconciler.objects["ns1/web"] = k8s_policy("web", "ns1", "web")
    await reconciler.reconcile("ns1/web")
    created = await store.get("NetworkPolicy", "knp.default.web", "ns1")
    await reconciler.reconcile("ns1/web")
    assert reconciler.writes == 1  # the second pass found nothing to change

    reconciler.objects["ns1/web"] = k8s_policy("web", "ns1", "api")
    await reconciler.reconcile("ns1/web")
    updated = await store.get("NetworkPolicy", "knp.default.web", "ns1")
    assert isinstance(updated, NetworkPolicy)
    assert updated.spec.selector == "projectcalico.org/orchestrator == 'k8s' && app == 'api'"
    assert updated.metadata.uid == created.metadata.uid
    assert updated.metadata.creation_timestamp == created.metadata.creation_timestamp
    assert reconciler.writes == 2


async def test_a_rule_without_ports_is_written_once_and_then_in_sync(store: ResourceStore) -> None:
    """An ingress rule with peers but no ports converts to an empty ``destination``, which the
    stored form omits (Go's omitempty): that is no change.  (Found by the Kubernetes fault
    drills: every relist rewrote such policies and ``compare.differences`` never came clean.)"""
    reconciler = Reconciler(store, POLICY)
    wire = k8s_policy("web", "ns1", "web")
    wire["spec"]["ingress"] = [{"from": [{"namespaceSelector": {"matchLabels": {"a": "b"}}}]}]
    reconciler.objects["ns1/web"] = wire
    await reconciler.reconcile("ns1/web")
    await reconciler.reconcile("ns1/web")
    assert reconciler.writes == 1
    kube = _OnePolicy(wire)
    assert await differences(kube, store) == []  # type: ignore[arg-type]


class _OnePolicy:
    """The KubeClient surface ``differences`` reads: one NetworkPolicy, nothing else."""

    def __init__(self, wire: dict[str, Any]) -> None:
        self.wire = wire
        self.networking = self
        self.core = self

    @staticmethod
    def to_wire(item: Any) -> Any:
        return item

    async def list_network_policy_for_all_namespaces(self) -> Any:
        return SimpleNamespace(items=[self.wire])

    async def list_namespace(self) -> Any:
        return SimpleNamespace(items=[])

    list_service_account_for_all_namespaces = list_namespace
    list_pod_for_all_namespaces = list_namespace


async def test_absent_object_deletes_only_its_own_resource(store: ResourceStore) -> None:
    for name in ("knp.default.web", "web"):
        await store.create(
            NetworkPolicy.model_validate(
                {"metadata": {"name": name, "namespace": "ns1"}, "spec": {"selector": "all()"}}
            )
        )
    reconciler = Reconciler(store, POLICY)
    assert await reconciler.owned_keys() == {"ns1/web"}
    await reconciler.reconcile("ns1/web")
    with pytest.raises(KeyNotFound):
        await store.get("NetworkPolicy", "knp.default.web", "ns1")
    assert (await store.get("NetworkPolicy", "web", "ns1")).metadata.name == "web"
    await reconciler.reconcile("ns1/web")  # already gone: nothing to do, no error
    assert reconciler.writes == 1


async def test_an_object_that_cannot_be_converted_is_left_alone(store: ResourceStore) -> None:
    reconciler = Reconciler(store, POLICY)
    reconciler.objects["ns1/x"] = {"metadata": {"namespace": "ns1"}, "spec": {}}
    await reconciler.reconcile("ns1/x")
    assert reconciler.writes == 0


async def test_namespace_and_service_account_profiles(store: ResourceStore) -> None:
    namespaces = Reconciler(store, NAMESPACE)
    namespaces.objects["ns1"] = {"metadata": {"name": "ns1", "labels": {"team": "blue"}}}
    await namespaces.reconcile("ns1")
    accounts = Reconciler(store, SERVICE_ACCOUNT)
    accounts.objects["ns1/builder"] = {"metadata": {"name": "builder", "namespace": "ns1"}}
    await accounts.reconcile("ns1/builder")

    profile = await store.get("Profile", "kns.ns1")
    assert profile.model_dump(by_alias=True)["spec"]["labelsToApply"] == {
        "pcns.team": "blue",
        "pcns.projectcalico.org/name": "ns1",
    }
    account = await store.get("Profile", "ksa.ns1.builder")
    assert account.model_dump(by_alias=True)["spec"]["labelsToApply"] == {
        "pcsa.projectcalico.org/name": "builder"
    }
    # Each controller owns only its own prefix (and never the built-in default-allow Profile).
    assert await namespaces.owned_keys() == {"ns1"}
    assert await accounts.owned_keys() == {"ns1/builder"}


def endpoint(pod: str, labels: dict[str, str] | None = None) -> WorkloadEndpoint:
    return WorkloadEndpoint.model_validate(
        {
            "metadata": {"namespace": "ns1", "labels": labels or {}},
            "spec": {
                "orchestrator": "k8s",
                "node": "node1",
                "pod": pod,
                "endpoint": "eth0",
                "interfaceName": "cali0123456789a",
                "ipNetworks": ["10.65.0.2/32"],
                "profiles": ["kns.ns1"],
            },
        }
    )


async def test_pod_labels_and_service_account_reach_only_its_endpoints(
    store: ResourceStore,
) -> None:
    web = await store.create(endpoint("web", {"old": "1"}))
    other = await store.create(endpoint("db", {"old": "1"}))
    reconciler = PodReconciler(store)
    reconciler.objects["ns1/web"] = {
        "metadata": {"name": "web", "namespace": "ns1", "labels": {"app": "web"}},
        "spec": {"nodeName": "node1", "serviceAccountName": "builder"},
    }
    await reconciler.reconcile("ns1/web")
    updated = await store.get("WorkloadEndpoint", web.metadata.name, "ns1")
    assert isinstance(updated, WorkloadEndpoint)
    assert updated.metadata.labels == {
        "app": "web",
        "projectcalico.org/namespace": "ns1",
        "projectcalico.org/orchestrator": "k8s",
        "projectcalico.org/serviceaccount": "builder",
    }
    assert updated.spec.service_account_name == "builder"
    assert updated.spec.ip_networks == ["10.65.0.2/32"]  # the CNI plugin's fields are kept
    untouched = await store.get("WorkloadEndpoint", other.metadata.name, "ns1")
    assert untouched.metadata.labels == other.metadata.labels

    await reconciler.reconcile("ns1/web")  # in step: no second write
    reconciler.objects.pop("ns1/web")
    await reconciler.reconcile("ns1/web")  # pod gone: the CNI plugin's business
    assert reconciler.writes == 1
    assert await reconciler.owned_keys() == set()

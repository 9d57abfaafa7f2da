"""A full reconcile reads etcd once (the listing's hints) and survives stale hints."""

from __future__ import annotations

import pytest

from pycalico.datastore.api import KeyAlreadyExists, RevisionConflict
from pycalico.datastore.resources import ResourceStore
from pycalico.kubecontrollers.controllers import NAMESPACE, Reconciler
from pycalico.kubecontrollers.pods import PodReconciler
from pycalico.model.endpoints import Profile, WorkloadEndpoint
from pycalico.testing.memory_kv import MemoryKVStore


@pytest.fixture
def store() -> ResourceStore:
    return ResourceStore(MemoryKVStore())


async def test_a_stale_absent_hint_fails_once_then_the_retry_reads_afresh(
    store: ResourceStore,
) -> None:
    reconciler = Reconciler(store, NAMESPACE)
    reconciler.objects["ns1"] = {"metadata": {"name": "ns1", "labels": {"a": "b"}}}
    assert await reconciler.owned_keys() == set()  # the hint: kns.ns1 is absent
    await store.create(Profile.model_validate({"metadata": {"name": "kns.ns1"}, "spec": {}}))
    with pytest.raises(KeyAlreadyExists):
        await reconciler.reconcile("ns1")
    await reconciler.reconcile("ns1")  # what the worker's retry does
    profile = await store.get("Profile", "kns.ns1")
    labels = profile.model_dump(by_alias=True)["spec"]["labelsToApply"]
    assert labels["pcns.a"] == "b"


def endpoint(pod: str, labels: dict[str, str]) -> WorkloadEndpoint:
    return WorkloadEndpoint.model_validate(
        {
            "metadata": {"namespace": "ns1", "labels": labels},
            "spec": {
                "orchestrator": "k8s",
                "node": "node1",
                "pod": pod,
                "endpoint": "eth0",
                "interfaceName": "cali0123456789a",
                "ipNetworks": ["10.65.0.2/32"],
            },
        }
    )


async def test_pod_hints_come_from_one_listing_and_a_stale_one_is_retried(
    store: ResourceStore,
) -> None:
    web = await store.create(endpoint("web", {"old": "1"}))
    reconciler = PodReconciler(store)
    reconciler.objects["ns1/web"] = {"metadata": {"name": "web", "namespace": "ns1"}}
    reconciler.objects["ns1/db"] = {"metadata": {"name": "db", "namespace": "ns1"}}
    await reconciler.owned_keys()
    # Changed after the listing: the hint's revision is stale.
    await store.update(web.model_copy(update={"metadata": web.metadata}))
    with pytest.raises(RevisionConflict):
        await reconciler.reconcile("ns1/web")
    await reconciler.reconcile("ns1/web")
    await reconciler.reconcile("ns1/db")  # no endpoint in the listing: nothing to do
    updated = await store.get("WorkloadEndpoint", web.metadata.name, "ns1")
    assert (updated.metadata.labels or {}).get("projectcalico.org/namespace") == "ns1"
    assert reconciler.writes == 1

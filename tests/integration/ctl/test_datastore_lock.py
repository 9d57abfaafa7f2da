"""``calicoctl datastore migrate lock|unlock`` against a real etcd: the ClusterInformation flag."""

from __future__ import annotations

import subprocess

from pycalico.ctl.datastore import set_datastore_ready
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.model.node import ClusterInformation
from pycalico.testing.calicoctl import Calicoctl
from pycalico.testing.etcd_server import EtcdServer


def calicoctl(etcd: EtcdServer, *args: str) -> subprocess.CompletedProcess[str]:
    return Calicoctl(etcd.endpoint)(*args)


async def ready_flag(store: ResourceStore) -> bool | None:
    info = await store.get(ClusterInformation, "default")
    assert isinstance(info, ClusterInformation)
    return info.spec.datastore_ready


async def test_lock_then_unlock_flips_datastore_ready(etcd: EtcdServer, kv: EtcdKVStore) -> None:
    store = ResourceStore(kv)
    await store.create(
        ClusterInformation.model_validate(
            {
                "metadata": {"name": "default"},
                "spec": {"clusterGUID": "abc", "calicoVersion": "v3.31.0", "datastoreReady": True},
            }
        )
    )
    locked = calicoctl(etcd, "datastore", "migrate", "lock")
    assert locked.returncode == 0, locked.stderr
    assert locked.stdout == "Datastore locked.\n"
    assert await ready_flag(store) is False
    info = await store.get(ClusterInformation, "default")
    assert isinstance(info, ClusterInformation)
    assert (info.spec.cluster_guid, info.spec.calico_version) == ("abc", "v3.31.0")

    unlocked = calicoctl(etcd, "datastore", "migrate", "unlock")
    assert unlocked.returncode == 0, unlocked.stderr
    assert unlocked.stdout == "Datastore unlocked.\n"
    assert await ready_flag(store) is True


async def test_lock_creates_cluster_information_when_missing(kv: EtcdKVStore) -> None:
    store = ResourceStore(kv)
    info = await set_datastore_ready(store, False)
    assert info.spec.datastore_ready is False
    assert info.spec.cluster_guid
    assert await ready_flag(store) is False


async def test_concurrent_change_is_retried_not_overwritten(kv: EtcdKVStore) -> None:
    store = ResourceStore(kv)
    await set_datastore_ready(store, True)
    real_update = store.update
    raced = False

    async def update_after_someone_else(resource: ClusterInformation) -> object:
        nonlocal raced
        if not raced:
            raced = True
            current = await store.get(ClusterInformation, "default")
            assert isinstance(current, ClusterInformation)
            spec = current.spec.model_copy(update={"calico_version": "v9.9.9"})
            await real_update(current.model_copy(update={"spec": spec}))
        return await real_update(resource)

    store.update = update_after_someone_else  # type: ignore[method-assign,assignment]
    result = await set_datastore_ready(store, False)
    assert raced
    assert (result.spec.datastore_ready, result.spec.calico_version) == (False, "v9.9.9")


def test_unreachable_datastore_is_a_clear_error() -> None:
    done = Calicoctl("http://127.0.0.1:1")("datastore", "migrate", "lock")
    assert done.returncode == 1
    assert "Error updating ClusterInformation for locking" in done.stderr

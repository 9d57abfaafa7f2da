"""Shared fixtures: real etcd members, a clean key/value store per test, the ``root`` marker.

* ``etcd`` (session): one real etcd member (``EtcdServer``); tests that stop or restart it must
  leave it running.
* ``etcd_cluster`` (function): a fresh 3-member ``EtcdCluster``.
* ``kv`` (function, async): an ``EtcdKVStore`` on ``etcd`` with the whole keyspace emptied first.
* ``store`` (function, async): a ``ResourceStore`` over ``kv``.
* ``memory_kv`` (function): a ``MemoryKVStore`` driven by ``fake_clock``.
* ``kube_plane`` (session): one real kube-apiserver on its own etcd member (``KubeControlPlane``;
  the ``kv`` fixture's wipes of the shared etcd never touch it), stopped API server first, then
  etcd, whatever the tests did; ``kube`` (function, async): a ``KubeClient`` on it.

Every etcd process is killed by the fixture finalisers, by ``atexit`` in
``pycalico.testing.etcd_server``, and by the kernel if the test run itself is killed.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from pycalico.k8s.client import KubeClient
from pycalico.testing.etcd_server import EtcdCluster, EtcdServer
from pycalico.testing.kube_server import KubeControlPlane
from pycalico.testing.memory_kv import FakeClock, MemoryKVStore


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def etcd() -> Iterator[EtcdServer]:
    server = EtcdServer(name="pytest")
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def etcd_cluster() -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
async def kv(etcd: EtcdServer) -> AsyncIterator[Any]:
    from pycalico.datastore.etcd import EtcdKVStore

    if not etcd.running:  # a previous test stopped it and failed before restarting it
        etcd.start()
    store = EtcdKVStore([etcd.endpoint])
    try:
        await store.delete_prefix("")
        yield store
    finally:
        await store.close()


@pytest.fixture
async def store(kv: Any) -> Any:
    from pycalico.datastore.resources import ResourceStore

    return ResourceStore(kv)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def memory_kv(fake_clock: FakeClock) -> MemoryKVStore:
    return MemoryKVStore(clock=fake_clock)


@pytest.fixture(scope="session")
def kube_plane() -> Iterator[KubeControlPlane]:
    plane = KubeControlPlane()
    try:
        plane.start()
        yield plane
    finally:
        plane.close()


@pytest.fixture
async def kube(kube_plane: KubeControlPlane) -> AsyncIterator[KubeClient]:
    client = await KubeClient.from_kubeconfig(kube_plane.kubeconfig)
    try:
        yield client
    finally:
        await client.close()

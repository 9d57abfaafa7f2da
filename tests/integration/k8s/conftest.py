"""Fixtures for tests against a real kube-apiserver on a real etcd.

* ``kube_plane`` (session): one ``KubeControlPlane`` (its own etcd member, so the ``kv``
  fixture's wipes of the shared etcd never touch it); stopped API server first, then etcd,
  whatever the tests did.
* ``kube`` (function, async): a ``KubeClient`` on it, closed after the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from pycalico.k8s.client import KubeClient
from pycalico.testing.kube_server import KubeControlPlane


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

"""``pycalico.k8s.services.ServiceWatch`` against a real kube-apiserver: it lists Services and
EndpointSlices of every namespace, follows their changes and deletions, and the pure choice
(``pycalico.bgp.services``) reads its wire-form objects as they come from the server."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable

import pytest

from pycalico.bgp.services import ServiceRanges, advertised_routes
from pycalico.k8s.client import KubeClient
from pycalico.k8s.services import ServiceWatch
from pycalico.model.bgp import BGPConfigurationSpec

pytestmark = pytest.mark.root

RANGES = ServiceRanges.of(
    BGPConfigurationSpec.model_validate({"serviceClusterIPs": [{"cidr": "10.96.0.0/16"}]})
)


@pytest.fixture
async def namespace(kube: KubeClient) -> AsyncIterator[str]:
    name = f"svc-{secrets.token_hex(4)}"
    await kube.core.create_namespace({"metadata": {"name": name}})
    yield name
    await kube.core.delete_namespace(name)


async def until(changed: asyncio.Event, predicate: Callable[[], bool], timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            changed.clear()
            await changed.wait()


async def test_watch_follows_services_and_slices(kube: KubeClient, namespace: str) -> None:
    changed = asyncio.Event()
    watch = ServiceWatch(kube, changed.set)
    task = asyncio.create_task(watch.run())
    try:
        await until(changed, lambda: watch.synced)
        service = {
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {
                "type": "NodePort",
                "externalTrafficPolicy": "Local",
                "ports": [{"port": 80}],
            },
        }
        created = await kube.core.create_namespaced_service(namespace, service)
        cluster_ip = created.spec.cluster_ip
        endpoint_slice = {
            "metadata": {
                "name": "web-1",
                "namespace": namespace,
                "labels": {"kubernetes.io/service-name": "web"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.70.0.9"], "nodeName": "k8s-a"}],
        }
        await kube.discovery.create_namespaced_endpoint_slice(namespace, endpoint_slice)
        key = f"{namespace}/web"

        def routes(node: str) -> frozenset[str]:
            return advertised_routes(RANGES, watch.services.values(), watch.slices.values(), node)

        await until(changed, lambda: routes("k8s-a") == {f"{cluster_ip}/32"})
        assert routes("k8s-b") == frozenset()
        assert watch.services[key]["spec"]["externalTrafficPolicy"] == "Local"

        await kube.discovery.delete_namespaced_endpoint_slice("web-1", namespace)
        await until(changed, lambda: f"{namespace}/web-1" not in watch.slices)
        assert routes("k8s-a") == frozenset()
        await kube.core.delete_namespaced_service("web", namespace)
        await until(changed, lambda: key not in watch.services)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

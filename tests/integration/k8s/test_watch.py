"""ListWatcher against a real kube-apiserver: list, watch, resume, bookmarks, 410 Gone."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s_client

from pycalico.k8s.client import KubeClient
from pycalico.k8s.watch import Bookmark, Changed, Listed, ListWatcher, WatchEvent
from pycalico.testing.kube_server import KubeControlPlane

pytestmark = pytest.mark.root


def node(name: str, **labels: str) -> Any:
    return k8s_client.V1Node(metadata=k8s_client.V1ObjectMeta(name=name, labels=labels))


async def next_event(events: AsyncIterator[WatchEvent], timeout: float = 20.0) -> WatchEvent:
    return await asyncio.wait_for(anext(events), timeout)


async def next_change(events: AsyncIterator[WatchEvent], timeout: float = 20.0) -> Changed:
    while True:
        event = await next_event(events, timeout)
        if isinstance(event, Changed):
            return event


@pytest.fixture
async def group(kube: KubeClient) -> AsyncIterator[str]:
    """A label value unique to the test, so tests sharing the API server ignore each other."""
    value = secrets.token_hex(4)
    yield value
    await kube.core.delete_collection_node(label_selector=f"test={value}")


async def test_list_then_watch_sees_every_change(kube: KubeClient, group: str) -> None:
    await kube.core.create_node(node(f"a-{group}", test=group))
    watcher = ListWatcher(kube.core.list_node, label_selector=f"test={group}")
    events = watcher.events()
    listed = await next_event(events)
    assert isinstance(listed, Listed)
    assert [n.metadata.name for n in listed.items] == [f"a-{group}"]

    await kube.core.create_node(node(f"b-{group}", test=group))
    added = await next_change(events)
    assert (added.type, added.object.metadata.name) == ("ADDED", f"b-{group}")

    await kube.core.patch_node(f"b-{group}", {"metadata": {"labels": {"extra": "1"}}})
    modified = await next_change(events)
    assert modified.type == "MODIFIED"
    assert modified.object.metadata.labels["extra"] == "1"

    await kube.core.delete_node(f"a-{group}")
    deleted = await next_change(events)
    assert (deleted.type, deleted.object.metadata.name) == ("DELETED", f"a-{group}")
    assert watcher.resource_version == deleted.resource_version
    await events.aclose()


async def test_resumes_from_a_resource_version_without_listing(
    kube: KubeClient, group: str
) -> None:
    first = ListWatcher(kube.core.list_node, label_selector=f"test={group}")
    events = first.events()
    listed = await next_event(events)
    assert isinstance(listed, Listed)
    await events.aclose()

    # Changes made while nobody watches are delivered, in order, to the resumed watch.
    for name in ("x", "y"):
        await kube.core.create_node(node(f"{name}-{group}", test=group))
    resumed = ListWatcher(
        kube.core.list_node,
        resource_version=listed.resource_version,
        label_selector=f"test={group}",
    )
    events = resumed.events()
    seen = [await next_event(events) for _ in range(2)]
    assert all(isinstance(event, Changed) for event in seen)
    assert [(e.type, e.object.metadata.name) for e in seen if isinstance(e, Changed)] == [
        ("ADDED", f"x-{group}"),
        ("ADDED", f"y-{group}"),
    ]
    assert resumed.relists == 0
    await events.aclose()


async def test_bookmarks_advance_a_watch_that_sees_no_events(kube: KubeClient, group: str) -> None:
    # Nodes outside the selector change: this watch gets no event for them, but the server's
    # bookmark (sent shortly before it ends the watch at its timeout) moves the watcher's
    # resourceVersion past them, and the next watch starts from there and still sees changes.
    # The server only bookmarks versions newer than what the watch has been through, so the
    # other node is created once the watch is known to be live (it delivered an event).
    watcher = ListWatcher(kube.core.list_node, watch_timeout=10, label_selector=f"test={group}")
    events = watcher.events()
    assert isinstance(await next_event(events), Listed)
    await kube.core.create_node(node(f"first-{group}", test=group))
    assert (await next_change(events)).object.metadata.name == f"first-{group}"
    other = await kube.core.create_node(node(f"other-{group}", test=f"{group}-other"))
    try:
        bookmark = await next_event(events, timeout=30)
        assert isinstance(bookmark, Bookmark), bookmark
        assert int(bookmark.resource_version) >= int(other.metadata.resource_version)
        assert watcher.resource_version == bookmark.resource_version
        await kube.core.create_node(node(f"late-{group}", test=group))
        added = await next_change(events, timeout=30)
        assert added.object.metadata.name == f"late-{group}"
        assert watcher.relists == 0
    finally:
        await events.aclose()
        await kube.core.delete_node(f"other-{group}")


@pytest.fixture
async def uncached_kube() -> AsyncIterator[tuple[KubeControlPlane, KubeClient]]:
    """An API server without a watch cache: watches read etcd, so etcd's compaction (which a
    real API server runs every few minutes) is what makes an old resourceVersion gone."""
    plane = KubeControlPlane(api_extra_args=("--watch-cache=false",))
    try:
        plane.start()
        client = await KubeClient.from_kubeconfig(plane.kubeconfig)
        try:
            yield plane, client
        finally:
            await client.close()
    finally:
        plane.close()


async def test_a_compacted_resource_version_is_listed_again(
    uncached_kube: tuple[KubeControlPlane, KubeClient],
) -> None:
    plane, kube = uncached_kube
    await kube.core.create_node(node("before", test="gone"))
    first = ListWatcher(kube.core.list_node, label_selector="test=gone")
    events = first.events()
    listed = await next_event(events)
    assert isinstance(listed, Listed)
    await events.aclose()

    await kube.core.create_node(node("meanwhile", test="gone"))
    # etcd keeps the revision it compacts at: one more write puts "meanwhile" behind it, so
    # every revision the resumed watch needs is gone.
    await kube.core.create_node(node("unrelated", test="not-gone"))
    plane.etcd.compact()

    resumed = ListWatcher(
        kube.core.list_node, resource_version=listed.resource_version, label_selector="test=gone"
    )
    events = resumed.events()
    relisted = await next_event(events)
    assert isinstance(relisted, Listed), relisted
    assert sorted(n.metadata.name for n in relisted.items) == ["before", "meanwhile"]
    assert resumed.relists == 1
    await kube.core.create_node(node("after", test="gone"))
    added = await next_change(events)
    assert (added.type, added.object.metadata.name) == ("ADDED", "after")
    await events.aclose()

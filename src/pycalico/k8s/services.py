"""The Services and EndpointSlices of a cluster, kept current for confd's Service advertisement.

What it is: two list+watches (``pycalico.k8s.watch.ListWatcher``: resumes from resourceVersion,
follows bookmarks, re-lists on 410 Gone), one over all Services and one over all
EndpointSlices, each kept as a dict of the objects in the API's wire form (camelCase dicts, as
``pycalico.bgp.services`` reads them) keyed ``namespace/name``.  ``on_change`` is called after
every change, so the owner (confd) can re-render.

What it is not: deciding what to announce (``pycalico.bgp.services``, pure), or deciding when
to watch (confd starts a ``ServiceWatch`` only while the BGPConfiguration asks for Service
advertisement, as Calico starts its route generator).

Invariants: ``synced`` is False until both collections have been listed once; a re-list
replaces that collection's whole state (an object deleted while the watch was down is gone);
a request the API server refuses (403: no RBAC for Services) ends ``run`` with ``KubeError``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pycalico.k8s.client import KubeClient
from pycalico.k8s.watch import Bookmark, Changed, Listed, ListMethod, ListWatcher


def _key(wire: dict[str, Any]) -> str:
    meta = wire.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


class ServiceWatch:
    """All Services and EndpointSlices of the cluster ``kube`` talks to."""

    def __init__(self, kube: KubeClient, on_change: Callable[[], None]) -> None:
        self.kube = kube
        self.on_change = on_change
        self.services: dict[str, dict[str, Any]] = {}
        self.slices: dict[str, dict[str, Any]] = {}
        self._listed: set[str] = set()

    @property
    def synced(self) -> bool:
        return self._listed == {"services", "slices"}

    async def run(self) -> None:
        """Follow both collections until cancelled (or a ``KubeError`` the watch cannot
        retry)."""
        await asyncio.gather(
            self._follow("services", self.kube.core.list_service_for_all_namespaces, self.services),
            self._follow(
                "slices", self.kube.discovery.list_endpoint_slice_for_all_namespaces, self.slices
            ),
        )

    async def _follow(
        self, what: str, method: ListMethod, store: dict[str, dict[str, Any]]
    ) -> None:
        async for event in ListWatcher(method).events():
            if isinstance(event, Bookmark):
                continue
            if isinstance(event, Listed):
                store.clear()
                for item in event.items:
                    wire = self.kube.to_wire(item)
                    store[_key(wire)] = wire
                self._listed.add(what)
            elif isinstance(event, Changed):
                wire = self.kube.to_wire(event.object)
                if event.type == "DELETED":
                    store.pop(_key(wire), None)
                else:
                    store[_key(wire)] = wire
            self.on_change()

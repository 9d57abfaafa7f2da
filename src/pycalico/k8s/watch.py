"""List + watch of one Kubernetes collection, as an async stream of events (a reflector).

``ListWatcher(kube.core.list_node).events()`` yields:

* ``Listed``: the whole collection at one resourceVersion.  It comes first (unless the watcher
  was given a resourceVersion to resume from) and again after every re-list; a consumer
  replaces its state with it.
* ``Changed``: one ADDED / MODIFIED / DELETED object after the last event.
* ``Bookmark``: the server says the collection is unchanged up to a newer resourceVersion.

How the stream stays correct (the Kubernetes API's list/watch contract):

* Each watch request asks from the last resourceVersion seen (an object's, a list's or a
  bookmark's), so a watch that ends (server timeout, dropped connection, restarted API server)
  resumes with no event lost or repeated.
* Bookmarks are requested (``allowWatchBookmarks``) and advance that resourceVersion even when
  nothing in the collection changes, so a resume after a quiet period does not start from a
  version etcd has compacted meanwhile.
* 410 Gone (the version was compacted away) means events were lost: the watcher lists again
  and yields a fresh ``Listed``; it never resumes from "now", which would skip changes.
* An API server that does not answer is retried with a capped back-off, from the same version.

This module is not a cache and keeps no objects; it does not interpret them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
from kubernetes_asyncio import watch as k8s_watch
from kubernetes_asyncio.client.exceptions import ApiException

from pycalico.k8s.client import KubeError, kube_error

log = logging.getLogger(__name__)

ChangeType = Literal["ADDED", "MODIFIED", "DELETED"]
ListMethod = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class Listed:
    """The whole collection at ``resource_version``: replace all state with ``items``."""

    items: tuple[Any, ...]
    resource_version: str


@dataclass(frozen=True)
class Changed:
    type: ChangeType
    object: Any = field(repr=False)
    resource_version: str


@dataclass(frozen=True)
class Bookmark:
    resource_version: str


WatchEvent = Listed | Changed | Bookmark


class _Gone(Exception):
    """The watch's resourceVersion is too old (HTTP 410)."""


class ListWatcher:
    """List and watch one collection.  ``list_method`` is a ``kubernetes_asyncio`` list call
    (``core.list_node``, ``core.list_namespaced_pod``...); ``params`` are its arguments
    (``namespace=``, ``label_selector=``...)."""

    def __init__(
        self,
        list_method: ListMethod,
        *,
        resource_version: str | None = None,
        watch_timeout: int = 60,
        max_retry_delay: float = 5.0,
        **params: Any,
    ) -> None:
        self._list_method = list_method
        self._params = params
        self.resource_version = resource_version
        self.watch_timeout = watch_timeout
        self.max_retry_delay = max_retry_delay
        self.relists = 0  # how many times a 410 Gone forced a new list

    async def events(self) -> AsyncIterator[WatchEvent]:
        """The event stream; runs until the consumer stops iterating or cancels it."""
        delay = 0.1
        while True:
            try:
                if self.resource_version is None:
                    yield await self._list()
                async for event in self._watch_once():
                    yield event
                delay = 0.1
            except _Gone:
                log.info("resourceVersion %s is gone: listing again", self.resource_version)
                self.resource_version = None
                self.relists += 1
            except KubeError as error:
                if 400 <= error.status < 500 and error.status != 429:
                    raise  # a request the server will never accept (forbidden, bad selector)
                log.warning("watch failed, retrying in %.1fs: %s", delay, error)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_retry_delay)

    async def _list(self) -> Listed:
        try:
            reply = await self._list_method(**self._params)
        except (ApiException, aiohttp.ClientError, OSError, TimeoutError) as error:
            raise kube_error(f"list {self._what}", error) from error
        version = str(reply.metadata.resource_version)
        self.resource_version = version
        return Listed(items=tuple(reply.items), resource_version=version)

    async def _watch_once(self) -> AsyncIterator[WatchEvent]:
        """One watch request, until the server ends it (``watch_timeout``)."""
        watcher = k8s_watch.Watch()
        stream = watcher.stream(
            self._list_method,
            resource_version=self.resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self.watch_timeout,
            _request_timeout=self.watch_timeout + 30,
            **self._params,
        )
        try:
            async for raw in stream:
                event = self._event(raw)
                self.resource_version = event.resource_version
                yield event
        except ApiException as error:
            if error.status == 410:
                raise _Gone() from error
            raise kube_error(f"watch {self._what}", error) from error
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            raise kube_error(f"watch {self._what}", error) from error
        finally:
            await watcher.close()

    @staticmethod
    def _event(raw: dict[str, Any]) -> Changed | Bookmark:
        kind = str(raw["type"])
        version = str(raw["raw_object"]["metadata"]["resourceVersion"])
        if kind == "BOOKMARK":
            return Bookmark(resource_version=version)
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            raise KubeError("watch", 0, f"unexpected event type {kind!r}")
        change: ChangeType = kind  # type: ignore[assignment]  # narrowed by the check above
        return Changed(type=change, object=raw["object"], resource_version=version)

    @property
    def _what(self) -> str:
        name = getattr(self._list_method, "__name__", "collection")
        return name.removeprefix("list_")

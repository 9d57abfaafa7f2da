"""A big collection listed in pages of raw JSON, each object cut down as it arrives.

``paged(kube.core.list_pod_for_all_namespaces, trim)`` is a drop-in list method for
``pycalico.k8s.watch.ListWatcher``: a list call fetches the collection ``page`` objects at a time
(``limit`` + ``continue``, client-go's pager), parses each page's JSON itself instead of
building the client library's typed objects, and keeps only ``trim(object)`` of each; a watch
call (``watch=True``) goes to the wrapped method unchanged.  Listing 10,000 pods this way holds
one page of full objects at a time instead of the whole list twice (JSON and typed objects).

The result has the shape ListWatcher reads (``.items``, ``.metadata.resource_version``): the
items are plain wire dicts, and the resourceVersion is the first page's, which the API server
serves every later page at, so the pages form one consistent list.

What it is not: a cache.  A page the server refuses raises ``ApiException`` with its status,
as the wrapped method would.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from pycalico.k8s.watch import ListMethod

Trim = Callable[[dict[str, Any]], dict[str, Any]]


def paged(method: ListMethod, trim: Trim, *, page: int = 500) -> ListMethod:
    @functools.wraps(method)
    async def call(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("watch"):
            return await method(*args, **kwargs)
        items: list[dict[str, Any]] = []
        version: str | None = None
        token: str | None = None
        while True:
            extra: dict[str, Any] = {"limit": page, "_preload_content": False}
            if token:
                extra["_continue"] = token
            response = await method(*args, **kwargs, **extra)
            try:
                raw = await response.read()
                if not 200 <= response.status <= 299:
                    raise ApiException(status=response.status, reason=raw.decode(errors="replace"))
            finally:
                response.release()
            body = json.loads(raw)
            metadata = body.get("metadata") or {}
            version = version or metadata.get("resourceVersion")
            items.extend(trim(item) for item in body.get("items") or ())
            token = metadata.get("continue")
            if not token:
                break
        return SimpleNamespace(items=items, metadata=SimpleNamespace(resource_version=version))

    return call

"""What the node controller and the IPAM GC read from Kubernetes: nodes and pods, listed and
read live.

``KubeView`` is the small protocol both use (a unit test passes a fake); ``ApiKubeView`` reads
a real API server through ``KubeClient``, taking the list replies as raw JSON rather than
client-library objects (a list of 10,000 pods decodes in a fraction of the time).  Not here:
watching (``pycalico.k8s.watch``), writing anything.

Invariant: ``read_node``/``read_pod`` return None only on 404 (not found); any other failure
raises ``KubeError``, so a caller never mistakes an unreachable API server for a deletion.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from pycalico.k8s.client import KubeClient, KubeError, kube_error


class KubeView(Protocol):
    async def node_names(self) -> frozenset[str]: ...

    async def pods(self) -> dict[tuple[str, str], str]:
        """Every pod, ``(namespace, name) -> spec.nodeName`` ("" when not scheduled)."""
        ...

    async def read_node(self, name: str) -> dict[str, Any] | None: ...

    async def read_pod(self, namespace: str, name: str) -> str | None:
        """The live pod's ``spec.nodeName`` ("" when not scheduled), None when not found."""
        ...


class ApiKubeView:
    def __init__(self, kube: KubeClient) -> None:
        self.kube = kube

    async def _raw(self, what: str, method: Any, *args: Any) -> Any:
        """The reply's JSON.  Without preloading, the client library hands back any status:
        a failure is turned into ``KubeError`` here, with the server's message."""
        try:
            response = await method(*args, _preload_content=False)
            try:
                status, body = response.status, await response.read()
            finally:
                response.release()
        except Exception as error:  # kube_error keeps client errors, re-raises anything else
            raise kube_error(what, error) from error
        if not 200 <= status <= 299:
            raise KubeError(what, status, _message(body))
        return json.loads(body)

    async def node_names(self) -> frozenset[str]:
        listed = await self._raw("list nodes", self.kube.core.list_node)
        return frozenset(item["metadata"]["name"] for item in listed.get("items") or [])

    async def pods(self) -> dict[tuple[str, str], str]:
        listed = await self._raw("list pods", self.kube.core.list_pod_for_all_namespaces)
        out: dict[tuple[str, str], str] = {}
        for item in listed.get("items") or []:
            metadata = item["metadata"]
            key = (metadata.get("namespace", ""), metadata["name"])
            out[key] = (item.get("spec") or {}).get("nodeName") or ""
        return out

    async def read_node(self, name: str) -> dict[str, Any] | None:
        try:
            node: dict[str, Any] = await self._raw(
                f"read node {name}", self.kube.core.read_node, name
            )
        except KubeError as error:
            if error.not_found:
                return None
            raise
        return node

    async def read_pod(self, namespace: str, name: str) -> str | None:
        try:
            pod = await self._raw(
                f"read pod {namespace}/{name}", self.kube.core.read_namespaced_pod, name, namespace
            )
        except KubeError as error:
            if error.not_found:
                return None
            raise
        return str((pod.get("spec") or {}).get("nodeName") or "")


def _message(body: bytes) -> str:
    try:
        status = json.loads(body)
    except ValueError:
        return body.decode(errors="replace")
    return str(status.get("message") or body.decode(errors="replace"))

"""The CNI plugin's requests about one Pod: read it and its Namespace, patch its annotations.

What it is: four requests on a ``KubeClient``, each answering the object in its wire form (a
JSON-decoded dict, camelCase keys: what ``pycalico.cni.pod_request`` reads) or raising
``KubeError``.  The bodies are read raw, not through the client library's model classes: this
sits on every pod's ADD and DEL, and building and re-serialising a ``V1Pod`` costs more than
the request itself.

What it is not: a decision about what to patch (``pycalico.cni.pod_request``) or a retry: a CNI
ADD must fail fast with the cause.

Invariants: every request has a deadline (``timeout`` seconds, default ``REQUEST_TIMEOUT``), so
an API server that accepts connections but never answers is a ``KubeError`` (status 0) too;
annotations are patched through the Pod's ``status`` subresource, as Calico does (the CNI's
RBAC role may patch ``pods/status`` only).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from kubernetes_asyncio.client.exceptions import ApiException

from pycalico.k8s.client import KubeClient, KubeError, kube_error

REQUEST_TIMEOUT = 10.0
STRATEGIC_MERGE = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"


def _message(body: bytes, reason: str) -> str:
    try:
        status = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace") or reason
    if isinstance(status, dict) and status.get("message"):
        return str(status["message"])
    return reason


async def _request(
    what: str, call: Callable[..., Awaitable[Any]], *args: Any, timeout: float, **options: Any
) -> dict[str, Any]:
    try:
        response = await call(*args, _preload_content=False, _request_timeout=timeout, **options)
        try:
            body = await response.read()
        finally:
            response.release()
    except (ApiException, aiohttp.ClientError, OSError, TimeoutError) as error:
        raise kube_error(what, error) from error
    if not 200 <= response.status <= 299:
        raise KubeError(what, response.status, _message(body, str(response.reason)))
    decoded = json.loads(body)
    if not isinstance(decoded, dict):
        raise KubeError(what, response.status, "the answer is not a JSON object")
    return decoded


async def read_pod(
    kube: KubeClient, namespace: str, name: str, *, timeout: float = REQUEST_TIMEOUT
) -> dict[str, Any]:
    return await _request(
        f"get pod {namespace}/{name}",
        kube.core.read_namespaced_pod,
        name,
        namespace,
        timeout=timeout,
    )


async def read_namespace(
    kube: KubeClient, name: str, *, timeout: float = REQUEST_TIMEOUT
) -> dict[str, Any]:
    return await _request(f"get namespace {name}", kube.core.read_namespace, name, timeout=timeout)


async def merge_patch_status(
    kube: KubeClient,
    namespace: str,
    name: str,
    patch: dict[str, Any],
    *,
    timeout: float = REQUEST_TIMEOUT,
) -> dict[str, Any]:
    """A strategic-merge patch of the pod's ``status`` subresource (Calico's annotation patch;
    a ``metadata.uid`` in it makes the server refuse another pod of the same name: 409)."""
    return await _request(
        f"patch pod {namespace}/{name} status",
        kube.core.patch_namespaced_pod_status,
        name,
        namespace,
        patch,
        timeout=timeout,
        _content_type=STRATEGIC_MERGE,
    )


async def json_patch_status(
    kube: KubeClient,
    namespace: str,
    name: str,
    operations: list[dict[str, Any]],
    *,
    timeout: float = REQUEST_TIMEOUT,
) -> dict[str, Any]:
    """A JSON patch (RFC 6902) of the pod's ``status`` subresource: all operations or none (a
    failed ``test`` operation is HTTP 422)."""
    return await _request(
        f"patch pod {namespace}/{name} status",
        kube.core.patch_namespaced_pod_status,
        name,
        namespace,
        operations,
        timeout=timeout,
        _content_type=JSON_PATCH,
    )

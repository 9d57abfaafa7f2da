"""A connection to one Kubernetes API server, made from a kubeconfig file.

``KubeClient`` owns one ``kubernetes_asyncio`` ``ApiClient`` (one aiohttp session) and hands
out the typed API groups built on it (``core`` for v1, ``networking`` for
networking.k8s.io/v1).  ``KubeError`` is the one error the rest of pycalico sees: it carries
the HTTP status and the server's message, and says whether the failure was "not found",
"conflict" or "gone" (410: the resourceVersion asked for has been compacted away).

This module is not a cache or a watcher (see ``pycalico.k8s.watch``), and it does not retry:
callers decide, because a retry is right for a watch but wrong for a CNI ADD that must fail
fast with the cause.

Invariants: a ``KubeClient`` is used from one event loop; ``close()`` releases its session and
is safe to call twice.
"""

from __future__ import annotations

import json
import os
from types import TracebackType
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException


class KubeError(Exception):
    """A Kubernetes API request failed; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, what: str, status: int, message: str) -> None:
        super().__init__(f"{what}: {message} (HTTP {status})" if status else f"{what}: {message}")
        self.what = what
        self.status = status
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409

    @property
    def gone(self) -> bool:
        return self.status == 410


def _server_message(error: ApiException) -> str:
    """The ``message`` of the server's Status body, else the HTTP reason."""
    body = getattr(error, "body", None)
    if body:
        try:
            status = json.loads(body)
        except (TypeError, ValueError):
            return str(body)
        if isinstance(status, dict) and status.get("message"):
            return str(status["message"])
    return str(error.reason or "request failed")


def kube_error(what: str, error: BaseException) -> KubeError:
    """Translate a client-library or connection failure of request ``what`` into a KubeError."""
    if isinstance(error, KubeError):
        return error
    if isinstance(error, ApiException):
        return KubeError(what, int(error.status or 0), _server_message(error))
    if isinstance(error, aiohttp.ClientError | OSError | TimeoutError):
        return KubeError(what, 0, f"API server did not answer: {error}")
    raise TypeError(f"not a Kubernetes client error: {error!r}") from error


class KubeClient:
    """``async with await KubeClient.from_kubeconfig(path) as kube: await kube.core.read_node(n)``"""

    def __init__(self, api_client: Any) -> None:
        self._api_client = api_client
        self.core: Any = k8s_client.CoreV1Api(api_client)
        self.networking: Any = k8s_client.NetworkingV1Api(api_client)
        self.discovery: Any = k8s_client.DiscoveryV1Api(api_client)  # EndpointSlices
        self._closed = False

    @classmethod
    async def from_kubeconfig(
        cls, path: str | os.PathLike[str], *, context: str | None = None
    ) -> KubeClient:
        """Connect as the kubeconfig's current (or the named) context says.  Nothing is sent
        until the first request, so an API server that is down shows up there."""
        configuration = k8s_client.Configuration()
        try:
            await k8s_config.load_kube_config(
                config_file=os.fspath(path), context=context, client_configuration=configuration
            )
        except (OSError, k8s_config.ConfigException) as error:
            raise KubeError(f"kubeconfig {os.fspath(path)}", 0, str(error)) from error
        return cls(k8s_client.ApiClient(configuration=configuration))

    @classmethod
    async def from_settings(
        cls,
        kubeconfig: str = "",
        *,
        server: str = "",
        token: str = "",
        client_certificate: str = "",
        client_key: str = "",
        certificate_authority: str = "",
    ) -> KubeClient:
        """Connect as ``kubeconfig`` says (when given), with each non-empty setting overriding
        it: the way Calico's CNI plugin combines ``kubernetes.kubeconfig`` with ``k8s_api_root``
        and the ``policy.k8s_*`` credentials.  Without a kubeconfig, ``server`` is required."""
        configuration = k8s_client.Configuration()
        if kubeconfig:
            try:
                await k8s_config.load_kube_config(
                    config_file=kubeconfig, client_configuration=configuration
                )
            except (OSError, k8s_config.ConfigException) as error:
                raise KubeError(f"kubeconfig {kubeconfig}", 0, str(error)) from error
        elif not server:
            raise KubeError("Kubernetes API", 0, "neither a kubeconfig nor an API root is set")
        if server:
            configuration.host = server.rstrip("/")
        if token:
            configuration.api_key = {**configuration.api_key, "BearerToken": f"Bearer {token}"}
        if client_certificate:
            configuration.cert_file = client_certificate
        if client_key:
            configuration.key_file = client_key
        if certificate_authority:
            configuration.ssl_ca_cert = certificate_authority
        return cls(k8s_client.ApiClient(configuration=configuration))

    @property
    def api_client(self) -> Any:
        """The ``kubernetes_asyncio`` ApiClient, for API groups not wrapped here (such as
        coordination.k8s.io in ``pycalico.k8s.lease``)."""
        return self._api_client

    def to_wire(self, obj: Any) -> dict[str, Any]:
        """A client-library object in the API's wire form (camelCase keys, plain values), as
        the pure conversions (``pycalico.k8s.conversion``) read it."""
        wire: dict[str, Any] = self._api_client.sanitize_for_serialization(obj)
        return wire

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._api_client.close()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def server_version(self) -> str:
        """The server's ``gitVersion`` (e.g. ``v1.37.2``): a cheap liveness check."""
        try:
            info = await k8s_client.VersionApi(self._api_client).get_code()
        except (ApiException, aiohttp.ClientError, OSError, TimeoutError) as error:
            raise kube_error("GET /version", error) from error
        return str(info.git_version)

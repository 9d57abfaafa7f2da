"""The ``calico`` plugin's Kubernetes mode: which calls use it, the API clients, the pod read and
the annotation feedback.

What it is: ``api_settings`` says whether a network configuration names a Kubernetes API
(``kubernetes.kubeconfig``, or ``kubernetes.k8s_api_root``/``policy.k8s_api_root`` with the
``policy.k8s_*`` credentials, combined as Calico's ``NewK8sClient`` does); a call for a pod
(``K8S_POD_NAMESPACE``/``K8S_POD_NAME``) with such a configuration runs in Kubernetes mode.
``KubeClients`` keeps one ``KubeClient`` per distinct API settings: the node agent owns one for
its whole life (one connection pool, no kubeconfig parsing per pod), the in-process path one
per call.  ``read_pod`` reads the Pod and its Namespace at once and returns ``PodSettings``;
``annotate`` and ``release`` patch the pod's ``cni.projectcalico.org/*`` annotations after ADD
and at DEL.

What it is not: the decisions (``pod_request``, pure) or the HTTP requests (``pycalico.k8s.pods``).

Invariants: every Kubernetes failure becomes a ``CniError`` that names the pod and the cause
(the pod does not exist, the API server did not answer, it refused the request); ``release``
never fails a DEL because the pod is gone or belongs to a newer sandbox.  Importing this module
does not import the Kubernetes client library (most of a second on a busy node): the handler
imports it for every call, and etcd mode must not pay for Kubernetes mode.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pycalico.cni import pod_request
from pycalico.cni.config import NetConf
from pycalico.cni.spec import CniError

if TYPE_CHECKING:
    from pycalico.k8s.client import KubeClient, KubeError

POLICY_K8S = "k8s"


@dataclass(frozen=True, slots=True)
class ApiSettings:
    kubeconfig: str = ""
    server: str = ""
    token: str = ""
    client_certificate: str = ""
    client_key: str = ""
    certificate_authority: str = ""

    @property
    def where(self) -> str:
        return self.server or f"(kubeconfig {self.kubeconfig})"


def api_settings(conf: NetConf) -> ApiSettings | None:
    """The Kubernetes API the configuration names, or None (etcd mode).  As Calico: the
    kubeconfig first, ``policy.k8s_api_root`` (without any ``/api/...`` tail) and then
    ``kubernetes.k8s_api_root`` override its server, the ``policy.k8s_*`` values its
    credentials."""
    policy = conf.policy
    server = conf.kubernetes.k8s_api_root or policy.k8s_api_root.split("/api/")[0]
    if not conf.kubernetes.kubeconfig and not server:
        return None
    return ApiSettings(
        kubeconfig=conf.kubernetes.kubeconfig,
        server=server,
        token=policy.k8s_auth_token,
        client_certificate=policy.k8s_client_certificate,
        client_key=policy.k8s_client_key,
        certificate_authority=policy.k8s_certificate_authority,
    )


class KubeClients:
    """Kubernetes clients by API settings, made on first use, closed by ``close``."""

    def __init__(self) -> None:
        self._clients: dict[ApiSettings, KubeClient] = {}
        self._lock = asyncio.Lock()

    async def get(self, settings: ApiSettings) -> KubeClient:
        from pycalico.k8s.client import KubeClient, KubeError  # on first use: see the invariants

        client = self._clients.get(settings)
        if client is not None:
            return client
        async with self._lock:
            client = self._clients.get(settings)
            if client is None:
                try:
                    client = await KubeClient.from_settings(
                        settings.kubeconfig,
                        server=settings.server,
                        token=settings.token,
                        client_certificate=settings.client_certificate,
                        client_key=settings.client_key,
                        certificate_authority=settings.certificate_authority,
                    )
                except KubeError as error:
                    raise CniError(f"Kubernetes API: {error}") from None
                self._clients[settings] = client
            return client

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.close()


def _cni_error(settings: ApiSettings, error: KubeError) -> CniError:
    if error.status == 0:
        return CniError(
            f"{error.what}: the Kubernetes API server {settings.where} did not answer: "
            f"{error.message}"
        )
    if error.not_found:
        return CniError(f"{error.what}: does not exist in the Kubernetes API ({error.message})")
    return CniError(f"{error.what}: refused by the Kubernetes API server: {error}")


async def read_pod(
    clients: KubeClients, settings: ApiSettings, conf: NetConf, namespace: str, pod: str
) -> pod_request.PodSettings:
    """The pod's settings from the Pod and its Namespace, read concurrently; with a policy type
    other than ``k8s`` only the pod's identity is used (Calico ignores its labels and
    annotations then)."""
    from pycalico.k8s import pods
    from pycalico.k8s.client import KubeError

    kube = await clients.get(settings)
    try:
        pod_object, namespace_object = await asyncio.gather(
            pods.read_pod(kube, namespace, pod), pods.read_namespace(kube, namespace)
        )
    except KubeError as error:
        raise _cni_error(settings, error) from None
    if conf.policy.type != POLICY_K8S:
        return pod_request.identity_only(pod_object)
    return pod_request.pod_settings(conf, pod_object, namespace_object)


async def annotate(
    clients: KubeClients,
    settings: ApiSettings,
    pod: pod_request.PodSettings,
    addresses: Sequence[str],
    container_id: str,
) -> None:
    """Tell Kubernetes the pod's addresses (Calico's podIP/podIPs/containerID annotations)."""
    from pycalico.k8s import pods
    from pycalico.k8s.client import KubeError

    kube = await clients.get(settings)
    patch = pod_request.feedback_patch(pod.uid, addresses, container_id)
    try:
        await pods.merge_patch_status(kube, pod.namespace, pod.pod, patch)
    except KubeError as error:
        if error.conflict:
            raise CniError(
                f"pod {pod.namespace}/{pod.pod} was replaced (UID {pod.uid} is gone) while "
                "its network was set up"
            ) from None
        raise _cni_error(settings, error) from None


async def release(
    clients: KubeClients,
    settings: ApiSettings,
    namespace: str,
    pod: str,
    container_id: str,
    log: logging.Logger,
) -> None:
    """Empty the pod's podIP/podIPs annotations if they are this container's.  A pod that is
    gone, or that a newer sandbox has annotated, is left alone; an API server that does not
    answer is logged, not fatal (the addresses are released in any case, and Kubernetes
    forgets them with the pod)."""
    from pycalico.k8s import pods
    from pycalico.k8s.client import KubeError

    try:
        kube = await clients.get(settings)
        await pods.json_patch_status(kube, namespace, pod, pod_request.release_patch(container_id))
    except KubeError as error:
        if error.not_found or error.status == 422:
            return
        log.warning("DEL %s/%s: pod annotations not cleared: %s", namespace, pod, error)
    except CniError as error:
        log.warning("DEL %s/%s: pod annotations not cleared: %s", namespace, pod, error.msg)

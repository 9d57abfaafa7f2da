"""The policy and namespace controllers against a real kube-apiserver and a real etcd.

``kubectl`` writes the Kubernetes objects; the assertions read Calico's etcd through the
ResourceStore, as Felix would see them.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pycalico.datastore.api import KeyNotFound
from pycalico.datastore.resources import ResourceStore
from pycalico.k8s.client import KubeClient
from pycalico.kubecontrollers.controllers import (
    NAMESPACE,
    POLICY,
    SERVICE_ACCOUNT,
    Binding,
    Controller,
    controller,
)
from pycalico.kubecontrollers.pods import pod_controller
from pycalico.model.endpoints import WorkloadEndpoint
from pycalico.model.policy import NetworkPolicy
from pycalico.testing.eventually import eventually
from pycalico.testing.kube_server import KubeControlPlane

pytestmark = pytest.mark.root

ORCH = "projectcalico.org/orchestrator == 'k8s'"


async def absent(store: ResourceStore, kind: str, name: str, namespace: str | None = None) -> None:
    """Passes once ``kind`` ``name`` is gone (for ``eventually``: raises AssertionError before)."""
    try:
        await store.get(kind, name, namespace)
    except KeyNotFound:
        return
    raise AssertionError(f"{kind} {name} is still there")


async def kubectl(plane: KubeControlPlane, *args: str) -> str:
    done = await asyncio.to_thread(plane.apiserver.kubectl, *args)
    return done.stdout


@pytest.fixture
async def namespace(kube_plane: KubeControlPlane) -> AsyncIterator[str]:
    name = f"kc-{secrets.token_hex(4)}"
    await kubectl(kube_plane, "create", "namespace", name)
    yield name
    # No kube-controller-manager runs, so the namespace stays Terminating; it is the plane's.
    await kubectl(kube_plane, "delete", "namespace", name, "--wait=false")


@contextlib.asynccontextmanager
async def running(
    kube: KubeClient, store: ResourceStore, binding: Binding
) -> AsyncIterator[Controller]:
    running_controller = controller(kube, store, binding)
    task = asyncio.create_task(running_controller.run())
    try:
        await asyncio.wait_for(running_controller.synced.wait(), 20)
        yield running_controller
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


POLICY_YAML = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-web
  namespace: {namespace}
spec:
  podSelector:
    matchLabels:
      app: web
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels:
          role: client
    ports:
    - port: 80
    - port: 8080
      endPort: 8090
      protocol: TCP
"""


async def test_kubectl_network_policy_is_written_to_etcd_and_removed_with_it(
    kube_plane: KubeControlPlane,
    kube: KubeClient,
    store: ResourceStore,
    namespace: str,
    tmp_path: Path,
) -> None:
    manifest = tmp_path / "policy.yaml"
    manifest.write_text(POLICY_YAML.format(namespace=namespace))
    async with running(kube, store, POLICY):
        await kubectl(kube_plane, "apply", "-f", str(manifest))

        async def written() -> Any:
            return await store.get("NetworkPolicy", "knp.default.allow-web", namespace)

        policy = await eventually(written)
        assert isinstance(policy, NetworkPolicy)
        wire = policy.model_dump(by_alias=True, exclude_none=True)["spec"]
        assert wire == {
            "tier": "default",
            "order": 1000,
            "ingress": [
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "source": {"selector": f"{ORCH} && role == 'client'"},
                    "destination": {"ports": [80, "8080:8090"]},
                }
            ],
            "selector": f"{ORCH} && app == 'web'",
            "types": ["Ingress"],
        }

        await kubectl(kube_plane, "delete", "networkpolicy", "allow-web", "-n", namespace)

        await eventually(lambda: absent(store, "NetworkPolicy", "knp.default.allow-web", namespace))


async def test_start_removes_stale_policies_and_keeps_calico_ones(
    kube: KubeClient, store: ResourceStore, namespace: str
) -> None:
    for name in ("knp.default.gone", "calico-own"):
        await store.create(
            NetworkPolicy.model_validate(
                {"metadata": {"name": name, "namespace": namespace}, "spec": {"selector": "all()"}}
            )
        )
    async with running(kube, store, POLICY) as controller:
        await controller.workers.idle()
        names = [item.metadata.name for item in (await store.list("NetworkPolicy")).items]
    assert names == ["calico-own"]


async def test_namespace_becomes_a_profile_with_its_labels(
    kube_plane: KubeControlPlane, kube: KubeClient, store: ResourceStore, namespace: str
) -> None:
    async with running(kube, store, NAMESPACE):
        await kubectl(kube_plane, "label", "namespace", namespace, "team=blue")

        async def labelled() -> dict[str, str]:
            profile = await store.get("Profile", f"kns.{namespace}")
            labels = profile.model_dump(by_alias=True)["spec"]["labelsToApply"]
            assert labels.get("pcns.team") == "blue"
            return dict(labels)

        labels = await eventually(labelled)
        assert labels["pcns.projectcalico.org/name"] == namespace
        assert labels["pcns.kubernetes.io/metadata.name"] == namespace


async def test_service_account_becomes_a_profile_and_goes_with_it(
    kube_plane: KubeControlPlane, kube: KubeClient, store: ResourceStore, namespace: str
) -> None:
    async with running(kube, store, SERVICE_ACCOUNT):
        await kubectl(kube_plane, "create", "serviceaccount", "builder", "-n", namespace)
        await kubectl(kube_plane, "label", "serviceaccount", "builder", "-n", namespace, "ci=yes")
        name = f"ksa.{namespace}.builder"

        async def labelled() -> None:
            profile = await store.get("Profile", name)
            labels = profile.model_dump(by_alias=True)["spec"]["labelsToApply"]
            assert labels == {"pcsa.ci": "yes", "pcsa.projectcalico.org/name": "builder"}

        await eventually(labelled)
        await kubectl(kube_plane, "delete", "serviceaccount", "builder", "-n", namespace)

        await eventually(lambda: absent(store, "Profile", name))


POD_YAML = """
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: {namespace}
  labels:
    app: web
spec:
  nodeName: node1
  serviceAccountName: builder
  automountServiceAccountToken: false
  containers:
  - name: main
    image: busybox
"""


async def test_pod_label_change_reaches_its_workload_endpoint(
    kube_plane: KubeControlPlane,
    kube: KubeClient,
    store: ResourceStore,
    namespace: str,
    tmp_path: Path,
) -> None:
    endpoint = await store.create(
        WorkloadEndpoint.model_validate(
            {
                "metadata": {"namespace": namespace},
                "spec": {
                    "orchestrator": "k8s",
                    "node": "node1",
                    "pod": "web",
                    "endpoint": "eth0",
                    "interfaceName": "cali0123456789a",
                    "ipNetworks": ["10.65.0.2/32"],
                    "profiles": [f"kns.{namespace}"],
                },
            }
        )
    )
    await kubectl(kube_plane, "create", "serviceaccount", "builder", "-n", namespace)
    manifest = tmp_path / "pod.yaml"
    manifest.write_text(POD_YAML.format(namespace=namespace))
    controller_ = pod_controller(kube, store)
    task = asyncio.create_task(controller_.run())
    try:
        await kubectl(kube_plane, "apply", "-f", str(manifest))
        await kubectl(kube_plane, "label", "pod", "web", "-n", namespace, "role=frontend")

        async def labelled() -> WorkloadEndpoint:
            found = await store.get("WorkloadEndpoint", endpoint.metadata.name, namespace)
            assert isinstance(found, WorkloadEndpoint)
            assert (found.metadata.labels or {}).get("role") == "frontend"
            return found

        found = await eventually(labelled)
        assert found.metadata.labels == {
            "app": "web",
            "role": "frontend",
            "projectcalico.org/namespace": namespace,
            "projectcalico.org/orchestrator": "k8s",
            "projectcalico.org/serviceaccount": "builder",
        }
        assert found.spec.service_account_name == "builder"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await kubectl(kube_plane, "delete", "pod", "web", "-n", namespace, "--wait=false")


async def test_changes_made_while_the_controller_is_down_are_caught_up(
    kube_plane: KubeControlPlane,
    kube: KubeClient,
    store: ResourceStore,
    namespace: str,
    tmp_path: Path,
) -> None:
    first = tmp_path / "first.yaml"
    first.write_text(POLICY_YAML.format(namespace=namespace))
    second = tmp_path / "second.yaml"
    second.write_text(POLICY_YAML.format(namespace=namespace).replace("allow-web", "allow-db"))
    async with running(kube, store, POLICY):
        await kubectl(kube_plane, "apply", "-f", str(first))

        async def first_written() -> Any:
            return await store.get("NetworkPolicy", "knp.default.allow-web", namespace)

        await eventually(first_written)
    # Down: one policy deleted, another created.
    await kubectl(kube_plane, "delete", "-f", str(first))
    await kubectl(kube_plane, "apply", "-f", str(second))
    async with running(kube, store, POLICY) as restarted:
        await restarted.workers.idle()
        names = [item.metadata.name for item in (await store.list("NetworkPolicy")).items]
    assert names == ["knp.default.allow-db"]

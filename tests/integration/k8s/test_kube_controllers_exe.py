"""The ``calico-kube-controllers`` executable against a real kube-apiserver and a real etcd.

Each test starts the installed executable as a process (the environment a Deployment would
give it), drives Kubernetes with ``kubectl`` and reads Calico's etcd through the ResourceStore.
Leader election runs with short durations (lease 4 s, renew deadline 3 s, retry 0.5 s) so
that take-overs are quick; every wait is for an event (a log line, a stored object), bounded.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as k8s_client

from pycalico.datastore.resources import ResourceStore
from pycalico.k8s.client import KubeClient
from pycalico.kubecontrollers.compare import differences
from pycalico.model.node import KubeControllersConfiguration
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.eventually import eventually
from pycalico.testing.kube_controllers import EXECUTABLE
from pycalico.testing.kube_controllers import KubeControllersProcess as Copy
from pycalico.testing.kube_server import KubeControlPlane

pytestmark = pytest.mark.root


def eventually_30(check: Callable[[], Awaitable[Any]], timeout: float = 30.0) -> Awaitable[Any]:
    """This module's waits cover process starts and restarts: a longer default."""
    return eventually(check, timeout=timeout, interval=0.1)


LEASE, RENEW, RETRY = 4.0, 3.0, 0.5


RESTARTING = ("not yet ready", "connection refused", "ServiceUnavailable")


async def kubectl(plane: KubeControlPlane, *args: str) -> str:
    """kubectl, retried (30 s) while an API server that was just restarted is still warming up
    ("not yet ready to handle request": its admission caches are syncing)."""
    deadline = time.monotonic() + 30
    while True:
        done = await asyncio.to_thread(plane.apiserver.kubectl, *args, check=False)
        if done.returncode == 0:
            return done.stdout
        if time.monotonic() > deadline or not any(s in done.stderr for s in RESTARTING):
            raise AssertionError(f"kubectl {' '.join(args)}: {done.stderr}")
        await asyncio.sleep(0.2)


@pytest.fixture
def environment(kube_plane: KubeControlPlane, etcd: EtcdServer) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return {
        **keep,
        "PYTHONUNBUFFERED": "1",
        "KUBECONFIG": str(kube_plane.kubeconfig),
        "ETCD_ENDPOINTS": etcd.endpoint,
        "LEADER_ELECTION_NAMESPACE": "default",
        "LEADER_ELECTION_NAME": f"kc-{secrets.token_hex(4)}",
        "LEADER_ELECTION_LEASE_DURATION": f"{LEASE}s",
        "LEADER_ELECTION_RENEW_DEADLINE": f"{RENEW}s",
        "LEADER_ELECTION_RETRY_PERIOD": f"{int(RETRY * 1000)}ms",
    }


@pytest.fixture
def copies(tmp_path: Path, environment: dict[str, str]) -> Iterator[Callable[..., Copy]]:
    started: list[Copy] = []

    def start(name: str, **env: str) -> Copy:
        copy = Copy(tmp_path, name, {**environment, **env})
        copy.start()
        started.append(copy)
        return copy

    try:
        yield start
    finally:
        for copy in started:
            copy.stop(signal.SIGKILL)


@pytest.fixture
async def namespace(kube_plane: KubeControlPlane) -> AsyncIterator[str]:
    name = f"kce-{secrets.token_hex(4)}"
    await kubectl(kube_plane, "create", "namespace", name)
    yield name
    # No kube-controller-manager empties a deleted namespace: remove what the tests created,
    # so that later tests listing every namespace do not see it.
    await kubectl(kube_plane, "delete", "networkpolicy", "--all", "-n", name)
    await kubectl(kube_plane, "delete", "namespace", name, "--wait=false")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


async def configuration(store: ResourceStore) -> KubeControllersConfiguration:
    found = await store.get("KubeControllersConfiguration", "default")
    assert isinstance(found, KubeControllersConfiguration)
    return found


async def test_start_creates_the_default_configuration_and_writes_its_status(
    kube_plane: KubeControlPlane, store: ResourceStore, copies: Callable[..., Copy], namespace: str
) -> None:
    copy = copies("kc-a")

    async def status_written() -> dict[str, Any]:
        found = await configuration(store)
        assert found.status
        return found.status

    status = await eventually_30(status_written)
    found = await configuration(store)
    assert found.spec.controllers.policy is not None
    assert found.spec.log_severity_screen == "Info"
    assert status["environmentVars"] == {}
    assert sorted(status["runningConfig"]["controllers"]) == [
        "namespace",
        "node",
        "policy",
        "serviceAccount",
        "workloadEndpoint",
    ]
    await eventually_30(lambda: store.get("Profile", f"kns.{namespace}"))
    await copy.wait_for(
        "controllers running: namespace, node, policy, serviceaccount, workloadendpoint"
    )

    async def ready() -> None:
        done = await asyncio.to_thread(
            subprocess.run, [EXECUTABLE, "-r", "-f", str(copy.status)], capture_output=True
        )
        assert (done.returncode, done.stdout) == (0, b"Ready\n")

    await eventually_30(ready)


async def test_environment_overrides_the_resource_and_a_change_is_picked_up(
    kube_plane: KubeControlPlane,
    store: ResourceStore,
    copies: Callable[..., Copy],
    namespace: str,
    environment: dict[str, str],
) -> None:
    port = free_port()
    await store.create(
        KubeControllersConfiguration.model_validate(
            {
                "metadata": {"name": "default"},
                "spec": {
                    "prometheusMetricsPort": port,
                    "logSeverityScreen": "Error",
                    "controllers": {
                        "policy": {"reconcilerPeriod": "1m"},
                        "node": {"syncLabels": "Enabled"},
                    },
                },
            }
        )
    )
    env = {"LOG_LEVEL": "debug", "ENABLED_CONTROLLERS": "namespace,policy"}
    copies("kc-b", RECONCILER_PERIOD="45s", **env)

    async def status_written() -> dict[str, Any]:
        found = await configuration(store)
        assert found.status
        return found.status

    status = await eventually_30(status_written)
    assert status["environmentVars"] == {**env, "RECONCILER_PERIOD": "45s"}
    running = status["runningConfig"]
    assert running["logSeverityScreen"] == "Debug"
    assert running["controllers"] == {
        "namespace": {"reconcilerPeriod": "45s"},
        "policy": {"reconcilerPeriod": "45s"},
    }
    assert running["etcdV3CompactionPeriod"] == "10m0s"
    await eventually_30(lambda: store.get("Profile", f"kns.{namespace}"))

    async def metrics() -> str:
        text = await asyncio.to_thread(scrape, port)
        assert 'kube_controllers_writes_total{controller="namespace"}' in text
        return text

    text = await metrics()
    assert (
        f'leader_election_master_status{{name="{environment["LEADER_ELECTION_NAME"]}"}} 1.0' in text
    )
    assert 'kube_controllers_reconciles_total{controller="policy"}' in text

    current = await configuration(store)
    spec = current.spec.model_copy(update={"etcd_v3_compaction_period": "20m"})
    await store.update(current.model_copy(update={"spec": spec}))

    async def rewritten() -> None:
        found = await configuration(store)
        assert found.status and found.status["runningConfig"]["etcdV3CompactionPeriod"] == "20m0s"

    await eventually_30(rewritten)


async def lease_holder(kube: KubeClient, name: str) -> str:
    api = k8s_client.CoordinationV1Api(kube.api_client)
    lease = await api.read_namespaced_lease(name, "default")
    return str(lease.spec.holder_identity or "")


async def test_two_copies_one_leader_and_a_killed_leader_is_replaced_within_the_lease(
    kube_plane: KubeControlPlane,
    kube: KubeClient,
    store: ResourceStore,
    copies: Callable[..., Copy],
    environment: dict[str, str],
) -> None:
    first, second = copies("kc-1"), copies("kc-2")
    became = "became leader"
    await eventually_30(lambda: _one_of(first, second, became))
    leader, follower = (first, second) if first.count(became) else (second, first)
    await leader.wait_for("controllers running")
    name = environment["LEADER_ELECTION_NAME"]
    assert await lease_holder(kube, name) == leader.name
    # The follower keeps trying for two more lease durations and never leads or writes.
    renewals_seen = time.monotonic() + 2 * LEASE
    while time.monotonic() < renewals_seen:
        assert follower.count(became) == 0 and follower.count("controllers running") == 0
        await asyncio.sleep(RETRY)
    assert leader.count(became) == 1

    killed = time.monotonic()
    leader.stop(signal.SIGKILL)
    taken = await follower.wait_for(became, timeout=3 * LEASE)
    assert taken - killed <= LEASE + RETRY + 0.5  # the last renewal was at most RETRY before
    assert await lease_holder(kube, name) == follower.name
    fresh = f"kce-{secrets.token_hex(4)}"
    await kubectl(kube_plane, "create", "namespace", fresh)
    try:
        await eventually_30(lambda: store.get("Profile", f"kns.{fresh}"))
    finally:
        await kubectl(kube_plane, "delete", "namespace", fresh, "--wait=false")


async def _one_of(first: Copy, second: Copy, line: str) -> None:
    assert first.count(line) + second.count(line) == 1


async def test_a_stopped_leader_releases_the_lease_and_the_other_takes_over_at_once(
    copies: Callable[..., Copy],
) -> None:
    first = copies("kc-x")
    await first.wait_for("controllers running")
    second = copies("kc-y")
    await second.wait_for("campaigning", timeout=10)
    stopped = time.monotonic()
    first.stop(signal.SIGTERM)
    assert "released the lease" in first.text()
    taken = await second.wait_for("became leader", timeout=2 * LEASE)
    assert taken - stopped < LEASE - 1  # a released lease is free at once: a retry or two


POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  podSelector: {{matchLabels: {{app: {name}}}}}
  ingress: [{{from: [{{podSelector: {{}}}}], ports: [{{port: 80}}]}}]
"""


async def _apply_policy(plane: KubeControlPlane, directory: Path, name: str, ns: str) -> None:
    manifest = directory / f"{name}.yaml"
    manifest.write_text(POLICY.format(name=name, namespace=ns))
    await kubectl(plane, "apply", "-f", str(manifest))


async def _in_sync(kube: KubeClient, store: ResourceStore, timeout: float = 60.0) -> None:
    async def same() -> None:
        assert await differences(kube, store) == []

    await eventually_30(same, timeout)


async def test_restarts_of_kube_controllers_and_the_api_server_lose_nothing(
    kube_plane: KubeControlPlane,
    kube: KubeClient,
    store: ResourceStore,
    copies: Callable[..., Copy],
    namespace: str,
    tmp_path: Path,
) -> None:
    copy = copies("kc-r", RECONCILER_PERIOD="5s")
    await copy.wait_for("controllers running")
    for index in range(5):
        await _apply_policy(kube_plane, tmp_path, f"p{index}", namespace)
    copy.stop(signal.SIGKILL)  # in the middle of the changes
    for index in range(5, 8):
        await _apply_policy(kube_plane, tmp_path, f"p{index}", namespace)
    await kubectl(kube_plane, "delete", "networkpolicy", "p0", "p1", "-n", namespace)
    await kubectl(kube_plane, "label", "namespace", namespace, "phase=down")
    copy.start()
    await _in_sync(kube, store)
    assert (await store.get("Profile", f"kns.{namespace}")).model_dump(by_alias=True)["spec"][
        "labelsToApply"
    ]["pcns.phase"] == "down"

    # The API server goes away while Calico's side is changed behind the controllers' back.
    await asyncio.to_thread(kube_plane.apiserver.stop)
    try:
        await store.delete("NetworkPolicy", "knp.default.p2", namespace)
    finally:
        # From this thread: the server dies with the thread that started it (pdeathsig), and
        # a worker thread of to_thread may end before the session does.
        kube_plane.apiserver.start()
    await _apply_policy(kube_plane, tmp_path, "p8", namespace)
    await kubectl(kube_plane, "delete", "networkpolicy", "p3", "-n", namespace)
    await _in_sync(kube, store)
    names = {p.metadata.name for p in (await store.list("NetworkPolicy", namespace)).items}
    assert names == {f"knp.default.p{i}" for i in (2, 4, 5, 6, 7, 8)}


async def test_an_etcd_outage_in_the_middle_of_changes_loses_nothing(
    kube_plane: KubeControlPlane,
    kube: KubeClient,
    store: ResourceStore,
    etcd: EtcdServer,
    copies: Callable[..., Copy],
    namespace: str,
    tmp_path: Path,
) -> None:
    copy = copies("kc-e")
    await copy.wait_for("controllers running")
    await _apply_policy(kube_plane, tmp_path, "e0", namespace)
    await asyncio.to_thread(etcd.stop)
    try:
        for index in (1, 2, 3):
            await _apply_policy(kube_plane, tmp_path, f"e{index}", namespace)
        await kubectl(kube_plane, "delete", "networkpolicy", "e0", "-n", namespace)
        await kubectl(kube_plane, "label", "namespace", namespace, "etcd=was-down")
    finally:
        etcd.start()  # from this thread, as the API server above
    await _in_sync(kube, store)
    names = {p.metadata.name for p in (await store.list("NetworkPolicy", namespace)).items}
    assert names == {f"knp.default.e{i}" for i in (1, 2, 3)}

"""The Kubernetes lab's pod runner: the kubelet's (and the scheduler's) part of the story, one
process for all lab nodes (``python -m pycalico.lab.kubelet STATE_DIR``, started by
``calico-lab up --kubernetes``).

What it is, as asyncio tasks over one API connection (the machine's kubeconfig, through the
lab's relay):

* **Nodes**: registers a Kubernetes Node per lab node and posts its Ready heartbeat every
  ``HEARTBEAT`` seconds (addresses: the node's fabric address).
* **Scheduler**: a Pod without ``spec.nodeName`` is bound (the ``binding`` subresource) to the
  node with the fewest pods.
* **Pods** (one list+watch of every Pod): a Pod bound to a lab node gets its network namespace
  and the real ``calico`` CNI ADD, run as a kubelet runs it (``CNI_ARGS`` with
  ``K8S_POD_NAMESPACE``, ``K8S_POD_NAME``, ``K8S_POD_INFRA_CONTAINER_ID``, ``K8S_POD_UID``), then
  its status (Running, Ready, ``podIP``/``podIPs``, ``hostIP``) as a kubelet writes it.  A Pod
  being deleted (``deletionTimestamp``) or gone gets CNI DEL, its namespace removed, and is then
  deleted for good (``gracePeriodSeconds: 0``, preconditioned on its uid), as a kubelet does
  once its containers are stopped.  A failed ADD is retried with a back-off, and the reason is
  put in the Pod's ``PodReadyToStartContainers`` condition.
* **Namespaces** (standing in for Kubernetes' service-account controller, which the lab does
  not run): each Namespace gets its ``default`` ServiceAccount.  The Calico profiles
  (``kns.<namespace>``, ``ksa.<namespace>.<account>``) are kube-controllers' work, not this
  runner's.

``CNI_READS_API`` is the one switch between the plugin's two modes: on (the default), the
conflist also has ``kubernetes.kubeconfig`` (the node-side kubeconfig, over the fabric) and the
plugin reads the Pod itself and annotates it; off, the conflist is the etcd-mode one and the
runner hands the Pod's labels to the plugin (``args.cni.labels``).

What it is not: a container runtime (no images, no processes; a Pod's containers are reported
running as soon as its network is up), or a scheduler with any policy beyond "fewest pods".

Invariants: each Pod is handled by at most one task at a time (a change arriving meanwhile runs
the handler again afterwards); a networked Pod is recorded in ``state.json`` (with its uid)
before its status says Running, so ``calico-lab check``/``exec`` find every Running pod, and a
restarted runner tears down what it recorded for Pods that are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from pycalico.datastore.etcd import EtcdKVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.k8s.client import KubeClient, KubeError, kube_error
from pycalico.k8s.watch import Changed, Listed, ListWatcher
from pycalico.lab import kubeobjects, pods
from pycalico.lab import state as lab_state
from pycalico.lab.state import LabState, PodState

log = logging.getLogger("calico-lab-kubelet")

CNI_READS_API = True
HEARTBEAT = 10.0
PARALLEL_PER_NODE = 4
RETRY_MAX = 10.0

T = TypeVar("T")
Key = tuple[str, str]  # (namespace, name)


async def _call(what: str, request: Awaitable[T]) -> T:
    """Await a client request; its failure as a ``KubeError``."""
    try:
        return await request
    except Exception as error:
        raise kube_error(what, error) from error


def _now() -> datetime:
    return datetime.now(UTC)


class Runner:
    def __init__(self, lab: LabState, kube: KubeClient, resources: ResourceStore) -> None:
        self.lab = lab
        self.kube = kube
        self.resources = resources
        self.nodes = {node.name: node for node in lab.nodes}
        self.pods: dict[Key, dict[str, Any]] = {}
        self.networked: dict[Key, PodState] = {
            (pod.namespace, pod.name): pod for pod in lab.pods if pod.uid
        }
        self.binding: dict[Key, str] = {}
        self.slots = {name: asyncio.Semaphore(PARALLEL_PER_NODE) for name in self.nodes}
        self.running: set[Key] = set()
        self.dirty: set[Key] = set()
        self.delay: dict[Key, float] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    # --- the pod watch -----------------------------------------------------------------------

    async def watch_pods(self) -> None:
        watcher = ListWatcher(self.kube.core.list_pod_for_all_namespaces)
        async for event in watcher.events():
            if isinstance(event, Listed):
                wires = [self.kube.to_wire(item) for item in event.items]
                self.pods = {kubeobjects.pod_key(wire): wire for wire in wires}
                keys = set(self.pods) | set(self.networked)
            elif isinstance(event, Changed):
                wire = self.kube.to_wire(event.object)
                key = kubeobjects.pod_key(wire)
                if event.type == "DELETED":
                    if self._uid(self.pods.get(key)) == self._uid(wire):
                        self.pods.pop(key, None)
                else:
                    self.pods[key] = wire
                keys = {key}
            else:
                continue
            for key in keys:
                if kubeobjects.pod_node(self.pods.get(key) or {"spec": {}}):
                    self.binding.pop(key, None)
                self.kick(key)

    @staticmethod
    def _uid(pod: dict[str, Any] | None) -> str:
        return str(pod["metadata"].get("uid", "")) if pod else ""

    def kick(self, key: Key) -> None:
        """Handle ``key`` now, or once more after the handler already running for it."""
        if key in self.running:
            self.dirty.add(key)
            return
        self.running.add(key)
        task = asyncio.create_task(self._handle(key))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _handle(self, key: Key) -> None:
        try:
            while True:
                self.dirty.discard(key)
                try:
                    await self.reconcile(key)
                    self.delay.pop(key, None)
                except Exception as error:  # reported on the Pod; retried with a back-off
                    delay = min(self.delay.get(key, 0.5) * 2, RETRY_MAX)
                    self.delay[key] = delay
                    log.warning("pod %s/%s: %s (retrying in %.0fs)", *key, error, delay)
                    await self._report_failure(key, str(error))
                    asyncio.get_running_loop().call_later(delay, self.kick, key)
                    return
                if key not in self.dirty:
                    return
        finally:
            self.running.discard(key)

    async def reconcile(self, key: Key) -> None:
        pod = self.pods.get(key)
        have = self.networked.get(key)
        if have is not None and (
            pod is None
            or self._uid(pod) != have.uid
            or kubeobjects.deleting(pod)
            or kubeobjects.finished(pod)
            or kubeobjects.pod_node(pod) != have.node
        ):
            await self.teardown(key, have)
        if pod is None or kubeobjects.finished(pod):
            return
        node = kubeobjects.pod_node(pod)
        if kubeobjects.deleting(pod):
            if node in self.nodes:
                await self.finalize(pod)
            return
        if not node:
            await self.bind(key, pod)
        elif node in self.nodes and key not in self.networked:
            await self.setup(key, pod)
        elif node in self.nodes and not (pod.get("status") or {}).get("podIP"):
            await self.report_running(pod, self.networked[key])

    # --- kubelet: network a pod, report it, tear it down ----------------------------------

    def _conflist(self, node: str) -> dict[str, Any]:
        assert self.lab.kube is not None
        kubeconfig = self.lab.kube.node_kubeconfig if CNI_READS_API else ""
        return pods.conflist(self.lab, self.nodes[node], kubeconfig=kubeconfig)

    async def setup(self, key: Key, pod: dict[str, Any]) -> None:
        namespace, name = key
        node = kubeobjects.pod_node(pod)
        current = lab_state.load(self.lab.state_dir)
        for other in current.pods if current else ():
            if other.name == name and (other.namespace != namespace or not other.uid):
                raise RuntimeError(
                    f"pod name {name!r} is already used in the lab by a pod in namespace "
                    f"{other.namespace!r} (lab pod names are unique across namespaces)"
                )
        spec = pods.PodSpec(name, node, namespace, kubeobjects.labels(pod))
        async with self.slots[node]:
            networked = await asyncio.to_thread(
                pods.network,
                self.lab,
                spec,
                uid=self._uid(pod),
                document=self._conflist(node),
                runtime_labels=not CNI_READS_API,
            )
        self.networked[key] = networked
        await asyncio.to_thread(self._record, networked)
        await self.report_running(pod, networked)

    async def report_running(self, pod: dict[str, Any], networked: PodState) -> None:
        namespace, name = kubeobjects.pod_key(pod)
        body = kubeobjects.pod_status_patch(pod, networked, self.nodes[networked.node], _now())
        try:
            await _call(
                f"patch pod {namespace}/{name} status",
                self.kube.core.patch_namespaced_pod_status(name, namespace, body),
            )
        except KubeError as error:
            if not error.not_found:  # gone meanwhile: its DELETED event tears it down
                raise

    async def teardown(self, key: Key, have: PodState) -> None:
        async with self.slots[have.node]:
            await asyncio.to_thread(pods.unnetwork, self.lab, have, self._conflist(have.node))
        self.networked.pop(key, None)
        await asyncio.to_thread(self._forget, have)

    async def finalize(self, pod: dict[str, Any]) -> None:
        """The kubelet's last word on a deleted pod: its containers are gone, remove it now."""
        namespace, name = kubeobjects.pod_key(pod)
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": self._uid(pod)}}
        try:
            await _call(
                f"delete pod {namespace}/{name}",
                self.kube.core.delete_namespaced_pod(name, namespace, body=body),
            )
        except KubeError as error:
            if not (error.not_found or error.conflict):  # already gone, or a new pod's uid
                raise

    async def _report_failure(self, key: Key, message: str) -> None:
        with contextlib.suppress(KubeError):
            await _call(
                "patch pod status",
                self.kube.core.patch_namespaced_pod_status(
                    key[1], key[0], kubeobjects.pod_failed_patch(message, _now())
                ),
            )

    def _record(self, pod: PodState) -> None:
        with lab_state.locked(self.lab.state_dir):
            current = lab_state.load(self.lab.state_dir)
            if current is not None:
                lab_state.save(current.with_pod(pod))

    def _forget(self, pod: PodState) -> None:
        with lab_state.locked(self.lab.state_dir):
            current = lab_state.load(self.lab.state_dir)
            if current is not None and any(p.uid == pod.uid for p in current.pods):
                lab_state.save(current.without_pod(pod.name))

    # --- scheduler --------------------------------------------------------------------------

    async def bind(self, key: Key, pod: dict[str, Any]) -> None:
        namespace, name = key
        bound = [kubeobjects.pod_node(p) for p in self.pods.values() if not kubeobjects.finished(p)]
        target = kubeobjects.least_loaded(self.nodes, [*bound, *self.binding.values()])
        self.binding[key] = target
        body = kubeobjects.binding(name, namespace, target)
        # The reply is a Status, not the Binding the client would parse: read it raw.
        reply = await _call(
            f"bind pod {namespace}/{name}",
            self.kube.core.create_namespaced_pod_binding(
                name, namespace, body, _preload_content=False
            ),
        )
        try:
            text = await reply.text()
            if reply.status == 409:  # bound meanwhile (by us before a restart, or by a user)
                return
            if not 200 <= reply.status < 300:
                self.binding.pop(key, None)
                raise KubeError(f"bind pod {namespace}/{name} to {target}", reply.status, text)
        finally:
            reply.release()

    # --- nodes and namespaces ---------------------------------------------------------------

    async def heartbeat(self) -> None:
        since = _now()
        for node in self.lab.nodes:
            try:
                await _call(
                    f"create node {node.name}",
                    self.kube.core.create_node(kubeobjects.node_manifest(node)),
                )
            except KubeError as error:
                if not error.conflict:
                    raise
        while True:
            for node in self.lab.nodes:
                body = kubeobjects.node_status_patch(node, _now(), since)
                try:
                    await _call(
                        f"patch node {node.name} status",
                        self.kube.core.patch_node_status(node.name, body),
                    )
                except KubeError as error:
                    log.warning("heartbeat: %s", error)
            await asyncio.sleep(HEARTBEAT)

    async def watch_namespaces(self) -> None:
        watcher = ListWatcher(self.kube.core.list_namespace)
        async for event in watcher.events():
            if isinstance(event, Listed):
                items = list(event.items)
            elif isinstance(event, Changed) and event.type != "DELETED":
                items = [event.object]
            else:
                continue
            for item in items:
                try:
                    await self.ensure_namespace(self.kube.to_wire(item))
                except KubeError as error:
                    log.warning("namespace: %s", error)

    async def ensure_namespace(self, namespace: dict[str, Any]) -> None:
        name = str(namespace["metadata"]["name"])
        if namespace.get("status", {}).get("phase") == "Terminating":
            return
        account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}
        try:
            await _call(
                f"create serviceaccount {name}/default",
                self.kube.core.create_namespaced_service_account(name, account),
            )
        except KubeError as error:
            if not error.conflict:
                raise


async def _forever(name: str, loop: Callable[[], Awaitable[None]]) -> None:
    """Run one of the runner's loops; one that fails (an API error a watch does not retry) is
    logged and started again, so the other loops and the pods keep being served."""
    while True:
        try:
            await loop()
        except Exception:
            log.exception("%s failed; starting it again in 1 s", name)
            await asyncio.sleep(1.0)


async def run(state_dir: str) -> None:
    lab = lab_state.load(state_dir)
    if lab is None or lab.kube is None:
        raise SystemExit(f"calico-lab kubelet: no Kubernetes lab in {state_dir}")
    kube = await KubeClient.from_kubeconfig(lab.kube.kubeconfig)
    kv = EtcdKVStore(lab.host_endpoints.split(","), timeout=10.0, retry_timeout=20.0)
    runner = Runner(lab, kube, ResourceStore(kv))
    loop = asyncio.get_running_loop()
    main = asyncio.gather(
        _forever("node heartbeat", runner.heartbeat),
        _forever("namespace watch", runner.watch_namespaces),
        _forever("pod watch", runner.watch_pods),
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, main.cancel)
    with open(os.path.join(lab.kube.directory, "kubelet.pid"), "w") as file:
        file.write(str(os.getpid()))
    try:
        await main
    except asyncio.CancelledError:
        pass
    finally:
        await kube.close()
        await kv.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1:
        print("usage: python -m pycalico.lab.kubelet STATE_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(run(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The Kubernetes side of ``calico-lab up --kubernetes``: a control-plane namespace on the fabric
running ``kube-apiserver`` on the lab's etcd, the kubeconfigs, and the pod runner; and the Pod
requests of ``calico-lab pod add``/``pod del`` in this mode.

Layout (prefix ``clab``): ``clab-control`` has ``eth0`` at ``10.99.0.240/24`` on the fabric and
runs ``kube-apiserver`` on ``:6443`` (objects under etcd prefix ``/registry``, beside Calico's
``/calico``); its files are in ``<state dir>/kube/``: ``kubeconfig`` (for the machine: the
relay's loopback port, the certificate checked for the name ``kubernetes``), and
``node-kubeconfig`` (for the nodes: ``https://10.99.0.240:6443``), credentials, certificates and
logs.  A second relay process (``python -m pycalico.lab.relay STATE_DIR kube``) serves the API
on the machine's loopback; the pod runner (``pycalico.lab.kubelet``) and one
``calico-kube-controllers`` (the machine's kubeconfig and the lab's etcd; its log, pid and
status file in ``kube/``) run on the machine.  kube-controllers, not the lab, writes the
``kns.<ns>`` and ``ksa.<ns>.<sa>`` profiles, the pods' labels and the Kubernetes
NetworkPolicies into Calico's data.

``stop_control``/``start_control`` (``calico-lab kube stop|start``) stop, kill and start again
kube-apiserver or kube-controllers, as an operator (or a kubelet restarting a static pod) would
for a failure drill: the same command, credentials and certificate.

What it is not: the runner itself, or the server's flags (``pycalico.k8s.apiserver``, shared
with the test launcher).

Invariants: ``state.json`` has the control plane before any of its processes starts, and each
process's pid file is written before the next step, so ``down`` (which stops every pid file's
process and every process in a lab namespace) removes it all, also after a failed ``up``.
``up`` returns once the API is ready, every lab node is a Ready Node, the ``default``
ServiceAccount exists (so ``kubectl apply`` of a Pod works at once) and kube-controllers has
written the profile ``kns.default``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from pycalico.datastore.etcd import EtcdKVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.k8s import apiserver
from pycalico.k8s.client import KubeClient, kube_error
from pycalico.lab import kernel, kubeobjects
from pycalico.lab import state as lab_state
from pycalico.lab.cluster import LabError, executable
from pycalico.lab.state import KubeState, LabState, PodState
from pycalico.netns.ports import free_port

Progress = Callable[[str], None]
API_PORT = 6443
ETCD_PREFIX = "/registry"
TLS_NAME = "kubernetes"  # in the self-signed certificate's names; the relayed port is not


def plan(lab: LabState) -> KubeState:
    return KubeState(
        namespace=lab_state.control_namespace(lab.prefix),
        address=f"{lab_state.FABRIC_SUBNET}.{lab_state.KUBE_HOST}",
        port=API_PORT,
        host_port=free_port(),
        directory=os.path.join(lab.state_dir, "kube"),
    )


def _start_apiserver(lab: LabState, kube: KubeState, token: str) -> None:
    directory = Path(kube.directory)
    apiserver.write_credentials(directory, token)
    kernel.add_namespace(kube.namespace)
    kernel.attach_to_bridge(lab.fabric_namespace, kube.namespace, "k0")
    kernel.ip(kube.namespace, "addr", "add", f"{kube.address}/24", "dev", "eth0")
    if lab.subnets > 1:  # nodes of the other subnets reach the API through the router
        gateway = f"{lab_state.FABRIC_SUBNET}.{lab_state.GATEWAY_HOST}"
        kernel.ip(kube.namespace, "route", "add", "default", "via", gateway)
    start_apiserver(lab)
    kernel.start_daemon(
        [sys.executable, "-m", "pycalico.lab.relay", lab.state_dir, "kube"],
        namespace=None,
        env=dict(os.environ),
        log_path=os.path.join(kube.directory, "relay.log"),
        pid_path=os.path.join(kube.directory, "relay.pid"),
    )
    ca = apiserver.ca_file(directory)
    host = f"https://127.0.0.1:{kube.host_port}"
    for path, document in (
        (kube.kubeconfig, apiserver.kubeconfig(host, ca, token, tls_server_name=TLS_NAME)),
        (
            kube.node_kubeconfig,
            apiserver.kubeconfig(f"https://{kube.address}:{kube.port}", ca, token),
        ),
    ):
        apiserver.write_kubeconfig(Path(path), document)


def start_apiserver(lab: LabState) -> int:
    """Start kube-apiserver (unless it runs) on the credentials and certificate of ``up``, which
    it keeps, so every kubeconfig stays valid; returns its pid."""
    assert lab.kube is not None
    pid_path = os.path.join(lab.kube.directory, "kube-apiserver.pid")
    pid = kernel.read_pid(pid_path)
    if pid is not None and kernel.alive(pid):
        return pid
    command = apiserver.command(
        executable("kube-apiserver"),
        Path(lab.kube.directory),
        etcd_servers=lab.node_endpoints,
        etcd_prefix=ETCD_PREFIX,
        bind_address="0.0.0.0",
        advertise_address=lab.kube.address,
        port=lab.kube.port,
    )
    return kernel.start_daemon(
        command,
        namespace=lab.kube.namespace,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        log_path=os.path.join(lab.kube.directory, "kube-apiserver.log"),
        pid_path=pid_path,
    )


def kubectl(lab: LabState, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    assert lab.kube is not None
    return subprocess.run(
        [executable("kubectl"), f"--kubeconfig={lab.kube.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _wait_api(lab: LabState, deadline: float) -> None:
    assert lab.kube is not None
    log = os.path.join(lab.kube.directory, "kube-apiserver.log")
    pid = kernel.read_pid(os.path.join(lab.kube.directory, "kube-apiserver.pid"))
    answer = "no answer"
    while time.monotonic() < deadline:
        if not kernel.alive(pid):
            raise LabError(f"kube-apiserver exited during startup (see {log})")
        if os.path.exists(apiserver.ca_file(Path(lab.kube.directory))):
            done = kubectl(lab, "get", "--raw", "/readyz", timeout=10)
            if done.returncode == 0:
                return
            answer = (done.stderr or done.stdout).strip()[-300:]
        time.sleep(0.2)
    raise LabError(f"kube-apiserver not ready ({answer}); see {log}")


async def _cluster_ready(lab: LabState) -> str:
    """What is still missing ("" when nothing): every lab node a Ready Node, default/default."""
    assert lab.kube is not None
    async with await KubeClient.from_kubeconfig(lab.kube.kubeconfig) as kube:
        try:
            nodes = kube.to_wire(await kube.core.list_node())
        except Exception as error:  # the API's answer decides; its errors are "not yet"
            return f"nodes: {error}"
        ready = {
            item["metadata"]["name"]
            for item in nodes.get("items", [])
            for condition in (item.get("status") or {}).get("conditions") or []
            if condition["type"] == "Ready" and condition["status"] == "True"
        }
        missing = [node.name for node in lab.nodes if node.name not in ready]
        if missing:
            return f"Nodes not Ready yet: {', '.join(missing)}"
        try:
            await kube.core.read_namespaced_service_account("default", "default")
        except Exception:
            return "ServiceAccount default/default not created yet"
    try:
        await _profile(lab, "kns.default")
    except Exception:
        return "profile kns.default not written by kube-controllers yet"
    return ""


async def _profile(lab: LabState, name: str) -> None:
    kv = EtcdKVStore(lab.host_endpoints.split(","), timeout=5.0)
    try:
        await ResourceStore(kv).get("Profile", name)
    finally:
        await kv.close()


def start_runner(lab: LabState) -> int:
    """Start the pod runner (``pycalico.lab.kubelet``) unless it runs; returns its pid."""
    assert lab.kube is not None
    pid_path = os.path.join(lab.kube.directory, "kubelet.pid")
    pid = kernel.read_pid(pid_path)
    if pid is not None and kernel.alive(pid):
        return pid
    return kernel.start_daemon(
        [sys.executable, "-m", "pycalico.lab.kubelet", lab.state_dir],
        namespace=None,
        env=dict(os.environ),
        log_path=os.path.join(lab.kube.directory, "kubelet.log"),
        pid_path=pid_path,
    )


def start_kube_controllers(lab: LabState) -> int:
    """Start the lab's one ``calico-kube-controllers`` unless it runs; returns its pid."""
    assert lab.kube is not None
    pid_path = os.path.join(lab.kube.directory, "kube-controllers.pid")
    pid = kernel.read_pid(pid_path)
    if pid is not None and kernel.alive(pid):
        return pid
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "DATASTORE_TYPE": "etcdv3",
        "KUBECONFIG": lab.kube.kubeconfig,
        "ETCD_ENDPOINTS": lab.host_endpoints,
        "POD_NAME": "calico-kube-controllers",
        "LEADER_ELECTION_NAMESPACE": "kube-system",
    }
    status = os.path.join(lab.kube.directory, "kube-controllers-status.json")
    return kernel.start_daemon(
        [executable("calico-kube-controllers"), "--status-file", status],
        namespace=None,
        env=env,
        log_path=os.path.join(lab.kube.directory, "kube-controllers.log"),
        pid_path=pid_path,
    )


CONTROL_PLANE = ("kube-apiserver", "kube-controllers")


def _control_pid_path(lab: LabState, component: str) -> str:
    assert lab.kube is not None
    if component not in CONTROL_PLANE:
        raise LabError(f"{component!r}: not one of {', '.join(CONTROL_PLANE)}")
    return os.path.join(lab.kube.directory, f"{component}.pid")


def stop_control(lab: LabState, component: str, *, kill: bool = False) -> int | None:
    """Stop ``component`` (one of ``CONTROL_PLANE``): SIGKILL when ``kill`` (a crash: nothing
    is released, leases expire), else SIGTERM and SIGKILL after a grace time.  Returns the pid
    stopped (None: it was not running) once it is gone."""
    pid = kernel.read_pid(_control_pid_path(lab, component))
    if pid is None or not kernel.alive(pid):
        return None
    if kill:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    else:
        kernel.kill_tree([pid], grace=10.0)
    deadline = time.monotonic() + 10.0
    while kernel.alive(pid):
        if time.monotonic() > deadline:
            raise LabError(f"{component} (pid {pid}) still running 10 s after SIGKILL")
        time.sleep(0.02)
    return pid


def start_control(lab: LabState, component: str, timeout: float = 120.0) -> int:
    """Start ``component`` again as ``up`` did (unless it runs); returns its pid, for
    kube-apiserver once the API is ready."""
    _control_pid_path(lab, component)  # refuses an unknown name
    if component == "kube-controllers":
        return start_kube_controllers(lab)
    pid = start_apiserver(lab)
    _wait_api(lab, time.monotonic() + timeout)
    return pid


def start_control_plane(lab: LabState, progress: Progress, timeout: float = 120.0) -> LabState:
    """kube-apiserver, its relay and the kubeconfigs; returns once the API is ready, with the
    lab's new state (the nodes' calico-node then gets the node-side kubeconfig)."""
    kube = plan(lab)
    with lab_state.locked(lab.state_dir):
        current = lab_state.load(lab.state_dir) or lab
        lab = replace(current, kube=kube)
        lab_state.save(lab)
    progress(f"kubernetes: kube-apiserver in {kube.namespace} at {kube.address}:{kube.port}")
    _start_apiserver(lab, kube, secrets.token_hex(16))
    _wait_api(lab, time.monotonic() + timeout)
    progress(f"kubernetes: API ready; kubeconfig {kube.kubeconfig}")
    return lab


def start_pods(lab: LabState, progress: Progress, timeout: float = 120.0) -> LabState:
    """Start the pod runner; returns once every lab node is a Ready Node and the ``default``
    ServiceAccount exists."""
    assert lab.kube is not None
    progress("kubernetes: starting calico-kube-controllers and the pod runner")
    start_kube_controllers(lab)
    start_runner(lab)
    deadline = time.monotonic() + timeout
    missing = "no answer"
    while time.monotonic() < deadline:
        missing = asyncio.run(_cluster_ready(lab))
        if not missing:
            progress(f"kubernetes: {len(lab.nodes)} Nodes Ready")
            return lab
        time.sleep(0.2)
    raise LabError(
        f"kubernetes: {missing} (see {lab.kube.directory}/kubelet.log and kube-controllers.log)"
    )


def up(lab: LabState, progress: Progress, timeout: float = 120.0) -> LabState:
    """Both steps on a lab that is up (its calico-node then runs without Kubernetes)."""
    return start_pods(start_control_plane(lab, progress, timeout), progress, timeout)


# --- pods in Kubernetes mode ----------------------------------------------------------------


async def _wait_pod(
    kube: KubeClient, namespace: str, name: str, *, gone: bool, deadline: float
) -> dict[str, Any] | None:
    while time.monotonic() < deadline:
        try:
            pod = kube.to_wire(await kube.core.read_namespaced_pod(name, namespace))
        except Exception as error:
            failure = kube_error(f"read pod {namespace}/{name}", error)
            if gone and failure.not_found:
                return None
            raise failure from error
        status = pod.get("status") or {}
        if not gone and status.get("phase") == "Running" and status.get("podIP"):
            return pod
        await asyncio.sleep(0.1)
    raise LabError(f"pod {namespace}/{name}: not {'gone' if gone else 'Running'} in time")


async def _create_pod(
    lab: LabState, name: str, namespace: str, node: str, labels: Mapping[str, str], timeout: float
) -> dict[str, Any]:
    assert lab.kube is not None
    deadline = time.monotonic() + timeout
    async with await KubeClient.from_kubeconfig(lab.kube.kubeconfig) as kube:
        try:
            await kube.core.create_namespace({"metadata": {"name": namespace}})
        except Exception as error:
            if not kube_error(f"create namespace {namespace}", error).conflict:
                raise
        manifest = kubeobjects.pod_manifest(name, namespace, node, labels)
        while True:  # until the namespace's default ServiceAccount exists (admission needs it)
            try:
                await kube.core.create_namespaced_pod(namespace, manifest)
                break
            except Exception as error:
                failure = kube_error(f"create pod {namespace}/{name}", error)
                if "serviceaccount" not in failure.message or time.monotonic() > deadline:
                    raise LabError(str(failure)) from error
                await asyncio.sleep(0.1)
        pod = await _wait_pod(kube, namespace, name, gone=False, deadline=deadline)
        assert pod is not None
        return pod


def add_pod(
    state_dir: str, name: str, node: str, namespace: str, labels: Mapping[str, str],
    timeout: float = 60.0,
) -> PodState:  # fmt: skip
    """Create a Pod bound to ``node`` and wait until the runner has it Running with an IP."""
    lab = lab_state.load(state_dir)
    if lab is None or lab.kube is None:
        raise LabError(f"no Kubernetes lab in {state_dir}")
    lab_state.check_pod_name(name)
    lab_state.check_namespace_name(namespace)
    if node:
        lab.node(node)
    pod = asyncio.run(_create_pod(lab, name, namespace, node, labels, timeout))
    uid = str(pod["metadata"]["uid"])
    current = lab_state.load(state_dir)
    for recorded in current.pods if current else ():
        if recorded.uid == uid:
            return recorded
    raise LabError(f"pod {namespace}/{name} is Running but not in {state_dir}/state.json")


async def _delete_pod(lab: LabState, namespace: str, name: str, timeout: float) -> bool:
    assert lab.kube is not None
    async with await KubeClient.from_kubeconfig(lab.kube.kubeconfig) as kube:
        try:
            await kube.core.delete_namespaced_pod(name, namespace)
        except Exception as error:
            if kube_error(f"delete pod {namespace}/{name}", error).not_found:
                return False
            raise
        await _wait_pod(kube, namespace, name, gone=True, deadline=time.monotonic() + timeout)
    return True


def delete_pod(state_dir: str, pod: PodState, timeout: float = 60.0) -> bool:
    """Delete the Pod (graceful, as ``kubectl delete pod``) and wait until the runner has torn
    it down and removed it."""
    lab = lab_state.load(state_dir)
    if lab is None or lab.kube is None:
        raise LabError(f"no Kubernetes lab in {state_dir}")
    return asyncio.run(_delete_pod(lab, pod.namespace, pod.name, timeout))

"""Pods in the lab: a network namespace per pod, networked by the real ``calico`` CNI plugin run
the way a container runtime runs it.

What it is: a minimal CNI runtime (libcni's behaviour for one conflist): per node, a real
conflist (``<node dir>/net.d/10-calico.conflist``: the ``calico`` plugin with ``calico-ipam``,
``policy.type: k8s``); for each plugin of the list, the executable ``<CNI_PATH>/<type>`` is run
*inside the node's network namespace* with ``CNI_COMMAND``, ``CNI_CONTAINERID``, ``CNI_NETNS``,
``CNI_IFNAME``, ``CNI_ARGS`` (``K8S_POD_NAMESPACE``/``K8S_POD_NAME``, as kubelet passes) and
``CNI_PATH`` in the environment and the plugin's network configuration (with ``name``,
``cniVersion``, the runtime's ``args.cni.labels`` and, after the first plugin, ``prevResult``)
on stdin.  ADD results are cached (``<node dir>/cni-results``) so DEL gets its ``prevResult``,
as libcni does.  The node's agent socket goes in ``CALICO_AGENT_SOCKET`` (each lab node has its
own; a real node uses the default path).

Before a pod of a new namespace is added, the lab writes that namespace's Profile ``kns.<ns>``
as kube-controllers would (``pycalico.lab.store``).

What it is not: a container runtime (no image, no processes in the pod beyond what ``exec``
starts) or the CNI plugin.

Invariants: a failed ADD leaves no pod namespace and no state entry (the plugin itself undoes
its own work); ``delete`` is idempotent.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pycalico.lab import kernel, store
from pycalico.lab import state as lab_state
from pycalico.lab.cluster import LabError, agent_socket, executable
from pycalico.lab.state import LabState, NodeState, PodState

CNI_VERSION = "1.0.0"
INTERFACE = "eth0"


class CniFailure(LabError):
    def __init__(self, plugin: str, command: str, code: int, message: str, details: str) -> None:
        text = f"CNI {command} by {plugin!r} failed (code {code}): {message}"
        super().__init__(text + (f" ({details})" if details else ""))
        self.code = code


def conflist(lab: LabState, node: NodeState, *, kubeconfig: str = "") -> dict[str, Any]:
    """The node's network configuration list, as Calico's installer writes it: etcd flavour, or
    with ``kubeconfig`` also ``kubernetes.kubeconfig`` (the plugin reads the pod from the API)."""
    document: dict[str, Any] = {
        "name": lab_state.NETWORK_NAME,
        "cniVersion": CNI_VERSION,
        "plugins": [
            {
                "type": "calico",
                "log_level": "info",
                "log_file_path": os.path.join(node.directory, "log", "cni.log"),
                "datastore_type": "etcdv3",
                "etcd_endpoints": lab.node_endpoints,
                "nodename": node.name,
                # With an overlay, 0: the MTU Felix detected (the file), as Calico's manifests.
                "mtu": 0 if lab.encapsulation else 1500,
                "ipam": {
                    "type": "calico-ipam",
                    "assign_ipv4": "true",
                    "assign_ipv6": "true" if lab.ipv6 else "false",
                },
                "policy": {"type": "k8s"},
            }
        ],
    }
    if kubeconfig:
        document["plugins"][0]["kubernetes"] = {"kubeconfig": kubeconfig}
    return document


def conflist_path(node: NodeState) -> str:
    return os.path.join(node.directory, "net.d", "10-calico.conflist")


def write_conflist(lab: LabState, node: NodeState, document: dict[str, Any]) -> dict[str, Any]:
    path = conflist_path(node)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as file:
        json.dump(document, file, indent=2)
    return document


def host_interface(namespace: str, pod: str) -> str:
    """Calico's host-side veth name for a Kubernetes pod (reference §6.3 step 7)."""
    return "cali" + hashlib.sha1(f"{namespace}.{pod}".encode()).hexdigest()[:11]


def endpoint_name(node: str, pod: str, interface: str = INTERFACE) -> str:
    """Calico's WorkloadEndpoint name ``<node>-k8s-<pod>-<iface>``, dashes doubled in parts."""
    return "-".join(part.replace("-", "--") for part in (node, "k8s", pod, interface))


def _result_path(node: NodeState, container_id: str) -> str:
    return os.path.join(
        node.directory, "cni-results", f"{lab_state.NETWORK_NAME}-{container_id}-{INTERFACE}"
    )


def _invoke(
    node: NodeState,
    plugin: Mapping[str, Any],
    command: str,
    env: Mapping[str, str],
) -> dict[str, Any] | None:
    binary = os.path.join(env["CNI_PATH"], str(plugin["type"]))
    if not os.access(binary, os.X_OK):
        raise LabError(f"CNI plugin {plugin['type']!r} not found in {env['CNI_PATH']}")
    done = subprocess.run(
        ["nsenter", f"--net={kernel.NETNS_DIR}/{node.namespace}", binary],
        input=json.dumps(plugin),
        env={**env, "CNI_COMMAND": command},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout.strip()
    if done.returncode != 0:
        try:
            error = json.loads(output)
        except ValueError:
            error = {"code": 999, "msg": output or done.stderr.strip(), "details": ""}
        raise CniFailure(
            str(plugin["type"]),
            command,
            int(error.get("code", 999)),
            str(error.get("msg", "")),
            str(error.get("details", "")),
        )
    if command != "ADD" or not output:
        return None
    result: dict[str, Any] = json.loads(output)
    return result


def _network_configs(
    document: Mapping[str, Any], labels: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Each plugin's stdin, as libcni builds it: the list's name and version inserted, and the
    runtime's ``args`` (here the pod labels, CNI conventions' ``args.cni.labels``)."""
    configs = []
    for plugin in document["plugins"]:
        config = dict(plugin)
        config["name"] = document["name"]
        config["cniVersion"] = document["cniVersion"]
        if labels:
            config["args"] = {
                "cni": {"labels": [{"key": k, "value": v} for k, v in sorted(labels.items())]}
            }
        configs.append(config)
    return configs


def _environment(
    node: NodeState, netns: str, container_id: str, pod: str, namespace: str, uid: str = ""
) -> dict[str, str]:
    bin_dir = os.path.dirname(executable("calico"))
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": f"{kernel.NETNS_DIR}/{netns}",
        "CNI_IFNAME": INTERFACE,
        "CNI_PATH": bin_dir,
        "CNI_ARGS": (
            f"IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={pod};"
            f"K8S_POD_INFRA_CONTAINER_ID={container_id}"
        ),
        "CALICO_AGENT_SOCKET": agent_socket(node),
        "CALICO_MTU_FILE": os.path.join(node.directory, "mtu"),
    }
    if uid:
        env["CNI_ARGS"] += f";K8S_POD_UID={uid}"
    return env


def _addresses(result: Mapping[str, Any]) -> tuple[str, str]:
    ipv4 = ipv6 = ""
    for entry in result.get("ips", []):
        address = str(entry.get("address", "")).split("/")[0]
        if ":" in address:
            ipv6 = ipv6 or address
        elif address:
            ipv4 = ipv4 or address
    return ipv4, ipv6


@dataclass(frozen=True)
class PodSpec:
    name: str
    node: str
    namespace: str = "default"
    labels: dict[str, str] = field(default_factory=dict)


def _ensure_profiles(lab: LabState, namespaces: Sequence[str]) -> None:
    manifests = [store.namespace_profile(ns) for ns in sorted(set(namespaces))]
    store.call(lab.host_endpoints, lambda s: store.apply_all(s, manifests))


def network(
    lab: LabState,
    spec: PodSpec,
    *,
    uid: str = "",
    document: dict[str, Any] | None = None,
    runtime_labels: bool = True,
) -> PodState:
    """Create the pod's namespace and run CNI ADD of ``document`` (default: the etcd-mode
    conflist) for it; ``uid`` (a Kubernetes Pod's) goes into ``CNI_ARGS`` as ``K8S_POD_UID``;
    ``runtime_labels``: hand the labels to the plugin as ``args.cni.labels``.  The state file is
    not touched (the caller records the pod)."""
    node = lab.node(spec.node)
    netns = lab_state.pod_netns(lab.prefix, spec.name)
    container_id = uuid.uuid4().hex + uuid.uuid4().hex  # 64 hex, like a runtime's sandbox ID
    document = write_conflist(lab, node, document or conflist(lab, node))
    kernel.add_namespace(netns)
    env = _environment(node, netns, container_id, spec.name, spec.namespace, uid)
    previous: dict[str, Any] | None = None
    try:
        for config in _network_configs(document, spec.labels if runtime_labels else {}):
            if previous is not None:
                config["prevResult"] = previous
            previous = _invoke(node, config, "ADD", env) or previous
    except BaseException:
        kernel.delete_namespace(netns)
        raise
    assert previous is not None
    path = _result_path(node, container_id)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as file:
        json.dump(previous, file)
    ipv4, ipv6 = _addresses(previous)
    return PodState(
        name=spec.name,
        node=node.name,
        namespace=spec.namespace,
        netns=netns,
        container_id=container_id,
        labels=dict(spec.labels),
        ipv4=ipv4,
        ipv6=ipv6,
        interface=host_interface(spec.namespace, spec.name),
        workload_endpoint=endpoint_name(node.name, spec.name),
        uid=uid,
    )


def add(state_dir: str, specs: Sequence[PodSpec], *, parallel: int = 8) -> list[PodState]:
    """Add pods (concurrently, as a runtime starting several sandboxes would)."""
    lab = cluster_state(state_dir)
    seen: set[str] = set()
    for spec in specs:
        lab_state.check_pod_name(spec.name)
        lab_state.check_namespace_name(spec.namespace)
        lab.node(spec.node)
        if spec.name in seen or any(pod.name == spec.name for pod in lab.pods):
            raise LabError(f"pod {spec.name!r} already exists")
        seen.add(spec.name)
    _ensure_profiles(lab, [spec.namespace for spec in specs])
    added: list[PodState] = []
    errors: list[BaseException] = []

    def one(spec: PodSpec) -> None:
        try:
            added.append(network(lab, spec))
        except BaseException as error:  # collected; the others still finish
            errors.append(error)

    with ThreadPoolExecutor(max_workers=max(1, parallel)) as pool:
        list(pool.map(one, specs))
    with lab_state.locked(state_dir):
        current = cluster_state(state_dir)
        for pod in added:
            current = current.with_pod(pod)
        lab_state.save(current)
    if errors:
        raise errors[0]
    return sorted(added, key=lambda pod: [spec.name for spec in specs].index(pod.name))


def delete(state_dir: str, name: str) -> bool:
    """CNI DEL, then remove the pod's namespace; False when there was no such pod."""
    lab = cluster_state(state_dir)
    try:
        pod = lab.pod(name)
    except KeyError:
        return False
    unnetwork(lab, pod)
    with lab_state.locked(state_dir):
        lab_state.save(cluster_state(state_dir).without_pod(name))
    return True


def unnetwork(lab: LabState, pod: PodState, document: dict[str, Any] | None = None) -> None:
    """CNI DEL (with the cached ADD result as ``prevResult``), then remove the pod's namespace
    and the cached result; the state file is not touched."""
    node = lab.node(pod.node)
    document = document or conflist(lab, node)
    env = _environment(node, pod.netns, pod.container_id, pod.name, pod.namespace, pod.uid)
    path = _result_path(node, pod.container_id)
    previous: dict[str, Any] | None = None
    try:
        with open(path) as file:
            previous = json.load(file)
    except (OSError, ValueError):
        previous = None
    for config in reversed(_network_configs(document, pod.labels)):
        if previous is not None:
            config["prevResult"] = previous
        _invoke(node, config, "DEL", env)
    kernel.delete_namespace(pod.netns)
    if os.path.exists(path):
        os.unlink(path)


def cluster_state(state_dir: str) -> LabState:
    lab = lab_state.load(state_dir)
    if lab is None:
        raise LabError(f"no lab is up ({state_dir}/state.json is missing); run `calico-lab up`")
    return lab


def exec_argv(lab: LabState, pod: str, command: Sequence[str]) -> list[str]:
    """The command line that runs ``command`` inside the pod's network namespace."""
    netns = lab.pod(pod).netns
    return ["nsenter", f"--net={kernel.NETNS_DIR}/{netns}", *command]

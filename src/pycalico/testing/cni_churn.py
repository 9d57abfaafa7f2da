"""Concurrent pod ADD/DEL against a calico-lab node, done as a container runtime does it.

What it is: ``churn`` runs, ``parallel`` at a time, ``count`` sandboxes on one node: a fresh
netns, CNI ADD of the lab's conflist; then CNI DEL (in reverse plugin order) and the netns
removed.  As kubelet/containerd do, a failed ADD is followed by a DEL, and a DEL is retried
(with a short backoff, up to ``del_deadline`` s) until it succeeds: the CNI spec requires DEL to
succeed once the plugin can work again.  ``ChurnResult`` counts what happened.

What it is not: the lab's own pod management (``pycalico.lab.pods``, whose state file these
sandboxes never enter) nor a checker: the caller checks IPAM and interfaces afterwards.

Invariants: every netns created here is deleted before ``churn`` returns, whatever failed.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from threading import Lock

from pycalico.lab import kernel, pods
from pycalico.lab import state as lab_state
from pycalico.lab.state import LabState, NodeState


@dataclass
class ChurnResult:
    added: int = 0
    add_failed: int = 0
    deleted: int = 0
    del_retries: int = 0
    del_gave_up: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: Lock = field(default_factory=Lock)

    def count(self, name: str, amount: int = 1) -> None:
        with self.lock:
            setattr(self, name, getattr(self, name) + amount)


def _delete(
    node: NodeState,
    configs: list[dict[str, object]],
    env: dict[str, str],
    result: ChurnResult,
    deadline: float,
) -> None:
    ends = time.monotonic() + deadline
    while True:
        try:
            for config in reversed(configs):
                pods._invoke(node, config, "DEL", env)
            result.count("deleted")
            return
        except pods.CniFailure as error:
            if time.monotonic() > ends:
                with result.lock:
                    result.del_gave_up.append(f"{env['K8S_POD_NAME']}: {error}")
                return
            result.count("del_retries")
            time.sleep(0.5)


def _one(lab: LabState, node: NodeState, name: str, result: ChurnResult, deadline: float) -> None:
    netns = lab_state.pod_netns(lab.prefix, name)
    container_id = uuid.uuid4().hex + uuid.uuid4().hex
    configs: list[dict[str, object]] = list(pods._network_configs(pods.conflist(lab, node), {}))
    env = pods._environment(node, netns, container_id, name, "churn")
    env["K8S_POD_NAME"] = name
    kernel.add_namespace(netns)
    try:
        previous: dict[str, object] | None = None
        try:
            for config in configs:
                if previous is not None:
                    config["prevResult"] = previous
                previous = pods._invoke(node, config, "ADD", env) or previous
            result.count("added")
        except pods.CniFailure as error:
            result.count("add_failed")
            with result.lock:
                result.errors.append(str(error))
        _delete(node, configs, env, result, deadline)
    finally:
        kernel.delete_namespace(netns)


def churn(
    lab: LabState,
    node_name: str,
    count: int,
    *,
    parallel: int = 16,
    prefix: str = "churn",
    del_deadline: float = 90.0,
) -> ChurnResult:
    """``count`` sandboxes added and deleted on ``node_name``, ``parallel`` at a time."""
    node = lab.node(node_name)
    result = ChurnResult()
    names = [f"{prefix}{i}" for i in range(count)]
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for future in [pool.submit(_one, lab, node, n, result, del_deadline) for n in names]:
            future.result()
    return result

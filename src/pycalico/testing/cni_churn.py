"""Concurrent pod ADD/DEL against a calico-lab node, done as a container runtime does it.

What it is: ``churn`` runs, ``parallel`` at a time, ``count`` sandboxes on one node: a fresh
netns, CNI ADD of the lab's conflist; then CNI DEL (in reverse plugin order) and the netns
removed.  As kubelet/containerd do, a failed ADD is followed by a DEL, and a DEL is retried
(with a short backoff, up to ``del_deadline`` s) until it succeeds: the CNI spec requires DEL to
succeed once the plugin can work again.  ``ChurnResult`` counts what happened.

What it is not: the lab's own pod management (``pycalico.lab.pods``, whose state file these
sandboxes never enter) nor a checker: the caller checks IPAM and interfaces afterwards.

``kill_plugins`` is the other fault of the churn: it SIGKILLs, at random points, the
``calico``/``calico-ipam`` plugin processes this process spawned (a runtime's plugin dying
mid-call), until told to stop; its choices come from the seeded ``random.Random`` it is given.

Invariants: every netns created here is deleted before ``churn`` returns, whatever failed.
"""

from __future__ import annotations

import os
import random
import signal
import threading
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


PLUGINS = ("calico", "calico-ipam")


def plugin_processes(parent: int | None = None) -> list[int]:
    """The children of ``parent`` (default: this process) that are a CNI plugin (``nsenter``
    has exec'd the plugin, a Python script: its name is one of the interpreter's arguments).
    Each of ``churn``'s threads (or a pod runner's) forks its own, and ``/proc`` lists a child
    under the thread that forked it."""
    found = []
    parent = os.getpid() if parent is None else parent
    try:
        tasks = os.listdir(f"/proc/{parent}/task")
    except OSError:  # the parent is gone
        return []
    for task in tasks:
        try:
            with open(f"/proc/{parent}/task/{task}/children") as handle:
                children = [int(word) for word in handle.read().split()]
        except OSError:
            continue
        found += [pid for pid in children if _is_plugin(pid)]
    return found


def _is_plugin(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            words = handle.read().split(b"\0")[:3]
    except OSError:
        return False
    return any(os.path.basename(word.decode(errors="replace")) in PLUGINS for word in words)


def kill_plugins(
    chance: random.Random, stop: threading.Event, pause: tuple[float, float] = (0.05, 0.5)
) -> list[str]:
    """Until ``stop`` is set: wait a random pause, SIGKILL one random running plugin.  Returns
    what was killed (``pid name``), for the report."""
    killed = []
    while not stop.wait(chance.uniform(*pause)):
        running = sorted(plugin_processes())
        if not running:
            continue
        pid = chance.choice(running)
        name = kernel.command_name(pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # it finished meanwhile: not a kill
            continue
        killed.append(f"{pid} {name}")
    return killed


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

"""Policy, pod and label churn in a Kubernetes calico-lab, and the reachability it must end in.

What it is:

* ``World``: what Kubernetes holds after each step — namespace labels, NetworkPolicies of two
  shapes (``Policy``: the pods with label ``role=<select>`` accept ingress only from namespaces
  labelled ``allow_from``, or from nothing), and every pod's namespace and labels; ``reachable``
  is the TCP verdict Kubernetes' NetworkPolicy semantics give a pod pair.  Pure.
* ``Churn``: a thread taking random steps (``seed``; ``next_kind`` forces the next one; no
  random step deletes a pod in ``keep``) in the lab, as a user and the workload
  controllers would: ``kubectl apply``/``delete`` of NetworkPolicies, ``kubectl label`` of
  namespaces and pods, pods created and deleted through the lab (``pycalico.lab.kube``).  A
  step that fails (the API server away) is retried until it succeeds or ``STEP_DEADLINE``
  passes, so the world stays known; ``World`` changes only once a step has succeeded.
* ``differences``: ``pycalico.kubecontrollers.compare.differences`` on the lab (its kubeconfig
  and etcd): every way Calico's data differs from what Kubernetes says it should be.

What it is not: the fault (the caller kills what it drills), the steady traffic
(``pycalico.testing.faults``) or a packet checker (``pycalico.netns.connectivity``).

Invariants: only churn pods (``<pod_prefix><n>``, role ``churn`` or ``idle``) are created,
relabelled or deleted, and only policies named ``churn-<n>``; at most ``MAX_PODS`` churn pods live at once; ``stop`` returns once the
step under way has finished (or given up), so ``world`` is then what Kubernetes holds.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pycalico.datastore.etcd import EtcdKVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.k8s.client import KubeClient
from pycalico.kubecontrollers.compare import differences as compare_differences
from pycalico.lab import kube
from pycalico.lab import state as lab_state
from pycalico.lab.state import LabState

MAX_PODS = 4
POLICY_NAMES = 3  # churn-0 .. churn-2 per namespace
STEP_DEADLINE = 90.0
RETRY_PAUSE = 0.25
REQUEST_TIMEOUT = "10s"
CHURN = ("churn", "idle")  # the roles of churn pods (policies select "churn")


@dataclass(frozen=True)
class Policy:
    """Ingress to pods labelled ``role=<select>`` only from namespaces whose labels include
    ``allow_from`` (``None``: from nothing, a default deny for those pods)."""

    select: str
    allow_from: tuple[str, str] | None


@dataclass(frozen=True)
class Pod:
    namespace: str
    node: str
    labels: Mapping[str, str]


@dataclass
class World:
    namespaces: dict[str, dict[str, str]]
    pods: dict[str, Pod] = field(default_factory=dict)
    policies: dict[tuple[str, str], Policy] = field(default_factory=dict)  # (namespace, name)

    def reachable(self, source: str, destination: str) -> bool:
        """Kubernetes' verdict for TCP from ``source`` to ``destination`` (pod names)."""
        target = self.pods[destination]
        selecting = [
            policy
            for (namespace, _), policy in self.policies.items()
            if namespace == target.namespace and target.labels.get("role") == policy.select
        ]
        if not selecting:
            return True
        labels = self.namespaces[self.pods[source].namespace]
        return any(
            policy.allow_from is not None
            and labels.get(policy.allow_from[0]) == policy.allow_from[1]
            for policy in selecting
        )

    def expected(self) -> dict[tuple[str, str], bool]:
        """Every ordered pair of pods and its verdict."""
        return {
            (source, destination): self.reachable(source, destination)
            for source in self.pods
            for destination in self.pods
            if source != destination
        }

    def churn_pods(self) -> list[str]:
        return sorted(name for name, pod in self.pods.items() if pod.labels.get("role") in CHURN)


def policy_manifest(namespace: str, name: str, policy: Policy) -> str:
    ingress = "[]"
    if policy.allow_from is not None:
        key, value = policy.allow_from
        ingress = f'[{{from: [{{namespaceSelector: {{matchLabels: {{{key}: "{value}"}}}}}}]}}]'
    return (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        f'metadata: {{name: {name}, namespace: "{namespace}"}}\n'
        f'spec:\n  podSelector: {{matchLabels: {{role: "{policy.select}"}}}}\n'
        f"  policyTypes: [Ingress]\n  ingress: {ingress}\n"
    )


# --- steps -----------------------------------------------------------------------------------


class StepFailed(AssertionError):
    """A churn step did not succeed within ``STEP_DEADLINE``."""


def kubectl(lab: LabState, *args: str) -> None:
    done = kube.kubectl(lab, f"--request-timeout={REQUEST_TIMEOUT}", *args, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)}: {(done.stderr or done.stdout).strip()}")


@dataclass
class Churn:
    lab: LabState
    world: World
    directory: Path  # manifests are written here
    seed: int
    nodes: list[str]
    pod_prefix: str = "c"
    steps: int = 0
    failed_attempts: int = 0  # attempts that met an API (or controller) away, then retried
    log: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    current: str = ""  # the step under way ("add pod c3 ...")
    next_kind: str = ""  # the kind of the next step, when set (then cleared)
    keep: set[str] = field(default_factory=set)  # pods no random step deletes
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _started: float = field(default_factory=time.monotonic)
    _next_pod: int = 0

    def retry(self, what: str, attempt: Callable[[], None]) -> None:
        """Call ``attempt()`` until it returns without raising."""
        deadline = time.monotonic() + STEP_DEADLINE
        self.current = what
        while True:
            try:
                attempt()
                self.steps += 1
                self.note(what)
                self.current = ""
                return
            except Exception as error:  # the API server away; anything else shows at the deadline
                self.failed_attempts += 1
                if time.monotonic() > deadline:
                    raise StepFailed(f"{what}: {error}") from error
                time.sleep(RETRY_PAUSE)

    def note(self, what: str) -> None:
        """``what`` in the log, with the seconds since the churn was made."""
        self.log.append(f"{time.monotonic() - self._started:6.1f} s  {what}")

    def apply_policy(self, namespace: str, name: str, policy: Policy) -> None:
        path = self.directory / f"{namespace}-{name}.yaml"
        path.write_text(policy_manifest(namespace, name, policy))
        self.retry(
            f"apply {namespace}/{name} {policy}",
            lambda: kubectl(self.lab, "apply", "-f", str(path)),
        )
        self.world.policies[(namespace, name)] = policy

    def delete_policy(self, namespace: str, name: str) -> None:
        args = ("delete", "networkpolicy", name, "-n", namespace, "--ignore-not-found")
        self.retry(f"delete {namespace}/{name}", lambda: kubectl(self.lab, *args))
        self.world.policies.pop((namespace, name), None)

    def label_namespace(self, namespace: str, key: str, value: str) -> None:
        args = ("label", "namespace", namespace, f"{key}={value}", "--overwrite")
        self.retry(f"label namespace {namespace} {key}={value}", lambda: kubectl(self.lab, *args))
        self.world.namespaces[namespace][key] = value

    def label_pod(self, name: str, role: str) -> None:
        pod = self.world.pods[name]
        args = ("label", "pod", name, "-n", pod.namespace, f"role={role}", "--overwrite")
        self.retry(f"label pod {name} role={role}", lambda: kubectl(self.lab, *args))
        self.world.pods[name] = Pod(pod.namespace, pod.node, {**pod.labels, "role": role})

    def add_pod(self, name: str, namespace: str, node: str, role: str) -> None:
        labels = {"role": role}
        assert name not in self.world.pods, f"pod {name} exists already"

        def attempt() -> None:
            if self._recorded(name):  # an earlier attempt created it; the runner networked it
                return
            kube.add_pod(self.lab.state_dir, name, node, namespace, labels, timeout=30.0)

        self.retry(f"add pod {name} ({namespace}, {node}, role={role})", attempt)
        self.world.pods[name] = Pod(namespace, node, labels)

    def delete_pod(self, name: str) -> None:
        def attempt() -> None:
            current = lab_state.load(self.lab.state_dir)
            found = [pod for pod in (current.pods if current else ()) if pod.name == name]
            if found:
                kube.delete_pod(self.lab.state_dir, found[0], timeout=30.0)
            assert not self._recorded(name), f"pod {name} still in the lab's state"

        self.retry(f"delete pod {name}", attempt)
        self.world.pods.pop(name, None)

    def _recorded(self, name: str) -> bool:
        current = lab_state.load(self.lab.state_dir)
        return any(pod.name == name and pod.uid for pod in (current.pods if current else ()))

    # --- the loop ---------------------------------------------------------------------------

    def step(self, rng: random.Random) -> None:
        """One random step (its kind weighted so that policies exist most of the time)."""
        namespaces = sorted(self.world.namespaces)
        churn = self.world.churn_pods()
        deletable = [name for name in churn if name not in self.keep]
        kinds = ["apply", "apply", "delete", "label-namespace", "label-pod", "add", "add"]
        kinds.append("delete-pod")
        kind, forced = rng.choice(kinds), bool(self.next_kind)
        if forced:
            kind, self.next_kind = self.next_kind, ""
        namespace = rng.choice(namespaces)
        full = kind == "add" and len(churn) >= MAX_PODS and not forced  # forced: one more
        if full or (kind == "label-pod" and not churn) or (kind == "delete-pod" and not deletable):
            kind = "apply"
        if kind == "apply":
            allow = ("access", "yes") if rng.random() < 0.6 else None
            self.apply_policy(
                namespace, f"churn-{rng.randrange(POLICY_NAMES)}", Policy("churn", allow)
            )
        elif kind == "delete":
            self.delete_policy(namespace, f"churn-{rng.randrange(POLICY_NAMES)}")
        elif kind == "label-namespace":
            current = self.world.namespaces[namespace].get("access")
            self.label_namespace(namespace, "access", "no" if current == "yes" else "yes")
        elif kind == "label-pod":
            name = rng.choice(churn)
            self.label_pod(
                name, "idle" if self.world.pods[name].labels["role"] == "churn" else "churn"
            )
        elif kind == "add":
            name = f"{self.pod_prefix}{self._next_pod}"
            self._next_pod += 1
            role = "churn" if rng.random() < 0.75 else "idle"
            self.add_pod(name, namespace, rng.choice(self.nodes), role)
        else:
            self.delete_pod(rng.choice(deletable))

    def run(self) -> None:
        rng = random.Random(self.seed)
        try:
            while not self._stop.is_set():
                self.step(rng)
        except Exception as error:  # reported by the caller (the churn stops at its first)
            self.errors.append(f"seed {self.seed}: {error!r}")

    def top_up(self, rng: random.Random) -> None:
        """A churn pod labelled ``role=churn`` in every namespace that has none (so the final
        policies have pods to select)."""
        for namespace in sorted(self.world.namespaces):
            pods = self.world.pods.values()
            if not any(p.namespace == namespace and p.labels.get("role") == "churn" for p in pods):
                name = f"{self.pod_prefix}{self._next_pod}"
                self._next_pod += 1
                self.add_pod(name, namespace, rng.choice(self.nodes), "churn")

    def clean(self) -> None:
        """Delete every churn pod and churn policy (not the churn's namespace labels)."""
        for name in self.world.churn_pods():
            self.delete_pod(name)
        for namespace, name in sorted(self.world.policies):
            if name.startswith("churn-"):
                self.delete_policy(namespace, name)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="kube-churn", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """No new step; returns once the step under way has succeeded (or given up)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=STEP_DEADLINE + 30)
            if self._thread.is_alive():
                self.errors.append("the churn thread did not stop")


@contextmanager
def churning(churn: Churn) -> Iterator[Churn]:
    """``churn`` running on a thread; ``churn.stop()`` (also on the way out) ends it."""
    churn.start()
    try:
        yield churn
    finally:
        churn.stop()


# --- Calico's data against Kubernetes' -------------------------------------------------------


async def _differences(lab: LabState) -> list[str]:
    assert lab.kube is not None
    kv = EtcdKVStore(lab.host_endpoints.split(","), timeout=10.0)
    try:
        store = ResourceStore(kv)
        async with await KubeClient.from_kubeconfig(lab.kube.kubeconfig) as client:
            found = await compare_differences(client, store)
        endpoints = {item.metadata.name for item in (await store.list("WorkloadEndpoint")).items}
    finally:
        await kv.close()
    current = lab_state.load(lab.state_dir)
    pods = {pod.workload_endpoint for pod in (current.pods if current else ())}
    found += [f"WorkloadEndpoint {name}: no pod" for name in sorted(endpoints - pods)]
    found += [f"WorkloadEndpoint {name}: missing" for name in sorted(pods - endpoints)]
    return found


def differences(lab: LabState) -> list[str]:
    """Every difference between Calico's data and Kubernetes' (``compare.differences``), and
    every WorkloadEndpoint without its networked pod or pod without its WorkloadEndpoint
    (empty: in sync)."""
    return asyncio.run(_differences(lab))

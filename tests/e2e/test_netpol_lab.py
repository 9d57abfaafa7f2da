"""Kubernetes NetworkPolicy scenarios in the Kubernetes lab, enforced on real packets.

Our own versions of the scenarios of Kubernetes' network-policy e2e suite
(kubernetes/kubernetes ``test/e2e/network/netpol``): pods in three namespaces created with
kubectl, each NetworkPolicy applied with kubectl (kube-controllers turns it into a Calico policy,
Felix on each node programs it), and the whole TCP (and for one scenario UDP) reachability matrix
checked with real packets until it matches, within a generous bound.  A label change on a pod and
on a namespace moves it in or out of a policy: measured from the label write until the packets
agree.  One lab; scenarios applied and removed in sequence.  For every probe of every scenario's
matrix, ``calicoctl explain``'s verdict (computed in process, as the command does) must be what
the packet did, and ``--verify`` must find the kernel deciding each side with the rule explain
named (docs/explain.md).
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from pycalico.ctl.explain import load_cluster
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.felix.calc.explain import Cluster
from pycalico.lab.state import PodState
from pycalico.netns.connectivity import ConnectivityChecker, Endpoint, Probe
from pycalico.testing.explain_check import explained_and_verified
from tests.e2e.conftest import BIN, LabRunner

pytestmark = [pytest.mark.root, pytest.mark.slow]

PORTS = (80, 81)
POD = """\
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: "{ns}", labels: {{pod: {label}}}}}
spec:
  nodeName: {node}
  containers:
  - name: main
    image: registry.k8s.io/pause:3.10
    ports: [{{name: serve-80, containerPort: 80}}, {{name: serve-81, containerPort: 81}}]
"""
# (pod name, namespace, pod label); names unique across namespaces (the lab's pod names)
PODS = (("x-a", "x", "a"), ("x-b", "x", "b"), ("y-a", "y", "a"), ("y-b", "y", "b"),
        ("z-a", "z", "a"))  # fmt: skip
ENFORCE_DEADLINE = 20.0  # policy applied -> matrix as expected (generous; usually < 2 s)
LABEL_BOUND = 5.0  # generous; the issue asks 2 s (printed)


def kubectl(lab: LabRunner, *args: str, stdin: str = "") -> str:
    state = lab.state()
    assert state.kube is not None
    done = subprocess.run(
        [str(BIN / "kubectl"), f"--kubeconfig={state.kube.kubeconfig}", *args],
        input=stdin, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def calicoctl(lab: LabRunner, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**lab.env, "DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": lab.state().host_endpoints}
    return subprocess.run(
        [str(BIN / "calicoctl"), *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def policy(name: str, spec: str, namespace: str = "x") -> str:
    return (
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n"
        f'metadata: {{name: {name}, namespace: "{namespace}"}}\nspec:\n{spec}'
    )


Reach = Callable[[str, str, int], bool]  # source pod, destination pod, port -> reachable


def ns(pod: str) -> str:
    return pod.split("-")[0]


class Matrix:
    """Servers on TCP 80/81 and UDP 80 in every pod; probes every pod to every other."""

    def __init__(self, pods: list[PodState]) -> None:
        self.names = [p.name for p in pods]
        self.checker = ConnectivityChecker(
            {p.name: Endpoint(p.netns, p.ipv4) for p in pods}, probe_timeout=0.4
        )
        self.checker.serve(self.names, tcp_ports=PORTS, udp_ports=(80,))

    def expect(self, reach: Reach, protocol: str = "tcp") -> dict[Probe, bool]:
        ports = PORTS if protocol == "tcp" else (80,)
        return {
            Probe(s, d, port, protocol): reach(s, d, port)  # type: ignore[arg-type]
            for s in self.names
            for d in self.names
            if s != d
            for port in ports
        }

    def check(
        self, reach: Reach, protocol: str = "tcp", deadline: float = ENFORCE_DEADLINE
    ) -> float:
        return self.checker.check(self.expect(reach, protocol), deadline=deadline)

    def explain(self, lab: LabRunner, reach: Reach, protocol: str = "tcp") -> None:
        """After ``check``: explain and --verify agree with the packets for every probe."""
        cluster = asyncio.run(_cluster(lab))
        wrong = [
            problem
            for probe, delivered in self.expect(reach, protocol).items()
            if (problem := explained_and_verified(
                cluster, f"{ns(probe.source)}/{probe.source}",
                f"{ns(probe.destination)}/{probe.destination}", protocol, probe.port, delivered))
        ]  # fmt: skip
        assert not wrong, "\n".join(wrong)


async def _cluster(lab: LabRunner) -> Cluster:
    kv = EtcdKVStore(lab.state().host_endpoints.split(","))
    try:
        return await load_cluster(ResourceStore(kv))
    finally:
        await kv.close()


@pytest.fixture
def cluster(lab: LabRunner) -> Iterator[tuple[LabRunner, Matrix]]:
    lab.run("up", "--nodes", "2", "--kubernetes")
    for name in ("x", "y", "z"):
        kubectl(lab, "create", "namespace", name)
        kubectl(lab, "label", "namespace", name, f"ns={name}")
    manifests = "---\n".join(
        POD.format(name=name, ns=namespace, label=label, node=f"node{1 + i % 2}")
        for i, (name, namespace, label) in enumerate(PODS)
    )
    kubectl(lab, "apply", "-f", "-", stdin=manifests)
    for name, namespace, _ in PODS:
        kubectl(lab, "wait", "-n", namespace, "--for=condition=Ready", "--timeout=60s",
                f"pod/{name}")  # fmt: skip
    pods = [p for p in lab.state().pods if p.name in {n for n, _, _ in PODS}]
    assert len(pods) == len(PODS)
    matrix = Matrix(pods)
    try:
        yield lab, matrix
    finally:
        matrix.checker.stop()


def scenario(
    lab: LabRunner, matrix: Matrix, manifest: str, reach: Reach, protocol: str = "tcp"
) -> None:
    kubectl(lab, "apply", "-f", "-", stdin=manifest)
    matrix.check(reach, protocol)
    matrix.explain(lab, reach, protocol)
    kubectl(lab, "delete", "networkpolicy", "--all", "-n", "x")


def test_network_policy_scenarios_on_real_packets(cluster: tuple[LabRunner, Matrix]) -> None:
    lab, matrix = cluster
    everything: Reach = lambda s, d, p: True  # noqa: E731
    matrix.check(everything)
    matrix.explain(lab, everything)

    # Default deny ingress in x: nothing reaches x's pods, not even from x.
    scenario(lab, matrix, policy("deny-ingress", "  podSelector: {}\n  policyTypes: [Ingress]\n"),
             lambda s, d, p: ns(d) != "x")  # fmt: skip
    # Allow from the same namespace only.
    scenario(lab, matrix, policy("same-ns", "  podSelector: {}\n  ingress: [{from: [{podSelector: {}}]}]\n"),
             lambda s, d, p: ns(d) != "x" or ns(s) == "x")  # fmt: skip
    # podSelector AND namespaceSelector in one peer: to x-a only from pod=b in ns=y.
    scenario(lab, matrix, policy("combined", "  podSelector: {matchLabels: {pod: a}}\n"
             "  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: \"y\"}}, podSelector: {matchLabels: {pod: b}}}]}]\n"),
             lambda s, d, p: d != "x-a" or s == "y-b")  # fmt: skip
    # Egress deny in x: x's pods reach nothing (each other neither).
    scenario(lab, matrix, policy("deny-egress", "  podSelector: {}\n  policyTypes: [Egress]\n"),
             lambda s, d, p: ns(s) != "x")  # fmt: skip
    # Ports: to x-a only TCP 81, by number; then by the container port's name.
    for port in ("81", "serve-81"):
        scenario(lab, matrix, policy("port", "  podSelector: {matchLabels: {pod: a}}\n"
                 f"  ingress: [{{ports: [{{port: {port}}}]}}]\n"),
                 lambda s, d, p: d != "x-a" or p == 81)  # fmt: skip
    # UDP: to x-a only UDP 80 (TCP 80 then blocked).
    udp = policy("udp", "  podSelector: {matchLabels: {pod: a}}\n"
                 "  ingress: [{ports: [{protocol: UDP, port: 80}]}]\n")  # fmt: skip
    kubectl(lab, "apply", "-f", "-", stdin=udp)
    matrix.check(lambda s, d, p: d != "x-a", "tcp")
    matrix.check(lambda s, d, p: True, "udp")
    matrix.explain(lab, lambda s, d, p: d != "x-a", "tcp")
    matrix.explain(lab, lambda s, d, p: True, "udp")
    kubectl(lab, "delete", "networkpolicy", "--all", "-n", "x")
    # ipBlock with except: to x-a from the pod range except y-a's address.
    y_a = next(p.ipv4 for p in lab.state().pods if p.name == "y-a")
    scenario(lab, matrix, policy("ipblock", "  podSelector: {matchLabels: {pod: a}}\n"
             f"  ingress: [{{from: [{{ipBlock: {{cidr: 10.65.0.0/16, except: [{y_a}/32]}}}}]}}]\n"),
             lambda s, d, p: d != "x-a" or s != "y-a")  # fmt: skip

    # Label changes: from namespaces ns=y to x-a; z labelled ns=y moves z-a in; y-a's pod label
    # changed moves it out of a podSelector-ed peer.
    kubectl(lab, "apply", "-f", "-", stdin=policy("from-y", "  podSelector: {matchLabels: {pod: a}}\n"
            "  ingress: [{from: [{namespaceSelector: {matchLabels: {ns: \"y\"}}, podSelector: {matchLabels: {pod: a}}}]}]\n"))  # fmt: skip
    matrix.check(lambda s, d, p: d != "x-a" or s == "y-a")
    start = time.monotonic()
    kubectl(lab, "label", "namespace", "z", "ns=y", "--overwrite")
    matrix.check(lambda s, d, p: d != "x-a" or s in ("y-a", "z-a"), deadline=10.0)
    namespace_seconds = time.monotonic() - start
    start = time.monotonic()
    kubectl(lab, "label", "pod", "-n", "y", "y-a", "pod=c", "--overwrite")
    matrix.check(lambda s, d, p: d != "x-a" or s == "z-a", deadline=10.0)
    pod_seconds = time.monotonic() - start
    matrix.explain(lab, lambda s, d, p: d != "x-a" or s == "z-a")
    print(f"label change enforced: namespace {namespace_seconds:.2f} s, pod {pod_seconds:.2f} s")
    assert namespace_seconds < LABEL_BOUND and pod_seconds < LABEL_BOUND, (
        namespace_seconds, pod_seconds)  # fmt: skip
    kubectl(lab, "delete", "networkpolicy", "--all", "-n", "x")
    matrix.check(lambda s, d, p: True)

    # kubectl delete node of a node with pods: kube-controllers' node controller removes its
    # Calico Node, WorkloadEndpoints and addresses; IPAM stays consistent.
    on_node2 = [p.name for p in lab.state().pods if p.node == "node2"]
    assert on_node2, "no pod on node2: the deletion proves nothing"
    kubectl(lab, "delete", "node", "node2")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and calicoctl(lab, "get", "node", "node2").returncode == 0:
        time.sleep(0.2)
    assert calicoctl(lab, "get", "node", "node2").returncode != 0, "Calico Node node2 still there"
    weps = calicoctl(lab, "get", "workloadendpoints", "-A", "-o", "wide")
    assert weps.returncode == 0 and "node2" not in weps.stdout, weps.stdout
    ipam = calicoctl(lab, "ipam", "check")
    assert ipam.returncode == 0, ipam.stdout + ipam.stderr

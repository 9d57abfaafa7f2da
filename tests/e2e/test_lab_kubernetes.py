"""calico-lab in Kubernetes mode end to end: the real kube-apiserver on the lab's etcd, the real
kubectl, the pod runner networking Pods with the real calico CNI, real packets between pods on
different nodes, and ``down`` after a killed ``up``."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pycalico.lab import kernel, kube, kubelet
from tests.e2e.conftest import BIN, LabRunner

pytestmark = [pytest.mark.root, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]

POD_YAML = """\
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {app}}}}}
spec:
  {node}containers: [{{name: main, image: registry.k8s.io/pause:3.10}}]
"""


def kubectl(lab: LabRunner, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    state = lab.state()
    assert state.kube is not None
    done = subprocess.run(
        [str(BIN / "kubectl"), f"--kubeconfig={state.kube.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stdout}{done.stderr}"
    return done


def calicoctl(lab: LabRunner, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "calicoctl"), *args],
        env={**lab.env, "DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": lab.state().host_endpoints},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def manifests(names: list[str], nodes: dict[str, str]) -> str:
    return "---\n".join(
        POD_YAML.format(
            name=name,
            app=name.split("-")[0],
            node=f"nodeName: {nodes[name]}\n  " if name in nodes else "",
        )
        for name in names
    )


def test_kubectl_pods_get_addresses_reach_each_other_and_release_them(lab: LabRunner) -> None:
    lab.run("up", "--nodes", "3", "--kubernetes")
    env = lab.run("env").stdout
    state = lab.state()
    assert state.kube is not None and f"KUBECONFIG={state.kube.kubeconfig}" in env
    nodes = json.loads(kubectl(lab, "get", "nodes", "-o", "json").stdout)["items"]
    assert {
        (n["metadata"]["name"], c["status"])
        for n in nodes
        for c in n["status"]["conditions"]
        if c["type"] == "Ready"
    } == {("node1", "True"), ("node2", "True"), ("node3", "True")}
    # Each node's calico-node reports to its Kubernetes Node (KUBECONFIG: the node-side one).
    kubectl(lab, "wait", "--for=condition=NetworkUnavailable=false", "--timeout=60s",
            "node/node1", "node/node2", "node/node3")  # fmt: skip

    # Two pods bound by the manifest, four left to the runner's scheduler.
    names = ["web-1", "web-2", "db-1", "db-2", "db-3", "cli-1"]
    kubectl(lab, "apply", "-f", "-", stdin=manifests(names, {"web-1": "node1", "web-2": "node3"}))
    kubectl(lab, "wait", "--for=condition=Ready", "--timeout=60s", *(f"pod/{n}" for n in names))
    wide = kubectl(lab, "get", "pods", "-o", "wide").stdout
    listed = json.loads(kubectl(lab, "get", "pods", "-o", "json").stdout)["items"]
    by_name = {pod["metadata"]["name"]: pod for pod in listed}
    assert set(by_name) == set(names)
    for name, pod in by_name.items():
        assert pod["status"]["phase"] == "Running", pod["status"]
        ip = pod["status"]["podIP"]
        assert ip.startswith("10.65.") and pod["status"]["podIPs"] == [{"ip": ip}]
        line = next(row for row in wide.splitlines() if row.startswith(name + " "))
        assert (
            "1/1" in line and "Running" in line and ip in line and pod["spec"]["nodeName"] in line
        )
    assert by_name["web-1"]["spec"]["nodeName"] == "node1"
    assert by_name["web-2"]["spec"]["nodeName"] == "node3"
    # The scheduler spreads: six pods over three nodes, two each.
    per_node = [p["spec"]["nodeName"] for p in listed]
    assert sorted(per_node.count(n) for n in ("node1", "node2", "node3")) == [2, 2, 2]
    assert len({p["status"]["podIP"] for p in listed}) == 6
    if kubelet.CNI_READS_API:  # the plugin read each Pod from the API and annotated it
        for pod in listed:
            annotation = pod["metadata"]["annotations"]["cni.projectcalico.org/podIP"]
            assert annotation.split("/")[0] == pod["status"]["podIP"], annotation

    # `pod add` in this mode makes a Pod too, in its own namespace.
    added = lab.run("pod", "add", "extra", "--node", "node2", "--namespace", "ns-a", "--labels",
                    "app=extra").stdout  # fmt: skip
    assert "pod extra on node2: 10.65." in added
    extra = json.loads(kubectl(lab, "get", "pod", "extra", "-n", "ns-a", "-o", "json").stdout)
    assert extra["metadata"]["labels"] == {"app": "extra"}
    assert extra["status"]["podIP"] in added
    workload = calicoctl(lab, "get", "workloadendpoints", "-n", "ns-a", "-o", "yaml").stdout
    assert "node2-k8s-extra-eth0" in workload and "kns.ns-a" in workload
    # The profiles are kube-controllers' (namespace and service-account controllers), one
    # process the lab runs: the namespace's labels as pcns.*, the account's as ksa.<ns>.<sa>.
    assert "ksa.ns-a.default" in workload
    controllers = kernel.read_pid(Path(state.kube.directory, "kube-controllers.pid"))
    assert kernel.alive(controllers)
    kubectl(lab, "label", "namespace", "ns-a", "team=blue")
    deadline = time.monotonic() + 30
    profile = ""
    while time.monotonic() < deadline and "pcns.team: blue" not in profile:
        profile = calicoctl(lab, "get", "profile", "kns.ns-a", "-o", "yaml").stdout
        time.sleep(0.1)
    assert "pcns.team: blue" in profile, profile + lab.logs()
    assert calicoctl(lab, "get", "profile", "ksa.ns-a.default").returncode == 0

    # Real packets, every pod to every other (most pairs across nodes), ICMP and TCP.
    check = lab.run("check", "--deadline", "30", check=False)
    assert check.returncode == 0, check.stdout[-3000:] + lab.logs()
    assert "84 of 84 probes reached their pod" in check.stdout
    ping = lab.run("exec", "web-1", "--", "ping", "-c1", "-W2", by_name["db-1"]["status"]["podIP"])
    assert "1 received" in ping.stdout

    # kubectl delete pod: CNI DEL, namespace gone, address released, Pod gone.
    gone_ip = by_name["web-1"]["status"]["podIP"]
    netns = next(p.netns for p in lab.state().pods if p.name == "web-1")
    kubectl(lab, "delete", "pod", "web-1", "--timeout=60s")
    assert "web-1" not in kubectl(lab, "get", "pods").stdout
    assert netns not in kernel.list_namespaces(lab.prefix)
    assert "web-1" not in {p.name for p in lab.state().pods}
    shown = calicoctl(lab, "ipam", "show", f"--ip={gone_ip}")
    assert "not assigned" in shown.stdout, shown.stdout + shown.stderr
    assert "node1-k8s-web--1-eth0" not in calicoctl(lab, "get", "wep", "-A").stdout
    ipam = calicoctl(lab, "ipam", "check")
    assert ipam.returncode == 0, ipam.stdout + ipam.stderr
    assert "pod extra deleted" in lab.run("pod", "del", "extra").stdout
    # The docs' example Pod (no node: the scheduler picks node1, which has one pod left).
    kubectl(lab, "apply", "-f", str(REPO / "examples" / "kubernetes" / "lab-pod.yaml"))
    kubectl(lab, "wait", "--for=condition=Ready", "--timeout=60s", "pod/web")
    web = json.loads(kubectl(lab, "get", "pod", "web", "-o", "json").stdout)
    assert web["spec"]["nodeName"] == "node1" and web["status"]["podIP"].startswith("10.65.")

    # A Pod force-deleted while the runner is down is torn down when the runner starts again.
    runner = kernel.read_pid(Path(state.kube.directory, "kubelet.pid"))
    kernel.kill_tree([runner] if runner else [], grace=5.0)
    assert not kernel.alive(runner)
    kubectl(lab, "delete", "pod", "web", "--force", "--grace-period=0")
    assert "web" in {p.name for p in lab.state().pods}  # nobody tore it down yet
    kube.start_runner(lab.state())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "web" in {p.name for p in lab.state().pods}:
        time.sleep(0.1)
    assert "web" not in {p.name for p in lab.state().pods}, lab.logs()
    assert f"{lab.prefix}-pod-web" not in kernel.list_namespaces(lab.prefix)
    ipam = calicoctl(lab, "ipam", "check")
    assert ipam.returncode == 0, ipam.stdout + ipam.stderr

    lab.run("down")
    assert lab.leftovers() == []


def test_down_after_up_killed_while_kubernetes_starts(lab: LabRunner) -> None:
    process = subprocess.Popen(
        [str(BIN / "calico-lab"), "up", "--nodes", "2", "--kubernetes"],
        env=lab.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pid_file = Path(lab.state_dir, "kube", "kube-apiserver.pid")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not pid_file.exists() and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert pid_file.exists(), "up never started kube-apiserver: the test proves nothing"
    assert kernel.alive(kernel.read_pid(pid_file))
    lab.run("down")
    assert lab.leftovers() == []

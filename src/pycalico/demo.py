"""``make demo``: a three-node Calico cluster on this machine, pods, policy, and proof.

What it does, printing every command before it runs (the real ``calico-lab`` and ``calicoctl``
executables, exactly as a user types them) with its output below:

1. ``calico-lab up --nodes 3 --kubernetes``: etcd, a fabric bridge and three node namespaces,
   each running calico-node (Felix, confd, BIRD, the CNI agent), plus kube-apiserver,
   calico-kube-controllers and the pod runner;
2. six pods in two namespaces (``shop``: web-1, web-2, db; ``tools``: probe-1, probe-2, admin)
   created with ``kubectl apply``, each networked by the ``calico`` CNI plugin;
3. the connectivity matrix (ICMP and TCP, every pod to every pod): everything reachable;
4. ``kubectl apply`` of a Kubernetes NetworkPolicy (only ``app=web`` may reach the database)
   and ``calicoctl apply`` of a GlobalNetworkPolicy (pods in ``tools`` other than ``role=admin`` may not open TCP
   connections into ``shop``);
5. the matrix again: exactly the expected cells blocked;
6. ``calico-lab down``, also after a failure or Ctrl-C.

Exit status 0 only when both matrices are exactly as expected.  The demo's lab has its own state
directory and namespace prefix, so it never touches a lab you started yourself.  What it is
not: a test suite (``tests/e2e`` has those) — but it fails loudly when the system is wrong.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.panel import Panel
from rich.rule import Rule

from pycalico.lab import matrix
from pycalico.lab import state as lab_state
from pycalico.lab.cluster import executable
from pycalico.lab.state import PodState

console = Console(highlight=False)
# Overridable so a test can run the demo beside a demo someone else is running.
STATE_DIR = os.environ.get("CALICO_DEMO_DIR", "/var/run/calico-lab-demo")
PREFIX = os.environ.get("CALICO_DEMO_PREFIX", "cdemo")

PODS = [  # name, node, namespace, labels
    ("web-1", "node1", "shop", "app=web"),
    ("web-2", "node2", "shop", "app=web"),
    ("db", "node3", "shop", "app=db"),
    ("probe-1", "node1", "tools", "app=probe"),
    ("probe-2", "node2", "tools", "app=probe"),
    ("admin", "node3", "tools", "app=probe,role=admin"),
]

NETWORK_POLICY = """\
# Kubernetes NetworkPolicy: in 'shop', the database accepts connections only from the web pods.
# kube-controllers turns it into the Calico policy knp.default.db-from-web-only.
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: db-from-web-only
  namespace: shop
spec:
  podSelector: {matchLabels: {app: db}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
"""

POLICIES = """\
# Cluster-wide: pods in 'tools' (except role=admin) may not open TCP connections into 'shop'.
# Everything else they send is allowed (ping still works).
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: tools-no-tcp-into-shop
spec:
  order: 100
  namespaceSelector: projectcalico.org/name == 'tools'
  selector: role != 'admin'
  types: [Egress]
  egress:
  - action: Deny
    protocol: TCP
    destination:
      namespaceSelector: projectcalico.org/name == 'shop'
  - action: Allow
"""


def pods_manifest() -> str:
    """The demo's namespaces and pods as Kubernetes objects (each pod pinned to its node)."""
    documents = [
        f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n" for ns in ("shop", "tools")
    ]
    for name, node, namespace, labels in PODS:
        pairs = ", ".join(f"{k}: {v}" for k, v in (kv.split("=") for kv in labels.split(",")))
        documents.append(
            f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}, "
            f"labels: {{{pairs}}}}}\nspec:\n  nodeName: {node}\n"
            "  containers: [{name: main, image: registry.k8s.io/pause:3.10}]\n"
        )
    return "---\n".join(documents)


def expected_after_policy(source: PodState, destination: PodState, protocol: str) -> bool:
    """What the two policies above should leave reachable (the demo's answer key)."""
    if destination.name == "db" and source.labels.get("app") != "web":
        return False  # NetworkPolicy: only app=web may reach the database
    is_tools_non_admin = source.namespace == "tools" and source.labels.get("role") != "admin"
    return not (is_tools_non_admin and destination.namespace == "shop" and protocol == "tcp")


def _lab_env() -> dict[str, str]:
    return {**os.environ, "CALICO_LAB_DIR": STATE_DIR, "CALICO_LAB_PREFIX": PREFIX}


def step(title: str, explanation: str) -> None:
    console.print()
    console.print(Rule(f"[bold]{title}"))
    console.print(explanation)


def command(argv: Sequence[str], env: dict[str, str], *, check: bool = True) -> str:
    """Run one real command as a user would, showing it and its output."""
    shown = " ".join(
        shlex.quote(os.path.basename(argv[0]) if i == 0 else a) for i, a in enumerate(argv)
    )
    console.print(f"[bold cyan]$ {shown}[/]")
    done = subprocess.run(list(argv), env=env, capture_output=True, text=True, check=False)
    output = (done.stdout + done.stderr).rstrip()
    if output:
        console.print(output, markup=False)
    if check and done.returncode != 0:
        raise DemoFailure(f"`{shown}` exited with status {done.returncode}")
    return done.stdout


class DemoFailure(RuntimeError):
    pass


def show_matrix(title: str, pods: Sequence[PodState], expect: matrix.Expectation) -> bool:
    result = matrix.run(pods, expect, deadline=30.0)
    console.print(matrix.table(result, title))
    console.print(matrix.summary(result))
    for source, destination, protocol in result.mismatches:
        want = result.expected[(source, destination, protocol)] if result.expected else None
        console.print(
            f"[red]  {source} -> {destination} {protocol.upper()}: expected "
            f"{'reachable' if want else 'blocked'}, got the opposite[/]"
        )
    return not result.mismatches


def tour(env: dict[str, str], workdir: Path) -> bool:
    lab_cli = executable("calico-lab")
    step(
        "1. A three-node Kubernetes cluster",
        "Each node is a network namespace on a shared bridge, running calico-node: Felix "
        "(routes and nftables rules), confd + BIRD (BGP), and the CNI agent. etcd, a real "
        "kube-apiserver, calico-kube-controllers and a pod runner (the kubelet's part) run "
        "beside them. (The demo uses its own state dir and namespace prefix; your own lab "
        "would use `calico-lab up --kubernetes` with the defaults.)",
    )
    command([lab_cli, "up", "--nodes", "3", "--kubernetes"], env)
    lab = lab_state.load(STATE_DIR)
    assert lab is not None and lab.kube is not None
    kube_env = {**env, "KUBECONFIG": lab.kube.kubeconfig}
    kubectl = executable("kubectl")
    console.print(
        f"[dim]kubectl uses the lab's API server with: export KUBECONFIG={lab.kube.kubeconfig}[/]"
    )

    step(
        "2. Six pods in two namespaces, with kubectl",
        "The pod runner gives each Pod a network namespace and runs the real `calico` CNI "
        "plugin on its node, the way a kubelet does: an address from calico-ipam, a veth pair, "
        "and a WorkloadEndpoint with the pod's labels. calico-kube-controllers writes each "
        "namespace's Profile `kns.<namespace>`.",
    )
    pods_file = workdir / "pods.yaml"
    pods_file.write_text(pods_manifest())
    command([kubectl, "apply", "-f", str(pods_file)], kube_env)
    for namespace in ("shop", "tools"):
        command([kubectl, "wait", "-n", namespace, "--for=condition=Ready", "pods", "--all",
                 "--timeout=60s"], kube_env)  # fmt: skip
    command([kubectl, "get", "pods", "-A", "-o", "wide"], kube_env)
    lab = lab_state.load(STATE_DIR)
    assert lab is not None
    ctl_env = {**env, "DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": lab.host_endpoints}
    console.print(f"[dim]calicoctl talks to the lab's etcd with: {command_env_text(lab)}[/]")
    command([executable("calicoctl"), "get", "workloadendpoints", "-A", "-o", "wide"], ctl_env)

    step(
        "3. Connectivity before any policy",
        "Every pod pings (ICMP) and connects (TCP port 8080) to every other pod. The namespace "
        "profiles allow everything, so every cell should read ok/ok. (`calico-lab check` prints "
        "this same table.)",
    )
    first = show_matrix("Before policy (cell: ICMP/TCP)", lab.pods, lambda *_: True)

    step(
        "4. Two policies: a Kubernetes NetworkPolicy (kubectl) and a Calico one (calicoctl)",
        "A Kubernetes NetworkPolicy protects the database (kube-controllers turns it into a "
        "Calico policy); a Calico GlobalNetworkPolicy keeps the tools namespace from opening "
        "TCP connections into shop (except its admin pod).",
    )
    netpol = workdir / "networkpolicy.yaml"
    netpol.write_text(NETWORK_POLICY)
    console.print(Panel(NETWORK_POLICY.rstrip(), title=str(netpol.name), expand=False))
    command([kubectl, "apply", "-f", str(netpol)], kube_env)
    manifest = workdir / "policies.yaml"
    manifest.write_text(POLICIES)
    console.print(Panel(POLICIES.rstrip(), title=str(manifest.name), expand=False))
    command([executable("calicoctl"), "apply", "-f", str(manifest)], ctl_env)
    command([executable("calicoctl"), "get", "globalnetworkpolicy"], ctl_env)

    step(
        "5. Connectivity with the policies",
        "Expected: nobody but web-1 and web-2 reaches db; probe-1 and probe-2 cannot open TCP "
        "connections to web-1/web-2 but can still ping them; admin still connects to the web "
        "pods. Any cell that is not as expected is highlighted.",
    )
    second = show_matrix("With policy (cell: ICMP/TCP)", lab.pods, expected_after_policy)
    db = lab.pod("db").ipv4
    console.print(
        "The same by hand, from inside two pods (`calico-lab exec` runs a command there):"
    )
    command([lab_cli, "exec", "web-1", "--", "ping", "-c1", "-W1", db], env, check=False)
    command([lab_cli, "exec", "probe-1", "--", "ping", "-c1", "-W1", db], env, check=False)
    return first and second


def command_env_text(lab: lab_state.LabState) -> str:
    return f"export DATASTORE_TYPE=etcdv3 ETCD_ENDPOINTS={lab.host_endpoints}"


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    if os.geteuid() != 0:
        console.print("[red]The demo creates network namespaces: run it as root.[/]")
        return 1
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    console.print(Rule("[bold]pycalico demo: a Calico cluster on this machine"))
    env = _lab_env()
    ok = False
    try:
        command([executable("calico-lab"), "down"], env)  # a previous demo killed midway
        with tempfile.TemporaryDirectory(prefix="pycalico-demo-") as workdir:
            ok = tour(env, Path(workdir))
    except DemoFailure as error:
        console.print(f"[red]Demo step failed: {error}[/]")
        console.print(f"[dim]Logs: {STATE_DIR}/nodes/<node>/log (kept until teardown)[/]")
    except KeyboardInterrupt:
        console.print("[yellow]Interrupted.[/]")
    finally:
        step("6. Teardown", "`calico-lab down` removes every namespace, process and file.")
        command([executable("calico-lab"), "down"], env, check=False)
    elapsed = time.monotonic() - started
    if ok:
        console.print(
            Rule(f"[bold green]Demo finished: both matrices as expected ({elapsed:.0f}s)")
        )
        return 0
    console.print(Rule(f"[bold red]Demo FAILED ({elapsed:.0f}s)"))
    return 1


if __name__ == "__main__":
    sys.exit(main())

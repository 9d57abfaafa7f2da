"""``calico-lab``: the command line of the one-machine Calico cluster.

What it is: argument parsing and output (rich) over ``cluster``, ``pods`` and ``matrix``.  The
state directory (``--state-dir``, ``CALICO_LAB_DIR``, default ``/var/run/calico-lab``) and the
namespace prefix (``--prefix``, ``CALICO_LAB_PREFIX``, default ``clab``) let a test run its own
lab beside a user's.  What it is not: any of the lab's logic.

Exit status: 0 on success, 1 when the lab refuses or a step fails (one line saying why), 2 for
usage errors (click's), and for ``check`` 1 when some pod cannot reach another.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence

import click
from rich.console import Console
from rich.table import Table

from pycalico.lab import cluster, kube, matrix, pods
from pycalico.lab import state as lab_state
from pycalico.lab.cluster import LabError

# Piped output (tests, `| less`) gets wide tables instead of truncated cells.
console = Console(
    highlight=False,
    width=None if sys.stdout.isatty() or "COLUMNS" in os.environ else 200,
)


_started = time.monotonic()


def _progress(message: str) -> None:
    console.print(f"  [cyan]{time.monotonic() - _started:5.1f}s[/] {message}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--state-dir",
    envvar="CALICO_LAB_DIR",
    default=lab_state.DEFAULT_STATE_DIR,
    show_default=True,
    help="Where the lab keeps its state, logs and pid files.",
)
@click.option(
    "--prefix",
    envvar="CALICO_LAB_PREFIX",
    default=lab_state.DEFAULT_PREFIX,
    show_default=True,
    help="Prefix of every network namespace the lab creates.",
)
@click.pass_context
def main(context: click.Context, state_dir: str, prefix: str) -> None:
    """A multi-node Calico cluster on this machine, nodes as network namespaces."""
    context.obj = {"state_dir": state_dir, "prefix": prefix}


def _state_dir(context: click.Context) -> str:
    return str(context.find_root().obj["state_dir"])


@main.command()
@click.option("--nodes", default=3, show_default=True, help="Number of nodes.")
@click.option(
    "--route-reflectors",
    default=0,
    show_default=True,
    help="Nodes (the first K) that are BGP route reflectors; 0 = full mesh.",
)
@click.option("--etcd-members", default=1, show_default=True, type=click.Choice(["1", "3"]))
@click.option("--ipv6", is_flag=True, help="Dual stack: IPv6 fabric, pool and pod addresses.")
@click.option("--timeout", default=180.0, show_default=True, help="Seconds to wait for ready.")
@click.option(
    "--encapsulation",
    type=click.Choice(["vxlan", "vxlan-crosssubnet"]),
    default=None,
    help="VXLAN overlay (CALICO_NETWORKING_BACKEND=vxlan, no BGP); default: BGP, no overlay.",
)
@click.option(
    "--subnets",
    default=1,
    show_default=True,
    type=click.IntRange(1, 2),
    help="Fabric subnets joined by a router without pod routes (2 needs --encapsulation).",
)
@click.option(
    "--kubernetes",
    is_flag=True,
    help="Also a kube-apiserver on the lab's etcd, a Node per node and the pod runner.",
)
@click.option(
    "--etcd-quota-bytes",
    default=0,
    type=click.IntRange(0),
    help="etcd's --quota-backend-bytes (space quota; 0: etcd's default of 2 GiB).",
)
@click.pass_context
def up(
    context: click.Context,
    nodes: int,
    route_reflectors: int,
    etcd_members: str,
    ipv6: bool,
    timeout: float,
    encapsulation: str | None,
    subnets: int,
    kubernetes: bool,
    etcd_quota_bytes: int,
) -> None:
    """Start etcd, the fabric and NODES nodes; return when the cluster is ready."""
    overlay = {"encapsulation": encapsulation or "", "subnets": subnets}
    try:
        cluster.check_request(
            nodes=nodes, route_reflectors=route_reflectors, etcd_members=int(etcd_members),
            **overlay,  # type: ignore[arg-type]
        )  # fmt: skip
    except LabError as error:
        console.print(f"[red]calico-lab up: {error}[/]")
        sys.exit(1)
    console.print(f"[bold]Bringing up a {nodes}-node Calico lab[/]")
    try:
        lab = cluster.up(
            state_dir=_state_dir(context),
            prefix=context.obj["prefix"],
            nodes=nodes,
            route_reflectors=route_reflectors,
            etcd_members=int(etcd_members),
            ipv6=ipv6,
            progress=_progress,
            timeout=timeout,
            etcd_quota_bytes=etcd_quota_bytes,
            before_nodes=(
                (lambda built: kube.start_control_plane(built, _progress, timeout))
                if kubernetes
                else None
            ),
            **overlay,  # type: ignore[arg-type]
        )
        if kubernetes:
            lab = kube.start_pods(lab, _progress, timeout)
    except LabError as error:
        console.print(f"[red]calico-lab up: {error}[/]")
        if not isinstance(error, cluster.LabRefused):
            console.print("  (run `calico-lab down` to remove what was started)")
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("[yellow]calico-lab up: interrupted; run `calico-lab down` to clean up[/]")
        sys.exit(130)
    console.print(
        f"[green]Lab is up[/]: {len(lab.nodes)} nodes. Try `calico-lab pod add web --node "
        f"{lab.nodes[0].name}`, `calico-lab status`, `eval $(calico-lab env)`"
        + (", `kubectl apply -f pod.yaml`." if lab.kube else ".")
    )


@main.command()
@click.pass_context
def down(context: click.Context) -> None:
    """Remove every namespace, process and file of the lab (safe to repeat)."""
    root = context.find_root()
    given = root.get_parameter_source("prefix") != click.core.ParameterSource.DEFAULT
    report = cluster.down(
        state_dir=_state_dir(context), prefix=root.obj["prefix"] if given else None
    )
    console.print(
        f"Lab removed: {report.processes} processes stopped, {report.namespaces} namespaces "
        f"deleted, state directory {'removed' if report.files else 'was already gone'}."
    )


@main.group()
def pod() -> None:
    """Add, delete and list pods."""


@pod.command("add")
@click.argument("name")
@click.option(
    "--node",
    default="",
    help="The node to run the pod on (e.g. node1); with Kubernetes it may be left to the runner.",
)
@click.option("--namespace", default="default", show_default=True)
@click.option("--labels", default="", help="Pod labels, k=v,k2=v2.")
@click.pass_context
def pod_add(context: click.Context, name: str, node: str, namespace: str, labels: str) -> None:
    """Create pod NAME: a network namespace set up by the calico CNI plugin (with Kubernetes: a
    Pod, which the node's pod runner sets up)."""
    state_dir = _state_dir(context)
    try:
        found = lab_state.load(state_dir)
        pod_labels = lab_state.parse_labels(labels)
        if found is not None and found.kube is not None:
            added = kube.add_pod(state_dir, name, node, namespace, pod_labels)
        elif not node:
            raise LabError("--node: which node to run the pod on (e.g. --node node1)")
        else:
            (added,) = pods.add(state_dir, [pods.PodSpec(name, node, namespace, pod_labels)])
    except (LabError, ValueError, KeyError) as error:
        message = error.args[0] if isinstance(error, KeyError) else error
        console.print(f"[red]calico-lab pod add: {message}[/]")
        sys.exit(1)
    address = added.ipv4 + (f", {added.ipv6}" if added.ipv6 else "")
    console.print(
        f"pod {added.name} on {added.node}: {address} (endpoint {added.workload_endpoint}, "
        f"host interface {added.interface})"
    )


@pod.command("del")
@click.argument("name")
@click.pass_context
def pod_del(context: click.Context, name: str) -> None:
    """Delete pod NAME (CNI DEL, then its namespace)."""
    state_dir = _state_dir(context)
    try:
        lab = lab_state.load(state_dir)
        known = [pod for pod in lab.pods if pod.name == name] if lab else []
        if lab is not None and lab.kube is not None and known and known[0].uid:
            found = kube.delete_pod(state_dir, known[0])
        else:
            found = pods.delete(state_dir, name)
    except LabError as error:
        console.print(f"[red]calico-lab pod del: {error}[/]")
        sys.exit(1)
    console.print(f"pod {name} deleted" if found else f"no pod {name} (nothing to do)")


def _pods_table(lab: lab_state.LabState) -> Table:
    table = Table(title="Pods", title_justify="left")
    for heading in ("NAME", "NAMESPACE", "NODE", "IPV4", "IPV6", "LABELS", "ENDPOINT"):
        table.add_column(heading)
    for item in sorted(lab.pods, key=lambda p: (p.namespace, p.name)):
        labels = ",".join(f"{k}={v}" for k, v in sorted(item.labels.items()))
        table.add_row(
            item.name,
            item.namespace,
            item.node,
            item.ipv4,
            item.ipv6 or "-",
            labels or "-",
            item.workload_endpoint,
        )
    return table


@pod.command("list")
@click.pass_context
def pod_list(context: click.Context) -> None:
    """List the pods with their addresses."""
    lab = _require(_state_dir(context))
    console.print(_pods_table(lab))


def _require(state_dir: str) -> lab_state.LabState:
    try:
        return cluster.require(state_dir)
    except LabError as error:
        console.print(f"[red]calico-lab: {error}[/]")
        sys.exit(1)


@main.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("pod_name", metavar="POD")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.pass_context
def exec_(context: click.Context, pod_name: str, command: Sequence[str]) -> None:
    """Run COMMAND inside POD's network namespace: calico-lab exec web -- ping -c1 10.65.0.1"""
    lab = _require(_state_dir(context))
    try:
        argv = pods.exec_argv(lab, pod_name, list(command))
    except KeyError as error:
        console.print(f"[red]calico-lab exec: {error.args[0]}[/]")
        sys.exit(1)
    sys.stdout.flush()
    os.execvp(argv[0], argv)


@main.command()
@click.pass_context
def status(context: click.Context) -> None:
    """Nodes (Felix, BGP sessions), then pods and their addresses."""
    lab = _require(_state_dir(context))
    table = Table(title="Nodes", title_justify="left")
    for heading in ("NODE", "ADDRESS", "ROLE", "CALICO-NODE", "FELIX", "BGP SESSIONS"):
        table.add_column(heading)
    for node, found in zip(lab.nodes, cluster.statuses(lab), strict=True):
        expected = cluster.expected_sessions(lab, node)
        sessions = f"{found.established}/{expected} Established"
        if found.established != len(found.sessions):
            others = [f"{n}: {i}" for n, i in found.sessions.items() if not i.startswith("Est")]
            sessions += " (" + "; ".join(others[:3]) + ")"
        table.add_row(
            node.name,
            node.address + (f", {node.address6}" if node.address6 else ""),
            "route reflector" if node.route_reflector else "",
            "[green]running[/]" if found.running else "[red]stopped[/]",
            "[green]ready[/]" if found.felix_ready else "[red]not ready[/]",
            sessions,
        )
    console.print(table)
    etcd = ", ".join(f"{m.name} {m.address}" for m in lab.etcd)
    console.print(f"etcd: {etcd} (from this machine: {lab.host_endpoints})")
    if lab.kube is not None:
        console.print(
            f"kubernetes: kube-apiserver {lab.kube.address}:{lab.kube.port} (from this machine: "
            f"127.0.0.1:{lab.kube.host_port}, KUBECONFIG={lab.kube.kubeconfig})"
        )
    console.print(_pods_table(lab))


@main.command()
@click.option(
    "--deadline",
    default=10.0,
    show_default=True,
    help="Seconds to keep retrying probes that fail (a new pod may still wait for its routes; "
    "a pod blocked by policy is retried until then).",
)
@click.pass_context
def check(context: click.Context, deadline: float) -> None:
    """Connectivity matrix of all pods by all pods (ICMP and TCP); blocked cells are retried
    until --deadline before the table is printed."""
    lab = _require(_state_dir(context))
    if len(lab.pods) < 2:
        console.print("check needs at least two pods (calico-lab pod add ...)")
        sys.exit(1)
    said: set[int] = set()

    def progress(message: str) -> None:
        # Once per second of retrying, not once per 0.2 s round.
        second = int(time.monotonic() - _started)
        if second not in said:
            said.add(second)
            _progress(message)

    result = matrix.run(lab.pods, deadline=deadline, progress=progress)
    columns = "ICMP/TCP, then ICMP6/TCP6" if lab.ipv6 else "ICMP/TCP"
    console.print(matrix.table(result, f"Connectivity (cell: {columns}; ok = reached)"))
    console.print(matrix.summary(result))
    sys.exit(0 if result.reachable == len(result.actual) else 1)


@main.command()
@click.pass_context
def env(context: click.Context) -> None:
    """Print the environment for calicoctl: eval $(calico-lab env)"""
    lab = _require(_state_dir(context))
    kubeconfig = f" KUBECONFIG={lab.kube.kubeconfig}" if lab.kube else ""
    print(f"export DATASTORE_TYPE=etcdv3 ETCD_ENDPOINTS={lab.host_endpoints}{kubeconfig}")


@main.group()
def node() -> None:
    """Stop, kill and start one node's calico-node (failure drills)."""


def _node(context: click.Context, name: str) -> tuple[lab_state.LabState, lab_state.NodeState]:
    lab = _require(_state_dir(context))
    try:
        return lab, lab.node(name)
    except KeyError as error:
        console.print(f"[red]calico-lab node: {error.args[0]}[/]")
        sys.exit(1)


@node.command("stop")
@click.argument("name")
@click.option(
    "--kill",
    is_flag=True,
    help="SIGKILL calico-node's whole process group (a container kill) instead of SIGTERM.",
)
@click.pass_context
def node_stop(context: click.Context, name: str, kill: bool) -> None:
    """Stop NAME's calico-node (Felix, confd and BIRD with it)."""
    _, target = _node(context, name)
    cluster.stop_node(target, kill=kill)
    console.print(f"{name}: calico-node {'killed' if kill else 'stopped'}")


@node.command("start")
@click.argument("name")
@click.pass_context
def node_start(context: click.Context, name: str) -> None:
    """Start NAME's calico-node again and wait until it is ready."""
    lab, target = _node(context, name)
    cluster.start_node(lab, target)
    try:
        cluster.wait_ready(lab, [target], timeout=120, progress=_progress)
    except LabError as error:
        console.print(f"[red]calico-lab node start: {error}[/]")
        sys.exit(1)
    console.print(f"{name}: calico-node running and ready")


@main.group(name="kube")
def kube_group() -> None:
    """Stop, kill and start kube-apiserver or kube-controllers (failure drills, --kubernetes)."""


def _kube_lab(context: click.Context) -> lab_state.LabState:
    lab = _require(_state_dir(context))
    if lab.kube is None:
        console.print("[red]calico-lab kube: this lab has no Kubernetes (up --kubernetes)[/]")
        sys.exit(1)
    return lab


@kube_group.command("stop")
@click.argument("component", type=click.Choice(kube.CONTROL_PLANE))
@click.option("--kill", is_flag=True, help="SIGKILL (a crash) instead of SIGTERM.")
@click.pass_context
def kube_stop(context: click.Context, component: str, kill: bool) -> None:
    """Stop COMPONENT; returns once it is gone."""
    stopped = kube.stop_control(_kube_lab(context), component, kill=kill)
    verb = "killed" if kill else "stopped"
    console.print(
        f"{component}: {verb} (pid {stopped})" if stopped else f"{component}: not running"
    )


@kube_group.command("start")
@click.argument("component", type=click.Choice(kube.CONTROL_PLANE))
@click.pass_context
def kube_start(context: click.Context, component: str) -> None:
    """Start COMPONENT again (kube-apiserver: until the API is ready)."""
    try:
        pid = kube.start_control(_kube_lab(context), component)
    except LabError as error:
        console.print(f"[red]calico-lab kube start: {error}[/]")
        sys.exit(1)
    console.print(f"{component}: running (pid {pid})")


@main.command()
@click.option("--port", default=8099, show_default=True, help="Loopback port; 0 picks a free one.")
@click.pass_context
def ui(context: click.Context, port: int) -> None:
    """Serve a live picture of the lab on http://127.0.0.1:PORT/ (docs/ui.md)."""
    from pycalico.lab import ui as lab_ui  # aiohttp only for this command

    try:
        lab_ui.serve(_state_dir(context), port)
    except LabError as error:
        console.print(f"[red]calico-lab ui: {error}[/]")
        sys.exit(1)


if __name__ == "__main__":
    main()

"""Bringing the lab up and down: etcd, the fabric bridge, node namespaces running calico-node.

What it is: ``up`` (build everything, wait until every Felix is ready and every BGP session is
Established), ``down`` (remove every namespace, process and file; idempotent, works after a
crash), node stop/start (for failure drills), and readiness/status probes.  Layout for prefix
``clab`` (the default) and state directory ``/var/run/calico-lab``:

* ``clab-fabric``: bridge ``br0`` at ``10.99.0.254/24`` (the nodes' default gateway, which also
  makes proxy ARP answer for the pods' 169.254.1.1), connected to nothing outside the lab; with
  ``subnets=2`` also ``br1`` at ``10.99.1.254/24`` for the second half of the nodes, and the
  namespace forwards between the two — a router that knows no pod routes, so pods in different
  subnets reach each other only through the VXLAN overlay;
* ``clab-outside``: a host beyond the cluster at ``203.0.113.1``, on its own link behind the
  fabric namespace (which routes, and knows no pod routes): pods reach it only with outgoing NAT;
* ``clab-etcd<i>``: etcd member ``i`` at ``10.99.0.<250-i>:2379``; a relay process on the
  machine serves it on a loopback port (``calico-lab env``);
* ``clab-node<i>``: ``eth0`` at ``10.99.<subnet>.<i>/24``, forwarding on, running
  ``calico-node`` (Felix, confd, BIRD, the CNI agent socket; with an ``encapsulation``,
  ``CALICO_NETWORKING_BACKEND=vxlan``: no confd or BIRD, VXLAN pools, Felix programs every
  route); its files under ``<state dir>/nodes/node<i>``;
* ``clab-pod-<name>``: one per pod (``pycalico.lab.pods``).

What it is not: the CNI runtime (``pycalico.lab.pods``) or the command line (``cli``).

Invariants: ``state.json`` is written before any long-lived process is started, and every
daemon's pid file before the next step, so ``down`` finds everything an interrupted ``up``
left; ``down`` also sweeps by namespace prefix and by command lines naming the state directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from pycalico.bgp.bird import BirdControl, BirdError
from pycalico.lab import kernel, store
from pycalico.lab import state as lab_state

# Re-exported (other modules and tests use them from here): they live in ``layout``.
from pycalico.lab.layout import ENCAPSULATIONS, plan
from pycalico.lab.layout import LabError as LabError
from pycalico.lab.layout import LabExists as LabExists
from pycalico.lab.layout import LabRefused as LabRefused
from pycalico.lab.layout import check_request as check_request
from pycalico.lab.state import EtcdMemberState, LabState, NodeState

Progress = Callable[[str], None]
FELIX_HEALTH_PORT = 9099
NEIGHBOUR_FILE = "neighbour-limits.json"
LAB_EXECUTABLES = ("etcd", "python", "calico", "bird", "nsenter")
ETCD_BINARY = "/usr/bin/etcd"
# `docker stop`'s default: SIGTERM, then SIGKILL after this long.
STOP_GRACE = 10.0


def _quiet(_: str) -> None:
    pass


def executable(name: str) -> str:
    """One of our console scripts, preferring the running interpreter's environment."""
    local = os.path.join(os.path.dirname(sys.executable), name)
    if os.access(local, os.X_OK):
        return local
    found = shutil.which(name)
    if not found:
        raise LabError(f"{name}: executable not found (run `make setup`)")
    return found


# --- etcd ------------------------------------------------------------------------------------


def _etcd_command(lab: LabState, member: EtcdMemberState) -> list[str]:
    cluster = ",".join(f"{m.name}=http://{m.address}:2380" for m in lab.etcd)
    client = f"http://{member.address}:2379"
    return [
        ETCD_BINARY,
        "--name",
        member.name,
        "--data-dir",
        os.path.join(lab.state_dir, member.name, "data"),
        "--listen-client-urls",
        f"{client},http://127.0.0.1:2379",
        "--advertise-client-urls",
        client,
        "--listen-peer-urls",
        f"http://{member.address}:2380",
        "--initial-advertise-peer-urls",
        f"http://{member.address}:2380",
        "--initial-cluster",
        cluster,
        "--initial-cluster-state",
        "new",
        "--logger",
        "zap",
        "--log-level",
        "warn",
        # A small quota lets the fault suite fill etcd (the NOSPACE alarm) in seconds.
        *(["--quota-backend-bytes", str(lab.etcd_quota_bytes)] if lab.etcd_quota_bytes else []),
    ]


def _etcd_healthy(lab: LabState) -> bool:
    for member in lab.etcd:
        try:
            url = f"http://127.0.0.1:{member.host_port}/health"
            with urllib.request.urlopen(url, timeout=1.0) as answer:
                if b'"true"' not in answer.read():
                    return False
        except OSError:
            return False
    return True


# --- nodes -----------------------------------------------------------------------------------


def node_env(lab: LabState, node: NodeState) -> dict[str, str]:
    """calico-node's environment for one lab node: every per-node path in its directory."""
    directory = node.directory
    # Not the caller's ETCD_* or KUBECONFIG (`eval $(calico-lab env)` sets both for this
    # machine's loopback relays, which a node's namespace cannot reach).
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("ETCD_") and key != "KUBECONFIG"
    }
    env.update(
        {
            "NODENAME": node.name,
            "IP": "autodetect",
            "IP_AUTODETECTION_METHOD": "interface=eth0",
            "ETCD_ENDPOINTS": lab.node_endpoints,
            "DATASTORE_TYPE": "etcdv3",
            "CALICO_IPV4POOL_CIDR": lab_state.IPV4_POOL,
            "CALICO_RUN_DIR": os.path.join(directory, "run"),
            "CALICO_BIRD_CONFIG": os.path.join(directory, "confd", "bird.cfg"),
            "CALICO_BIRD_SOCKET": os.path.join(directory, "run", "bird.ctl"),
            "CALICO_LOG_DIR": os.path.join(directory, "log"),
            "CALICO_AGENT_SOCKET": os.path.join(directory, "run", "cni.sock"),
            "CALICO_NODENAME_FILE": os.path.join(directory, "nodename"),
            "CALICO_FELIX_BINARY": executable("calico-felix"),
            # Calico's node image maps these for Felix; here the lab passes them explicitly.
            "FELIX_ETCDENDPOINTS": lab.node_endpoints,
            "FELIX_DATASTORETYPE": "etcdv3",
            "FELIX_HEALTHENABLED": "true",
            "FELIX_HEALTHPORT": str(FELIX_HEALTH_PORT),
            "FELIX_LOGFILEPATH": "none",
            "FELIX_ENDPOINTSTATUSPATHPREFIX": os.path.join(directory, "run"),
            "FELIX_IPV6SUPPORT": "true" if lab.ipv6 else "false",
            "CALICO_ROUTER_ID": "hash" if not node.address else node.address,
            # Felix writes the pods' MTU here (the lab's CNI config reads it with an overlay).
            "FELIX_MTUFILEPATH": os.path.join(directory, "mtu"),
            # Denied packets as flow records (calicoctl flows, the UI) and per-rule counters.
            "FELIX_FLOWLOGSFILEENABLED": "true",
            "FELIX_FLOWLOGSFILEDIRECTORY": os.path.join(directory, "flows"),
            "FELIX_POLICYRULECOUNTERSENABLED": "true",
        }
    )
    if lab.kube is not None:  # calico-node's feedback to the Kubernetes Node, over the fabric
        env["KUBECONFIG"] = lab.kube.node_kubeconfig
        # As Calico's manifest (spec.nodeName): the Calico Node's orchRefs, which
        # kube-controllers' node controller follows when a Kubernetes Node is deleted.
        env["CALICO_K8S_NODE_REF"] = node.name
    if lab.encapsulation:
        env["CALICO_NETWORKING_BACKEND"] = "vxlan"
    if lab.ipv6:
        env["IP6"] = "autodetect"
        env["IP6_AUTODETECTION_METHOD"] = "interface=eth0"
        env["CALICO_IPV6POOL_CIDR"] = lab_state.IPV6_POOL
    return env


def pid_file(node: NodeState) -> str:
    return os.path.join(node.directory, "calico-node.pid")


def bird_socket(node: NodeState) -> str:
    return os.path.join(node.directory, "run", "bird.ctl")


def agent_socket(node: NodeState) -> str:
    return os.path.join(node.directory, "run", "cni.sock")


def node_subnet(node: NodeState) -> int:
    return int(node.address.split(".")[2])


def _build_node(lab: LabState, node: NodeState, index: int) -> None:
    subnet = node_subnet(node)
    kernel.add_namespace(node.namespace)
    kernel.attach_to_bridge(lab.fabric_namespace, node.namespace, f"n{index}", f"br{subnet}")
    kernel.ip(node.namespace, "addr", "add", f"{node.address}/24", "dev", "eth0")
    gateway = f"{lab_state.subnet_prefix(subnet)}.{lab_state.GATEWAY_HOST}"
    kernel.ip(node.namespace, "route", "add", "default", "via", gateway)
    # No ip_forward here: Felix writes it at start (FelixConfiguration ipForwarding: Enabled),
    # as on a real node; a fresh namespace starts with forwarding off.
    settings: dict[str, str] = {}
    if lab.ipv6:
        settings["net.ipv6.conf.default.accept_dad"] = "0"
        settings["net.ipv6.conf.all.accept_dad"] = "0"
        kernel.ip(node.namespace, "addr", "add", f"{node.address6}/64", "dev", "eth0", "nodad")
        gateway6 = f"{lab_state.subnet_prefix6(subnet)}fe"
        kernel.ip(node.namespace, "-6", "route", "add", "default", "via", gateway6)
    if settings:
        kernel.sysctls(node.namespace, settings)
    for sub in ("run", "log", "confd"):
        os.makedirs(os.path.join(node.directory, sub), exist_ok=True)


def start_node(lab: LabState, node: NodeState) -> int:
    """Start the node's calico-node (unless it is running); returns its pid."""
    pid = kernel.read_pid(pid_file(node))
    if kernel.alive(pid):
        assert pid is not None
        return pid
    return kernel.start_daemon(
        [executable("calico-node")],
        namespace=node.namespace,
        env=node_env(lab, node),
        log_path=os.path.join(node.directory, "log", "calico-node.log"),
        pid_path=pid_file(node),
    )


def stop_node(node: NodeState, *, kill: bool = False) -> None:
    """Stop the node's calico-node as a container runtime stops its container.

    ``kill``: SIGKILL to the whole process group at once (``docker kill``: calico-node, Felix,
    confd and BIRD die together, BIRD without telling its peers).  Otherwise (``docker stop``):
    SIGTERM to calico-node alone, which stops its children its own way; whatever is left after
    the grace time is killed with the group."""
    pid = kernel.read_pid(pid_file(node))
    if not kernel.alive(pid):
        return
    assert pid is not None
    if not kill:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while kernel.alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # calico-node leads its own group (start_daemon)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(
        kernel.command_name(p).split(" ")[0] in ("bird", "python3", "python", "calico-felix")
        for p in kernel.namespace_pids(node.namespace)
    ):
        time.sleep(0.05)


# --- readiness -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeStatus:
    name: str
    running: bool
    felix_ready: bool
    sessions: dict[str, str]  # BGP protocol -> state/info

    @property
    def established(self) -> int:
        return sum(1 for info in self.sessions.values() if info.startswith("Established"))


def expected_sessions(lab: LabState, node: NodeState) -> int:
    if lab.encapsulation:
        return 0  # the vxlan backend runs no BIRD
    reflectors = [n for n in lab.nodes if n.route_reflector]
    # A route reflector peers with every other node; a client only with the reflectors.
    everyone = not reflectors or node.route_reflector
    per_family = len(lab.nodes) - 1 if everyone else len(reflectors)
    return per_family * (2 if lab.ipv6 else 1)


def bgp_sessions(node: NodeState) -> dict[str, str]:
    try:
        rows = asyncio.run(BirdControl(bird_socket(node), timeout=2.0).protocols())
    except (BirdError, OSError):
        return {}
    return {row.name: row.info or row.state for row in rows if row.proto == "BGP"}


def node_status(node: NodeState) -> NodeStatus:
    pid = kernel.read_pid(pid_file(node))
    running = kernel.alive(pid)
    ready = running and kernel.http_get(node.namespace, FELIX_HEALTH_PORT, "/readiness") == 200
    return NodeStatus(node.name, running, ready, bgp_sessions(node) if running else {})


def statuses(lab: LabState) -> list[NodeStatus]:
    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(node_status, lab.nodes))


def node_ready(lab: LabState, node: NodeState, status: NodeStatus) -> bool:
    # With an overlay, also until Felix has its VTEP (it then writes the pods' MTU file).
    overlay = not lab.encapsulation or os.path.exists(os.path.join(node.directory, "mtu"))
    return (
        overlay
        and status.felix_ready
        and status.established >= expected_sessions(lab, node)
        and status.established == len(status.sessions)
    )


def wait_ready(
    lab: LabState,
    nodes: list[NodeState] | None = None,
    *,
    timeout: float = 120.0,
    progress: Progress = _quiet,
) -> None:
    targets = nodes or list(lab.nodes)
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        with ThreadPoolExecutor(max_workers=16) as pool:
            found = list(pool.map(node_status, targets))
        felix = sum(1 for status in found if status.felix_ready)
        bgp = sum(
            1
            for node, status in zip(targets, found, strict=True)
            if node_ready(lab, node, status)
            or (
                status.established >= expected_sessions(lab, node)
                and status.established == len(status.sessions)
            )
        )
        message = (
            f"Felix ready on {felix}/{len(targets)} nodes, BGP complete on {bgp}/{len(targets)}"
        )
        if message != last:
            progress(message)
            last = message
        if all(node_ready(lab, n, s) for n, s in zip(targets, found, strict=True)):
            return
        if time.monotonic() > deadline:
            late = [
                s.name for n, s in zip(targets, found, strict=True) if not node_ready(lab, n, s)
            ]
            raise LabError(
                f"not ready after {timeout:.0f}s: {', '.join(late)} (logs in "
                f"{lab.state_dir}/nodes/<node>/log)"
            )
        time.sleep(0.25)


# --- up / down -------------------------------------------------------------------------------


def _build_fabric(lab: LabState, progress: Progress) -> None:
    changed = kernel.raise_neighbour_limits(len(lab.nodes) + len(lab.etcd) + 2)
    if changed:
        Path(lab.state_dir, NEIGHBOUR_FILE).write_text(json.dumps(changed))
        progress("kernel: neighbour table limits raised for the mesh (put back by `down`)")
    progress(f"fabric: bridge br0 at {lab_state.FABRIC_SUBNET}.254/24 in {lab.fabric_namespace}")
    fabric = lab.fabric_namespace
    kernel.add_namespace(fabric)
    for subnet in range(lab.subnets):
        bridge = f"br{subnet}"
        kernel.ip(fabric, "link", "add", bridge, "type", "bridge")
        address = f"{lab_state.subnet_prefix(subnet)}.{lab_state.GATEWAY_HOST}/24"
        kernel.ip(fabric, "addr", "add", address, "dev", bridge)
        if lab.ipv6:
            address6 = f"{lab_state.subnet_prefix6(subnet)}fe/64"
            kernel.ip(fabric, "addr", "add", address6, "dev", bridge, "nodad")
        kernel.ip(fabric, "link", "set", bridge, "up")
    # The fabric routes (between the subnets, and to the outside host): connected routes only,
    # never a pod route, so only NAT or an overlay can carry pod traffic through it.
    forwarding = {"net.ipv4.ip_forward": "1"}
    if lab.ipv6:
        forwarding["net.ipv6.conf.all.forwarding"] = "1"
    kernel.sysctls(fabric, forwarding)
    if lab.subnets > 1:
        progress(f"fabric: {lab.subnets} subnets (br0..br{lab.subnets - 1}), routed, no pod routes")
    _build_outside(lab, progress)


def _build_outside(lab: LabState, progress: Progress) -> None:
    """A host beyond the cluster on its own link behind the fabric router, which knows no pod
    routes: a pod reaches it only with outgoing NAT (its replies go to the node's address)."""
    outside = lab.outside_namespace
    kernel.add_namespace(outside)
    kernel.ip(lab.fabric_namespace, "link", "add", "brx", "type", "bridge")
    gateway = f"{lab_state.OUTSIDE_SUBNET}.{lab_state.GATEWAY_HOST}"
    kernel.ip(lab.fabric_namespace, "addr", "add", f"{gateway}/24", "dev", "brx")
    kernel.ip(lab.fabric_namespace, "link", "set", "brx", "up")
    kernel.attach_to_bridge(lab.fabric_namespace, outside, "outside", bridge="brx")
    kernel.ip(outside, "addr", "add", f"{lab_state.OUTSIDE_ADDRESS}/24", "dev", "eth0")
    kernel.ip(outside, "route", "add", "default", "via", gateway)
    progress(f"outside: a host at {lab_state.OUTSIDE_ADDRESS} beyond the fabric router")


def _start_etcd(lab: LabState, progress: Progress) -> None:
    for i, member in enumerate(lab.etcd):
        kernel.add_namespace(member.namespace)
        kernel.attach_to_bridge(lab.fabric_namespace, member.namespace, f"e{i}")
        kernel.ip(member.namespace, "addr", "add", f"{member.address}/24", "dev", "eth0")
        if lab.subnets > 1:  # nodes of the other subnets reach etcd through the router
            gateway = f"{lab_state.FABRIC_SUBNET}.{lab_state.GATEWAY_HOST}"
            kernel.ip(member.namespace, "route", "add", "default", "via", gateway)
        kernel.start_daemon(
            _etcd_command(lab, member),
            namespace=member.namespace,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            log_path=os.path.join(lab.state_dir, member.name, "etcd.log"),
            pid_path=os.path.join(lab.state_dir, f"{member.name}.pid"),
        )
    kernel.start_daemon(
        [sys.executable, "-m", "pycalico.lab.relay", lab.state_dir],
        namespace=None,
        env=dict(os.environ),
        log_path=os.path.join(lab.state_dir, "relay.log"),
        pid_path=os.path.join(lab.state_dir, "relay.pid"),
    )
    progress(f"etcd: {len(lab.etcd)} member(s) in {lab.etcd[0].namespace}…; waiting for health")
    deadline = time.monotonic() + 30
    while not _etcd_healthy(lab):
        if time.monotonic() > deadline:
            raise LabError(
                f"etcd did not become healthy in 30s (see {lab.state_dir}/etcd*/etcd.log)"
            )
        time.sleep(0.1)


def _write_datastore(lab: LabState, progress: Progress) -> None:
    reflectors = [(n.name, n.address) for n in lab.nodes if n.route_reflector]
    mode = ENCAPSULATIONS[lab.encapsulation]
    manifests = [store.pool_manifest("default-ipv4-ippool", lab_state.IPV4_POOL, 26, mode)]
    if lab.ipv6:
        manifests.append(store.pool_manifest("default-ipv6-ippool", lab_state.IPV6_POOL, 122, mode))
    manifests += store.topology_manifests(reflectors, lab_state.RR_CLUSTER_ID)
    store.call(lab.host_endpoints, lambda s: store.apply_all(s, manifests))
    topology = (
        f"{len(reflectors)} route reflector(s), the others their clients"
        if reflectors
        else "full node-to-node BGP mesh"
    )
    if lab.encapsulation:
        topology = f"VXLAN overlay (vxlanMode {mode}), no BGP"
    pools = lab_state.IPV4_POOL + (f" and {lab_state.IPV6_POOL}" if lab.ipv6 else "")
    progress(f"datastore: IP pool {pools}; {topology}")


def _start_nodes(lab: LabState, progress: Progress, timeout: float) -> None:
    progress(f"nodes: {len(lab.nodes)} namespaces on the fabric, one calico-node each")
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda pair: _build_node(lab, pair[1], pair[0]), enumerate(lab.nodes, 1)))
    for node in lab.nodes:
        start_node(lab, node)
    wait_ready(lab, timeout=timeout, progress=progress)


def up(
    *,
    state_dir: str = lab_state.DEFAULT_STATE_DIR,
    prefix: str = lab_state.DEFAULT_PREFIX,
    nodes: int = 3,
    route_reflectors: int = 0,
    etcd_members: int = 1,
    ipv6: bool = False,
    progress: Progress = _quiet,
    timeout: float = 180.0,
    encapsulation: str = "",
    subnets: int = 1,
    before_nodes: Callable[[LabState], LabState] | None = None,
    etcd_quota_bytes: int = 0,
) -> LabState:
    """Build the lab and return once it is ready (``check_request`` refusals start nothing).
    ``before_nodes``: a step between the datastore and the nodes (the Kubernetes control plane
    of ``up --kubernetes``), returning the lab as it then is."""
    check_request(
        nodes=nodes,
        route_reflectors=route_reflectors,
        etcd_members=etcd_members,
        encapsulation=encapsulation,
        subnets=subnets,
    )
    if lab_state.load(state_dir) is not None or kernel.list_namespaces(prefix):
        raise LabExists(f"a lab is already up ({state_dir}); run `calico-lab down` first")
    started = time.monotonic()
    os.makedirs(state_dir, exist_ok=True)
    lab = plan(
        state_dir=state_dir,
        prefix=prefix,
        nodes=nodes,
        route_reflectors=route_reflectors,
        etcd_members=etcd_members,
        ipv6=ipv6,
        encapsulation=encapsulation,
        subnets=subnets,
    )
    lab = dataclasses.replace(lab, etcd_quota_bytes=etcd_quota_bytes)
    lab_state.save(lab)  # before any process starts: `down` finds everything from here on
    _build_fabric(lab, progress)
    _start_etcd(lab, progress)
    _write_datastore(lab, progress)
    if before_nodes is not None:
        lab = before_nodes(lab)
    _start_nodes(lab, progress, timeout)
    progress(f"ready in {time.monotonic() - started:.1f}s")
    return lab


def require(state_dir: str) -> LabState:
    lab = lab_state.load(state_dir)
    if lab is None:
        raise LabError(f"no lab is up ({state_dir}/state.json is missing); run `calico-lab up`")
    return lab


@dataclass(frozen=True)
class DownReport:
    processes: int
    namespaces: int
    files: bool


def down(*, state_dir: str = lab_state.DEFAULT_STATE_DIR, prefix: str | None = None) -> DownReport:
    """Remove everything; safe to run twice, and after a crash or a killed ``up``."""
    lab = lab_state.load(state_dir)
    # The prefix the lab was built with, and the one asked for; the default only when neither
    # is known (a lab whose state file was never written).
    prefixes = ({lab.prefix} if lab else set()) | ({prefix} if prefix else set())
    prefixes = prefixes or {lab_state.DEFAULT_PREFIX}
    pids: set[int] = set()
    root = Path(state_dir)
    if root.is_dir():
        for path in root.rglob("*.pid"):
            pid = kernel.read_pid(path)
            if pid is not None:
                pids.add(pid)
        # Only the lab's own kinds of process: a user's `tail -f` of a lab log is left alone.
        pids.update(
            pid
            for pid in kernel.pids_naming(str(root))
            if kernel.command_name(pid).split(" ")[0].startswith(LAB_EXECUTABLES)
        )
    namespaces = sorted({name for each in prefixes for name in kernel.list_namespaces(each)})
    for namespace in namespaces:
        pids.update(kernel.namespace_pids(namespace))
    killed = kernel.kill_tree(pids, grace=3.0)
    for namespace in namespaces:
        leftover = kernel.namespace_pids(namespace)
        if leftover:
            kernel.kill_tree(leftover, grace=0.5)
    for namespace in namespaces:
        kernel.delete_namespace(namespace)
    existed = root.exists()
    with contextlib.suppress(OSError, ValueError):
        kernel.restore_neighbour_limits(json.loads((root / NEIGHBOUR_FILE).read_text()))
    shutil.rmtree(root, ignore_errors=True)
    return DownReport(killed, len(namespaces), existed)


def with_nodes(lab: LabState, nodes: tuple[NodeState, ...]) -> LabState:
    return replace(lab, nodes=nodes)

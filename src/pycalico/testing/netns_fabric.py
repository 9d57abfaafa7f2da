"""``Fabric``: several "machines" on one host, each a network namespace on a shared bridge, for
BGP tests and benchmarks (and a pattern for the lab).

Test support only; needs root.  The command helpers (``run``, ``ip``, ``netns_exec``,
``socket_in_netns``, ``NETNS_DIR``) are ``pycalico.netns.namespace``'s, re-exported here.

Layout for ``Fabric(prefix="pct1")``:

* ``pct1-fab``: a namespace holding bridge ``br0`` (address ``<subnet>.254``, the nodes' default
  gateway, so proxy ARP works in them); nothing in it is connected to the host's own network.
* ``pct1-n<i>``: one namespace per node with ``eth0`` (a veth whose other end is on ``br0``) at
  ``<subnet>.<i>/24``, forwarding on, and a loopback etcd port: ``127.0.0.1:2379`` inside the
  namespace relays to the host's etcd (``EtcdRelay``), so a node reaches etcd without any route
  into the host.
* ``pct1-p<i>``-style pod namespaces (``add_pod``): a veth ``cali…`` in the node namespace with a
  /32 route and proxy ARP, ``eth0`` in the pod with the address and a default route via
  169.254.1.1, as Calico's CNI plugin and Felix would set them up.
* ``pct1-x``-style extra namespaces (``add_router``) on the bridge for external BGP routers.

The kernel's neighbour (ARP/NDP) tables are shared by every namespace and hold 1,024 entries by
default; a full mesh of N nodes needs about N² of them, so past ~30 nodes sessions die with
"No buffer space available".  ``add_node`` raises ``gc_thresh2``/``gc_thresh3`` as needed and
``close()`` puts back the values it found (if nobody changed them since).

``close()`` kills every process in the namespaces, deletes them and the temp directory; it is
safe to call twice and runs at interpreter exit too.  Addresses: only the private test subnet
inside these namespaces.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

# The command helpers live in the runtime package (the lab uses them too); re-exported here
# for the tests and benchmarks that import them from this module.
from pycalico.netns.namespace import CLONE_NEWNET as CLONE_NEWNET
from pycalico.netns.namespace import NETNS_DIR as NETNS_DIR
from pycalico.netns.namespace import ip as ip
from pycalico.netns.namespace import netns_exec as netns_exec
from pycalico.netns.namespace import run as run
from pycalico.netns.namespace import socket_in_netns as socket_in_netns

_live: set[Fabric] = set()


def _close_all() -> None:
    for fabric in list(_live):
        with contextlib.suppress(Exception):
            fabric.close()


atexit.register(_close_all)


class EtcdRelay:
    """Relays ``127.0.0.1:<port>`` inside each given namespace to a host address, on its own
    thread and event loop, so tests that block never stall the nodes' etcd traffic."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._servers: list[asyncio.Server] = []

    def add(self, namespace: str, port: int = 2379) -> None:
        listener = socket_in_netns(namespace, socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(128)
        listener.setblocking(False)
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, sock=listener), self.loop
        )
        self._servers.append(future.result(10))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def close(self) -> None:
        async def shutdown() -> None:
            for server in self._servers:
                server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        if self.loop.is_running():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(5)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5)
        with contextlib.suppress(Exception):
            self.loop.close()


@dataclass
class FabricNode:
    index: int
    name: str  # node name
    namespace: str
    address: str  # CIDR form
    directory: str
    address6: str | None = None
    process: subprocess.Popen[bytes] | None = None
    pods: list[str] = field(default_factory=list)

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]

    @property
    def bird_socket(self) -> str:
        return os.path.join(self.directory, "run", "bird.ctl")

    @property
    def bird_config(self) -> str:
        return os.path.join(self.directory, "confd", "bird.cfg")

    def env(self, etcd_port: int = 2379) -> dict[str, str]:
        """calico-node's environment for this node (every path inside its directory)."""
        env = {
            "NODENAME": self.name,
            "IP": "autodetect",
            "IP_AUTODETECTION_METHOD": "interface=eth0",
            "ETCD_ENDPOINTS": f"http://127.0.0.1:{etcd_port}",
            "DATASTORE_TYPE": "etcdv3",
            "CALICO_RUN_DIR": os.path.join(self.directory, "run"),
            "CALICO_BIRD_CONFIG": self.bird_config,
            "CALICO_BIRD_SOCKET": self.bird_socket,
            "CALICO_LOG_DIR": os.path.join(self.directory, "log"),
            "CALICO_AGENT_SOCKET": os.path.join(self.directory, "run", "cni.sock"),
            "CALICO_NODENAME_FILE": os.path.join(self.directory, "nodename"),
            "CALICO_DISABLE_FELIX": "true",
        }
        if self.address6:
            env["IP6"] = "autodetect"
            env["IP6_AUTODETECTION_METHOD"] = "interface=eth0"
        return env


_NEIGHBOUR_SYSCTLS = tuple(
    f"/proc/sys/net/{family}/neigh/default/gc_thresh{level}"
    for family in ("ipv4", "ipv6")
    for level in (2, 3)
)


def _read_int(path: str) -> int:
    with open(path) as file:
        return int(file.read().strip())


def _write_int(path: str, value: int) -> None:
    with open(path, "w") as file:
        file.write(str(value))


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGKILL)


class Fabric:
    def __init__(
        self,
        prefix: str,
        *,
        subnet: str = "10.213.0",
        subnet6: str | None = None,
        etcd_endpoint: str | None = None,
        felix: bool = False,
    ) -> None:
        """``felix``: run Felix in each calico-node (then Felix, not the fabric, turns on the
        nodes' IP forwarding, as on a real node)."""
        if len(prefix) > 8:
            raise ValueError("prefix: at most 8 characters (interface names are short)")
        self.prefix = prefix
        self.subnet = subnet
        self.subnet6 = subnet6
        self.felix = felix
        self.fabric = f"{prefix}-fab"
        self.directory = tempfile.mkdtemp(prefix=f"pycalico-{prefix}-")
        self.namespaces: list[str] = []
        self.nodes: list[FabricNode] = []
        self.relay: EtcdRelay | None = None
        if etcd_endpoint:
            host, _, port = etcd_endpoint.rsplit("/", 1)[-1].partition(":")
            self.relay = EtcdRelay(host, int(port))
        self._closed = False
        self._neighbour_limits: dict[str, tuple[int, int]] = {}  # path -> (found, set)
        _live.add(self)
        try:
            self._add_namespace(self.fabric)
            ip(self.fabric, "link", "add", "br0", "type", "bridge")
            ip(self.fabric, "addr", "add", f"{subnet}.254/24", "dev", "br0")
            if subnet6:
                ip(self.fabric, "addr", "add", f"{subnet6}::fe/64", "dev", "br0", "nodad")
            ip(self.fabric, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    def _add_namespace(self, name: str) -> None:
        run("ip", "netns", "del", name, check=False)
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        ip(name, "link", "set", "lo", "up")

    def _attach(self, namespace: str, index: int, tag: str) -> None:
        outer = f"{self.prefix}{tag}{index}"
        ip(None, "link", "add", outer, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        ip(None, "link", "set", outer, "netns", self.fabric)
        ip(self.fabric, "link", "set", outer, "master", "br0", "up")
        ip(namespace, "link", "set", "eth0", "up")

    def add_node(self, index: int, name: str | None = None) -> FabricNode:
        namespace = f"{self.prefix}-n{index}"
        self._add_namespace(namespace)
        self._attach(namespace, index, "n")
        address = f"{self.subnet}.{index}/24"
        ip(namespace, "addr", "add", address, "dev", "eth0")
        ip(namespace, "route", "add", "default", "via", f"{self.subnet}.254")
        address6 = None
        if self.subnet6:
            address6 = f"{self.subnet6}::{index:x}/64"
            ip(namespace, "addr", "add", address6, "dev", "eth0", "nodad")
        if not self.felix:
            # Only for fabrics whose calico-node runs without Felix (CALICO_DISABLE_FELIX): the
            # fabric stands in for what Felix writes at start (ipForwarding: Enabled).
            netns_exec(namespace, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
            netns_exec(namespace, "sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1")
        directory = os.path.join(self.directory, f"node{index}")
        os.makedirs(directory)
        self._ensure_neighbour_capacity(len(self.nodes) + 2)
        node = FabricNode(index, name or f"node{index}", namespace, address, directory, address6)
        if self.relay is not None:
            self.relay.add(namespace)
        self.nodes.append(node)
        return node

    def _ensure_neighbour_capacity(self, hosts: int) -> None:
        # Each namespace may hold an entry for every other host, plus room for what else runs.
        needed = hosts * hosts + 1024
        for path in _NEIGHBOUR_SYSCTLS:
            try:
                current = _read_int(path)
                if current < needed:
                    wanted = needed if path.endswith("2") else 2 * needed
                    _write_int(path, wanted)
                    found = self._neighbour_limits.get(path, (current, wanted))[0]
                    self._neighbour_limits[path] = (found, wanted)
            except OSError:
                pass

    def _restore_neighbour_capacity(self) -> None:
        for path, (found, wanted) in self._neighbour_limits.items():
            with contextlib.suppress(OSError, ValueError):
                if _read_int(path) == wanted:
                    _write_int(path, found)

    def add_router(self, index: int, tag: str = "x") -> tuple[str, str]:
        """A bare namespace on the bridge at ``<subnet>.<index>``: (namespace, address)."""
        namespace = f"{self.prefix}-{tag}{index}"
        self._add_namespace(namespace)
        self._attach(namespace, index, tag)
        address = f"{self.subnet}.{index}"
        ip(namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        return namespace, address

    def start_node(
        self, node: FabricNode, extra_env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("ETCD_")}
        env.update(node.env())
        if self.felix:
            env.pop("CALICO_DISABLE_FELIX")
        env.update(extra_env or {})
        executable = shutil.which("calico-node") or os.path.join(
            os.path.dirname(sys.executable), "calico-node"
        )
        os.makedirs(os.path.join(node.directory, "log"), exist_ok=True)
        with open(os.path.join(node.directory, "log", "calico-node.log"), "ab") as log:
            node.process = subprocess.Popen(
                ["nsenter", f"--net={NETNS_DIR}/{node.namespace}", executable],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,
            )
        return node.process

    def stop_node(self, node: FabricNode, timeout: float = 10.0) -> None:
        process = node.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def add_pod(self, node: FabricNode, address: str, tag: str) -> str:
        """A pod namespace on ``node`` holding ``address`` (/32 or /128); returns its name."""
        pod = f"{self.prefix}-{tag}"
        self._add_namespace(pod)
        host_side = f"cali{self.prefix}{tag}"[:15]
        ip(None, "link", "add", host_side, "type", "veth", "peer", "name", "eth0", "netns", pod)
        ip(None, "link", "set", host_side, "netns", node.namespace)
        ip(node.namespace, "link", "set", host_side, "up")
        netns_exec(node.namespace, "sysctl", "-q", "-w", f"net.ipv4.conf.{host_side}.proxy_arp=1")
        ip(node.namespace, "route", "add", address, "dev", host_side)
        ip(pod, "addr", "add", address, "dev", "eth0")
        ip(pod, "link", "set", "eth0", "up")
        ip(pod, "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
        ip(pod, "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
        node.pods.append(pod)
        return pod

    def routes(self, namespace: str, version: int = 4) -> list[dict[str, object]]:
        family = "-6" if version == 6 else "-4"
        output = run("ip", "-n", namespace, "-j", family, "route", "show")
        routes: list[dict[str, object]] = json.loads(output or "[]")
        return routes

    def pids(self, namespace: str) -> list[int]:
        output = run("ip", "netns", "pids", namespace, check=False)
        return [int(word) for word in output.split() if word.isdigit()]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for node in self.nodes:
            with contextlib.suppress(Exception):
                self.stop_node(node, timeout=5)
        for _ in range(2):
            for namespace in self.namespaces:
                for pid in self.pids(namespace):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        if self.relay is not None:
            self.relay.close()
        for namespace in reversed(self.namespaces):
            run("ip", "netns", "del", namespace, check=False)
        shutil.rmtree(self.directory, ignore_errors=True)
        self._restore_neighbour_capacity()
        _live.discard(self)

    def __enter__(self) -> Fabric:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def wait_until(predicate: object, timeout: float, interval: float = 0.2) -> bool:
    """Poll ``predicate()`` until it is truthy or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():  # type: ignore[operator]
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def block_routes(routes: Sequence[dict[str, object]], protocol: str = "bird") -> set[str]:
    """The destinations of routes of a protocol (``bird`` = BGP-learned or BIRD's blackholes)."""
    return {str(route["dst"]) for route in routes if route.get("protocol") == protocol}

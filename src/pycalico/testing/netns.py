"""Network-namespace helpers for root tests: create, enter (this thread), run commands, clean up.

What it is: thin wrappers over ``ip netns`` and ``setns(2)`` so a test can build a node
namespace with pod namespaces behind ``cali*`` veths, and run in-process code (our drivers)
inside the node namespace (``enter`` is ``pycalico.netns.namespace.enter``, re-exported).
What it is not: the lab (``pycalico.lab``) or the CNI plugin.

Invariants: ``enter`` always returns the thread to its original namespace, also on error;
``Topology.cleanup`` removes every namespace it created, and is safe to call twice.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import uuid
from dataclasses import dataclass, field

# ``enter`` lives in the runtime package (the connectivity checker uses it); re-exported here.
from pycalico.netns.namespace import CLONE_NEWNET as CLONE_NEWNET
from pycalico.netns.namespace import enter as enter

IPV6_GATEWAY = "fe80::ecee:eeff:feee:eeee"


def run(
    *command: str, check: bool = True, timeout: float = 10.0
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=check, timeout=timeout)


def netns_run(name: str, *command: str, check: bool = True, timeout: float = 10.0) -> str:
    done = run("ip", "netns", "exec", name, *command, check=False, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"{name}: {' '.join(command)} failed: {done.stderr.strip()}")
    return done.stdout


@dataclass
class Pod:
    name: str  # namespace name
    interface: str  # host-side veth, cali...
    ipv4: str
    ipv6: str = ""
    mac: str = ""  # the pod side's MAC (Felix pins a static ARP entry to it)


@dataclass
class Topology:
    """One node namespace and pods behind ``cali*`` veths, wired the way Calico wires them."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    node: str = ""
    pods: dict[str, Pod] = field(default_factory=dict)
    _created: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.node = f"fxnode-{self.tag}"

    def create_node(self) -> str:
        run("ip", "netns", "add", self.node)
        self._created.append(self.node)
        netns_run(self.node, "ip", "link", "set", "lo", "up")
        # Proxy ARP answers for 169.254.1.1 only if the node has a route to it elsewhere.
        netns_run(self.node, "ip", "route", "add", "default", "dev", "lo")
        netns_run(self.node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        netns_run(self.node, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        # No duplicate address detection: the veths' link-local gateway works at once.
        netns_run(self.node, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0")
        netns_run(self.node, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0")
        return self.node

    def add_pod(self, key: str, ipv4: str, ipv6: str = "", interface: str = "") -> Pod:
        interface = interface or f"cali{self.tag}{key}"[:15]
        name = f"fxpod-{self.tag}-{key}"
        run("ip", "netns", "add", name)
        self._created.append(name)
        tmp = f"tmp{uuid.uuid4().hex[:8]}"
        run("ip", "link", "add", interface, "netns", self.node, "type", "veth", "peer", "name", tmp,
            "netns", name)  # fmt: skip
        netns_run(self.node, "ip", "link", "set", interface, "address", "ee:ee:ee:ee:ee:ee")
        netns_run(self.node, "ip", "link", "set", interface, "up")
        netns_run(name, "ip", "link", "set", "lo", "up")
        netns_run(name, "ip", "link", "set", tmp, "name", "eth0")
        netns_run(name, "ip", "addr", "add", f"{ipv4}/32", "dev", "eth0")
        netns_run(name, "ip", "link", "set", "eth0", "up")
        netns_run(name, "ip", "route", "add", "169.254.1.1", "dev", "eth0", "scope", "link")
        netns_run(name, "ip", "route", "add", "default", "via", "169.254.1.1", "dev", "eth0")
        # A permanent entry for the fake gateway, as for the workload on the node (Felix): the
        # kernel's neighbour table is shared by every namespace on the host, and a busy host
        # can fill it; permanent entries are exempt from that limit.
        netns_run(name, "ip", "neigh", "replace", "169.254.1.1", "lladdr", "ee:ee:ee:ee:ee:ee",
                  "dev", "eth0", "nud", "permanent")  # fmt: skip
        mac = netns_run(name, "cat", "/sys/class/net/eth0/address").strip()
        if ipv6:
            netns_run(name, "ip", "-6", "addr", "add", f"{ipv6}/128", "dev", "eth0", "nodad")
            # Calico's v6 gateway: the host veth's link-local, derived from ee:ee:ee:ee:ee:ee.
            netns_run(name, "ip", "-6", "route", "add", "default", "via", IPV6_GATEWAY,
                      "dev", "eth0")  # fmt: skip
        pod = Pod(name, interface, ipv4, ipv6, mac)
        self.pods[key] = pod
        return pod

    def add_outside(self, key: str, interface: str, node_ip: str, outside_ip: str, prefix: int = 24
                    ) -> Pod:  # fmt: skip
        """A namespace on a plain (non-workload) node interface, e.g. for host endpoints."""
        name = f"fxout-{self.tag}-{key}"
        run("ip", "netns", "add", name)
        self._created.append(name)
        run("ip", "link", "add", interface, "netns", self.node, "type", "veth", "peer", "name",
            "eth0", "netns", name)  # fmt: skip
        netns_run(self.node, "ip", "addr", "add", f"{node_ip}/{prefix}", "dev", interface)
        netns_run(self.node, "ip", "link", "set", interface, "up")
        netns_run(name, "ip", "link", "set", "lo", "up")
        netns_run(name, "ip", "addr", "add", f"{outside_ip}/{prefix}", "dev", "eth0")
        netns_run(name, "ip", "link", "set", "eth0", "up")
        netns_run(name, "ip", "route", "add", "default", "via", node_ip)
        # Permanent neighbours both ways (the host-wide neighbour table may be full).
        node_mac = netns_run(self.node, "cat", f"/sys/class/net/{interface}/address").strip()
        outside_mac = netns_run(name, "cat", "/sys/class/net/eth0/address").strip()
        netns_run(name, "ip", "neigh", "replace", node_ip, "lladdr", node_mac, "dev", "eth0",
                  "nud", "permanent")  # fmt: skip
        netns_run(self.node, "ip", "neigh", "replace", outside_ip, "lladdr", outside_mac, "dev",
                  interface, "nud", "permanent")  # fmt: skip
        pod = Pod(name, interface, outside_ip, mac=outside_mac)
        self.pods[key] = pod
        return pod

    def add_bare_interface(self, key: str, ipv4: str) -> Pod:
        """A pod whose ``cali*`` veth has no WorkloadEndpoint (for fail-closed tests)."""
        return self.add_pod(key, ipv4)

    def cleanup(self) -> None:
        for name in reversed(self._created):
            subprocess.run(["ip", "netns", "pids", name], capture_output=True, check=False)
            pids = subprocess.run(
                ["ip", "netns", "pids", name], capture_output=True, text=True, check=False
            ).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
        self._created.clear()


def echo_server(namespace: str, port: int) -> socket.socket:
    """A TCP listener inside ``namespace`` that echoes one connection, for established-flow
    tests; the caller closes the returned socket."""
    with enter(namespace):
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("", port))
        server.listen(4)

    def serve() -> None:
        try:
            connection, _ = server.accept()
        except OSError:
            return
        with connection:
            while data := connection.recv(64):
                connection.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    return server

"""Playing Nova for the OpenStack tests: Felix on compute nodes, VMs plugged as tap devices.

What it is: ``FelixOnNode`` runs ``calico-felix`` inside a compute node's namespace (a
``netns_fabric`` node, etcd through the node's loopback relay) with ``interfacePrefix``
``tap,cali``, and waits for its first status report; ``plug_vm`` does what Nova and libvirt do
for a port bound by the ``calico`` driver: a "VM" namespace joined to the node by a veth whose
host end is the port's ``tap<port id[:11]>``, the VM side carrying the port's MAC and fixed IP,
its default route via the subnet gateway answered by the tap's MAC (``00:61:fe:ed:ca:fe``, the
binding's ``vif_details``); ``plug_tap`` is the same without the VM namespace (benchmarks).
What it is not: a Felix test (the VM's routes and policy come from Felix alone).

Invariants: ``FelixOnNode.stop`` ends the process, also when it never became ready;
``unplug`` and ``Fabric.close`` remove every namespace and link made here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pycalico.openstack import translate
from pycalico.openstack.etcd_gateway import EtcdGateway
from pycalico.testing.netns_fabric import NETNS_DIR, FabricNode, ip, netns_exec, run

TAP_MAC = str(translate.VIF_DETAILS["mac_address"])


class FelixOnNode:
    def __init__(self, node: FabricNode, etcd: EtcdGateway, **settings: str) -> None:
        self.node = node
        self.etcd = etcd
        self.hostname = node.name
        self.log = Path(tempfile.mkstemp(prefix=f"felix-{node.name}-", suffix=".log")[1])
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("FELIX_", "ETCD_"))}
        self.env.update({
            "FELIX_ETCDENDPOINTS": "http://127.0.0.1:2379",  # the node's relay
            "FELIX_FELIXHOSTNAME": node.name,
            "FELIX_INTERFACEPREFIX": "tap,cali",
            "FELIX_LOGFILEPATH": "none",
            "FELIX_LOGSEVERITYSCREEN": "Info",
            "FELIX_REPORTINGINTERVAL": "1",
            "FELIX_ENDPOINTREPORTINGENABLED": "true",
            "FELIX_HEALTHENABLED": "false",
            "FELIX_PROMETHEUSMETRICSENABLED": "false",
            "FELIX_CONFIGFILE": "/nonexistent",
            **{f"FELIX_{k.upper()}": v for k, v in settings.items()},
        })  # fmt: skip
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> FelixOnNode:
        felix = os.path.join(os.path.dirname(sys.executable), "calico-felix")
        self.process = subprocess.Popen(
            ["nsenter", f"--net={NETNS_DIR}/{self.node.namespace}", felix], env=self.env,
            stdin=subprocess.DEVNULL, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        key = f"/calico/felix/v2/no-region/host/{self.hostname}/status"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"felix on {self.hostname} exited:\n{self.tail()}")
            if self.etcd.get(key) is not None:
                return self
            time.sleep(0.1)
        raise TimeoutError(
            f"felix on {self.hostname} did not report within {timeout}s\n{self.tail()}"
        )

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.process = None
        self.log.unlink(missing_ok=True)


def tap_name(port: dict[str, Any]) -> str:
    return translate.interface_name(str(port["id"]))


def plug_tap(node: FabricNode, port: dict[str, Any]) -> str:
    """The port's tap device on ``node`` with a peer that stays in the node (no VM)."""
    tap = tap_name(port)
    peer = "vm" + str(port["id"])[:11]
    ip(node.namespace, "link", "add", tap, "address", TAP_MAC, "type", "veth", "peer", "name",
       peer, "address", str(port["mac_address"]))  # fmt: skip
    ip(node.namespace, "link", "set", peer, "up")
    ip(node.namespace, "link", "set", tap, "up")
    return tap


def plug_vm(node: FabricNode, port: dict[str, Any], gateway: str, prefix: str = "osvm") -> str:
    """A VM namespace for ``port`` (first fixed IP), plugged into ``node``; returns its name."""
    vm = f"{prefix}-{str(port['id'])[:8]}"
    tap = tap_name(port)
    address = str(port["fixed_ips"][0]["ip_address"])
    run("ip", "netns", "add", vm)
    ip(vm, "link", "set", "lo", "up")
    ip(node.namespace, "link", "add", tap, "address", TAP_MAC, "type", "veth", "peer", "name",
       "eth0", "address", str(port["mac_address"]), "netns", vm)  # fmt: skip
    ip(node.namespace, "link", "set", tap, "up")
    ip(vm, "link", "set", "eth0", "up")
    ip(vm, "addr", "add", f"{address}/32", "dev", "eth0")
    ip(vm, "route", "add", gateway, "dev", "eth0", "scope", "link")
    ip(vm, "route", "add", "default", "via", gateway, "dev", "eth0")
    ip(vm, "neigh", "replace", gateway, "lladdr", TAP_MAC, "dev", "eth0", "nud", "permanent")
    return vm


def unplug(vm: str) -> None:
    for pid in run("ip", "netns", "pids", vm, check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    run("ip", "netns", "del", vm, check=False)


def node_routes(node: FabricNode) -> str:
    return netns_exec(node.namespace, "ip", "-4", "route", "show")

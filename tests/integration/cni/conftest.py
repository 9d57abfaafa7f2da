"""Fixtures for the ``calico`` plugin on real namespaces and a real etcd.

* ``cni_node`` (function): a node network namespace (loopback up, forwarding on, ``default dev
  lo`` so proxy ARP answers for 169.254.1.1), a registered Node and an IPPool in etcd, and
  helpers to make pod namespaces and to run the real ``calico`` executable inside the node
  namespace (``nsenter --net``), in-process or through a node agent that runs in the node
  namespace too (``start_agent``).

Everything it creates (namespaces, agent process, temp files) is removed at the end of each
test, also on failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from pycalico.datastore.api import KVStore
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.ipam import put_node, put_pool
from pycalico.testing.netns_fabric import EtcdRelay

pytestmark = pytest.mark.root

BIN = Path(sys.executable).parent
CALICO = str(BIN / "calico")
CALICOCTL = str(BIN / "calicoctl")
POOL = "10.65.0.0/16"


def ip(*args: str, check: bool = True) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check and done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


class CniNode:
    def __init__(self, etcd: EtcdServer, tmp: Path, name: str = "node-1") -> None:
        self.etcd = etcd
        self.tmp = tmp
        self.name = name
        tag = uuid.uuid4().hex[:6]
        self.netns = f"cni-node-{tag}"
        self.tag = tag
        self.pods: list[str] = []
        self.agent: subprocess.Popen[bytes] | None = None
        self.socket = str(tmp / "cni.sock")
        self.relay: EtcdRelay | None = None
        self.endpoint = "http://127.0.0.1:2379"
        ip("netns", "add", self.netns)
        try:
            self.exec("ip", "link", "set", "lo", "up")
            self.exec("sysctl", "-qw", "net.ipv4.ip_forward=1")
            self.exec("ip", "route", "add", "default", "dev", "lo")
            # etcd listens in the test's namespace: the node reaches it on its own loopback.
            host, _, port = etcd.endpoint.rpartition("/")[2].partition(":")
            self.relay = EtcdRelay(host, int(port))
            self.relay.add(self.netns)
        except BaseException:
            self.close()
            raise

    @property
    def netns_path(self) -> str:
        return f"/var/run/netns/{self.netns}"

    def exec(self, *command: str, check: bool = True) -> str:
        done = subprocess.run(
            ["ip", "netns", "exec", self.netns, *command],
            capture_output=True,
            text=True,
            timeout=20,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")
        return done.stdout

    def pod(self, key: str) -> str:
        """A fresh pod namespace; returns its path (CNI_NETNS)."""
        name = f"cni-pod-{self.tag}-{key}"
        ip("netns", "add", name)
        self.pods.append(name)
        return f"/var/run/netns/{name}"

    def conf(self, version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
        conf: dict[str, Any] = {
            "cniVersion": version,
            "name": "k8s-pod-network",
            "type": "calico",
            "nodename": self.name,
            "etcd_endpoints": self.endpoint,
            "log_file_path": str(self.tmp / "cni.log"),
            "ipam_lock_file": str(self.tmp / "ipam.lock"),
            "mtu": 1450,
            "ipam": {"type": "calico-ipam"},
        }
        conf.update(extra)
        return conf

    def env(
        self,
        command: str,
        container: str,
        netns: str | None,
        *,
        ifname: str | None = "eth0",
        args: str = "",
        agent: bool = False,
    ) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container,
            "CNI_PATH": f"{BIN}:/usr/lib/cni",
            "CNI_ARGS": args,
            "CALICO_AGENT_SOCKET": self.socket if agent else str(self.tmp / "nobody.sock"),
        }
        if netns is not None:
            env["CNI_NETNS"] = netns
        if ifname is not None:
            env["CNI_IFNAME"] = ifname
        return env

    def run(self, binary: str, env: Mapping[str, str], stdin: str) -> tuple[int, Any, str]:
        """Run a plugin in the node namespace; stdout is parsed as JSON when it is JSON."""
        done = subprocess.run(
            ["nsenter", f"--net={self.netns_path}", binary],
            input=stdin,
            capture_output=True,
            text=True,
            env=dict(env),
            timeout=120,
        )
        try:
            out: Any = json.loads(done.stdout) if done.stdout.strip() else None
        except ValueError:
            out = done.stdout
        return done.returncode, out, done.stderr

    def cni(
        self,
        command: str,
        container: str,
        conf: Mapping[str, Any],
        netns: str | None,
        **options: Any,
    ) -> tuple[int, Any, str]:
        return self.run(CALICO, self.env(command, container, netns, **options), json.dumps(conf))

    def cali_links(self) -> list[str]:
        links = json.loads(self.exec("ip", "-j", "link", "show"))
        return [link["ifname"] for link in links if link["ifname"].startswith("cali")]

    def routes(self) -> list[str]:
        routes = json.loads(self.exec("ip", "-j", "route", "show"))
        return [r["dst"] for r in routes if r.get("dev", "").startswith("cali")]

    def start_agent(self) -> None:
        env = {**os.environ, "ETCD_ENDPOINTS": self.endpoint, "PYTHONUNBUFFERED": "1"}
        self.agent = subprocess.Popen(
            [
                "nsenter",
                f"--net={self.netns_path}",
                sys.executable,
                "-m",
                "pycalico.cni.agent_server",
                "--socket",
                self.socket,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.tmp / "agent.log", "wb"),  # noqa: SIM115 - closed with the process
        )
        deadline = time.monotonic() + 20
        while not os.path.exists(self.socket):
            if self.agent.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((self.tmp / "agent.log").read_text())
            time.sleep(0.05)

    def close(self) -> None:
        if self.agent is not None:
            self.agent.terminate()
            try:
                self.agent.wait(10)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()
        if self.relay is not None:
            self.relay.close()
        for name in [*self.pods, self.netns]:
            ip("netns", "del", name, check=False)


@pytest.fixture
async def cni_node(kv: KVStore, etcd: EtcdServer, tmp_path: Path) -> AsyncIterator[CniNode]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    await put_pool(kv, "default-ipv4-ippool", POOL)
    await put_node(kv, "node-1")
    node = CniNode(etcd, tmp_path)
    try:
        yield node
    finally:
        node.close()

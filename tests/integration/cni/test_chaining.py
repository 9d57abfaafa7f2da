"""``calico`` first in a conflist with the reference plugins (``tuning``, ``portmap``,
``bandwidth`` from /usr/lib/cni), run the way libcni runs a list: each plugin gets the previous
one's result as ``prevResult``, capabilities become ``runtimeConfig``, the final result is
cached, and DEL runs the list backwards with the cached result."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from pycalico.datastore.api import KVStore
from pycalico.ipam.check import check

from .conftest import CALICO, CniNode, ip

pytestmark = pytest.mark.root

REFERENCE = Path("/usr/lib/cni")
HOST_PORT = 18080
CONTAINER_PORT = 8080


def run_list(
    node: CniNode,
    command: str,
    conflist: dict[str, Any],
    container: str,
    netns: str,
    runtime: dict[str, Any],
    cache: Path,
) -> dict[str, Any] | None:
    """libcni's AddNetworkList / DelNetworkList, reduced to what the specification requires."""
    plugins = conflist["plugins"]
    previous: dict[str, Any] | None = None
    if command == "DEL":
        previous = json.loads(cache.read_text()) if cache.exists() else None
        plugins = list(reversed(plugins))
    for plugin in plugins:
        conf = {**plugin, "name": conflist["name"], "cniVersion": conflist["cniVersion"]}
        capabilities = conf.pop("capabilities", {})
        wanted = {k: v for k, v in runtime.items() if capabilities.get(k)}
        if wanted:
            conf["runtimeConfig"] = wanted
        if previous is not None:
            conf["prevResult"] = previous
        binary = CALICO if plugin["type"] == "calico" else str(REFERENCE / plugin["type"])
        env = node.env(
            command, container, netns, args="IgnoreUnknown=1;K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web"
        )
        code, out, err = node.run(binary, env, json.dumps(conf))
        assert code == 0, (plugin["type"], command, out, err)
        if command == "ADD":
            previous = out
    if command == "ADD":
        assert previous is not None
        cache.write_text(json.dumps(previous))
        return previous
    cache.unlink(missing_ok=True)
    return None


def serve_once(netns: str) -> subprocess.Popen[str]:
    script = (
        "import socket\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('0.0.0.0', {CONTAINER_PORT})); s.listen(4); print('ready', flush=True)\n"
        "c, a = s.accept(); c.sendall(b'hello from the pod'); c.close()\n"
    )
    process = subprocess.Popen(
        ["ip", "netns", "exec", netns, "python3", "-c", script],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


async def test_conflist_with_tuning_portmap_bandwidth(
    cni_node: CniNode, kv: KVStore, tmp_path: Path
) -> None:
    calico = cni_node.conf()
    for key in ("cniVersion", "name"):
        del calico[key]
    conflist = {
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "plugins": [
            calico,
            {"type": "tuning", "sysctl": {"net.core.somaxconn": "777"}},
            {"type": "portmap", "snat": True, "capabilities": {"portMappings": True}},
            {"type": "bandwidth", "capabilities": {"bandwidth": True}},
        ],
    }
    runtime = {
        "portMappings": [
            {"hostPort": HOST_PORT, "containerPort": CONTAINER_PORT, "protocol": "tcp"}
        ],
        "bandwidth": {
            "ingressRate": 8_000_000,
            "ingressBurst": 80_000,
            "egressRate": 8_000_000,
            "egressBurst": 80_000,
        },
    }
    # A client outside the node, on a link of the test's own (198.18.0.0/24, benchmark range).
    client = cni_node.pod("client").rsplit("/", 1)[1]
    ip(
        "link",
        "add",
        "ext-node",
        "netns",
        cni_node.netns,
        "type",
        "veth",
        "peer",
        "name",
        "ext-client",
        "netns",
        client,
    )
    cni_node.exec("ip", "addr", "add", "198.18.0.1/24", "dev", "ext-node")
    cni_node.exec("ip", "link", "set", "ext-node", "up")
    ip("-n", client, "addr", "add", "198.18.0.2/24", "dev", "ext-client")
    ip("-n", client, "link", "set", "ext-client", "up")

    netns = cni_node.pod("web")
    pod = netns.rsplit("/", 1)[1]
    cache = tmp_path / "cache.json"
    result = run_list(cni_node, "ADD", conflist, "chained", netns, runtime, cache)
    assert result is not None and result["cniVersion"] == "1.0.0"
    address = result["ips"][0]["address"].split("/")[0]
    host_veth = result["interfaces"][0]["name"]
    # tuning ran in the pod, bandwidth shaped the host side of calico's veth.
    assert (
        subprocess.run(
            ["ip", "netns", "exec", pod, "sysctl", "-n", "net.core.somaxconn"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        == "777"
    )
    assert "tbf" in cni_node.exec("tc", "qdisc", "show", "dev", host_veth)
    assert any(name.startswith("bwp") for name in link_names(cni_node))
    # portmap: the client reaches the pod's server through the node's host port.
    server = serve_once(pod)
    try:
        reply = b""
        deadline = time.monotonic() + 20
        while not reply and time.monotonic() < deadline:
            done = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    client,
                    "python3",
                    "-c",
                    f"import socket; s = socket.create_connection(('198.18.0.1', {HOST_PORT}), timeout=3);"
                    "print(s.recv(100).decode())",
                ],
                capture_output=True,
                text=True,
            )
            reply = done.stdout.strip().encode()
            if not reply:
                time.sleep(0.2)
        assert reply == b"hello from the pod", (done.stderr, diagnostics(cni_node, pod))
    finally:
        server.kill()
        server.wait()
    assert address in cni_node.exec("iptables-save", "-t", "nat")

    run_list(cni_node, "DEL", conflist, "chained", netns, runtime, cache)
    assert address not in cni_node.exec("iptables-save", "-t", "nat")
    assert not any(name.startswith(("bwp", "cali")) for name in link_names(cni_node))
    assert (await check(kv)).allocations == 0
    # A second DEL (no cache any more, as after a restart) still succeeds everywhere.
    run_list(cni_node, "DEL", conflist, "chained", netns, runtime, cache)


def link_names(node: CniNode) -> list[str]:
    return [link["ifname"] for link in json.loads(node.exec("ip", "-j", "link", "show"))]


def diagnostics(node: CniNode, pod: str) -> str:
    def run(*command: str) -> str:
        return subprocess.run(command, capture_output=True, text=True).stdout

    return "\n".join(
        [
            run("ip", "-n", pod, "route"),
            run("ip", "-n", pod, "neigh"),
            node.exec("ip", "route"),
            node.exec("ip", "neigh"),
            node.exec("nft", "list", "ruleset"),
        ]
    )

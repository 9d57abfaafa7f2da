"""A real CNI caller: podman 4 (CNI network backend, runc) runs a busybox container on a
``[calico, portmap]`` network inside a node namespace.  The container gets its address from
Calico IPAM, a client outside the node reaches it through the host port, and ``--rm`` makes
podman call DEL with the cached result, which leaves nothing behind.

Set up the way DESIGN.md §5 says podman works on these machines: a private containers.conf
(CNI backend, the test's plugin and config directories, cgroupfs), a private vfs storage, a
rootfs holding only busybox-static, ``--runtime runc``, and ``nsenter --net`` into the node.
Skipped when podman, runc or busybox-static are not installed (``make setup`` installs them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pycalico.cni.install import InstallOptions, install
from pycalico.datastore.api import KVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.ipam.check import check
from pycalico.model.endpoints import WorkloadEndpoint

from .conftest import CniNode, ip

pytestmark = [pytest.mark.root, pytest.mark.slow]

BUSYBOX = "/bin/busybox"
HOST_PORT = 18081
NETWORK = "calinet"


def have_podman() -> bool:
    return bool(shutil.which("podman") and shutil.which("runc")) and _static_busybox()


def _static_busybox() -> bool:
    """busybox-static, not the dynamic busybox: a rootfs holding only it must run."""
    if not os.path.exists(BUSYBOX):
        return False
    with open(BUSYBOX, "rb") as handle:
        return b"ld-linux" not in handle.read(4096)


def make_rootfs(root: Path) -> None:
    (root / "bin").mkdir(parents=True)
    for directory in ("proc", "sys", "dev", "etc", "tmp", "run"):
        (root / directory).mkdir()
    shutil.copy(BUSYBOX, root / "bin" / "busybox")
    applets = subprocess.run(
        [BUSYBOX, "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")


@pytest.mark.skipif(not have_podman(), reason="podman, runc and busybox-static not installed")
async def test_podman_runs_a_container_on_calico_with_a_port_mapping(
    cni_node: CniNode, kv: KVStore, tmp_path: Path
) -> None:
    bin_dir, conf_dir = tmp_path / "bin", tmp_path / "net.d"
    install(
        InstallOptions(
            bin_dir=str(bin_dir),
            conf_dir=str(conf_dir),
            conf_name=f"{NETWORK}.conflist",
            network_name=NETWORK,
            nodename=cni_node.name,
            etcd_endpoints=cni_node.endpoint,
            log_file_path=str(tmp_path / "cni.log"),
            ipam_lock_file=str(tmp_path / "ipam.lock"),
            agent_socket=str(tmp_path / "nobody.sock"),
            with_reference_plugins=True,
        )
    )
    conflist = json.loads((conf_dir / f"{NETWORK}.conflist").read_text())
    conflist["plugins"] = conflist["plugins"][:2]  # [calico, portmap]
    (conf_dir / f"{NETWORK}.conflist").write_text(json.dumps(conflist))
    (tmp_path / "containers.conf").write_text(
        "[network]\n"
        'network_backend = "cni"\n'
        f'cni_plugin_dirs = ["{bin_dir}"]\n'
        f'network_config_dir = "{conf_dir}"\n'
        "[engine]\n"
        'cgroup_manager = "cgroupfs"\n'
    )
    (tmp_path / "storage.conf").write_text(
        "[storage]\n"
        'driver = "vfs"\n'
        f'graphroot = "{tmp_path / "graph"}"\n'
        f'runroot = "{tmp_path / "runroot"}"\n'
    )
    rootfs = tmp_path / "rootfs"
    make_rootfs(rootfs)
    client = cni_node.pod("client").rsplit("/", 1)[1]
    ip("link", "add", "ext-node", "netns", cni_node.netns, "type", "veth", "peer", "name",
       "ext-client", "netns", client)  # fmt: skip
    cni_node.exec("ip", "addr", "add", "198.18.0.1/24", "dev", "ext-node")
    cni_node.exec("ip", "link", "set", "ext-node", "up")
    ip("-n", client, "addr", "add", "198.18.0.2/24", "dev", "ext-client")
    ip("-n", client, "link", "set", "ext-client", "up")
    env = {
        "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
        "CONTAINERS_CONF": str(tmp_path / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(tmp_path / "storage.conf"),
        "HOME": str(tmp_path),
    }
    script = "ip -o -4 addr show eth0; echo hello-from-podman | nc -l -p 8080"
    podman = subprocess.Popen(
        [
            "nsenter", f"--net={cni_node.netns_path}",
            "podman", "--runtime", "runc", "run", "--rm",
            "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096",
            "--network", NETWORK, "-p", f"{HOST_PORT}:8080",
            "--rootfs", str(rootfs), "/bin/sh", "-c", script,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert podman.stdout is not None
        line = podman.stdout.readline()
        assert " eth0 " in line and "inet 10.65." in line, (line, podman.stderr.read())
        address = line.split("inet ")[1].split("/")[0]
        endpoints = (await ResourceStore(kv).list(WorkloadEndpoint)).items
        assert [e.spec.ip_networks for e in endpoints] == [[f"{address}/32"]]
        reply = ""
        deadline = time.monotonic() + 20
        while not reply and time.monotonic() < deadline:
            done = subprocess.run(
                ["ip", "netns", "exec", client, "python3", "-c",
                 f"import socket; s = socket.create_connection(('198.18.0.1', {HOST_PORT}), "
                 "timeout=3); print(s.recv(100).decode().strip())"],
                capture_output=True, text=True,
            )  # fmt: skip
            reply = done.stdout.strip()
            if not reply:
                time.sleep(0.3)
        assert reply == "hello-from-podman", done.stderr
        podman.wait(60)
        assert podman.returncode == 0, podman.stderr.read() if podman.stderr else ""
    finally:
        if podman.poll() is None:
            podman.kill()
            podman.wait()
            # conmon outlives a killed podman: remove the container (and its network) too.
            subprocess.run(
                ["nsenter", f"--net={cni_node.netns_path}", "podman", "--runtime", "runc",
                 "rm", "--force", "--all"],
                env=env, capture_output=True, timeout=60,
            )  # fmt: skip
    # --rm: podman ran DEL (with prevResult) for both plugins.
    assert cni_node.cali_links() == []
    assert address not in cni_node.exec("iptables-save", "-t", "nat")
    assert (await ResourceStore(kv).list(WorkloadEndpoint)).items == []
    assert (await check(kv)).allocations == 0

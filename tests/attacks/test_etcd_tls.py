"""etcd with TLS client certificates, end to end: calicoctl, the CNI IPAM plugin, Felix,
``calico-node -startup`` and calico-kube-controllers work with Calico's
``ETCD_CA_CERT_FILE``/``ETCD_CERT_FILE``/``ETCD_KEY_FILE``; a client without a certificate is
refused; and no component, at debug level, writes the private key or a Kubernetes token it was
given into its log.

Real processes (the installed ``calicoctl``, ``calico-ipam``, ``calico-felix``,
``calico-node``, ``calico-kube-controllers``) against a real etcd started with
``--client-cert-auth``.  Felix runs in a node namespace of its own (root), reaching etcd
through a TCP relay, so the TLS session is end to end.  kube-controllers also talks to the
session's real kube-apiserver (root).  calico-node's confd builds its store from the same
``DatastoreConfig.from_env`` (``tests/integration/datastore/test_etcd_tls.py`` covers that path).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycalico.datastore.api import KeyNotFound
from pycalico.datastore.config import DatastoreConfig
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.ipam.allocator import IPAM
from pycalico.testing import netns
from pycalico.testing.calicoctl import Calicoctl
from pycalico.testing.etcd_server import EtcdServer, ServerTLS, free_port, make_test_pki
from pycalico.testing.eventually import eventually
from pycalico.testing.felix_world import etcd_node
from pycalico.testing.ipam import put_pool
from pycalico.testing.kube_controllers import KubeControllersProcess
from pycalico.testing.kube_ipam import assign_pod_address, create_calico_node
from pycalico.testing.kube_server import KubeControlPlane

BIN = Path(sys.executable).parent
TOKEN = "kube-token-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
POOL = {
    "apiVersion": "projectcalico.org/v3",
    "kind": "IPPool",
    "metadata": {"name": "tls-pool"},
    "spec": {"cidr": "10.67.0.0/16", "blockSize": 26, "natOutgoing": False},
}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ServerTLS:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def etcd(pki: ServerTLS) -> Iterator[EtcdServer]:
    with EtcdServer(name="attacks-tls", tls=pki) as server:
        yield server


def tls_env(pki: ServerTLS, with_certificate: bool = True) -> dict[str, str]:
    env = {"ETCD_CA_CERT_FILE": pki.ca_file}
    if with_certificate:
        env |= {"ETCD_CERT_FILE": pki.client_cert_file, "ETCD_KEY_FILE": pki.client_key_file}
    return env


def key_secret(pki: ServerTLS) -> str:
    """A line from the middle of the client's private key: must never be logged."""
    lines = Path(pki.client_key_file).read_text().splitlines()
    return lines[len(lines) // 2]


def calicoctl(etcd: EtcdServer, pki: ServerTLS, with_certificate: bool = True) -> Calicoctl:
    ctl = Calicoctl(etcd.endpoint)
    ctl.env.update(tls_env(pki, with_certificate))
    return ctl


def test_calicoctl_with_a_client_certificate_and_refused_without(
    etcd: EtcdServer, pki: ServerTLS
) -> None:
    assert etcd.endpoint.startswith("https://")
    ctl = calicoctl(etcd, pki)
    ctl.ok("apply", "-f", "-", stdin=json.dumps(POOL))
    done = ctl("--log-level", "debug", "get", "ippool", "tls-pool", "-o", "yaml")
    assert done.returncode == 0 and "10.67.0.0/16" in done.stdout, done.stderr
    assert key_secret(pki) not in done.stdout + done.stderr
    refused = calicoctl(etcd, pki, with_certificate=False)("get", "ippool", "tls-pool")
    assert refused.returncode != 0 and "10.67.0.0/16" not in refused.stdout
    assert refused.stderr.strip(), "a refusal must say why"


def plugin(pki: ServerTLS, etcd: EtcdServer, tmp: Path, command: str, binary: str = "calico-ipam",
           with_certificate: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
    conf = {
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "calico",
        "nodename": "tls-node",
        "etcd_endpoints": etcd.endpoint,
        "etcd_ca_cert_file": pki.ca_file,
        "log_level": "debug",
        "log_file_path": str(tmp / "cni.log"),
        "ipam_lock_file": str(tmp / "ipam.lock"),
        "policy": {"type": "k8s", "k8s_auth_token": TOKEN},
        "ipam": {"type": "calico-ipam"},
    }
    if with_certificate:
        conf |= {"etcd_cert_file": pki.client_cert_file, "etcd_key_file": pki.client_key_file}
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "tls-container-1",
        "CNI_IFNAME": "eth0",
        "CNI_NETNS": "/var/run/netns/none",
        "CNI_PATH": str(BIN),
    }
    return subprocess.run([str(BIN / binary)], input=json.dumps(conf), env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def test_cni_ipam_with_a_client_certificate_and_refused_without(
    etcd: EtcdServer, pki: ServerTLS, tmp_path: Path
) -> None:
    node = {"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": {"name": "tls-node"}}
    ctl = calicoctl(etcd, pki)
    ctl.ok("apply", "-f", "-", stdin=json.dumps(POOL))
    ctl.ok("apply", "-f", "-", stdin=json.dumps(node))
    refused = plugin(pki, etcd, tmp_path, "ADD", with_certificate=False)
    assert refused.returncode != 0, refused.stdout
    added = plugin(pki, etcd, tmp_path, "ADD")
    assert added.returncode == 0, added.stdout + added.stderr
    assert json.loads(added.stdout)["ips"][0]["address"].startswith("10.67."), added.stdout
    deleted = plugin(pki, etcd, tmp_path, "DEL")
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    # The calico plugin (which writes the CNI log file; calico-ipam logs nothing) at debug,
    # given the same netconf with the token and the key: a DEL of a container it never saw.
    removed = plugin(pki, etcd, tmp_path, "DEL", binary="calico")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    log = (tmp_path / "cni.log").read_text()
    assert "DEL" in log, "nothing logged: the check below would prove nothing"
    for run in (refused, added, deleted, removed):
        log += run.stdout + run.stderr
    assert TOKEN not in log and key_secret(pki) not in log


def _ready(node: str, port: int) -> bool:
    with contextlib.suppress(OSError, ValueError, IndexError):
        with netns.enter(node):
            sock = socket.create_connection(("127.0.0.1", port), timeout=1)
        with sock:
            sock.sendall(b"GET /readiness HTTP/1.0\r\n\r\n")
            return sock.recv(64).split()[1] == b"200"
    return False


@pytest.mark.root
def test_felix_syncs_over_tls_with_a_client_certificate(
    etcd: EtcdServer, pki: ServerTLS, tmp_path: Path
) -> None:
    relay_port = free_port()
    with etcd_node(etcd, {}, relay_port) as (topo, _relay):
        health = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "FELIX_"))},
            **tls_env(pki),
            "ETCD_ENDPOINTS": f"https://127.0.0.1:{relay_port}",
            "FELIX_FELIXHOSTNAME": f"tls-{topo.tag}",
            "FELIX_LOGFILEPATH": "none",
            "FELIX_LOGSEVERITYSCREEN": "Debug",
            "FELIX_HEALTHENABLED": "true",
            "FELIX_HEALTHPORT": str(health),
            "FELIX_CONFIGFILE": "/nonexistent",
            "FELIX_ENDPOINTSTATUSPATHPREFIX": "",
        }
        log = tmp_path / "felix.log"
        with log.open("wb") as out:
            felix = subprocess.Popen(["ip", "netns", "exec", topo.node, str(BIN / "calico-felix")],
                                     env=env, stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while not _ready(topo.node, health):
                assert felix.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.1)
        finally:
            felix.terminate()
            try:
                felix.wait(10)
            except subprocess.TimeoutExpired:
                felix.kill()
                felix.wait(10)
            netns.netns_run(topo.node, "nft", "delete", "table", "inet", "calico", check=False)
        text = log.read_text()
        assert key_secret(pki) not in text and "PRIVATE KEY" not in text


def test_calico_node_startup_with_a_client_certificate_and_refused_without(
    etcd: EtcdServer, pki: ServerTLS, tmp_path: Path
) -> None:
    """``calico-node -startup`` (the same ``DatastoreConfig.from_env`` as its confd and as
    kube-controllers) registers its node over TLS at debug level; without a certificate it
    exits 1 and registers nothing."""

    def startup(name: str, with_certificate: bool) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "ETCD_ENDPOINTS": etcd.endpoint,
            **tls_env(pki, with_certificate),
            "NODENAME": name,
            "IP": "10.215.0.5/24" if with_certificate else "10.215.0.6/24",
            "NO_DEFAULT_POOLS": "true",
            "CALICO_NODENAME_FILE": str(tmp_path / f"{name}.nodename"),
            "CALICO_LOG_LEVEL": "debug",
        }
        return subprocess.run([str(BIN / "calico-node"), "-startup"], env=env,
                              capture_output=True, text=True, timeout=90, check=False)  # fmt: skip

    registered = startup("tls-node-ok", True)
    assert registered.returncode == 0, registered.stderr[-3000:]
    refused = startup("tls-node-refused", False)
    assert refused.returncode == 1 and refused.stderr.strip(), refused.stderr[-3000:]
    names = calicoctl(etcd, pki).ok("get", "nodes")
    assert "tls-node-ok" in names and "tls-node-refused" not in names
    logged = registered.stdout + registered.stderr + refused.stdout + refused.stderr
    assert key_secret(pki) not in logged and "PRIVATE KEY" not in logged


POLICY = """apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: web, namespace: {namespace}}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  ingress: [{{from: [{{podSelector: {{}}}}], ports: [{{port: 80}}]}}]
"""


def kube_controllers_env(etcd: EtcdServer, pki: ServerTLS, kubeconfig: Path,
                         with_certificate: bool) -> dict[str, str]:  # fmt: skip
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "PYTHONPATH")}
    return {
        **keep,
        "PYTHONUNBUFFERED": "1",
        "DATASTORE_TYPE": "etcdv3",
        "ETCD_ENDPOINTS": etcd.endpoint,
        **tls_env(pki, with_certificate),
        "KUBECONFIG": str(kubeconfig),
        "LOG_LEVEL": "debug",
        "LEADER_ELECTION_NAMESPACE": "default",
        "LEADER_ELECTION_NAME": f"kc-tls-{secrets.token_hex(4)}",
    }


@pytest.mark.root
async def test_kube_controllers_over_tls_and_refused_without_a_certificate(
    etcd: EtcdServer, pki: ServerTLS, kube_plane: KubeControlPlane, tmp_path: Path
) -> None:
    """calico-kube-controllers (the executable, ``LOG_LEVEL=debug``) against etcd with
    ``--client-cert-auth``: without a client certificate its status says the datastore refused
    it and it writes nothing, not even its default configuration; with one, a namespace becomes
    profile ``kns.<ns>``, a NetworkPolicy ``knp.default.web``, and a deleted Kubernetes Node's
    Calico Node and addresses go.  Neither log holds the key or the API server's token."""
    api = kube_plane.apiserver
    namespace, node = f"kc-tls-{secrets.token_hex(3)}", f"kc-tls-node-{secrets.token_hex(3)}"
    kv = EtcdKVStore.from_config(DatastoreConfig.from_env(
        {"ETCD_ENDPOINTS": etcd.endpoint, **tls_env(pki)}))  # fmt: skip
    store, ipam = ResourceStore(kv), IPAM(kv)
    refused = KubeControllersProcess(
        tmp_path, "kc-nocert", kube_controllers_env(etcd, pki, api.kubeconfig, False)
    )
    allowed = KubeControllersProcess(
        tmp_path, "kc-cert", kube_controllers_env(etcd, pki, api.kubeconfig, True)
    )
    try:
        revision = await kv.current_revision()
        api.kubectl("create", "namespace", namespace)
        refused.start()
        await refused.wait_for("datastore not ready")
        status = refused.check()
        assert status.returncode == 1, status.stdout
        assert "Error initializing datastore" in status.stdout, status.stdout
        assert "without a client certificate" in status.stdout, status.stdout
        # Nothing written: no key changed since.  (Not "the revision did not move": a key an
        # earlier test left on a lease may expire meanwhile, and its deletion counts.)
        listed = await kv.list("")
        assert not [item.key for item in listed.items if item.revision > revision]
        refused.stop()

        (tmp_path / "node.json").write_text(
            json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}})
        )
        api.kubectl("create", "-f", str(tmp_path / "node.json"))
        await put_pool(kv, "tls-kc-pool", "10.68.0.0/16", block_size=26)
        await create_calico_node(store, node)
        address = await assign_pod_address(ipam, node, namespace, "web-1")
        allowed.start()
        await eventually(lambda: store.get("Profile", f"kns.{namespace}"), timeout=30)
        (tmp_path / "policy.yaml").write_text(POLICY.format(namespace=namespace))
        api.kubectl("apply", "-f", str(tmp_path / "policy.yaml"))
        await eventually(lambda: store.get("NetworkPolicy", "knp.default.web", namespace), 30)
        api.kubectl("delete", "node", node)

        async def node_cleaned() -> None:
            assert await ipam.allocation_info(address) is None
            with contextlib.suppress(KeyNotFound):
                await store.get("Node", node)
                raise AssertionError(f"Calico Node {node} is still there")

        await eventually(node_cleaned, timeout=30)

        async def ready() -> None:
            assert allowed.check().stdout == "Ready\n", allowed.check().stdout

        await eventually(ready, timeout=30)
    finally:
        refused.stop()
        allowed.stop()
        # No kube-controller-manager empties a deleted namespace: remove the policy first.
        api.kubectl("delete", "networkpolicy", "--all", "-n", namespace, check=False)
        api.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        api.kubectl("delete", "node", node, "--ignore-not-found", check=False)
        await kv.delete_prefix("/calico")
        await kv.close()
    logged = refused.text() + allowed.text()
    assert "DEBUG" in allowed.text(), "not at debug level: the check below would prove little"
    for secret in (key_secret(pki), "PRIVATE KEY", api.token):
        assert secret not in logged

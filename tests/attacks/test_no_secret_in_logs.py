"""No BGP password in any log at debug level, nor in ``calicoctl get -o yaml``.

confd (in process, on a real etcd, each render checked by ``bird -p``) resolves a BGPPeer's and
the mesh's ``secretKeyRef`` from a mounted-secret directory at debug level: the password reaches
``bird.cfg`` (so the test would see it if it leaked) and no log record; a password BIRD cannot
carry is dropped with a note that names the secret, not its value.  ``calicoctl get -o yaml``
shows the reference, never the value (the datastore never holds it).

etcd client keys and a Kubernetes token in the CNI, calicoctl and Felix logs:
``test_etcd_tls.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from pycalico.bgp.confd import Confd, SecretResolver
from pycalico.datastore import paths
from pycalico.model.codec import encode_value
from pycalico.testing.calicoctl import Calicoctl
from pycalico.testing.etcd_server import EtcdServer
from tests.unit.bgp.scenarios import config, node, peer, pool

PEER_SECRET = "peer-Pa55-7c1d9e"
MESH_SECRET = "mesh-Pa55-4b2a8f"
UNRENDERABLE = 'bad"Pa55\n-e0f1'


def ref(key: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": "bgp-secrets", "key": key}}


async def wait_for(predicate: Any, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(str(predicate))
        await asyncio.sleep(0.05)


async def test_confd_at_debug_logs_no_bgp_password(
    kv: Any, etcd: EtcdServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secrets = tmp_path / "secrets" / "bgp-secrets"
    secrets.mkdir(parents=True)
    for key, value in (("peer", PEER_SECRET), ("mesh", MESH_SECRET), ("bad", UNRENDERABLE)):
        (secrets / key).write_text(value)
    for kind, item in (
        ("nodes", node("node1", "10.214.0.1/24")),
        ("nodes", node("node2", "10.214.0.2/24")),
        ("ippools", pool("p", "10.71.0.0/16")),
        ("bgpconfigurations", config("default", nodeMeshPassword=ref("mesh"))),
        ("bgppeers", peer("tor", peerIP="10.214.0.254", asNumber=65000, password=ref("peer"))),
        ("bgppeers", peer("odd", peerIP="10.214.0.253", asNumber=65000, password=ref("bad"))),
    ):
        await kv.put(paths.resource_key(kind, item.metadata.name), encode_value(item))
    bird_cfg = tmp_path / "bird.cfg"
    caplog.set_level(logging.DEBUG)
    confd = Confd(kv, "node1", str(bird_cfg), secrets=SecretResolver(str(tmp_path / "secrets")))
    task = asyncio.create_task(confd.run())
    try:
        await wait_for(lambda: bird_cfg.exists() and PEER_SECRET in bird_cfg.read_text())
        assert MESH_SECRET in bird_cfg.read_text()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert caplog.records, "confd logged nothing at debug: the check below would prove nothing"
    logged = caplog.text
    for secret in (PEER_SECRET, MESH_SECRET, *UNRENDERABLE.split("\n")):
        assert secret not in logged, f"a BGP password reached the log: {secret!r}"

    ctl = Calicoctl(etcd.endpoint)
    shown = ctl.ok("get", "bgppeer", "-o", "yaml") + ctl.ok("get", "bgpconfig", "-o", "yaml")
    assert "bgp-secrets" in shown and json.dumps(PEER_SECRET) not in shown
    for secret in (PEER_SECRET, MESH_SECRET):
        assert secret not in shown

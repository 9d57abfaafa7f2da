"""confd's decoded view (keys and values through the typed stream's decoder), the secret resolver and
the atomic write.  Pure inputs, a temporary directory for files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pycalico.bgp.confd import ConfdState, SecretResolver, write_atomically
from pycalico.datastore import paths
from pycalico.datastore.updates import ResourceUpdate, decode_update
from pycalico.model.bgp import SecretKeyRef
from pycalico.model.codec import encode_value

from .scenarios import node, peer


def update(key: str, value: bytes | None) -> ResourceUpdate:
    typed = decode_update(key, value, 1)
    assert typed is not None
    return typed


def test_resources_and_deletes() -> None:
    state = ConfdState()
    key = paths.resource_key("nodes", "node1")
    assert state.apply(update(key, encode_value(node("node1", "10.0.0.1/24"))))
    assert state.nodes["node1"].spec.bgp.ipv4_address == "10.0.0.1/24"  # type: ignore[union-attr]
    peer_key = paths.resource_key("bgppeers", "tor")
    assert state.apply(
        update(peer_key, encode_value(peer("tor", peerIP="10.0.0.254", asNumber=65000)))
    )
    assert [p.name for p in state.peers] == ["tor"]
    assert state.apply(update(key, None)) and state.nodes == {}
    assert not state.apply(update(key, None))  # already gone: nothing changed
    # Kinds confd does not read, and garbage, change nothing.
    assert not state.apply(update(paths.resource_key("hostendpoints", "x"), b"{}"))
    assert not state.apply(update(paths.resource_key("nodes", "bad"), b"not json"))


def test_affinity_states() -> None:
    state = ConfdState()
    key = paths.affinity_key("node1", "10.65.0.0/26")
    assert state.apply(update(key, json.dumps({"state": "pending"}).encode()))
    assert state.affinities == {"10.65.0.0/26": "pending"}
    state.apply(update(key, json.dumps({"state": "confirmed", "deleted": False}).encode()))
    assert state.affinities == {"10.65.0.0/26": "confirmed"}
    state.apply(update(key, b""))  # the legacy empty value: implicitly confirmed
    assert state.affinities == {"10.65.0.0/26": ""}
    state.apply(update(key, json.dumps({"state": "confirmed", "deleted": True}).encode()))
    assert state.affinities == {}
    v6 = paths.affinity_key("node1", "fd10::/122")
    state.apply(update(v6, b'{"state":"confirmed"}'))
    assert state.affinities == {"fd10::/122": "confirmed"}


def test_secret_resolver_files_then_environment(tmp_path: Path) -> None:
    (tmp_path / "bgp-secrets").mkdir()
    (tmp_path / "bgp-secrets" / "mesh").write_text("from-file\n")
    env = {"CALICO_BGP_SECRET_BGP_SECRETS_TOR": "from-env"}
    resolver = SecretResolver(str(tmp_path), env)
    assert resolver.resolve(SecretKeyRef(name="bgp-secrets", key="mesh")) == "from-file"
    assert resolver.resolve(SecretKeyRef(name="bgp-secrets", key="tor")) == "from-env"
    assert resolver.resolve(SecretKeyRef(name="bgp-secrets", key="none")) is None
    assert resolver.resolve(SecretKeyRef(name="../etc", key="passwd")) is None


def test_write_atomically_replaces_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "bird.cfg"
    write_atomically(str(path), "one\n")
    write_atomically(str(path), "two\n")
    assert path.read_text() == "two\n"
    assert os.listdir(path.parent) == ["bird.cfg"]  # no temporary file left behind

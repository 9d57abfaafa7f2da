"""calicoctl reading Calico users' manifests: Go's YAML conversions, then nothing written on error."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from pycalico.ctl import client
from pycalico.ctl.main import cli
from pycalico.datastore.resources import ResourceStore
from pycalico.testing.memory_kv import MemoryKVStore


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch) -> Iterator[MemoryKVStore]:
    kv = MemoryKVStore()

    def run(config_file: str | None, work: Callable[[ResourceStore], Awaitable[Any]]) -> Any:
        return asyncio.run(work(ResourceStore(kv)))  # type: ignore[arg-type]

    monkeypatch.setattr(client, "run", run)
    yield kv


def calicoctl(*args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), input=stdin)


MANIFESTS = """\
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata:
  name: nets
  labels: {version: 1, enabled: true}
spec:
  nets: [10.0.0.0/8]
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: tor}
spec:
  peerip: 10.0.0.1
"""


def test_apply_converts_like_calicoctl_and_prints_canonically(memory: MemoryKVStore) -> None:
    result = calicoctl("apply", "-f", "-", stdin=MANIFESTS)
    assert result.exit_code == 0, result.output
    nets = yaml.safe_load(calicoctl("get", "globalnetworkset", "nets", "-o", "yaml").stdout)
    assert nets["metadata"]["labels"] == {"version": "1", "enabled": "true"}
    peer = yaml.safe_load(calicoctl("get", "bgppeer", "tor", "-o", "yaml").stdout)
    assert peer["spec"] == {"peerIP": "10.0.0.1"}


def test_a_repeated_key_writes_nothing(memory: MemoryKVStore) -> None:
    text = (
        MANIFESTS
        + "---\napiVersion: projectcalico.org/v3\nkind: IPPool\n"
        + ("metadata: {name: p}\nspec: {cidr: 10.9.0.0/16, cidr: 10.8.0.0/16}\n")
    )
    result = calicoctl("apply", "-f", "-", stdin=text)
    assert result.exit_code == 1
    assert "'cidr' is repeated" in result.output
    assert "nets" not in calicoctl("get", "globalnetworksets").stdout

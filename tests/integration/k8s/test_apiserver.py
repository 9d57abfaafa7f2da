"""The real kube-apiserver and kubectl that `make setup` builds, as pycalico.testing runs them."""

from __future__ import annotations

import json
import os
import re
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pycalico.testing.kube_server import KubeControlPlane

pytestmark = pytest.mark.root

GO_MOD = Path(__file__).parents[3] / "tools" / "kube" / "go.mod"


def pinned_version() -> str:
    match = re.search(r"k8s\.io/kubernetes (v\d+\.\d+\.\d+)", GO_MOD.read_text())
    assert match, "tools/kube/go.mod pins no k8s.io/kubernetes"
    return match.group(1)


def test_kubectl_parses_the_server_version(kube_plane: KubeControlPlane) -> None:
    reply = json.loads(kube_plane.apiserver.kubectl("version", "-o", "json").stdout)
    version = pinned_version()
    assert reply["serverVersion"]["gitVersion"] == version
    assert reply["serverVersion"]["major"] == "1"
    assert reply["serverVersion"]["minor"] == version.split(".")[1]
    assert reply["clientVersion"]["gitVersion"] == version


def test_kubeconfig_user_is_an_administrator(kube_plane: KubeControlPlane) -> None:
    names = kube_plane.apiserver.kubectl("get", "namespaces", "-o", "name").stdout.split()
    assert "namespace/default" in names
    assert kube_plane.apiserver.kubectl("auth", "can-i", "*", "*").stdout.strip() == "yes"


def _status(url: str, ca_file: Path, token: str | None) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    context = ssl.create_default_context(cafile=str(ca_file))
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=10, context=context
        ) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_unknown_tokens_and_anonymous_users_are_refused(kube_plane: KubeControlPlane) -> None:
    api = kube_plane.apiserver
    nodes = f"{api.url}/api/v1/nodes"
    assert _status(nodes, api.ca_file, api.token) == 200
    assert _status(nodes, api.ca_file, "not-a-token") == 401
    assert _status(nodes, api.ca_file, None) == 403  # anonymous: authenticated, but RBAC says no


def test_close_stops_both_processes_and_removes_the_files() -> None:
    plane = KubeControlPlane().start()
    pids = [plane.apiserver.pid, plane.etcd.pid]
    directory = plane.apiserver.directory
    plane.close()
    for pid in pids:
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not directory.exists()
    assert not plane.etcd.running

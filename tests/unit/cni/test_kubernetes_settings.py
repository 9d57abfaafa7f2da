"""Which calls run in Kubernetes mode, with which API settings; the agent closes its clients."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from pycalico.cni.agent_protocol import Response
from pycalico.cni.agent_server import AgentServer, calico_handler
from pycalico.cni.config import NetConf
from pycalico.cni.kubernetes import ApiSettings, api_settings
from pycalico.testing.memory_kv import MemoryKVStore


def conf(**keys: Any) -> NetConf:
    return NetConf.parse({"name": "net", "type": "calico", "ipam": {"type": "calico-ipam"}, **keys})


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ({}, None),
        ({"policy": {"type": "k8s"}}, None),
        ({"kubernetes": {"kubeconfig": "/k"}}, ApiSettings(kubeconfig="/k")),
        (
            {"policy": {"k8s_api_root": "https://10.0.0.1:6443/api/v1/", "k8s_auth_token": "t"}},
            ApiSettings(server="https://10.0.0.1:6443", token="t"),
        ),
        (
            {
                "kubernetes": {"kubeconfig": "/k", "k8s_api_root": "https://b:6443"},
                "policy": {
                    "k8s_api_root": "https://a:6443",
                    "k8s_client_certificate": "/c",
                    "k8s_client_key": "/key",
                    "k8s_certificate_authority": "/ca",
                },
            },
            ApiSettings("/k", "https://b:6443", "", "/c", "/key", "/ca"),
        ),
    ],
)
def test_api_settings_as_calico_combines_them(
    keys: dict[str, Any], expected: ApiSettings | None
) -> None:
    assert api_settings(conf(**keys)) == expected


async def test_agent_close_closes_the_calico_handlers_clients(tmp_path: Path) -> None:
    closed: list[str] = []

    class Handler:
        async def __call__(self, env: Mapping[str, str], stdin: str) -> Response:
            return Response(0)

        async def close(self) -> None:
            closed.append("closed")

    handler = Handler()
    server = AgentServer(str(tmp_path / "s.sock"), {"calico": handler, "alias": handler})
    await server.start()
    await server.close()
    assert closed == ["closed"]  # once, though it serves two names
    real = calico_handler(MemoryKVStore())
    assert callable(getattr(real, "close", None))
    await real.close()  # type: ignore[attr-defined]

"""Refusals that never go away by themselves are said plainly: a controller whose requests
the API server forbids logs an error quoting the server (verb and resource), without a
traceback, and keeps retrying; a TLS datastore error without a client certificate says so."""

from __future__ import annotations

import asyncio
import logging

import pytest

from pycalico.datastore.config import DatastoreConfig
from pycalico.datastore.resources import ResourceStore
from pycalico.k8s.client import KubeError
from pycalico.kubecontrollers import supervisor
from pycalico.kubecontrollers.config import ControllerConfig, RunConfig
from pycalico.kubecontrollers.main import _tls_hint
from pycalico.testing.memory_kv import MemoryKVStore

FORBIDDEN = (
    'namespaces is forbidden: User "system:serviceaccount:kube-system:kc" cannot list '
    'resource "namespaces" in API group "" at the cluster scope'
)


class Refused:
    def __init__(self, status: int) -> None:
        self.status = status
        self.runs = 0

    async def run(self) -> None:
        self.runs += 1
        raise KubeError("list namespace", self.status, FORBIDDEN)


@pytest.mark.parametrize("status", [401, 403])
async def test_a_forbidden_controller_logs_one_error_line_and_retries(
    status: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    refused = Refused(status)
    monkeypatch.setitem(supervisor.CONTROLLERS, "refused", lambda context: refused)
    monkeypatch.setattr(supervisor, "RESTART_DELAY", 0.01)
    kv = MemoryKVStore()
    boss = supervisor.Supervisor(None, kv, ResourceStore(kv))  # type: ignore[arg-type]  # never used
    with caplog.at_level(logging.ERROR, logger=supervisor.__name__):
        await boss.apply(RunConfig(controllers={"refused": ControllerConfig()}))
        while refused.runs < 3:
            await asyncio.sleep(0.01)
        await boss.stop()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and all(r.exc_info is None for r in errors)
    message = errors[0].getMessage()
    assert "controller refused: not allowed by the API server" in message
    assert 'cannot list resource "namespaces"' in message and f"HTTP {status}" in message


async def test_other_failures_keep_their_traceback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    refused = Refused(500)
    monkeypatch.setitem(supervisor.CONTROLLERS, "refused", lambda context: refused)
    monkeypatch.setattr(supervisor, "RESTART_DELAY", 0.01)
    kv = MemoryKVStore()
    boss = supervisor.Supervisor(None, kv, ResourceStore(kv))  # type: ignore[arg-type]  # never used
    with caplog.at_level(logging.ERROR, logger=supervisor.__name__):
        await boss.apply(RunConfig(controllers={"refused": ControllerConfig()}))
        while refused.runs < 2:
            await asyncio.sleep(0.01)
        await boss.stop()
    assert caplog.records[0].exc_info is not None
    assert "not allowed" not in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("env", "hinted"),
    [
        ({"ETCD_ENDPOINTS": "https://e:2379", "ETCD_CA_CERT_FILE": "/ca"}, True),
        (
            {"ETCD_ENDPOINTS": "https://e:2379", "ETCD_CERT_FILE": "/c", "ETCD_KEY_FILE": "/k"},
            False,
        ),
        ({"ETCD_ENDPOINTS": "http://e:2379"}, False),
    ],
)
def test_tls_without_a_client_certificate_is_named(env: dict[str, str], hinted: bool) -> None:
    hint = _tls_hint(DatastoreConfig.from_env(env))
    assert ("ETCD_CERT_FILE and ETCD_KEY_FILE are unset" in hint) == hinted

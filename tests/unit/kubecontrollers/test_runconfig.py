"""RunConfigSource over an in-memory datastore: create-if-absent, status write-back, changes;
and the Supervisor: one task per enabled, registered controller, restarted on a change."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pycalico.datastore.resources import ResourceStore
from pycalico.kubecontrollers import registry
from pycalico.kubecontrollers.config import ControllerConfig, EnvConfig, RunConfig
from pycalico.kubecontrollers.runconfig import RunConfigSource
from pycalico.kubecontrollers.supervisor import Supervisor
from pycalico.model.node import KubeControllersConfiguration
from pycalico.testing.memory_kv import MemoryKVStore


@pytest.fixture
def store() -> ResourceStore:
    return ResourceStore(MemoryKVStore())


async def test_configs_create_write_status_and_follow_changes(store: ResourceStore) -> None:
    source = RunConfigSource(store, EnvConfig(overrides={"LOG_LEVEL": "debug"}))
    assert (await source.peek()).log_level == "Debug"  # the default, nothing written
    configs = source.configs()
    first = await anext(configs)
    assert first.enabled == ("namespace", "node", "policy", "serviceaccount", "workloadendpoint")
    stored = await store.get("KubeControllersConfiguration", "default")
    assert isinstance(stored, KubeControllersConfiguration)
    assert stored.status is not None
    assert stored.status["environmentVars"] == {"LOG_LEVEL": "debug"}
    assert source.status_writes == 1

    controllers = stored.spec.controllers.model_copy(update={"node": None})
    spec = stored.spec.model_copy(update={"controllers": controllers})
    await store.update(stored.model_copy(update={"spec": spec}))
    second = await asyncio.wait_for(anext(configs), 5)
    assert "node" not in second.enabled
    assert source.status_writes == 2
    await configs.aclose()


class Recorder:
    def __init__(self, runs: list[str], name: str) -> None:
        self.runs, self.name = runs, name

    async def run(self) -> None:
        self.runs.append(self.name)
        await asyncio.Event().wait()


async def test_supervisor_runs_registered_controllers_and_skips_others(
    store: ResourceStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    runs: list[str] = []
    table: dict[str, Any] = {"policy": lambda context: Recorder(runs, "policy")}
    monkeypatch.setattr(registry, "CONTROLLERS", table)
    monkeypatch.setattr("pycalico.kubecontrollers.supervisor.CONTROLLERS", table)
    registry.register_controller("node", lambda context: Recorder(runs, "node"))
    with pytest.raises(ValueError, match="already registered"):
        registry.register_controller("node", lambda context: Recorder(runs, "node"))
    supervisor = Supervisor(None, store.kv, store)  # type: ignore[arg-type]
    config = RunConfig(controllers={"policy": registry_config(), "namespace": registry_config()})
    await supervisor.apply(config)
    await asyncio.sleep(0)
    assert runs == ["policy"]
    assert "controller 'namespace' is enabled but not available" in caplog.text
    await supervisor.apply(config)  # unchanged: nothing restarted
    await asyncio.sleep(0)
    assert runs == ["policy"] and supervisor.starts == 1
    await supervisor.apply(RunConfig(controllers={"policy": registry_config(60.0)}))
    await asyncio.sleep(0)
    assert runs == ["policy", "policy"] and supervisor.starts == 2
    await supervisor.stop()
    assert supervisor.running == {}


def registry_config(period: float = 300.0) -> ControllerConfig:
    return ControllerConfig(period)

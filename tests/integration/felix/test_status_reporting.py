"""Felix's heartbeat follows FelixConfiguration from the first report on (found by the soak).

calico-node writes the default FelixConfiguration with ``reportingInterval: 0s`` (heartbeat
off), as Calico's does.  Felix read it only after a first heartbeat sent on its environment's
defaults (30 s), which left ``.../status`` for a 90 s lease and ``last_reported_status`` for
ever: the soak saw ten keys appear and expire.  Now Felix reports nothing before it knows its
datastore config; with the interval unset it reports as before (the contrary case).

The daemon in process against real etcd with the fake kernel (no root).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from pycalico.datastore import paths
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.felix import config as felix_config
from pycalico.felix import daemon
from pycalico.felix.dataplane.loop import Dataplane, DataplaneOptions
from pycalico.model.node import FelixConfiguration
from pycalico.testing.fake_kernel import FakeKernel
from pycalico.testing.felix_world import put

HOST = "report-host"


def _felix(kv: EtcdKVStore) -> daemon.Felix:
    environ = {
        "FELIX_FELIXHOSTNAME": HOST,
        "FELIX_HEALTHENABLED": "false",
        "FELIX_LOGFILEPATH": "none",
        "FELIX_ENDPOINTSTATUSPATHPREFIX": "",
    }
    kernel = FakeKernel()

    def factory(options: DataplaneOptions) -> Dataplane:
        return Dataplane(options, kernel.nft, kernel.routes, kernel.sysctls, kernel.conntrack)

    bootstrap = felix_config.load(None, {}, environ, HOST)
    return daemon.Felix(bootstrap, kv, {}, environ, factory)


async def _until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.05)


async def _run_until_applied(kv: EtcdKVStore, spec: dict[str, str]) -> None:
    await put(
        kv, FelixConfiguration.model_validate({"metadata": {"name": "default"}, "spec": spec})
    )
    felix = _felix(kv)
    task = asyncio.ensure_future(felix.run())
    try:
        await _until(
            lambda: felix.dataplane is not None and felix.dataplane.last_report is not None,
            "Felix in sync and applied",
        )
        await asyncio.sleep(0.5)  # the report loop runs every 0.2-5 s: give it a turn
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_no_heartbeat_when_felix_configuration_turns_it_off(kv: EtcdKVStore) -> None:
    await _run_until_applied(kv, {"reportingInterval": "0s", "logSeverityScreen": "Info"})
    assert await kv.get(paths.felix_status_key(HOST)) is None
    assert await kv.get(paths.felix_last_reported_status_key(HOST)) is None


async def test_heartbeat_when_felix_configuration_leaves_the_default(kv: EtcdKVStore) -> None:
    await _run_until_applied(kv, {"logSeverityScreen": "Info"})
    status = await kv.get(paths.felix_status_key(HOST))
    assert status is not None and status.lease
    assert await kv.get(paths.felix_last_reported_status_key(HOST)) is not None

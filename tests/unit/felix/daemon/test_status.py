"""Felix status reporting against the in-memory KV store (leases, endpoint keys, sweep)."""

from __future__ import annotations

import json

from pycalico.datastore import paths
from pycalico.felix.messages import HostEndpointID, WorkloadEndpointID
from pycalico.felix.status import Metrics, StatusReporter
from pycalico.testing.memory_kv import FakeClock, MemoryKVStore

WEP = WorkloadEndpointID("k8s", "default/pod-a", "eth0")


async def test_heartbeat_has_a_lease_and_a_lease_free_copy(
    memory_kv: MemoryKVStore, fake_clock: FakeClock
) -> None:
    reporter = StatusReporter(memory_kv, "node-1", ttl=90, clock=fake_clock)
    fake_clock.advance(5)
    assert await reporter.report()
    status = await memory_kv.get(paths.felix_status_key("node-1"))
    assert status is not None and status.lease != 0
    value = json.loads(status.value)
    assert value["first_update"] is True and value["uptime"] == 5
    assert await memory_kv.get(paths.felix_last_reported_status_key("node-1")) is not None
    assert await reporter.report()
    status = await memory_kv.get(paths.felix_status_key("node-1"))
    assert status is not None and json.loads(status.value)["first_update"] is False
    # Felix stops reporting: the leased key expires, the lease-free copy stays.
    fake_clock.advance(200)
    assert await memory_kv.get(paths.felix_status_key("node-1")) is None
    assert await memory_kv.get(paths.felix_last_reported_status_key("node-1")) is not None


async def test_endpoint_status_written_updated_deleted_and_stale_swept(
    memory_kv: MemoryKVStore,
) -> None:
    stale = paths.workload_endpoint_status_key("node-1", "k8s", "default/gone", "eth0")
    await memory_kv.put(stale, b'{"status":"up"}')
    reporter = StatusReporter(memory_kv, "node-1")
    key = paths.workload_endpoint_status_key("node-1", "k8s", "default/pod-a", "eth0")
    hep_key = paths.host_endpoint_status_key("node-1", "eth0-hep")
    await reporter.report_endpoints({WEP: "down", HostEndpointID("eth0-hep"): "up"})
    assert await memory_kv.get(stale) is None
    got = await memory_kv.get(key)
    assert got is not None and json.loads(got.value) == {"status": "down"}
    assert await memory_kv.get(hep_key) is not None
    await reporter.report_endpoints({WEP: "up"})
    got = await memory_kv.get(key)
    assert got is not None and json.loads(got.value) == {"status": "up"}
    assert await memory_kv.get(hep_key) is None


def test_metrics_exposition_has_calico_names() -> None:
    metrics = Metrics()
    metrics.apply_time.observe(0.01)
    metrics.set_counts({"endpoints": 3, "rules": 40})
    code, _, body = metrics.exposition()
    text = body.decode()
    assert code == 200
    assert "felix_int_dataplane_apply_time_seconds_count 1.0" in text
    assert "felix_active_local_endpoints 3.0" in text
    assert "felix_nft_rules 40.0" in text

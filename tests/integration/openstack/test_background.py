"""The driver's background loops on real etcd, without Neutron: one leader resyncs, Felix's
status keys become port statuses, a refused status update is retried."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from pycalico.datastore import paths
from pycalico.openstack import translate
from pycalico.openstack.background import Background
from pycalico.openstack.etcd_gateway import EtcdGateway

pytestmark = pytest.mark.root


def eventually(check: Callable[[], object], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout}s: {what}"
        time.sleep(0.05)


def test_leader_resyncs_and_reports_status_with_retry(gateway: EtcdGateway) -> None:
    policy = translate.policy("sg-bg", [])
    statuses: list[tuple[str, str]] = []
    refusals = [RuntimeError("database is busy")]

    def set_status(port_id: str, status: str) -> None:
        if refusals:
            raise refusals.pop()
        statuses.append((port_id, status))

    def desired() -> dict[str, dict[str, object]]:
        return {translate.policy_key("sg-bg"): policy}

    leader = Background(gateway, desired, set_status, resync_interval=0.5, election_ttl=3)
    follower = Background(gateway, desired, lambda p, s: statuses.append(("follower", s)), 0.5, 3)
    follower.election.identity += "-follower"
    leader.start()
    try:
        eventually(leader.leading.is_set, what="the first campaigner leads")
        follower.start()
        eventually(lambda: gateway.get(translate.policy_key("sg-bg")), what="resync writes")
        gateway.delete(translate.policy_key("sg-bg"))
        eventually(lambda: gateway.get(translate.policy_key("sg-bg")), what="resync restores")
        key = paths.workload_endpoint_status_key("compute-9", "openstack", "openstack/vm", "port-1")
        gateway.put(key, '{"status": "down"}')  # refused once: kept pending
        gateway.put(key, '{"status": "up"}')
        eventually(lambda: ("port-1", "ACTIVE") in statuses, what="status reaches Neutron")
        assert not follower.leading.is_set() and follower.resyncs == 0
        assert all(who != "follower" for who, _ in statuses), "only the leader reports"
        gateway.delete(key)
        eventually(lambda: statuses[-1] == ("port-1", "ERROR"), what="a gone status is ERROR")
        leader.stop()
        eventually(follower.leading.is_set, 10.0, "the follower takes over after resign")
    finally:
        leader.stop()
        follower.stop()
        gateway.delete(translate.policy_key("sg-bg"))

"""The driver's etcd JSON-gateway client and leader election against a real etcd."""

from __future__ import annotations

import threading

import pytest

from pycalico.openstack.etcd_gateway import EtcdError, EtcdGateway, Event
from pycalico.openstack.mirror import Election

pytestmark = pytest.mark.root


def test_kv_compare_and_swap_and_watch(gateway: EtcdGateway) -> None:
    gateway.put("/t/gw/a", "1")
    gateway.put("/t/gw/b", b"\xff\x00")
    items, revision = gateway.get_prefix("/t/gw/")
    assert [(i.key, i.value) for i in items] == [("/t/gw/a", b"1"), ("/t/gw/b", b"\xff\x00")]
    a = gateway.get("/t/gw/a")
    assert a is not None and a.mod_revision <= revision
    assert not gateway.put_if("/t/gw/a", "2", a.mod_revision - 1), "stale revision must lose"
    assert gateway.put_if("/t/gw/a", "2", a.mod_revision)
    assert not gateway.put_if("/t/gw/a", "3", 0), "0 means: must not exist"
    seen: list[Event] = []

    def follow() -> None:
        try:
            for event in gateway.watch("/t/gw/", revision + 1, timeout=5.0):
                seen.append(event)
                if len(seen) == 2:
                    return
        except EtcdError:
            pass

    watcher = threading.Thread(target=follow)
    watcher.start()
    assert gateway.delete("/t/gw/b")
    watcher.join(10)
    assert [(e.kind, e.key, e.value) for e in seen] == [
        ("PUT", "/t/gw/a", b"2"),
        ("DELETE", "/t/gw/b", b""),
    ]
    current = gateway.get("/t/gw/a")
    assert current is not None
    assert not gateway.delete_if("/t/gw/a", current.mod_revision - 1)
    assert gateway.delete_if("/t/gw/a", current.mod_revision)
    assert gateway.get("/t/gw/a") is None


def test_election_one_leader_and_handover(gateway: EtcdGateway) -> None:
    first, second = (
        Election(gateway, ttl=5, key="/t/leader"),
        Election(gateway, ttl=5, key="/t/leader"),
    )
    second.identity += "-second"
    assert first.campaign()
    assert not second.campaign()
    assert first.campaign(), "the leader keeps its lease"
    first.resign()
    assert gateway.get("/t/leader") is None, "resigning frees the key at once"
    assert second.campaign()
    assert not first.campaign()
    second.resign()


def test_errors_name_the_call() -> None:
    with pytest.raises(EtcdError, match="/v3/kv/range"):
        EtcdGateway(["http://127.0.0.1:9"], timeout=1).get("/x")

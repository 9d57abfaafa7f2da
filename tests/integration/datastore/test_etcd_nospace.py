"""etcd with its space quota used up (the NOSPACE alarm): writes refused with an error that
names the cause, reads still served (issue 16: "etcd's disk filling").  Real etcd with a small
``--quota-backend-bytes``; the lab drill in ``tests/faults`` covers recovery under traffic."""

from __future__ import annotations

import pytest

from pycalico.datastore.api import DatastoreFull
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.testing.etcd_server import EtcdServer

QUOTA = 2 * 1024 * 1024
JUNK = b"x" * 100_000


async def test_writes_past_the_quota_name_the_cause_and_reads_go_on() -> None:
    server = EtcdServer(name="nospace", extra_args=("--quota-backend-bytes", str(QUOTA)))
    server.start()
    kv = EtcdKVStore([server.endpoint])
    try:
        await kv.put("/calico/keep", b"kept")
        with pytest.raises(DatastoreFull) as caught:
            for i in range(10 * QUOTA // len(JUNK)):  # far more than the quota holds
                await kv.put(f"/junk/{i}", JUNK)
        message = str(caught.value)
        assert "out of space" in message and "/junk/" in message, message
        assert "alarm disarm" in message  # says how to recover
        with pytest.raises(DatastoreFull):  # the alarm refuses every write now, even small ones
            await kv.put("/calico/other", b"y")
        kept = await kv.get("/calico/keep")
        assert kept is not None and kept.value == b"kept"
    finally:
        await kv.close()
        server.close()

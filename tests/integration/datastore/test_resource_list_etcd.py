"""ResourceStore.list on real etcd: the batch decode gives what single reads give, and a value
that cannot be read fails the list naming its key."""

from __future__ import annotations

import pytest

from pycalico.datastore.api import InvalidResource
from pycalico.datastore.resources import ResourceStore
from pycalico.model.codec import PROMOTE_AT, decode_resource, encode_value
from pycalico.model.meta import Resource

SETS = "/calico/resources/v3/projectcalico.org/networksets/"


def network_set(index: int) -> Resource:
    return decode_resource(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "NetworkSet",
            "metadata": {
                "name": f"set-{index:04d}",
                "namespace": "ns",
                "labels": {"i": str(index)},
            },
            "spec": {"nets": [f"10.{index // 250}.{index % 250}.0/24"]},
        }
    )


async def test_a_large_list_equals_the_objects_read_one_by_one(store: ResourceStore) -> None:
    count = PROMOTE_AT + 10  # large enough for the batch path's collector promotion
    for index in range(count):
        await store.kv.put(f"{SETS}ns/set-{index:04d}", encode_value(network_set(index)))
    listed = await store.list("NetworkSet")
    assert len(listed.items) == count
    for index in (0, 1, count // 2, count - 1):
        single = await store.get("NetworkSet", f"set-{index:04d}", "ns")
        assert listed.items[index] == single
        assert single.resource_version is not None and int(single.resource_version) > 0


@pytest.mark.parametrize("bad", [b"{not json", b'{"kind":"NetworkSet","spec":{"nets":"x"}}'])
async def test_one_unreadable_value_fails_the_list_naming_its_key(
    store: ResourceStore, bad: bytes
) -> None:
    for index in range(3):
        await store.create(network_set(index))
    await store.kv.put(f"{SETS}ns/set-0001", bad)
    with pytest.raises(InvalidResource) as caught:
        await store.list("NetworkSet", "ns")
    assert f"stored value at {SETS}ns/set-0001 cannot be read" in str(caught.value)
    with pytest.raises(InvalidResource) as single:
        await store.get("NetworkSet", "set-0001", "ns")
    assert str(single.value) == str(caught.value)
    assert single.value.field == caught.value.field

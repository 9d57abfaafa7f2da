"""``calicoctl patch`` against a real etcd: what a user types, what etcd holds afterwards.

The command runs as the real ``calicoctl`` executable (a subprocess with ``ETCD_ENDPOINTS``);
resources are set up and checked through ``ResourceStore``/``EtcdKVStore`` on the same etcd.
The race between the read and the write is driven through ``patch_one`` with a store that lets
a second writer in right after the read.
"""

from __future__ import annotations

from typing import Any

import pytest

from pycalico.ctl.patch import patch_one, resolve_target
from pycalico.ctl.patching import MERGE
from pycalico.ctl.results import CommandError
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.model.codec import decode_resource, encode_resource
from pycalico.model.meta import Resource
from pycalico.testing.calicoctl import Calicoctl
from pycalico.testing.etcd_server import EtcdServer

RESOURCE_ROOT = "/calico/resources/v3/projectcalico.org/"


class StrictCalicoctl(Calicoctl):
    """Success prints nothing on stderr, failure nothing on stdout."""

    def ok(self, *args: str, stdin: str | None = None) -> str:
        done = self(*args, stdin=stdin)
        assert done.returncode == 0, f"calicoctl {' '.join(args)}: {done.stderr}{done.stdout}"
        assert done.stderr == ""
        return done.stdout

    def fails(self, *args: str, stdin: str | None = None) -> str:  # type: ignore[override]
        done = self(*args, stdin=stdin)
        assert done.returncode == 1, f"calicoctl {' '.join(args)} should fail: {done.stdout}"
        assert done.stdout == ""
        return done.stderr


@pytest.fixture
def ctl(kv: EtcdKVStore, etcd: EtcdServer) -> Calicoctl:
    return StrictCalicoctl(etcd.endpoint)


def resource(kind: str, name: str, spec: dict[str, Any], namespace: str | None = None) -> Resource:
    metadata: dict[str, Any] = {"name": name}
    if namespace:
        metadata["namespace"] = namespace
    return decode_resource(
        {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": metadata, "spec": spec}
    )


async def raw(kv: EtcdKVStore, key: str) -> tuple[bytes, int]:
    found = await kv.get(RESOURCE_ROOT + key)
    assert found is not None, key
    return found.value, found.revision


async def test_merge_patch_of_felix_configuration(ctl: Calicoctl, store: ResourceStore) -> None:
    await store.create(
        resource("FelixConfiguration", "default", {"logSeverityScreen": "Info", "ipipMTU": 1400})
    )
    out = ctl.ok(
        "patch", "felixconfiguration", "default", "-p", '{"spec":{"logSeverityScreen":"Debug"}}'
    )
    assert out == "Successfully patched 1 'FelixConfiguration' resource\n"
    spec = encode_resource(await store.get("FelixConfiguration", "default"))["spec"]
    assert spec["logSeverityScreen"] == "Debug"
    assert spec["ipipMTU"] == 1400  # untouched fields stay

    # --type merge, as YAML, and null removes a field.
    out = ctl.ok("patch", "felixconfig", "default", "-t", "merge", "-p", "spec: {ipipMTU: null}")
    assert out == "Successfully patched 1 'FelixConfiguration' resource\n"
    spec = encode_resource(await store.get("FelixConfiguration", "default"))["spec"]
    assert "ipipMTU" not in spec and spec["logSeverityScreen"] == "Debug"


async def test_strategic_patch_of_node_merges_nested_objects(
    ctl: Calicoctl, store: ResourceStore, kv: EtcdKVStore
) -> None:
    created = await store.create(resource("Node", "node1", {"bgp": {"ipv4Address": "10.0.0.1/24"}}))
    out = ctl.ok(
        "patch",
        "node",
        "node1",
        "--patch",
        '{"spec":{"bgp":{"routeReflectorClusterID":"244.0.0.1"}},"metadata":{"labels":{"rr":"yes"}}}',
    )
    assert out == "Successfully patched 1 'Node' resource\n"
    node = await store.get("Node", "node1")
    assert encode_resource(node)["spec"]["bgp"] == {
        "ipv4Address": "10.0.0.1/24",
        "routeReflectorClusterID": "244.0.0.1",
    }
    assert node.metadata.labels == {"rr": "yes"}
    # The same object, written once: uid and creationTimestamp kept, one new revision.
    assert node.metadata.uid == created.metadata.uid
    assert node.metadata.creation_timestamp == created.metadata.creation_timestamp
    assert int(node.metadata.resource_version or 0) > int(created.metadata.resource_version or 0)
    assert (await raw(kv, "nodes/node1"))[1] == int(node.metadata.resource_version or 0)


async def test_json_patch_add_replace_remove(ctl: Calicoctl, store: ResourceStore) -> None:
    await store.create(
        resource(
            "GlobalNetworkPolicy",
            "gnp1",
            {"order": 10, "selector": "all()", "ingress": [{"action": "Allow"}]},
        )
    )
    operations = (
        '[{"op":"add","path":"/spec/ingress/-","value":{"action":"Deny"}},'
        '{"op":"replace","path":"/spec/order","value":20},'
        '{"op":"remove","path":"/spec/selector"},'
        '{"op":"add","path":"/metadata/labels","value":{"team":"net"}}]'
    )
    out = ctl.ok("patch", "gnp", "gnp1", "-t", "json", "-p", operations)
    assert out == "Successfully patched 1 'GlobalNetworkPolicy' resource\n"
    wire = encode_resource(await store.get("GlobalNetworkPolicy", "gnp1"))
    assert wire["spec"]["ingress"] == [{"action": "Allow"}, {"action": "Deny"}]
    assert wire["spec"]["order"] == 20
    assert "selector" not in wire["spec"]
    assert wire["metadata"]["labels"] == {"team": "net"}

    # A failing operation leaves everything as it was (the whole patch or nothing).
    before = await store.get("GlobalNetworkPolicy", "gnp1")
    err = ctl.fails(
        "patch",
        "gnp",
        "gnp1",
        "-t",
        "json",
        "-p",
        '[{"op":"replace","path":"/spec/order","value":30},{"op":"remove","path":"/spec/nope"}]',
    )
    assert err == (
        "Hit error: performing JSON patch: JSON patch operation 2 (remove /spec/nope): "
        "can't remove a non-existent object 'nope'\n"
    )
    assert await store.get("GlobalNetworkPolicy", "gnp1") == before


async def test_namespaced_resource_with_namespace_flag(
    ctl: Calicoctl, store: ResourceStore
) -> None:
    await store.create(resource("NetworkPolicy", "np1", {"selector": "app == 'web'"}, "prod"))
    patch = '{"spec":{"selector":"app == \'db\'"}}'
    # Without -n the default namespace is meant, where there is no np1.
    assert ctl.fails("patch", "networkpolicy", "np1", "-p", patch) == (
        "Hit error: resource does not exist: NetworkPolicy(default/np1) with error: <nil>\n"
    )
    out = ctl.ok("patch", "networkpolicy", "np1", "-n", "prod", "-p", patch)
    assert out == "Successfully patched 1 'NetworkPolicy' resource\n"
    stored = encode_resource(await store.get("NetworkPolicy", "np1", namespace="prod"))
    assert stored["spec"]["selector"] == "app == 'db'"
    assert stored["metadata"]["namespace"] == "prod"
    # Moving it to another namespace is not a patch.
    err = ctl.fails("patch", "np", "np1", "-n", "prod", "-p", '{"metadata":{"namespace":"dev"}}')
    assert "metadata.namespace: cannot be changed by a patch ('prod' -> 'dev')" in err
    # A cluster-scoped kind takes no namespace.
    assert ctl.fails("patch", "node", "x", "-n", "prod", "-p", "{}") == (
        "Hit error: Node is not namespaced\n"
    )


async def test_invalid_result_is_refused_and_nothing_written(
    ctl: Calicoctl, store: ResourceStore, kv: EtcdKVStore
) -> None:
    created = await store.create(resource("Node", "node1", {"bgp": {"ipv4Address": "10.0.0.1/24"}}))
    before = await raw(kv, "nodes/node1")
    assert str(before[1]) == created.metadata.resource_version
    refusals = [
        (
            ("-p", '{"spec":{"bgp":{"ipv4Address":"300.1.1.1/24"}}}'),
            "Hit error: the patched Node(node1) is invalid, nothing was written: "
            "spec.bgp.ipv4Address: ",
        ),
        (("-p", '{"spec":{"bgpx":{}}}'), "spec.bgpx: "),
        (("-p", '{"metadata":{"name":"node2"}}'), "metadata.name: cannot be changed by a patch"),
        (("-p", '{"kind":"IPPool"}'), "kind: cannot be changed by a patch"),
        (("-p", '{"spec":'), "Hit error: performing strategic merge patch: cannot parse"),
        (("-t", "json", "-p", '{"spec":{}}'), "a JSON patch must be a list of operations"),
    ]
    for args, expected in refusals:
        err = ctl.fails("patch", "node", "node1", *args)
        assert expected in err, (args, err)
    assert await raw(kv, "nodes/node1") == before  # same bytes, same revision
    assert (await store.get("Node", "node1")).metadata.resource_version == str(before[1])
    assert (await kv.get(RESOURCE_ROOT + "nodes/node2")) is None


async def test_not_found_and_unknown_kind(ctl: Calicoctl, kv: EtcdKVStore) -> None:
    assert ctl.fails("patch", "node", "ghost", "-p", '{"spec":{}}') == (
        "Hit error: resource does not exist: Node(ghost) with error: <nil>\n"
    )
    assert (
        ctl.fails("patch", "frobs", "x", "-p", "{}") == "resource type 'frobs' is not supported\n"
    )
    assert (await kv.list("/")).items == []


async def test_cluster_information_is_read_only(
    ctl: Calicoctl, store: ResourceStore, kv: EtcdKVStore
) -> None:
    info = resource("ClusterInformation", "default", {"calicoVersion": "v3.28.0"})
    await store.create(info)
    before = await raw(kv, "clusterinformations/default")
    err = ctl.fails("patch", "clusterinformation", "default", "-p", '{"spec":{}}')
    assert err == (
        "Hit error: updating existing resource: "
        "operation apply or replace is not supported on ClusterInformation\n"
    )
    assert await raw(kv, "clusterinformations/default") == before


class RacingStore(ResourceStore):
    """A store that lets another writer change the resource right after each read."""

    def __init__(self, kv: EtcdKVStore, other: ResourceStore) -> None:
        super().__init__(kv)
        self.other = other
        self.raced: list[Resource] = []

    async def get(self, kind: Any, name: str, namespace: str | None = None) -> Resource:
        found = await super().get(kind, name, namespace)
        current = await self.other.get(kind, name, namespace)
        labels = {**(current.metadata.labels or {}), "raced": str(len(self.raced))}
        self.raced.append(await self.other.update(current.with_metadata(labels=labels)))
        return found


async def test_concurrent_change_between_read_and_write_is_not_overwritten(
    store: ResourceStore, kv: EtcdKVStore, etcd: EtcdServer
) -> None:
    await store.create(resource("Node", "node1", {"bgp": {"ipv4Address": "10.0.0.1/24"}}))
    other_kv = EtcdKVStore([etcd.endpoint])
    try:
        racing = RacingStore(kv, ResourceStore(other_kv))
        target = resolve_target("node", "node1", None)
        with pytest.raises(CommandError) as raised:
            await patch_one(racing, target, {"spec": {"bgp": {"asNumber": 65001}}}, MERGE)
    finally:
        await other_kv.close()
    # As Calico: one compare-and-swap write, no retry; the conflict is reported.
    assert (
        str(raised.value) == "Hit error: updating existing resource: update conflict: Node(node1)"
    )
    (winner,) = racing.raced
    stored = await store.get("Node", "node1")
    assert stored == winner  # the other writer's change stands, the patch wrote nothing
    assert stored.metadata.labels == {"raced": "0"}
    assert "asNumber" not in encode_resource(stored)["spec"]["bgp"]


async def test_patch_without_a_race_writes_once(store: ResourceStore, kv: EtcdKVStore) -> None:
    await store.create(resource("Node", "node1", {"bgp": {"ipv4Address": "10.0.0.1/24"}}))
    before = await raw(kv, "nodes/node1")
    target = resolve_target("node", "node1", None)
    written = await patch_one(store, target, {"spec": {"bgp": {"asNumber": 65001}}}, MERGE)
    after = await raw(kv, "nodes/node1")
    assert after[1] > before[1]
    assert written.metadata.resource_version == str(after[1])
    assert encode_resource(written)["spec"]["bgp"]["asNumber"] == 65001

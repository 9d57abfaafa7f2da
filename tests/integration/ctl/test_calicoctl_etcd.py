"""The real ``calicoctl`` executable against a real etcd: what a user types, what etcd holds.

Each test runs ``.venv/bin/calicoctl`` as a subprocess with ``ETCD_ENDPOINTS`` (or ``-c``) and
reads etcd directly through ``EtcdKVStore`` to check keys and that refused input wrote nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pycalico.datastore.etcd import EtcdKVStore
from pycalico.datastore.paths import resource_key
from pycalico.datastore.resources import ResourceStore
from pycalico.model.codec import encode_resource, load_documents
from pycalico.testing.calicoctl import Calicoctl
from pycalico.testing.etcd_server import EtcdCluster, EtcdServer

REPO = Path(__file__).resolve().parents[3]
RESOURCE_ROOT = "/calico/resources/v3/projectcalico.org/"


@pytest.fixture
def ctl(kv: EtcdKVStore, etcd: EtcdServer, tmp_path: Path) -> Calicoctl:
    return Calicoctl(etcd.endpoint, tmp_path)


async def snapshot(kv: EtcdKVStore) -> dict[str, tuple[bytes, int]]:
    listed = await kv.list("/")
    return {item.key: (item.value, item.revision) for item in listed.items}


def pool(name: str, cidr: str, extra: str = "") -> str:
    return (
        f"apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata:\n  name: {name}\n"
        f"spec:\n  cidr: {cidr}\n{extra}"
    )


def documents(*texts: str) -> str:
    return "---\n".join(texts)


# --- one of every kind ------------------------------------------------------------------------


def cluster_information_text() -> str:
    """The read-only kind calicoctl refuses to write, as calico-node writes it."""
    return (REPO / "examples" / "clusterinformation.yaml").read_text()


async def test_all_kinds_apply_and_read_back(ctl: Calicoctl, kv: EtcdKVStore) -> None:
    # The example applies as shipped (issue 20 item 4).
    path = str(REPO / "examples" / "all-kinds.yaml")
    expected = load_documents(Path(path).read_text(), "all-kinds")
    assert len({r.kind for r in expected}) >= 14

    out = ctl.ok("apply", "-f", path)
    assert out == f"Successfully applied {len(expected)} resource(s)\n"

    # etcd holds exactly Calico's keys, one per resource.
    keys = set((await snapshot(kv)).keys())
    wanted = set()
    for resource in expected:
        # resource_key: BGPFilters keep Calico's capitalised key segment.
        wanted.add(resource_key(resource.PLURAL, resource.name, resource.namespace))
    assert keys == wanted
    assert f"{RESOURCE_ROOT}networkpolicies/shop/allow-frontend" in keys
    assert f"{RESOURCE_ROOT}ippools/pods-v4" in keys
    assert f"{RESOURCE_ROOT}BGPFilters/tor-routes" in keys

    # get -f FILE -o yaml gives every resource back: the same, plus server-set metadata.
    got = yaml.safe_load(ctl.ok("get", "-f", path, "-o", "yaml"))
    assert isinstance(got, list) and len(got) == len(expected)
    stored = await snapshot(kv)
    for resource, item in zip(expected, got, strict=True):
        metadata = item["metadata"]
        uid = metadata.pop("uid")
        created = metadata.pop("creationTimestamp")
        version = metadata.pop("resourceVersion")
        assert len(uid) == 36 and created.endswith("Z")
        key = resource_key(resource.PLURAL, resource.name, resource.namespace)
        assert version == str(stored[key][1])
        assert item == encode_resource(resource)


async def test_yaml_output_applies_again_unchanged(ctl: Calicoctl, kv: EtcdKVStore) -> None:
    ctl.ok("apply", "-f", str(REPO / "examples" / "pools.yaml"))
    listed = ctl.ok("get", "ippools", "-o", "yaml")
    assert yaml.safe_load(listed)["kind"] == "IPPoolList"
    before = await snapshot(kv)
    # A List as input: calicoctl's own output is valid input (resourceVersions are current).
    assert (
        ctl.ok("apply", "-f", "-", stdin=listed) == "Successfully applied 2 'IPPool' resource(s)\n"
    )
    after = await snapshot(kv)
    assert {k: v[0] for k, v in before.items()} == {k: v[0] for k, v in after.items()}


async def test_cluster_information_is_refused(ctl: Calicoctl, kv: EtcdKVStore) -> None:
    path = ctl.manifest(documents(pool("p", "10.1.0.0/16"), cluster_information_text()))
    done = ctl.fails("apply", "-f", path)
    assert "operation apply is not supported on ClusterInformation: resource is readonly" in (
        done.stderr
    )
    assert await snapshot(kv) == {}
    done = ctl.fails("create", "-f", path)
    assert "operation create or apply is not supported on ClusterInformation" in done.stderr
    done = ctl.fails("delete", "clusterinformation", "default")
    assert "operation delete is not supported on ClusterInformation" in done.stderr


# --- invalid input writes nothing ------------------------------------------------------------

VALID_FIRST = pool("valid-first", "10.50.0.0/16")

INVALID = {
    "unmasked pool CIDR": (pool("bad", "10.60.0.1/16"), "spec.cidr", "not a network address"),
    "blockSize 33 on IPv4": (
        pool("bad", "10.60.0.0/16", "  blockSize: 33\n"),
        "spec.blockSize",
        "33",
    ),
    "port without protocol": (
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: bad\n"
        "spec:\n  ingress:\n  - action: Allow\n    destination:\n      ports: [80]\n",
        "spec.ingress[0].destination.ports",
        "protocol",
    ),
    "selector that does not parse": (
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata:\n  name: bad\n"
        'spec:\n  selector: "app == "\n',
        "spec.selector",
        "does not parse",
    ),
    "the name Foo": (pool("Foo", "10.60.0.0/16"), "metadata.name", "'Foo'"),
    "mixed-family rule nets": (
        "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  name: bad\n"
        "  namespace: shop\nspec:\n  egress:\n  - action: Allow\n    source:\n"
        '      nets: [10.0.0.0/8]\n    destination:\n      nets: ["fd00::/64"]\n',
        "spec.egress[0]",
        "IPv",
    ),
}


INVALID_RUNS = [(case, "apply") for case in sorted(INVALID)] + [
    ("blockSize 33 on IPv4", "create"),
    ("the name Foo", "replace"),
]


@pytest.mark.parametrize(("case", "verb"), INVALID_RUNS)
async def test_invalid_resource_is_refused_and_nothing_written(
    ctl: Calicoctl, kv: EtcdKVStore, case: str, verb: str
) -> None:
    (existing,) = load_documents(pool("existing", "10.40.0.0/16"), "existing")
    await ResourceStore(kv).create(existing)
    before = await snapshot(kv)
    bad, field, words = INVALID[case]
    path = ctl.manifest(documents(VALID_FIRST, bad))
    done = ctl.fails(verb, "-f", path)
    assert "nothing was written" in done.stderr
    assert f"{path} document 2" in done.stderr  # names the document
    assert field in done.stderr and words in done.stderr  # the field and the problem
    assert done.stdout == ""
    assert await snapshot(kv) == before


async def test_pool_overlapping_another_is_refused(ctl: Calicoctl, kv: EtcdKVStore) -> None:
    ctl.ok("create", "-f", ctl.manifest(pool("first", "10.70.0.0/16")))
    before = await snapshot(kv)
    done = ctl.fails(
        "apply", "-f", ctl.manifest(documents(VALID_FIRST, pool("second", "10.70.8.0/24")))
    )
    assert "spec.cidr" in done.stderr
    assert "IPPool(second) CIDR overlaps with IPPool(first) CIDR 10.70.0.0/16" in done.stderr
    assert await snapshot(kv) == before
    # Two new pools overlapping each other in one file: also refused, nothing written.
    done = ctl.fails(
        "create",
        "-f",
        ctl.manifest(documents(pool("a", "10.80.0.0/16"), pool("b", "10.80.1.0/24"))),
    )
    assert "IPPool(b) CIDR overlaps with IPPool(a)" in done.stderr
    assert await snapshot(kv) == before


async def test_pool_cidr_and_block_size_cannot_change(ctl: Calicoctl, kv: EtcdKVStore) -> None:
    ctl.ok("create", "-f", ctl.manifest(pool("p", "10.90.0.0/16")))
    before = await snapshot(kv)
    done = ctl.fails("apply", "-f", ctl.manifest(pool("p", "10.91.0.0/16")))
    assert "spec.cidr" in done.stderr and "cannot be modified" in done.stderr
    done = ctl.fails("replace", "-f", ctl.manifest(pool("p", "10.90.0.0/16", "  blockSize: 24\n")))
    assert "spec.blockSize" in done.stderr
    assert await snapshot(kv) == before


# --- create, replace, delete ------------------------------------------------------------------


async def test_create_of_an_existing_resource_fails(ctl: Calicoctl, kv: EtcdKVStore) -> None:
    path = ctl.manifest(pool("dup", "10.20.0.0/16"))
    assert ctl.ok("create", "-f", path) == "Successfully created 1 'IPPool' resource(s)\n"
    before = await snapshot(kv)
    done = ctl.fails("create", "-f", path)
    assert (
        done.stderr
        == "Failed to create 'IPPool' resource: [resource already exists: IPPool(dup)]\n"
    )
    assert await snapshot(kv) == before
    assert ctl.ok("create", "--skip-exists", "-f", path) == (
        "Successfully created 1 'IPPool' resource(s)\n"
    )


async def test_partial_success(ctl: Calicoctl, kv: EtcdKVStore) -> None:
    ctl.ok("create", "-f", ctl.manifest(pool("one", "10.21.0.0/16")))
    path = ctl.manifest(documents(pool("one", "10.21.0.0/16"), pool("two", "10.22.0.0/16")))
    done = ctl.fails("create", "-f", path)
    assert done.stdout == "Partial success: created the first 1 out of 2 'IPPool' resources:\n"
    assert done.stderr == "Hit error: [resource already exists: IPPool(one)]\n"
    assert f"{RESOURCE_ROOT}ippools/two" in await snapshot(kv)


async def test_replace_honours_resource_version(ctl: Calicoctl, kv: EtcdKVStore) -> None:
    ctl.ok("apply", "-f", ctl.manifest(pool("r", "10.23.0.0/16")))
    old = ctl.ok("get", "ippool", "r", "-o", "yaml")
    changed = ctl.manifest(pool("r", "10.23.0.0/16", "  natOutgoing: true\n"))
    assert ctl.ok("replace", "-f", changed) == "Successfully replaced 1 'IPPool' resource(s)\n"
    done = ctl.fails("replace", "-f", "-", stdin=old)  # its resourceVersion is out of date
    assert done.stderr == "Failed to replace 'IPPool' resource: update conflict: IPPool(r)\n"
    current = yaml.safe_load(ctl.ok("get", "ippool", "r", "-o", "yaml"))
    assert current["spec"]["natOutgoing"]
    # The old content with the current resourceVersion goes through.
    old_document = yaml.safe_load(old)
    old_document["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
    ctl.ok("replace", "-f", "-", stdin=yaml.safe_dump(old_document))
    after = yaml.safe_load(ctl.ok("get", "ippool", "r", "-o", "yaml"))
    assert "natOutgoing" not in after["spec"]
    assert after["metadata"]["uid"] == current["metadata"]["uid"]
    missing = ctl.fails("replace", "-f", ctl.manifest(pool("nope", "10.24.0.0/16")))
    assert "resource does not exist: IPPool(nope) with error: <nil>" in missing.stderr


async def test_delete_by_file_and_by_kind_and_name(ctl: Calicoctl, kv: EtcdKVStore) -> None:
    path = ctl.manifest(documents(pool("d1", "10.25.0.0/16"), pool("d2", "10.26.0.0/16")))
    ctl.ok("apply", "-f", path)
    ctl.ok("apply", "-f", str(REPO / "examples" / "policy.yaml"))
    assert ctl.ok("delete", "-f", path) == "Successfully deleted 2 'IPPool' resource(s)\n"
    assert ctl.ok("delete", "gnp", "allow-dns") == (
        "Successfully deleted 1 'GlobalNetworkPolicy' resource(s)\n"
    )
    assert ctl.ok("delete", "networkpolicy", "backend-ingress", "-n", "default") == (
        "Successfully deleted 1 'NetworkPolicy' resource(s)\n"
    )
    assert await snapshot(kv) == {}
    done = ctl.fails("delete", "ippool", "d1")
    assert done.stderr == (
        "Failed to delete 'IPPool' resource: resource does not exist: IPPool(d1) with error: <nil>\n"
    )
    assert ctl.ok("delete", "ippool", "d1", "--skip-not-exists").startswith("Successfully")


# --- get, namespaces, aliases, labels -----------------------------------------------------------

NETWORK_POLICY = (
    "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata:\n  name: {name}\n"
    "{namespace}spec:\n  selector: all()\n"
)


async def test_namespaces(ctl: Calicoctl, kv: EtcdKVStore) -> None:
    no_namespace = ctl.manifest(NETWORK_POLICY.format(name="p", namespace=""))
    ctl.ok("apply", "-f", no_namespace)  # lands in "default"
    ctl.ok("apply", "-f", no_namespace, "-n", "shop")  # -n fills the missing namespace
    keys = set(await snapshot(kv))
    assert keys == {
        f"{RESOURCE_ROOT}networkpolicies/default/p",
        f"{RESOURCE_ROOT}networkpolicies/shop/p",
    }

    assert ctl.ok("get", "networkpolicies") == "NAME   TIER      \np      default   \n\n"
    assert ctl.ok("get", "np", "-n", "shop") == (
        "NAMESPACE   NAME   TIER      \nshop        p      default   \n\n"
    )
    everything = ctl.ok("get", "policy", "-A").splitlines()
    assert [line.split() for line in everything[1:3]] == [
        ["default", "p", "default"],
        ["shop", "p", "default"],
    ]
    assert ctl.ok("get", "np", "p", "-n", "shop", "-o", "name") == "networkpolicy/shop/p\n"

    done = ctl.fails("get", "np", "p", "-A")
    assert "cannot use --all-namespace flag for getting a single resource" in done.stderr
    done = ctl.fails("get", "ippools", "-n", "shop")
    assert "IPPool is not namespaced" in done.stderr
    in_shop = ctl.manifest(NETWORK_POLICY.format(name="q", namespace="  namespace: shop\n"))
    done = ctl.fails("apply", "-f", in_shop, "-n", "other")
    assert "resource namespace does not match client namespace. shop != other" in done.stderr


async def test_kind_aliases_and_missing_resources(ctl: Calicoctl, kv: EtcdKVStore) -> None:
    ctl.ok("apply", "-f", str(REPO / "examples" / "pools.yaml"))
    reference = ctl.ok("get", "IPPool", "-o", "wide")
    assert reference.startswith("NAME                  CIDR             NAT     IPIPMODE")
    for alias in ("ippools", "ipp", "ipps", "pool", "POOLS", "IpPool"):
        assert ctl.ok("get", alias, "-o", "wide") == reference
    done = ctl.fails("get", "somekind", "x")
    assert done.stderr == "Failed to get resources: resource type 'somekind' is not supported\n"
    done = ctl.fails("get", "ippool", "default-ipv4-ippool", "blah")
    assert done.stdout.startswith("NAME                  CIDR")
    assert done.stderr == "resource does not exist: IPPool(blah) with error: <nil>\n"


async def test_labels(ctl: Calicoctl, kv: EtcdKVStore) -> None:
    ctl.ok("apply", "-f", ctl.manifest(pool("l", "10.27.0.0/16")))

    def labels() -> Any:
        return yaml.safe_load(ctl.ok("get", "ippool", "l", "-o", "yaml"))["metadata"].get("labels")

    assert (
        ctl.ok("label", "ippools", "l", "env=prod") == "Successfully set label env on ippools l\n"
    )
    assert labels() == {"env": "prod"}
    done = ctl.fails("label", "ippools", "l", "env=dev")
    assert "key env is already present. please use '--overwrite' to set a new value." in done.stderr
    assert labels() == {"env": "prod"}
    assert ctl.ok("label", "pool", "l", "env=dev", "--overwrite") == (
        "Successfully updated label env on pool l\n"
    )
    assert labels() == {"env": "dev"}
    assert ctl.ok("label", "pool", "l", "env", "--remove") == (
        "Successfully removed label env from pool l\n"
    )
    assert labels() is None
    done = ctl.fails("label", "pool", "l", "env", "--remove")
    assert done.stderr == "cannot remove label of pool l, key env does not exist\n"
    done = ctl.fails("label", "pool", "missing", "a=b")
    assert "failed to get pool missing" in done.stderr


async def test_version_reads_cluster_information(
    ctl: Calicoctl, kv: EtcdKVStore, tmp_path: Path, etcd: EtcdServer
) -> None:
    done = ctl.fails("version")
    assert done.stdout.startswith("Client Version:    v")
    assert "Unable to retrieve Cluster Version or Type" in done.stderr
    (info,) = load_documents(cluster_information_text(), "info")
    await ResourceStore(kv).create(info)  # as calico-node would
    # The datastore from a CalicoAPIConfig file this time, not the environment.
    config = tmp_path / "calicoctl.cfg"
    config.write_text(
        "apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\nmetadata: {}\n"
        f"spec:\n  datastoreType: etcdv3\n  etcdEndpoints: {etcd.endpoint}\n"
    )
    ctl.env["ETCD_ENDPOINTS"] = "http://127.0.0.1:9"  # would fail if it were used
    lines = ctl.ok("version", "-c", str(config)).splitlines()
    assert lines[2:] == ["Cluster Version:   v3.31.0", "Cluster Type:      k8s,bgp"]
    assert "ClusterInformation" in ctl.ok("get", "clusterinfo", "-c", str(config), "-o", "yaml")


# --- a 3-member cluster with one member down ----------------------------------------------------


@pytest.mark.slow
def test_keeps_working_with_one_member_of_three_stopped(
    etcd_cluster: EtcdCluster, tmp_path: Path
) -> None:
    ctl = Calicoctl(etcd_cluster.endpoint_string, tmp_path)
    ctl.ok("apply", "-f", str(REPO / "examples" / "pools.yaml"))
    etcd_cluster.stop_member(0)  # the first endpoint calicoctl would try
    assert "default-ipv4-ippool" in ctl.ok("get", "ippools")
    assert ctl.ok("apply", "-f", ctl.manifest(pool("later", "10.30.0.0/16"))).startswith(
        "Successfully applied"
    )
    ctl.ok("label", "ippool", "later", "written=while-degraded")
    names = ctl.ok("get", "ippools", "-o", "name").split()
    assert names == ["ippool/default-ipv4-ippool", "ippool/later", "ippool/reserved"]
    ctl.env["ETCD_ENDPOINTS"] = etcd_cluster.members[0].endpoint  # only the stopped member
    done = ctl.fails("get", "ippools")
    assert "Failed to get resources" in done.stderr and "UNAVAILABLE" in done.stderr
    # A write gives up at the first unreachable call rather than once per resource.
    three = documents(
        pool("x", "10.31.0.0/16"), pool("y", "10.32.0.0/16"), pool("z", "10.33.0.0/16")
    )
    done = ctl.fails("apply", "-f", ctl.manifest(three))
    assert done.stderr.startswith("Failed to apply any 'IPPool' resources: [")
    assert done.stderr.count("UNAVAILABLE") == 1


async def test_refusals_say_why(ctl: Calicoctl, kv: EtcdKVStore) -> None:
    """A refused label names the problem; `get` without a kind prints one error (issue 20)."""
    ctl.ok("apply", "-f", ctl.manifest(pool("p", "10.1.0.0/16")))
    done = ctl.fails("label", "ippools", "p", "bad_key-=x")
    assert done.stderr.startswith("failed to update ippools p, label not changed: ")
    assert "metadata.labels: key 'bad_key-' is not valid" in done.stderr
    done = ctl.fails("get")
    assert done.stderr.count("Error:") == 1
    assert "'calicoctl get' needs a KIND" in done.stderr

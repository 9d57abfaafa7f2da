"""``calicoctl ipam check --show-all-ips/--show-problem-ips -o`` and ``ipam release
--from-report [--force]`` on a real etcd: a node with a tunnel address, a pod with its workload
endpoint, and pod addresses whose endpoints are gone (leaked)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pycalico import __version__
from pycalico.ctl.ipam import ipam as ipam_group
from pycalico.datastore.api import KVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.ipam import keys
from pycalico.ipam.allocator import IPAM, AutoAssignRequest
from pycalico.ipam.blocks import AllocationBlock, ReleaseOption
from pycalico.ipam.records import IPAddress, IPAMHandle
from pycalico.model.node import ClusterInformation
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.felix_calc import workload
from pycalico.testing.ipam import put_node, put_pool

NODE = "node-0"
GUID = "5ee1a6c6e1a34c0e8c5d2d0b2a0f0c11"
BLOCK = "10.65.0.0/26"


async def calicoctl(etcd: EtcdServer, *args: str) -> tuple[int, str]:
    def run() -> Any:
        return CliRunner().invoke(
            ipam_group, list(args), env={"ETCD_ENDPOINTS": etcd.endpoint}, catch_exceptions=False
        )

    result = await asyncio.to_thread(run)
    return result.exit_code, result.output


async def put_cluster_information(store: ResourceStore, ready: bool = True) -> None:
    info = ClusterInformation.model_validate(
        {
            "metadata": {"name": "default"},
            "spec": {"clusterGUID": GUID, "clusterType": "bgp", "datastoreReady": ready},
        }
    )
    await store.create(info)


async def set_datastore_ready(store: ResourceStore, ready: bool) -> None:
    """What 'calicoctl datastore migrate lock/unlock' does."""
    info = await store.get(ClusterInformation, "default")
    assert isinstance(info, ClusterInformation)
    spec = info.spec.model_copy(update={"datastore_ready": ready})
    await store.update(info.model_copy(update={"spec": spec}))


async def pod_address(allocator: IPAM, pod: str) -> IPAddress:
    v4, _ = await allocator.auto_assign(
        AutoAssignRequest(
            node=NODE,
            handle_id=f"k8s-pod-network.{pod}",
            attrs={"node": NODE, "pod": pod, "namespace": "default"},
        )
    )
    return v4.addresses[0].ip


async def seed(kv: KVStore, store: ResourceStore, leaked_pods: int = 1) -> dict[str, Any]:
    """A node with an IPIP tunnel address, pod 'web' with its endpoint, leaked pod addresses."""
    await put_pool(kv, "default-ipv4-ippool", BLOCK)  # one block, so its name is known
    await put_cluster_information(store)
    await put_node(kv, NODE)
    allocator = IPAM(kv)
    v4, _ = await allocator.auto_assign(
        AutoAssignRequest(
            node=NODE,
            handle_id=f"ipip-tunnel-addr-{NODE}",
            attrs={"node": NODE, "type": "ipipTunnelAddress"},
        )
    )
    tunnel = v4.addresses[0].ip
    node = {
        "apiVersion": "projectcalico.org/v3",
        "kind": "Node",
        "metadata": {"name": NODE},
        "spec": {"bgp": {"ipv4Address": "192.0.2.10/24", "ipv4IPIPTunnelAddr": str(tunnel)}},
    }
    await kv.put(keys.node_key(NODE), json.dumps(node).encode())
    used = await pod_address(allocator, "web")
    await store.create(workload("web", node=NODE, ips=[str(used)]))
    leaked = [await pod_address(allocator, f"old{n}") for n in range(leaked_pods)]
    return {"allocator": allocator, "tunnel": tunnel, "used": used, "leaked": leaked}


async def allocated(kv: KVStore, address: IPAddress) -> str | None:
    """The handle holding ``address``, or None when it is free."""
    info = await IPAM(kv).allocation_info(address)
    return None if info is None else info.handle_id


async def block(kv: KVStore) -> AllocationBlock:
    stored = await kv.get(keys.block_key(ipaddress.ip_network(BLOCK)))
    assert stored is not None
    return AllocationBlock.from_json(stored.value)


async def test_check_shows_all_or_problem_ips(
    kv: KVStore, store: ResourceStore, etcd: EtcdServer, tmp_path: Path
) -> None:
    seeded = await seed(kv, store)
    tunnel, used, (leaked,) = seeded["tunnel"], seeded["used"], seeded["leaked"]
    endpoint = "Workload(default/node--0-k8s-web-eth0)"
    leaked_line = (
        f"  {leaked} leaked; attrs Main:k8s-pod-network.old0 "
        f"Extra:namespace=default,node={NODE},pod=old0"
    )

    code, out = await calicoctl(etcd, "check")
    assert code == 0, out
    assert "Found 3 allocated IPs." in out
    assert "Found 1 node tunnel IPs." in out and "Found 1 workload IPs." in out
    assert "Workloads and nodes are using 2 IPs." in out
    assert "Found 1 IPs that are allocated in IPAM but not actually in use." in out
    assert "Check complete; found 0 problems." in out
    assert leaked_line not in out and " allocated; attrs" not in out

    code, out = await calicoctl(etcd, "check", "--show-problem-ips")
    assert code == 0, out
    lines = out.splitlines()
    assert leaked_line in lines
    assert [line for line in lines if line.startswith("  ")] == [leaked_line], out
    assert str(used) not in out and str(tunnel) not in out

    code, out = await calicoctl(etcd, "check", "--show-all-ips")
    assert code == 0, out
    lines = out.splitlines()
    header = lines.index(f" IPAM block {BLOCK} affinity=host:{NODE}:")
    assert lines[header + 1 : header + 4] == [
        f"  {tunnel} allocated; attrs Main:ipip-tunnel-addr-{NODE} "
        f"Extra:node={NODE},type=ipipTunnelAddress",
        f"  {used} allocated; attrs Main:k8s-pod-network.web "
        f"Extra:namespace=default,node={NODE},pod=web",
        f"  {leaked} allocated; attrs Main:k8s-pod-network.old0 "
        f"Extra:namespace=default,node={NODE},pod=old0",
    ]
    assert f"  {tunnel} belongs to Node({NODE})" in lines
    assert f"  {used} belongs to {endpoint}" in lines
    assert leaked_line in lines  # --show-all-ips implies --show-problem-ips

    code, out = await calicoctl(etcd, "check", "--help")
    assert "--show-all-ips" in out and "--show-problem-ips" in out

    # The report: calicoctl's shape.
    path = tmp_path / "report.json"
    code, out = await calicoctl(etcd, "check", "-o", str(path))
    assert code == 0 and f"Report written to {path}" in out
    report = json.loads(path.read_text())
    info = await kv.get("/calico/resources/v3/projectcalico.org/clusterinformations/default")
    assert info is not None
    assert {k: report[k] for k in list(report)[:5]} == {
        "version": __version__,
        "clusterGUID": GUID,
        "datastoreLocked": False,
        "clusterInformationRevision": str(info.revision),
        "clusterType": "bgp",
    }
    assert "leakedHandles" not in report  # omitted when empty, as calicoctl does
    current = await block(kv)
    assert report["allocations"][str(leaked)] == [
        {
            "ip": str(leaked),
            "handle": "k8s-pod-network.old0",
            "sequenceNumber": current.sequence_for(current.ordinal(leaked)),
            "pod": "old0",
            "namespace": "default",
            "node": NODE,
            "inUse": False,
            "owners": None,
        }
    ]
    (entry,) = report["allocations"][str(used)]
    assert entry["inUse"] is True and entry["owners"] == [endpoint]
    (entry,) = report["allocations"][str(tunnel)]
    assert entry["type"] == "ipipTunnelAddress" and entry["owners"] == [f"Node({NODE})"]
    assert report["findings"] == [] and report["summary"]["leakedIPs"] == 1


async def test_release_from_report_frees_only_what_is_still_leaked(
    kv: KVStore, store: ResourceStore, etcd: EtcdServer, tmp_path: Path
) -> None:
    seeded = await seed(kv, store, leaked_pods=3)
    allocator: IPAM = seeded["allocator"]
    reused, released_meanwhile, leaked = seeded["leaked"]
    orphan = "k8s-pod-network.orphan"  # a handle left by an interrupted assignment
    await kv.put(keys.handle_key(orphan), IPAMHandle({BLOCK: 1}).to_json())
    changed = "k8s-pod-network.changed"  # leaked at report time, rewritten since
    await kv.put(keys.handle_key(changed), IPAMHandle({BLOCK: 1}).to_json())

    await set_datastore_ready(store, False)
    path = tmp_path / "report.json"
    code, out = await calicoctl(etcd, "check", "-o", str(path))
    assert code == 1 and "handle-without-addresses" in out  # the orphans are findings too
    report = json.loads(path.read_text())
    assert report["datastoreLocked"] is True
    assert sorted(h["ID"] for h in report["leakedHandles"]) == [changed, orphan]

    # After the report: one leaked address is released and handed out again, under the same
    # handle (the same container added again), so only its sequence number tells; another is
    # just released; the second handle is rewritten.
    await allocator.release_ips([ReleaseOption(reused), ReleaseOption(released_meanwhile)])
    await allocator.assign_ip(
        reused, node=NODE, handle_id="k8s-pod-network.old0", attrs={"node": NODE, "pod": "old0"}
    )
    await kv.put(keys.handle_key(changed), IPAMHandle({BLOCK: 2}).to_json())

    code, out = await calicoctl(etcd, "release", f"--from-report={path}")
    assert code == 0, out
    lines = out.splitlines()
    assert lines[:3] == [
        "Releasing 3 old IPs...",
        "Released 1 IPs successfully",
        "1 addresses marked as leaked in the report had already been cleaned up.",
    ]
    assert lines[3].startswith("1 addresses changed since the report was made")
    assert lines[4].startswith(f"  {reused}: update conflict on {reused}: sequence number")
    assert lines[5:] == [
        "Deleting 2 handles...",
        "Key: '.' = Deleted OK; 'x' = skip, handle missing/changed.",
        "x.",
        "Released 1 handles; 1 skipped; 0 errors.",
        "You may now unlock the data store.",
    ]
    assert await allocated(kv, leaked) is None
    assert await allocated(kv, reused) == "k8s-pod-network.old0"  # not freed: it was reused
    assert await allocated(kv, seeded["used"]) == "k8s-pod-network.web"
    assert await allocated(kv, seeded["tunnel"]) == f"ipip-tunnel-addr-{NODE}"
    assert await kv.get(keys.handle_key(orphan)) is None
    assert await kv.get(keys.handle_key(changed)) is not None

    # Run again: everything it lists is gone or changed, nothing more is released.
    code, out = await calicoctl(etcd, "release", f"--from-report={path}")
    assert code == 0 and "Released 0 IPs successfully" in out, out
    assert await allocated(kv, reused) == "k8s-pod-network.old0"


async def test_release_refuses_unlocked_stale_and_foreign_reports(
    kv: KVStore, store: ResourceStore, etcd: EtcdServer, tmp_path: Path
) -> None:
    seeded = await seed(kv, store)
    (leaked,) = seeded["leaked"]
    path = tmp_path / "report.json"
    assert (await calicoctl(etcd, "check", "-o", str(path)))[0] == 0

    # Not locked: refused unless --force.
    code, out = await calicoctl(etcd, "release", "--from-report", str(path))
    assert code == 1 and out.strip() == (
        "--from-report: data store is not locked. Either lock the data store, or re-run with "
        "--force"
    )
    assert await allocated(kv, leaked) == "k8s-pod-network.old0"

    # Locking (or anything else that rewrites ClusterInformation) makes the report stale:
    # refused, --force or not, as calicoctl does.
    await set_datastore_ready(store, False)
    for extra in ((), ("--force",)):
        code, out = await calicoctl(etcd, "release", "--from-report", str(path), *extra)
        assert code == 1 and "the provided reports are all stale" in out, out
        assert "Please generate a new report while the data store is locked" in out
    assert await allocated(kv, leaked) == "k8s-pod-network.old0"

    # Another cluster's report: refused even with --force.
    fresh = tmp_path / "fresh.json"
    assert (await calicoctl(etcd, "check", "-o", str(fresh)))[0] == 0
    foreign = tmp_path / "foreign.json"
    foreign.write_text(fresh.read_text().replace(GUID, "0" * 32))
    code, out = await calicoctl(etcd, "release", f"--from-report={foreign}", "--force")
    assert code == 1 and "mismatched cluster GUID" in out and str(foreign) in out, out

    # Another calicoctl version: refused, or a warning with --force.
    other = tmp_path / "other-version.json"
    other.write_text(json.dumps({**json.loads(fresh.read_text()), "version": "v3.29.0"}))
    code, out = await calicoctl(etcd, "release", f"--from-report={other}")
    assert code == 1 and "different version (v3.29.0) of calicoctl" in out, out
    assert await allocated(kv, leaked) == "k8s-pod-network.old0"
    code, out = await calicoctl(etcd, "release", f"--from-report={other}", "--force")
    assert code == 0 and out.splitlines()[:2] == [
        "WARNING: Report was produced using a different version of calicoctl. Ignoring due to "
        "--force option",
        "Releasing 1 old IPs...",
    ]
    assert await allocated(kv, leaked) is None

    # Unlocked, a current report goes ahead with --force, with a warning.
    await set_datastore_ready(store, True)
    again = await pod_address(seeded["allocator"], "again")
    assert (await calicoctl(etcd, "check", "-o", str(fresh)))[0] == 0
    code, out = await calicoctl(etcd, "release", f"--from-report={fresh}", "--force")
    assert code == 0 and out.splitlines()[0] == (
        "WARNING: Data store is not locked. Ignoring due to --force option"
    )
    assert await allocated(kv, again) is None
    assert await allocated(kv, seeded["used"]) == "k8s-pod-network.web"


async def test_release_from_several_reports_releases_what_all_call_leaked(
    kv: KVStore, store: ResourceStore, etcd: EtcdServer, tmp_path: Path
) -> None:
    seeded = await seed(kv, store, leaked_pods=2)
    first, second = seeded["leaked"]
    await set_datastore_ready(store, False)
    early, late = tmp_path / "early.json", tmp_path / "late.json"
    assert (await calicoctl(etcd, "check", "-o", str(early)))[0] == 0
    # Between the reports the second address turns out to be used after all.
    await store.create(workload("slow", node=NODE, ips=[str(second)]))
    assert (await calicoctl(etcd, "check", "-o", str(late)))[0] == 0
    code, out = await calicoctl(etcd, "release", f"--from-report={early}", f"--from-report={late}")
    assert code == 0 and "Released 1 IPs successfully" in out, out
    assert await allocated(kv, first) is None
    assert await allocated(kv, second) == "k8s-pod-network.old1"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "--from-report: cannot read {path}: No such file or directory"),
        ("not json", "--from-report: {path} is not JSON"),
        ('{"kind": "IPPool"}', "--from-report: {path} is not an IPAM check report"),
        (
            '{"version": "x", "clusterGUID": "g", "clusterInformationRevision": "1", '
            '"allocations": {"10.65.0.9": [{"ip": "10.65.0.9", "inUse": false}]}}',
            "leaked address 10.65.0.9 has no 'sequenceNumber'",
        ),
        (
            '{"version": "x", "clusterGUID": "g", "clusterInformationRevision": "1", '
            '"allocations": {"a": [{"ip": "banana", "inUse": false, "sequenceNumber": 1}]}}',
            "'ip' 'banana' is not an IP address",
        ),
    ],
)
async def test_bad_reports_release_nothing(
    kv: KVStore,
    store: ResourceStore,
    etcd: EtcdServer,
    tmp_path: Path,
    content: str | None,
    message: str,
) -> None:
    seeded = await seed(kv, store)
    path = tmp_path / "report.json"
    if content is not None:
        path.write_text(content)
    code, out = await calicoctl(etcd, "release", f"--from-report={path}", "--force")
    assert code == 1 and message.format(path=path) in out, out
    assert await allocated(kv, seeded["leaked"][0]) == "k8s-pod-network.old0"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--ip=10.65.0.1", "--from-report=r.json"],
            "--ip and --from-report cannot be used together",
        ),
        (["--ip=10.65.0.1", "--force"], "--force applies only to --from-report"),
        ([], "nothing to release: give --ip=<IP> or --from-report=<FILE>"),
    ],
)
def test_release_option_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(ipam_group, ["release", *args], env={"ETCD_ENDPOINTS": ""})
    assert result.exit_code == 1 and message in result.output, result.output

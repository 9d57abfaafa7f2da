"""The allocator on a real etcd: borrowing versus strict affinity in a small pool, dual-stack
all-or-nothing, a process SIGKILLed between claiming a block and confirming it, and the
``calicoctl ipam`` commands."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import signal
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pycalico.ctl.ipam import ipam as ipam_group
from pycalico.datastore.api import KVStore
from pycalico.ipam import keys
from pycalico.ipam.allocator import (
    IPAM,
    AssignmentIncomplete,
    AutoAssignRequest,
    NoQualifiedPool,
)
from pycalico.ipam.blocks import AllocationBlock
from pycalico.ipam.check import check
from pycalico.ipam.records import BlockAffinity, IPAMConfig
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.ipam import ipam_keys, put_node, put_pool

NODES = [f"node-{i}" for i in range(8)]


def request(node: str, handle: str, **kw: object) -> AutoAssignRequest:
    return AutoAssignRequest(node=node, handle_id=handle, attrs={"node": node}, **kw)  # type: ignore[arg-type]


async def owner(
    kv: KVStore, address: ipaddress.IPv4Interface | ipaddress.IPv6Interface
) -> str | None:
    value = await kv.get(keys.block_key(address.network))
    assert value is not None
    return AllocationBlock.from_json(value.value).host


@pytest.mark.parametrize("strict", [False, True])
async def test_four_blocks_eight_nodes(kv: KVStore, etcd: EtcdServer, strict: bool) -> None:
    await put_pool(kv, "small", "10.70.0.0/24", block_size=26)  # room for 4 blocks
    for node in NODES:
        await put_node(kv, node)
    allocator = IPAM(kv)
    if strict:
        await allocator.set_config(IPAMConfig(strict_affinity=True))
    results = await asyncio.gather(
        *(allocator.auto_assign(request(n, f"h-{n}")) for n in NODES), return_exceptions=True
    )
    got = {n: r for n, r in zip(NODES, results, strict=True) if not isinstance(r, BaseException)}
    failed = {n: r for n, r in zip(NODES, results, strict=True) if isinstance(r, BaseException)}
    affine = [n for n, r in got.items() if await owner(kv, r[0].addresses[0]) == n]
    assert len(affine) == 4
    if strict:
        assert len(failed) == 4 and set(got) == set(affine)
        for error in failed.values():
            assert isinstance(error, AssignmentIncomplete)
            assert str(error) == (
                "Assigned 0 out of 1 requested IPv4 addresses; "
                "No more free affine blocks and strict affinity enabled"
            )
        handles = [k for k in await ipam_keys(kv) if "/handle/" in k]
        assert sorted(handles) == sorted(keys.handle_key(f"h-{n}") for n in affine)
    else:
        assert failed == {}
        borrowers = [n for n in NODES if n not in affine]
        assert len(borrowers) == 4
        for node in borrowers:
            assert await owner(kv, got[node][0].addresses[0]) in affine
        assert len({r[0].addresses[0].ip for r in got.values()}) == 8
        code, out = await asyncio.to_thread(calicoctl, etcd, "show", "--show-borrowed")
        assert code == 0 and "BORROWING-NODE" in out
        for node in borrowers:
            address = got[node][0].addresses[0]
            row = next(line for line in out.splitlines() if f"| {address.ip} " in line)
            assert f"| {node} " in row and f"| {await owner(kv, address)} " in row
    report = await check(kv)
    assert report.clean, report.findings


async def test_dual_stack_without_ipv6_pool_leaves_nothing(kv: KVStore) -> None:
    await put_pool(kv, "v4", "10.65.0.0/16")
    await put_node(kv, "node-0")
    allocator = IPAM(kv)
    with pytest.raises(NoQualifiedPool, match="cannot find a qualified ippool"):
        await allocator.auto_assign(request("node-0", "dual", num4=1, num6=1))
    assert await ipam_keys(kv) == {}
    # The IPv6 side failing late (pool exhausted) also gives the IPv4 address back.
    await put_pool(kv, "v6", "fd00::/127", block_size=127)
    await allocator.auto_assign(request("node-0", "fill", num4=0, num6=2))
    before = await ipam_keys(kv)
    with pytest.raises(AssignmentIncomplete, match="requested IPv6 addresses"):
        await allocator.auto_assign(request("node-0", "dual", num4=1, num6=1))
    after = await ipam_keys(kv)
    assert keys.handle_key("dual") not in after
    v4_blocks = [
        AllocationBlock.from_json(v)
        for k, v in after.items()
        if "/ipv4/block/" in k and "/assignment/" in k
    ]
    assert all(b.in_use_ordinals() == [] for b in v4_blocks)
    assert {k for k in after if "/ipv6/" in k} == {k for k in before if "/ipv6/" in k}


CRASHING_CLAIM = """
import asyncio, os, signal, sys
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.ipam.allocator import IPAM, AutoAssignRequest

def killed(cidr):
    os.kill(os.getpid(), signal.SIGKILL)

async def main():
    kv = EtcdKVStore([sys.argv[1]])
    await IPAM(kv, after_block_claimed=killed).auto_assign(AutoAssignRequest(node="node-0", handle_id="doomed",
                                                    attrs={"node": "node-0"}))

asyncio.run(main())
"""


async def test_sigkill_between_claim_and_confirm(
    kv: KVStore, etcd: EtcdServer, tmp_path: Path
) -> None:
    await put_pool(kv, "v4", "10.65.0.0/16")
    for node in ("node-0", "node-1"):
        await put_node(kv, node)
    script = tmp_path / "crash.py"
    script.write_text(CRASHING_CLAIM)
    process = await asyncio.create_subprocess_exec(sys.executable, str(script), etcd.endpoint)
    assert await asyncio.wait_for(process.wait(), 60) == -signal.SIGKILL

    # What it left: a block claimed for node-0 and node-0's affinity still pending.
    left = await ipam_keys(kv)
    (affinity_key,) = [k for k in left if k.startswith("/calico/ipam/v2/host/")]
    assert BlockAffinity.from_json(left[affinity_key]).state == "pending"
    report = await check(kv)
    assert [f.kind for f in report.findings] == ["pending-affinity"]
    assert "interrupted between creating the block and confirming it" in report.findings[0].message

    # Nobody trips over it: another node allocates elsewhere, node-0 confirms and uses it.
    allocator = IPAM(kv)
    other = (await allocator.auto_assign(request("node-1", "n1")))[0].addresses[0]
    assert await owner(kv, other) == "node-1"
    mine = (await allocator.auto_assign(request("node-0", "n0")))[0].addresses[0]
    assert keys.affinity_key("node-0", mine.network) == affinity_key
    affinity = await kv.get(affinity_key)
    assert affinity is not None and BlockAffinity.from_json(affinity.value).confirmed
    report = await check(kv)
    assert report.clean, report.findings


def calicoctl(etcd: EtcdServer, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        ipam_group, list(args), env={"ETCD_ENDPOINTS": etcd.endpoint}, catch_exceptions=False
    )
    return result.exit_code, result.output


async def test_calicoctl_ipam_commands(kv: KVStore, etcd: EtcdServer, tmp_path: Path) -> None:
    await put_pool(kv, "default-ipv4-ippool", "10.65.0.0/16")
    await put_node(kv, "node-0")
    allocator = IPAM(kv)
    v4, _ = await allocator.auto_assign(
        AutoAssignRequest(
            node="node-0",
            handle_id="k8s-pod-network.abc",
            attrs={"node": "node-0", "pod": "web", "namespace": "default"},
            num4=3,
        )
    )
    first, second, _ = v4.addresses

    def run(*args: str) -> tuple[int, str]:
        return calicoctl(etcd, *args)

    code, out = await asyncio.to_thread(run, "show")
    assert code == 0 and "| IP Pool  | 10.65.0.0/16 |     65536 |     3 (0%) |" in out
    assert "GROUPING" in out and "IPS IN USE" in out
    code, out = await asyncio.to_thread(run, "show", "--show-blocks")
    assert f"| Block    | {first.network}" in out and "3 (5%)" in out
    code, out = await asyncio.to_thread(run, "show", f"--ip={first.ip}")
    assert out.splitlines()[:3] == [
        f"IP {first.ip} is in use",
        "Handle ID: k8s-pod-network.abc",
        "Active Owner Attributes:",
    ]
    assert "  pod: web" in out
    code, out = await asyncio.to_thread(run, "show", "--ip=10.65.250.1")
    assert out.strip() == "10.65.250.1 is not assigned"

    # A leak: an address whose handle is gone.  check finds it, release fixes it.
    await kv.delete(keys.handle_key("k8s-pod-network.abc"))
    report_path = tmp_path / "report.json"
    code, out = await asyncio.to_thread(run, "check", "-o", str(report_path))
    assert code == 1 and "allocation-without-handle" in out
    findings = json.loads(report_path.read_text())["findings"]
    assert {f["address"] for f in findings} == {str(a.ip) for a in v4.addresses}
    for address in v4.addresses:
        code, out = await asyncio.to_thread(run, "release", f"--ip={address.ip}")
        assert (code, out.strip()) == (0, f"Successfully released IP address {address.ip}")
    code, out = await asyncio.to_thread(run, "release", f"--ip={second.ip}")
    assert code == 1 and "is not assigned" in out
    code, out = await asyncio.to_thread(run, "check")
    assert code == 0 and "found 0 problems" in out

    code, out = await asyncio.to_thread(run, "configure", "--strictaffinity=true")
    assert (code, out.strip()) == (0, "Successfully set StrictAffinity to: true")
    assert (await allocator.get_config()).strict_affinity
    code, out = await asyncio.to_thread(run, "configure", "--strictaffinity=maybe")
    assert code == 1 and "expected true or false" in out
    code, out = await asyncio.to_thread(run, "show", "--show-configuration")
    assert "| StrictAffinity     | true  |" in out


async def test_blocks_interoperate_with_calico_written_values(kv: KVStore) -> None:
    """A block, affinity and handle exactly as libcalico-go writes them are used as ours."""
    await put_pool(kv, "v4", "10.65.0.0/16")
    await put_node(kv, "kind-worker")
    cidr = ipaddress.ip_network("10.65.4.0/26")
    calico_block = {
        "cidr": str(cidr),
        "affinity": "host:kind-worker",
        "allocations": [0] + [None] * 63,
        "unallocated": list(range(1, 64)),
        "attributes": [{"handle_id": "k8s-pod-network.old", "secondary": {"node": "kind-worker"}}],
        "sequenceNumber": 5,
        "sequenceNumberForAllocation": {"0": 4},
        "deleted": False,
    }
    await kv.put(keys.block_key(cidr), json.dumps(calico_block).encode())
    await kv.put(keys.affinity_key("kind-worker", cidr), b"")  # old format: confirmed
    await kv.put(
        keys.handle_key("k8s-pod-network.old"),
        json.dumps({"block": {str(cidr): 1}, "deleted": False}).encode(),
    )
    allocator = IPAM(kv)
    got = (await allocator.auto_assign(request("kind-worker", "new")))[0].addresses[0]
    assert str(got) == "10.65.4.1/26"
    assert (await check(kv)).clean
    assert await allocator.release_by_handle("k8s-pod-network.old") == 1

"""``calicoctl ipam show`` on a real etcd, row for row as calicoctl prints it: a /24 pool in /26
blocks with addresses in use on two nodes, an IPReservation of a /29 (one of its addresses also
allocated) and of one address no block holds yet, and an address cooling down after release.
Also ``--ip`` for a reserved-and-allocated address, a cooling one and a free one."""

from __future__ import annotations

import asyncio
import ipaddress

from click.testing import CliRunner

from pycalico.ctl.ipam import ipam as ipam_group
from pycalico.datastore.api import KVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.ipam.allocator import IPAM
from pycalico.ipam.blocks import ReleaseOption
from pycalico.ipam.records import IPAMConfig
from pycalico.model.codec import load_documents
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.ipam import put_node, put_pool

RESERVATION = """\
apiVersion: projectcalico.org/v3
kind: IPReservation
metadata:
  name: keep-out
spec:
  reservedCIDRs:
  - 10.90.0.16/29
  - 10.90.0.200
"""

POOLS_ONLY = """\
+----------+--------------+-----------+------------+--------------+-----------+
| GROUPING | CIDR         | IPS TOTAL | IPS IN USE | IPS RESERVED | IPS FREE  |
+----------+--------------+-----------+------------+--------------+-----------+
| IP Pool  | 10.90.0.0/24 |       256 |     5 (2%) |       9 (4%) | 243 (95%) |
+----------+--------------+-----------+------------+--------------+-----------+
"""

# 100 * 8 / 64 is 12.5: Go's %.f rounds the tie to even, so 12%.
WITH_BLOCKS = """\
+----------+---------------+-----------+------------+--------------+-----------+
| GROUPING | CIDR          | IPS TOTAL | IPS IN USE | IPS RESERVED | IPS FREE  |
+----------+---------------+-----------+------------+--------------+-----------+
| IP Pool  | 10.90.0.0/24  |       256 |     5 (2%) |       9 (4%) | 243 (95%) |
| Block    | 10.90.0.0/26  |        64 |     4 (6%) |      8 (12%) |  53 (83%) |
| Block    | 10.90.0.64/26 |        64 |     1 (2%) |       0 (0%) |  63 (98%) |
+----------+---------------+-----------+------------+--------------+-----------+
"""


def show(etcd: EtcdServer, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        ipam_group,
        ["show", *args],
        env={"ETCD_ENDPOINTS": etcd.endpoint},
        catch_exceptions=False,
    )
    return result.exit_code, result.output


async def populate(kv: KVStore, store: ResourceStore) -> None:
    """node-1 holds 10.90.0.0-2 (.2 then released into its cooldown) and 10.90.0.20 inside the
    reservation; node-2 holds 10.90.0.64 in a second block.  Addresses are assigned by name:
    auto-assignment picks a random block."""
    await put_pool(kv, "pool-a", "10.90.0.0/24", block_size=26)
    await put_node(kv, "node-1")
    await put_node(kv, "node-2")
    allocator = IPAM(kv)
    await allocator.set_config(IPAMConfig(ip_cooldown_seconds=600))
    (resource,) = load_documents(RESERVATION, "reservation")
    await store.apply(resource)
    held = [
        ("10.90.0.0", "node-1", "h-pods", {}),
        ("10.90.0.1", "node-1", "h-pods", {}),
        ("10.90.0.2", "node-1", "h-pods", {}),
        ("10.90.0.20", "node-1", "h-static", {"pod": "pinned", "namespace": "default"}),
        ("10.90.0.64", "node-2", "h-other", {}),
    ]
    for address, node, handle, attrs in held:
        await allocator.assign_ip(
            ipaddress.ip_address(address),
            node=node,
            handle_id=handle,
            attrs={"node": node, **attrs},
        )
    not_released = await allocator.release_ips([ReleaseOption(ipaddress.ip_address("10.90.0.2"))])
    assert not_released == []


async def test_pool_and_block_rows(kv: KVStore, store: ResourceStore, etcd: EtcdServer) -> None:
    await populate(kv, store)

    # Pool: 256 addresses; in use .0 .1 .2 (cooling) .20 .64; reserved the /29 and .200, of
    # which .20 is also in use, so free is 256 - 9 - (5 - 1).
    code, out = await asyncio.to_thread(show, etcd)
    assert (code, out) == (0, POOLS_ONLY)
    code, out = await asyncio.to_thread(show, etcd, "--show-blocks")
    assert (code, out) == (0, WITH_BLOCKS)


async def test_a_block_no_pool_contains_is_shown_without_a_pool_row(
    kv: KVStore, store: ResourceStore, etcd: EtcdServer
) -> None:
    await populate(kv, store)
    await kv.delete_prefix("/calico/resources/v3/projectcalico.org/ippools/")
    await put_pool(kv, "pool-b", "10.90.0.64/26", block_size=26)

    code, out = await asyncio.to_thread(show, etcd, "--show-blocks")
    assert code == 0
    lines = out.splitlines()
    groupings = [line.split("|")[1].strip() for line in lines[3:-1]]
    cidrs = [line.split("|")[2].strip() for line in lines[3:-1]]
    # pool-b's row and its block, then the orphaned block (10.90.0.0/26) on its own.
    assert list(zip(groupings, cidrs, strict=True)) == [
        ("IP Pool", "10.90.0.64/26"),
        ("Block", "10.90.0.64/26"),
        ("Block", "10.90.0.0/26"),
    ]
    orphan = [c.strip() for c in lines[-2].split("|")[3:-1]]
    assert orphan == ["64", "4 (6%)", "8 (12%)", "53 (83%)"]


async def test_show_ip(kv: KVStore, store: ResourceStore, etcd: EtcdServer) -> None:
    await populate(kv, store)

    code, out = await asyncio.to_thread(show, etcd, "--ip=10.90.0.20")
    assert code == 0
    # Reserved and allocated: calicoctl reports the allocation and says nothing of the reservation.
    assert out.splitlines() == [
        "IP 10.90.0.20 is in use",
        "Handle ID: h-static",
        "Active Owner Attributes:",
        "  namespace: default",
        "  node: node-1",
        "  pod: pinned",
    ]
    code, out = await asyncio.to_thread(show, etcd, "--ip=10.90.0.17")
    assert (code, out) == (0, "10.90.0.17 is not assigned\n")
    code, out = await asyncio.to_thread(show, etcd, "--ip=10.90.0.2")
    assert (code, out) == (0, "10.90.0.2 is not assigned\n")

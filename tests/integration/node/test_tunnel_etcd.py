"""calico-node's VXLAN tunnel addresses against a real etcd: allocated from VXLAN pools with
Calico's handle and attributes, recorded on the Node, followed as pools change, released."""

from __future__ import annotations

import asyncio
from ipaddress import ip_address
from typing import Any

from pycalico.ipam.allocator import IPAM
from pycalico.lib.vxlan import vtep_mac
from pycalico.model.ipam import IPPool
from pycalico.model.node import Node
from pycalico.node.tunnel import TunnelAddressReconciler


def pool(name: str, cidr: str, mode: str) -> IPPool:
    return IPPool.model_validate(
        {"metadata": {"name": name}, "spec": {"cidr": cidr, "vxlanMode": mode}}
    )


async def node_spec(store: Any) -> Any:
    node = await store.get(Node, "n1")
    assert isinstance(node, Node)
    return node.spec


async def test_allocate_record_follow_and_release(store: Any, kv: Any) -> None:
    await store.create(Node.model_validate({"metadata": {"name": "n1"},
                                            "spec": {"bgp": {"ipv4Address": "10.0.0.1/24"}}}))  # fmt: skip
    await store.create(pool("plain", "10.70.0.0/16", "Never"))
    await store.create(pool("overlay", "10.65.0.0/16", "Always"))
    await store.create(pool("overlay6", "fd65::/48", "CrossSubnet"))
    reconciler = TunnelAddressReconciler(kv, "n1")
    await reconciler.reconcile()
    spec = await node_spec(store)
    assert spec.ipv4_vxlan_tunnel_addr.startswith("10.65.")
    assert spec.vxlan_tunnel_mac_addr == vtep_mac("n1", 4)
    assert spec.ipv6_vxlan_tunnel_addr.startswith("fd65:")
    assert spec.vxlan_tunnel_mac_addr_v6 == vtep_mac("n1", 6)
    ipam = IPAM(kv)
    info = await ipam.allocation_info(ip_address(spec.ipv4_vxlan_tunnel_addr))
    assert info is not None and info.handle_id == "vxlan-tunnel-addr-n1"
    assert info.attributes["node"] == "n1" and info.attributes["type"] == "vxlanTunnelAddress"
    info6 = await ipam.allocation_info(ip_address(spec.ipv6_vxlan_tunnel_addr))
    assert info6 is not None and info6.handle_id == "vxlan-v6-tunnel-addr-n1"

    # Idempotent: a second pass keeps the address.
    first = spec.ipv4_vxlan_tunnel_addr
    await reconciler.reconcile()
    assert (await node_spec(store)).ipv4_vxlan_tunnel_addr == first

    # The VXLAN pool goes; another one comes: the address moves into it (the old one released).
    await store.delete(IPPool, "overlay")
    await store.create(pool("overlay2", "10.66.0.0/16", "Always"))
    await reconciler.reconcile()
    moved = (await node_spec(store)).ipv4_vxlan_tunnel_addr
    assert moved.startswith("10.66.")
    assert await ipam.allocation_info(ip_address(first)) is None

    # No VXLAN pool left: released and cleared (IPv4), IPv6 untouched.
    await store.delete(IPPool, "overlay2")
    await reconciler.reconcile()
    spec = await node_spec(store)
    assert spec.ipv4_vxlan_tunnel_addr is None and spec.vxlan_tunnel_mac_addr is None
    assert spec.ipv6_vxlan_tunnel_addr is not None
    assert await ipam.allocation_info(ip_address(moved)) is None


async def test_run_follows_pool_changes(store: Any, kv: Any) -> None:
    await store.create(Node.model_validate({"metadata": {"name": "n1"},
                                            "spec": {"bgp": {"ipv4Address": "10.0.0.1/24"}}}))  # fmt: skip
    reconciler = TunnelAddressReconciler(kv, "n1")
    task = asyncio.create_task(reconciler.run())
    try:
        await store.create(pool("overlay", "10.65.0.0/16", "Always"))
        for _ in range(200):
            if (await node_spec(store)).ipv4_vxlan_tunnel_addr:
                break
            await asyncio.sleep(0.025)
        assert (await node_spec(store)).ipv4_vxlan_tunnel_addr
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

"""calico-node's VXLAN tunnel addresses (Calico's ``allocateip.go``), following pool changes.

What it is: for each IP family, while an enabled IP pool with ``vxlanMode`` ``Always`` or
``CrossSubnet`` selects this node (``nodeSelector`` against the Node's labels), the node holds
one tunnel address from IPAM — handle ``vxlan-tunnel-addr-<node>`` (IPv6:
``vxlan-v6-tunnel-addr-<node>``), attributes ``node`` and ``type`` (``vxlanTunnelAddress`` /
``vxlanV6TunnelAddress``), use ``Tunnel``, from those pools only — recorded with the VTEP MAC
on the Node (``ipv4VXLANTunnelAddr``/``vxlanTunnelMACAddr``, ``ipv6VXLANTunnelAddr``/
``vxlanTunnelMACAddrV6``).  An address outside every such pool, or not held by our handle, is
released and replaced; when no such pool remains the address is released and the fields are
cleared.  ``TunnelAddressReconciler.run`` does this at start and again after every change of
the pools or of the Node (the typed stream), as Calico's ``calico-node -allocate-tunnel-addrs``
does.  What it is not: the device (Felix) or IPIP/WireGuard addresses.

Invariants: the decision (``plan``) is pure; the Node is written with ``read_modify_write`` and
only the four VXLAN fields are changed; a MAC already on the Node is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pycalico.datastore.api import DatastoreError, KeyNotFound, KVStore, RevisionConflict
from pycalico.datastore.resource_syncer import ResourceSyncer
from pycalico.datastore.resources import ResourceStore
from pycalico.datastore.retry import read_modify_write
from pycalico.ipam.allocator import IPAM, AutoAssignRequest, HandleNotFound, IPAMError
from pycalico.ipam.pools import USE_TUNNEL, selector_matches
from pycalico.lib.vxlan import ATTRIBUTE_TYPE_V4, ATTRIBUTE_TYPE_V6, tunnel_handle, vtep_mac
from pycalico.model.ipam import IPPool
from pycalico.model.node import Node

log = logging.getLogger(__name__)

# Node spec attributes per family: (tunnel address, MAC).
_FIELDS = {4: ("ipv4_vxlan_tunnel_addr", "vxlan_tunnel_mac_addr"),
           6: ("ipv6_vxlan_tunnel_addr", "vxlan_tunnel_mac_addr_v6")}  # fmt: skip


def vxlan_pools(pools: Sequence[IPPool], labels: Mapping[str, str], version: int) -> list[str]:
    """The CIDRs of enabled VXLAN pools of ``version`` whose nodeSelector selects the node."""
    out = []
    for pool in pools:
        spec = pool.spec
        if spec.disabled or (spec.vxlan_mode or "Never") == "Never":
            continue
        if pool.network.version != version:
            continue
        if "Tunnel" not in (spec.allowed_uses or ["Workload", "Tunnel"]):
            continue
        try:
            if not selector_matches(spec.node_selector or "all()", labels):
                continue
        except Exception:  # a selector that does not evaluate selects nothing
            continue
        out.append(str(pool.network))
    return out


@dataclass(frozen=True, slots=True)
class Plan:
    keep: bool  # the current address is good
    release: bool  # release what the handle holds
    allocate: bool  # allocate a new address from ``pools``


def plan(current: str | None, held: Sequence[str], pools: Sequence[str]) -> Plan:
    """What to do for one family: ``current`` is the Node's tunnel address, ``held`` what our
    handle holds in IPAM, ``pools`` the VXLAN pools that select the node."""
    if not pools:
        return Plan(keep=False, release=bool(held) or current is not None, allocate=False)
    networks = [ipaddress.ip_network(cidr) for cidr in pools]
    good = (
        current is not None
        and current in held
        and any(ipaddress.ip_address(current) in network for network in networks)
    )
    if good:
        return Plan(keep=True, release=False, allocate=False)
    return Plan(keep=False, release=bool(held), allocate=True)


class TunnelAddressReconciler:
    def __init__(self, kv: KVStore, node: str, *, ipam: IPAM | None = None) -> None:
        self.kv = kv
        self.node = node
        self.store = ResourceStore(kv)
        self.ipam = ipam or IPAM(kv)
        self.passes = 0

    async def reconcile(self) -> None:
        """One pass over both families."""
        pools = [p for p in (await self.store.list(IPPool)).items if isinstance(p, IPPool)]
        try:
            node = await self.store.get(Node, self.node)
        except KeyNotFound:
            return  # not registered (yet, or deleted): nothing to record addresses on
        assert isinstance(node, Node)
        labels = dict(node.metadata.labels or {})
        wanted: dict[int, tuple[str | None, str | None]] = {}
        for version in (4, 6):
            address_field, mac_field = _FIELDS[version]
            current = getattr(node.spec, address_field)
            handle = tunnel_handle(self.node, version)
            try:
                held = [str(a) for a in await self.ipam.addresses_by_handle(handle)]
            except HandleNotFound:
                held = []
            decision = plan(current, held, vxlan_pools(pools, labels, version))
            if decision.release:
                with contextlib.suppress(HandleNotFound):
                    await self.ipam.release_by_handle(handle)
                log.info("VXLAN: released IPv%d tunnel address(es) %s of %s", version, held,
                         self.node)  # fmt: skip
            if decision.keep:
                wanted[version] = (
                    current,
                    getattr(node.spec, mac_field) or vtep_mac(self.node, version),
                )
            elif decision.allocate:
                address = await self._allocate(version, vxlan_pools(pools, labels, version))
                mac = getattr(node.spec, mac_field) or vtep_mac(self.node, version)
                wanted[version] = (address, mac if address else None)
            else:
                wanted[version] = (None, None)
        await self._record(wanted)
        self.passes += 1

    async def _allocate(self, version: int, pools: list[str]) -> str | None:
        networks = [ipaddress.ip_network(cidr) for cidr in pools]
        request = AutoAssignRequest(
            num4=1 if version == 4 else 0,
            num6=1 if version == 6 else 0,
            handle_id=tunnel_handle(self.node, version),
            attrs={
                "node": self.node,
                "type": ATTRIBUTE_TYPE_V4 if version == 4 else ATTRIBUTE_TYPE_V6,
                "timestamp": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f +0000 UTC"),
            },
            node=self.node,
            ipv4_pools=tuple(n for n in networks if n.version == 4),
            ipv6_pools=tuple(n for n in networks if n.version == 6),
            use=USE_TUNNEL,
        )
        try:
            v4, v6 = await self.ipam.auto_assign(request)
        except IPAMError as error:
            log.error("VXLAN: no IPv%d tunnel address for %s: %s", version, self.node, error)
            return None
        found = (v4 if version == 4 else v6).addresses
        if not found:
            log.error("VXLAN: no IPv%d tunnel address for %s (pools %s exhausted?)", version,
                      self.node, pools)  # fmt: skip
            return None
        address = str(found[0].ip)
        log.info("VXLAN: IPv%d tunnel address %s for %s", version, address, self.node)
        return address

    async def _record(self, wanted: dict[int, tuple[str | None, str | None]]) -> None:
        update = {}
        for version, (address, mac) in wanted.items():
            address_field, mac_field = _FIELDS[version]
            update[address_field] = address
            update[mac_field] = mac

        async def step(last: DatastoreError | None) -> None:
            node = await self.store.get(Node, self.node)
            assert isinstance(node, Node)
            if all(getattr(node.spec, k) == v for k, v in update.items()):
                return
            spec = node.spec.model_copy(update=update)
            await self.store.update(node.model_copy(update={"spec": spec}))

        await read_modify_write(step, what=f"node {self.node!r} VXLAN tunnel fields",
                                conflicts=(RevisionConflict,))  # fmt: skip

    async def run(self) -> None:
        """Reconcile at start and after every change of IP pools or of this Node, forever."""
        stream = ResourceSyncer(self.kv, ["IPPool", "Node"])
        async for batch in stream:
            relevant = any(
                u.key.kind == "IPPool" or u.key.name == self.node  # type: ignore[union-attr]
                for u in batch.updates
            )
            if not relevant and not batch.in_sync:
                continue
            if stream.status.name != "IN_SYNC":
                continue
            while True:
                try:
                    await self.reconcile()
                    break
                except (DatastoreError, IPAMError) as error:
                    log.warning("VXLAN tunnel addresses: %s (retrying)", error)
                    await asyncio.sleep(1.0)

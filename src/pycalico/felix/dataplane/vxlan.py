"""The VXLAN manager: pools, VTEPs and remote-block routes → devices, entries and routes.

What it is: Go Felix's ``vxlanManager`` for both IP families.  VXLAN is on for a family when
``vxlanEnabled`` says so, or, unset (Calico's default), when an IP pool of that family has
``vxlanMode`` ``Always`` or ``CrossSubnet``.  When on and this node's VTEP is known, the device
(``vxlan.calico`` / ``vxlan-v6.calico``, VNI ``vxlanVNI``, port ``vxlanPort``, MTU
``vxlanMTU``/``vxlanMTUV6`` or auto) carries the node's tunnel address and MAC; every remote VTEP
gets a permanent neighbour and FDB entry on it; every encapsulated remote-block route goes
``via <remote tunnel address> dev <device> onlink`` and every CrossSubnet same-subnet route
``via <remote node address>``, and this node's own blocks a blackhole, in the main table
with Felix's route protocol.  When off, the
device is deleted and its routes go.  What it is not: netlink (``drivers.vxlan`` and
``drivers.routes``) or the computation of VTEPs and routes (``calc.vxlan``).

Invariants: ``on_update`` does no I/O; routes through a device are only handed to the route
table while that device is wanted, and are written again after the device is (re)created.
"""

from __future__ import annotations

from dataclasses import dataclass

from pycalico.felix.drivers.routes import Route, RouteTable, kernel_default_metric, normalise
from pycalico.felix.drivers.vxlan import DeviceSpec, VXLANTable, write_mtu_file
from pycalico.felix.messages import (
    IPPoolRemove,
    IPPoolUpdate,
    Message,
    RemoteBlockRouteRemove,
    RemoteBlockRouteUpdate,
    VTEPRemove,
    VTEPUpdate,
)
from pycalico.lib.vxlan import DEFAULT_HOST_MTU, DEFAULT_PORT, DEFAULT_VNI, device_name, pod_mtu


@dataclass(frozen=True, slots=True)
class VXLANOptions:
    hostname: str = ""
    enabled: str = ""  # "", "true" or "false" (FelixConfiguration vxlanEnabled)
    vni: int = DEFAULT_VNI
    port: int = DEFAULT_PORT
    mtu: int = 0  # 0: auto
    mtu_v6: int = 0
    mtu_file: str = ""  # where the pods' MTU is written for the CNI plugin ("": nowhere)


class VXLANManager:
    def __init__(self, table: VXLANTable, routes: RouteTable, options: VXLANOptions) -> None:
        self.table = table
        self.routes = routes
        self.options = options
        self._pools: dict[str, tuple[int, bool]] = {}  # id -> (version, VXLAN on)
        self._vteps: dict[tuple[str, int], VTEPUpdate] = {}
        self._routes: dict[str, RemoteBlockRouteUpdate] = {}
        self._programmed_routes: set[str] = set()
        self._dirty = True
        self.mtu: int | None = None  # the pods' MTU last written

    def on_update(self, message: Message) -> None:
        if isinstance(message, IPPoolUpdate):
            version = 6 if ":" in message.cidr else 4
            self._pools[message.id] = (version, message.vxlan_mode != "Never")
        elif isinstance(message, IPPoolRemove):
            self._pools.pop(message.id, None)
        elif isinstance(message, VTEPUpdate):
            self._vteps[(message.node, message.version)] = message
        elif isinstance(message, VTEPRemove):
            self._vteps.pop((message.node, message.version), None)
        elif isinstance(message, RemoteBlockRouteUpdate):
            self._routes[normalise(message.destination)] = message
        elif isinstance(message, RemoteBlockRouteRemove):
            self._routes.pop(normalise(message.destination), None)
        else:
            return
        self._dirty = True

    def enabled(self, version: int) -> bool:
        if self.options.enabled:
            return self.options.enabled == "true"
        return any(v == version and on for v, on in self._pools.values())

    @property
    def dirty(self) -> bool:
        return self._dirty

    def _device(self, version: int) -> DeviceSpec | None:
        local = self._vteps.get((self.options.hostname, version))
        if local is None or not self.enabled(version):
            return None
        return DeviceSpec(
            device_name(version),
            version,
            self.options.vni,
            self.options.port,
            self.options.mtu_v6 if version == 6 else self.options.mtu,
            local.mac,
            local.tunnel_address,
            local.parent_address,
        )

    def complete_deferred_work(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        wanted: dict[str, Route] = {}
        for version in (4, 6):
            spec = self._device(version)
            neighbors: dict[str, str] = {}
            fdb: dict[str, str] = {}
            if spec is not None:
                for (node, v), vtep in self._vteps.items():
                    if v == version and node != self.options.hostname:
                        neighbors[vtep.tunnel_address] = vtep.mac
                        fdb[vtep.mac] = vtep.parent_address
            self.table.set_device(device_name(version), spec, neighbors, fdb)
            if not self.enabled(version):
                continue
            for destination, route in self._routes.items():
                if route.version != version:
                    continue
                metric = kernel_default_metric(destination)
                if route.blackhole:
                    wanted[destination] = Route(
                        destination, type="blackhole", protocol=self.routes.protocol,
                        metric=metric,
                    )  # fmt: skip
                elif route.encapsulated and spec is not None:
                    wanted[destination] = Route(
                        destination, spec.name, gateway=route.gateway,
                        protocol=self.routes.protocol, metric=metric,
                    )  # fmt: skip
                elif not route.encapsulated:
                    wanted[destination] = Route(
                        destination, gateway=route.gateway, protocol=self.routes.protocol,
                        metric=metric,
                    )  # fmt: skip
        for destination in self._programmed_routes - wanted.keys():
            self.routes.remove_route(destination)
        for wanted_route in wanted.values():
            self.routes.set_route(wanted_route)
        self._programmed_routes = set(wanted)

    def apply(self) -> None:
        """The device I/O (called by the dataplane before the route table applies)."""
        if self.table.apply():
            for version in (4, 6):
                self.routes.interface_changed(device_name(version))
        self._write_mtu()

    def pod_mtu(self) -> int | None:
        """Calico's MTU auto-detection for pods, once this node's VTEP (its address) is known:
        the host interface's MTU minus the overhead of the VXLAN families in use; a configured
        ``vxlanMTU``/``vxlanMTUV6`` of a family in use caps it."""
        me = self.options.hostname
        local = self._vteps.get((me, 4)) or self._vteps.get((me, 6))
        if local is None:
            return None
        host = self.table.backend.parent_mtu(local.parent_address) or DEFAULT_HOST_MTU
        mtu = pod_mtu(host, vxlan_v4=self.enabled(4), vxlan_v6=self.enabled(6))
        for version, configured in ((4, self.options.mtu), (6, self.options.mtu_v6)):
            if configured and self.enabled(version):
                mtu = min(mtu, configured)
        return mtu

    def _write_mtu(self) -> None:
        if not self.options.mtu_file:
            return
        mtu = self.pod_mtu()
        if mtu is not None and mtu != self.mtu:
            write_mtu_file(self.options.mtu_file, mtu)
            self.mtu = mtu

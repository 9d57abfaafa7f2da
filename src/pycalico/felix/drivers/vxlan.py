"""The VXLAN driver: Felix's VXLAN devices and their static neighbour and FDB entries.

What it is: the desired state of ``vxlan.calico`` / ``vxlan-v6.calico`` (VNI, UDP port, local
address, MAC, MTU, the node's tunnel address) and, per device, the remote VTEPs' entries — a
permanent neighbour (tunnel address → VTEP MAC) and a permanent FDB entry (VTEP MAC → the remote
node's address) — and ``apply``, which programs only what changed over netlink (pyroute2).
The first apply (and any after a failure or a periodic refresh) is a resync: it reads the
devices and their entries back and deletes what is stale (a previous Felix's leftovers), so a
restarted Felix sweeps without recreating what is right (established flows keep going).
What it is not: a decider (the VXLAN manager) or the routes through the devices (the route
table, which owns routes by protocol).

Invariants: a device whose VNI, port or local address differs from the desired one is deleted
and created again (the kernel cannot change them in place), and then all its entries are
written again; a device Felix does not want (VXLAN off for that family) is deleted; entries of
other devices are never touched.  MTU 0 means Calico's auto-detection: the parent interface's
MTU minus the overhead (``lib.vxlan``).
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from dataclasses import dataclass, field
from typing import Any, Protocol

from pycalico.felix.drivers.errors import RouteError
from pycalico.lib.vxlan import OVERHEAD_V4, OVERHEAD_V6

log = logging.getLogger(__name__)

_NUD_PERMANENT = 0x80
_NTF_SELF = 0x02


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    name: str
    version: int
    vni: int
    port: int
    mtu: int  # 0: auto (parent MTU minus overhead)
    mac: str
    tunnel_address: str
    parent_address: str


@dataclass(frozen=True, slots=True)
class KernelDevice:
    vni: int
    port: int
    local: str
    mac: str
    mtu: int
    addresses: frozenset[str]  # "addr/prefixlen"


class VXLANBackend(Protocol):
    def get_device(self, name: str) -> KernelDevice | None: ...

    def create_device(self, spec: DeviceSpec) -> None: ...

    def configure_device(self, spec: DeviceSpec, mtu: int, current: KernelDevice) -> None: ...

    def delete_device(self, name: str) -> None: ...

    def parent_mtu(self, address: str) -> int | None: ...

    def list_entries(self, name: str, version: int) -> tuple[dict[str, str], dict[str, str]]:
        """(neighbours address → MAC, FDB MAC → destination) on the device."""
        ...

    def set_neighbor(self, name: str, address: str, mac: str) -> None: ...

    def delete_neighbor(self, name: str, address: str) -> None: ...

    def set_fdb(self, name: str, mac: str, destination: str) -> None: ...

    def delete_fdb(self, name: str, mac: str, destination: str) -> None: ...


def write_mtu_file(path: str, mtu: int) -> None:
    """The pods' MTU where the CNI plugin reads it (replaced atomically)."""
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        temporary = f"{path}.tmp"
        with open(temporary, "w", encoding="ascii") as file:
            file.write(f"{mtu}\n")
        os.replace(temporary, path)
    except OSError as error:
        raise RouteError(f"MTU file {path}: {error}") from error
    log.info("Pod MTU %d written to %s", mtu, path)


def auto_mtu(version: int, parent_mtu: int | None) -> int:
    return (parent_mtu or 1500) - (OVERHEAD_V6 if version == 6 else OVERHEAD_V4)


@dataclass
class _Device:
    spec: DeviceSpec | None = None  # None: must not exist
    neighbors: dict[str, str] = field(default_factory=dict)
    fdb: dict[str, str] = field(default_factory=dict)
    programmed_spec: DeviceSpec | None = None
    programmed_neighbors: dict[str, str] = field(default_factory=dict)
    programmed_fdb: dict[str, str] = field(default_factory=dict)
    dirty: bool = True


class VXLANTable:
    """Desired devices and entries; ``apply`` programs the difference."""

    def __init__(self, backend: VXLANBackend) -> None:
        self.backend = backend
        self._devices: dict[str, _Device] = {}
        self.needs_resync = True

    def set_device(
        self, name: str, spec: DeviceSpec | None, neighbors: dict[str, str], fdb: dict[str, str]
    ) -> None:
        device = self._devices.setdefault(name, _Device())
        if (device.spec, device.neighbors, device.fdb) != (spec, neighbors, fdb):
            device.spec, device.neighbors, device.fdb = spec, dict(neighbors), dict(fdb)
            device.dirty = True

    def device(self, name: str) -> DeviceSpec | None:
        device = self._devices.get(name)
        return device.spec if device else None

    @property
    def dirty(self) -> bool:
        return self.needs_resync or any(d.dirty for d in self._devices.values())

    def apply(self) -> bool:
        """Program what changed; returns whether a device was (re)created (its routes must be
        written again)."""
        resync, self.needs_resync = self.needs_resync, False
        created = False
        try:
            for name, device in sorted(self._devices.items()):
                if device.dirty or resync:
                    created |= self._apply_device(name, device, resync)
                    device.dirty = False
        except RouteError:
            self.needs_resync = True
            raise
        except Exception as error:  # a netlink read (pyroute2) failed: the same, retried
            self.needs_resync = True
            raise RouteError(f"VXLAN: {error}") from error
        return created

    def _apply_device(self, name: str, device: _Device, resync: bool) -> bool:
        spec = device.spec
        created = False
        if spec is None:
            was = resync or device.programmed_spec is not None
            if was and self.backend.get_device(name) is not None:
                log.info("VXLAN: deleting %s (VXLAN is off for its family)", name)
                self.backend.delete_device(name)
            device.programmed_spec = None
            device.programmed_neighbors, device.programmed_fdb = {}, {}
            return False
        if resync or device.programmed_spec != spec:
            created = self._ensure_device(spec)
            device.programmed_spec = spec
            if created or resync:
                device.programmed_neighbors, device.programmed_fdb = self.backend.list_entries(
                    name, spec.version
                )
        self._sync_entries(name, device)
        return created

    def _ensure_device(self, spec: DeviceSpec) -> bool:
        current = self.backend.get_device(spec.name)
        created = False
        if current is not None and (
            current.vni != spec.vni
            or current.port != spec.port
            or current.local != spec.parent_address
        ):
            log.info("VXLAN: %s has other VNI/port/local address: creating it again", spec.name)
            self.backend.delete_device(spec.name)
            current = None
        if current is None:
            self.backend.create_device(spec)
            created = True
            current = self.backend.get_device(spec.name)
            if current is None:
                raise RouteError(f"VXLAN: {spec.name} was not created")
        mtu = spec.mtu or auto_mtu(spec.version, self.backend.parent_mtu(spec.parent_address))
        self.backend.configure_device(spec, mtu, current)
        return created

    def _sync_entries(self, name: str, device: _Device) -> None:
        for mac, destination in device.programmed_fdb.items():
            if device.fdb.get(mac) != destination:
                self.backend.delete_fdb(name, mac, destination)
        for address in device.programmed_neighbors.keys() - device.neighbors.keys():
            self.backend.delete_neighbor(name, address)
        for mac, destination in device.fdb.items():
            if device.programmed_fdb.get(mac) != destination:
                self.backend.set_fdb(name, mac, destination)
        for address, mac in device.neighbors.items():
            if device.programmed_neighbors.get(address) != mac:
                self.backend.set_neighbor(name, address, mac)
        device.programmed_fdb = dict(device.fdb)
        device.programmed_neighbors = dict(device.neighbors)


class NetlinkVXLAN:
    """``VXLANBackend`` over pyroute2 (on the route driver's netlink thread)."""

    def __init__(self, ipr: Any) -> None:
        self._ipr = ipr

    def _index(self, name: str) -> int | None:
        found = self._ipr.link_lookup(ifname=name)
        return found[0] if found else None

    def get_device(self, name: str) -> KernelDevice | None:
        index = self._index(name)
        if index is None:
            return None
        link = self._ipr.get_links(index)[0]
        info = link.get_attr("IFLA_LINKINFO")
        data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
        if data is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
            return KernelDevice(-1, -1, "", "", 0, frozenset())  # not ours to keep
        local = data.get_attr("IFLA_VXLAN_LOCAL") or data.get_attr("IFLA_VXLAN_LOCAL6") or ""
        addresses = frozenset(
            f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
            for a in self._ipr.get_addr(index=index)
            if not str(a.get_attr("IFA_ADDRESS")).startswith("fe80:")
        )
        return KernelDevice(
            data.get_attr("IFLA_VXLAN_ID") or 0,
            data.get_attr("IFLA_VXLAN_PORT") or 0,
            str(ipaddress.ip_address(local)) if local else "",
            link.get_attr("IFLA_ADDRESS") or "",
            link.get_attr("IFLA_MTU") or 0,
            addresses,
        )

    def _parent_index(self, address: str) -> int | None:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        for entry in self._ipr.get_addr(family=family):
            if entry.get_attr("IFA_ADDRESS") == address:
                return int(entry["index"])
        return None

    def parent_mtu(self, address: str) -> int | None:
        index = self._parent_index(address)
        if index is None:
            return None
        return int(self._ipr.get_links(index)[0].get_attr("IFLA_MTU"))

    def create_device(self, spec: DeviceSpec) -> None:
        kwargs: dict[str, Any] = {
            "ifname": spec.name, "kind": "vxlan", "vxlan_id": spec.vni,
            "vxlan_port": spec.port, "vxlan_learning": 0,
        }  # fmt: skip
        kwargs["vxlan_local6" if spec.version == 6 else "vxlan_local"] = spec.parent_address
        parent = self._parent_index(spec.parent_address)
        if parent is not None:
            kwargs["vxlan_link"] = parent
        try:
            self._ipr.link("add", **kwargs)
        except Exception as error:
            raise RouteError(f"VXLAN: cannot create {spec.name}: {error}") from error
        log.info("VXLAN: created %s (VNI %d, port %d)", spec.name, spec.vni, spec.port)

    def configure_device(self, spec: DeviceSpec, mtu: int, current: KernelDevice) -> None:
        index = self._index(spec.name)
        if index is None:
            raise RouteError(f"VXLAN: {spec.name} vanished")
        prefix = 128 if spec.version == 6 else 32
        wanted = f"{spec.tunnel_address}/{prefix}"
        try:
            if current.mac != spec.mac or current.mtu != mtu:
                self._ipr.link("set", index=index, address=spec.mac, mtu=mtu)
            for address in current.addresses - {wanted}:
                ip, length = address.split("/")
                self._ipr.addr("del", index=index, address=ip, prefixlen=int(length))
            if wanted not in current.addresses:
                self._ipr.addr("add", index=index, address=spec.tunnel_address, prefixlen=prefix)
            self._ipr.link("set", index=index, state="up")
        except Exception as error:
            raise RouteError(f"VXLAN: cannot configure {spec.name}: {error}") from error

    def delete_device(self, name: str) -> None:
        index = self._index(name)
        if index is not None:
            self._ipr.link("del", index=index)

    def list_entries(self, name: str, version: int) -> tuple[dict[str, str], dict[str, str]]:
        index = self._index(name)
        if index is None:
            return {}, {}
        family = socket.AF_INET6 if version == 6 else socket.AF_INET
        neighbors = {
            str(m.get_attr("NDA_DST")): str(m.get_attr("NDA_LLADDR"))
            for m in self._ipr.get_neighbours(family=family, ifindex=index)
            if m["state"] & _NUD_PERMANENT and m.get_attr("NDA_LLADDR")
        }
        fdb = {
            str(m.get_attr("NDA_LLADDR")): str(m.get_attr("NDA_DST"))
            for m in self._ipr.get_neighbours(family=socket.AF_BRIDGE, ifindex=index)
            if m.get_attr("NDA_DST") and m.get_attr("NDA_LLADDR") != "00:00:00:00:00:00"
        }
        return neighbors, fdb

    def _call(self, what: str, *args: Any, **kwargs: Any) -> None:
        try:
            self._ipr.neigh(*args, **kwargs)
        except Exception as error:
            if args[0] == "del" and getattr(error, "code", 0) in (2, 3):  # already gone
                return
            raise RouteError(f"VXLAN: {what}: {error}") from error

    def set_neighbor(self, name: str, address: str, mac: str) -> None:
        index = self._index(name)
        self._call(f"neighbour {address} dev {name}", "replace", dst=address, lladdr=mac,
                   ifindex=index, state=_NUD_PERMANENT)  # fmt: skip

    def delete_neighbor(self, name: str, address: str) -> None:
        index = self._index(name)
        if index is not None:
            self._call(f"neighbour {address} dev {name}", "del", dst=address, ifindex=index)

    def set_fdb(self, name: str, mac: str, destination: str) -> None:
        index = self._index(name)
        self._call(f"fdb {mac} dev {name}", "replace", ifindex=index, lladdr=mac, dst=destination,
                   state=_NUD_PERMANENT, family=socket.AF_BRIDGE, flags=_NTF_SELF)  # fmt: skip

    def delete_fdb(self, name: str, mac: str, destination: str) -> None:
        index = self._index(name)
        if index is not None:
            self._call(f"fdb {mac} dev {name}", "del", ifindex=index, lladdr=mac, dst=destination,
                       family=socket.AF_BRIDGE, flags=_NTF_SELF)  # fmt: skip

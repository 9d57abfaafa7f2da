"""The VXLAN manager and table over a fake kernel: devices, entries, routes, resync sweep."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pycalico.felix.dataplane.vxlan import VXLANManager, VXLANOptions
from pycalico.felix.drivers.routes import Route, RouteTable
from pycalico.felix.drivers.vxlan import DeviceSpec, KernelDevice, VXLANTable
from pycalico.felix.messages import (
    IPPoolUpdate,
    RemoteBlockRouteRemove,
    RemoteBlockRouteUpdate,
    VTEPRemove,
    VTEPUpdate,
)


class FakeVXLAN:
    def __init__(self) -> None:
        self.devices: dict[str, KernelDevice] = {}
        self.neighbors: dict[str, dict[str, str]] = {}
        self.fdb: dict[str, dict[str, str]] = {}
        self.calls: list[str] = []

    def get_device(self, name: str) -> KernelDevice | None:
        return self.devices.get(name)

    def create_device(self, spec: DeviceSpec) -> None:
        self.calls.append(f"create {spec.name}")
        self.devices[spec.name] = KernelDevice(spec.vni, spec.port, spec.parent_address, "", 1500,
                                               frozenset())  # fmt: skip
        self.neighbors[spec.name], self.fdb[spec.name] = {}, {}

    def configure_device(self, spec: DeviceSpec, mtu: int, current: KernelDevice) -> None:
        self.devices[spec.name] = replace(current, mac=spec.mac, mtu=mtu,
                                          addresses=frozenset({spec.tunnel_address}))  # fmt: skip

    def delete_device(self, name: str) -> None:
        self.calls.append(f"delete {name}")
        self.devices.pop(name, None)

    def parent_mtu(self, address: str) -> int | None:
        return 1500

    def list_entries(self, name: str, version: int) -> tuple[dict[str, str], dict[str, str]]:
        return dict(self.neighbors.get(name, {})), dict(self.fdb.get(name, {}))

    def set_neighbor(self, name: str, address: str, mac: str) -> None:
        self.calls.append(f"neigh {address}")
        self.neighbors[name][address] = mac

    def delete_neighbor(self, name: str, address: str) -> None:
        self.calls.append(f"neigh del {address}")
        self.neighbors[name].pop(address, None)

    def set_fdb(self, name: str, mac: str, destination: str) -> None:
        self.fdb[name][mac] = destination

    def delete_fdb(self, name: str, mac: str, destination: str) -> None:
        self.fdb[name].pop(mac, None)


class FakeRoutes:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}

    def list_routes(self) -> list[Route]:
        return list(self.routes.values())

    def replace(self, route: Route) -> None:
        self.routes[route.destination] = route

    def delete(self, route: Route) -> None:
        self.routes.pop(route.destination, None)

    def replace_neighbor(self, neighbor: object) -> None:
        pass

    def delete_neighbor(self, neighbor: object) -> None:
        pass


def setup(kernel: FakeVXLAN, routes: FakeRoutes) -> tuple[VXLANManager, RouteTable]:
    table = RouteTable(routes)
    manager = VXLANManager(VXLANTable(kernel), table, VXLANOptions(hostname="a"))
    for message in (
        IPPoolUpdate("10.65.0.0/16", "10.65.0.0/16", False, vxlan_mode="Always"),
        VTEPUpdate("a", 4, "10.65.0.0", "66:00:00:00:00:0a", "10.99.0.1"),
        VTEPUpdate("b", 4, "10.65.1.0", "66:00:00:00:00:0b", "10.99.1.2"),
        RemoteBlockRouteUpdate("10.65.1.0/26", "b", 4, True, "10.65.1.0"),
        RemoteBlockRouteUpdate("10.65.2.0/26", "c", 4, False, "10.99.0.3"),
        RemoteBlockRouteUpdate("10.65.0.0/26", "a", 4, False, "", blackhole=True),
    ):
        manager.on_update(message)
    return manager, table


def apply(manager: VXLANManager, table: RouteTable) -> None:
    manager.complete_deferred_work()
    manager.apply()
    table.apply()


def test_device_entries_and_routes() -> None:
    kernel, routes = FakeVXLAN(), FakeRoutes()
    manager, table = setup(kernel, routes)
    apply(manager, table)
    device = kernel.devices["vxlan.calico"]
    assert (device.vni, device.port, device.mtu, device.mac) == (4096, 4789, 1450,
                                                                 "66:00:00:00:00:0a")  # fmt: skip
    assert kernel.neighbors["vxlan.calico"] == {"10.65.1.0": "66:00:00:00:00:0b"}
    assert kernel.fdb["vxlan.calico"] == {"66:00:00:00:00:0b": "10.99.1.2"}
    assert routes.routes["10.65.1.0/26"] == Route(
        "10.65.1.0/26", "vxlan.calico", gateway="10.65.1.0"
    )
    assert routes.routes["10.65.2.0/26"] == Route("10.65.2.0/26", gateway="10.99.0.3")
    assert routes.routes["10.65.0.0/26"] == Route("10.65.0.0/26", type="blackhole")
    assert "vxlan-v6.calico" not in kernel.devices  # no IPv6 VXLAN pool

    manager.on_update(RemoteBlockRouteRemove("10.65.1.0/26"))
    manager.on_update(VTEPRemove("b", 4))
    apply(manager, table)
    assert "10.65.1.0/26" not in routes.routes
    assert kernel.neighbors["vxlan.calico"] == {} and kernel.fdb["vxlan.calico"] == {}


def test_restart_keeps_what_is_right_and_sweeps_leftovers() -> None:
    kernel, routes = FakeVXLAN(), FakeRoutes()
    manager, table = setup(kernel, routes)
    apply(manager, table)
    kernel.neighbors["vxlan.calico"]["10.65.9.0"] = "66:00:00:00:00:99"  # a stale VTEP
    kernel.fdb["vxlan.calico"]["66:00:00:00:00:99"] = "10.99.1.9"
    routes.routes["10.65.9.0/26"] = Route("10.65.9.0/26", "vxlan.calico", gateway="10.65.9.0")
    kernel.calls.clear()
    manager, table = setup(kernel, routes)  # a new Felix
    apply(manager, table)
    assert "create vxlan.calico" not in kernel.calls  # the device (and its flows) survive
    assert "neigh 10.65.1.0" not in kernel.calls  # right entries are not rewritten
    assert kernel.neighbors["vxlan.calico"] == {"10.65.1.0": "66:00:00:00:00:0b"}
    assert kernel.fdb["vxlan.calico"] == {"66:00:00:00:00:0b": "10.99.1.2"}
    assert "10.65.9.0/26" not in routes.routes


def test_a_device_with_another_vni_is_recreated_and_vxlan_off_deletes_it() -> None:
    kernel, routes = FakeVXLAN(), FakeRoutes()
    kernel.devices["vxlan.calico"] = KernelDevice(1, 4789, "10.99.0.1", "", 1500, frozenset())
    manager, table = setup(kernel, routes)
    apply(manager, table)
    assert kernel.calls[:2] == ["delete vxlan.calico", "create vxlan.calico"]
    manager.on_update(IPPoolUpdate("10.65.0.0/16", "10.65.0.0/16", False, vxlan_mode="Never"))
    apply(manager, table)
    assert "vxlan.calico" not in kernel.devices
    assert routes.routes == {}


def test_pod_mtu_written_for_the_cni(tmp_path: Path) -> None:
    kernel, routes = FakeVXLAN(), FakeRoutes()
    table = RouteTable(routes)
    path = tmp_path / "mtu"
    manager = VXLANManager(
        VXLANTable(kernel), table, VXLANOptions(hostname="a", mtu_file=str(path))
    )
    manager.on_update(IPPoolUpdate("10.65.0.0/16", "10.65.0.0/16", False, vxlan_mode="Always"))
    apply(manager, table)
    assert not path.exists()  # no VTEP of ours yet: nothing known about the host
    manager.on_update(VTEPUpdate("a", 4, "10.65.0.0", "66:00:00:00:00:0a", "10.99.0.1"))
    apply(manager, table)
    assert path.read_text() == "1450\n"
    manager.on_update(IPPoolUpdate("fd65::/48", "fd65::/48", False, vxlan_mode="CrossSubnet"))
    apply(manager, table)
    assert path.read_text() == "1430\n"  # IPv6's 70 bytes decide for dual stack

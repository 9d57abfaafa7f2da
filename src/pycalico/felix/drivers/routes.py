"""The route driver: Felix's routes in the main table, owned by Felix's own route protocol.

What it is: desired routes (``/32``/``/128`` to local workloads, blackholes, remote blocks)
and a dirty set; ``apply`` sends only the changed ones over netlink (pyroute2).  The first
apply (and any after a failure) is a resync: list every main-table route carrying our protocol,
delete the stale ones, replace the rest in bulk through ``ip -batch``.
What it is not: a decider of what should be routed (the route manager).

Route protocol: Calico's ``DeviceRouteProtocol`` defaults to 3 (``boot``), which many tools
also use, so Felix has to guess which routes are its own.  We default to **80** (Calico's
``felix`` protocol number for its non-device routes), so ownership is exact: every route with
protocol 80 in the main table is ours, nothing else is.  Configurable (``deviceRouteProtocol``).

It also keeps Calico's static ARP entries for workloads (``nud permanent``, the workload's
MAC), replaced and deleted the same way.

Invariants: a route whose interface does not exist yet stays dirty and is retried on the next
apply (a link event triggers one); routes of other protocols are never touched.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import subprocess
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from pycalico.felix.drivers.errors import RouteError

log = logging.getLogger(__name__)

MAIN_TABLE = 254
DEFAULT_PROTOCOL = 80
_BULK_THRESHOLD = 16
# Permanent neighbours are never garbage-collected and do not count against the (global)
# neighbour-table limit, so a busy host cannot make a workload unreachable by ARP churn.
_NUD_PERMANENT = 0x80


@dataclass(frozen=True, slots=True)
class Route:
    destination: str  # normalised CIDR
    interface: str = ""
    type: str = "unicast"  # or "blackhole"
    gateway: str = ""
    protocol: int = DEFAULT_PROTOCOL


@dataclass(frozen=True, slots=True)
class Neighbor:
    """A static ARP entry: Calico pins each IPv4 workload address to the workload's MAC."""

    address: str
    interface: str
    mac: str


def normalise(destination: str) -> str:
    return str(ipaddress.ip_network(destination, strict=False))


class RouteBackend(Protocol):
    def list_routes(self, protocol: int) -> list[Any]: ...

    def replace(self, route: Any) -> None: ...

    def delete(self, route: Any) -> None: ...

    def replace_neighbor(self, neighbor: Any) -> None: ...

    def delete_neighbor(self, neighbor: Any) -> None: ...


class _NetlinkCalls:
    """pyroute2's synchronous ``IPRoute`` runs an asyncio loop of its own, which cannot run on
    a thread whose loop is already running (the daemon's).  So every call goes to one dedicated
    thread, started here — in the caller's network namespace, which a new thread inherits."""

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="felix-netlink")
        self._ipr: Any = self._executor.submit(self._open).result()

    @staticmethod
    def _open() -> Any:
        from pyroute2 import IPRoute

        return IPRoute()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._ipr, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._executor.submit(method, *args, **kwargs).result()

        return call

    def shutdown(self) -> None:
        self._executor.submit(self._ipr.close).result()
        self._executor.shutdown()


class NetlinkRoutes:
    """pyroute2 for incremental changes; ``ip -batch`` for bulk replaces."""

    def __init__(self, protocol: int = DEFAULT_PROTOCOL) -> None:
        self.protocol = protocol
        self._ipr: Any = _NetlinkCalls()
        self._index: dict[str, int] = {}

    def close(self) -> None:
        self._ipr.shutdown()

    def _link_index(self, name: str) -> int:
        index = self._index.get(name)
        if index is None:
            found = self._ipr.link_lookup(ifname=name)
            if not found:
                raise RouteError(f"route: no such interface {name!r}")
            index = found[0]
        self._index[name] = index
        return index

    def list_routes(self, protocol: int) -> list[Route]:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in self._ipr.get_links()}
        self._index = {v: k for k, v in names.items()}
        out: list[Route] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for message in self._ipr.get_routes(family=family, table=MAIN_TABLE):
                if message["proto"] != protocol:
                    continue
                dst = message.get_attr("RTA_DST") or (
                    "::" if family == socket.AF_INET6 else "0.0.0.0"
                )
                route_type = "blackhole" if message["type"] == 6 else "unicast"
                out.append(
                    Route(
                        normalise(f"{dst}/{message['dst_len']}"),
                        names.get(message.get_attr("RTA_OIF"), ""),
                        route_type,
                        message.get_attr("RTA_GATEWAY") or "",
                        protocol,
                    )
                )
        return out

    def replace(self, route: Route) -> None:
        kwargs: dict[str, Any] = {"dst": route.destination, "proto": route.protocol,
                                  "table": MAIN_TABLE}  # fmt: skip
        if route.type == "blackhole":
            kwargs["type"] = "blackhole"
        else:
            if route.interface:
                kwargs["oif"] = self._link_index(route.interface)
            if route.gateway:
                kwargs["gateway"] = route.gateway
            else:
                kwargs["scope"] = 253  # link
        try:
            self._ipr.route("replace", **kwargs)
        except Exception as error:  # pyroute2 raises NetlinkError and friends
            self._index.pop(route.interface, None)
            raise RouteError(f"route {route.destination} dev {route.interface}: {error}") from error

    def replace_many(self, routes: list[Route]) -> list[Route]:
        """Bulk replace through one ``ip -batch`` process; returns the routes that failed."""
        lines = []
        for route in routes:
            family = "-6 " if ":" in route.destination else ""
            if route.type == "blackhole":
                lines.append(
                    f"{family}route replace blackhole {route.destination} proto {route.protocol}"
                )
            elif route.gateway:
                lines.append(
                    f"{family}route replace {route.destination} via {route.gateway} "
                    f"dev {route.interface} proto {route.protocol} onlink"
                )
            else:
                lines.append(
                    f"{family}route replace {route.destination} dev {route.interface} "
                    f"scope link proto {route.protocol}"
                )
        done = subprocess.run(
            ["ip", "-force", "-batch", "-"], input="\n".join(lines).encode(),
            capture_output=True, check=False,
        )  # fmt: skip
        if done.returncode == 0:
            return []
        # -force carries on past errors; find out which ones failed one by one.
        failed = []
        for route in routes:
            try:
                self.replace(route)
            except RouteError:
                failed.append(route)
        return failed

    def delete(self, route: Route) -> None:
        kwargs: dict[str, Any] = {"dst": route.destination, "proto": route.protocol,
                                  "table": MAIN_TABLE}  # fmt: skip
        # The kernel matches deletes on scope/type too: describe the route as it was added.
        if route.type == "blackhole":
            kwargs["type"] = "blackhole"
        elif not route.gateway:
            kwargs["scope"] = 253
        try:
            self._ipr.route("del", **kwargs)
        except Exception as error:
            if getattr(error, "code", 0) == 3:  # ESRCH: already gone
                return
            raise RouteError(f"route {route.destination}: delete failed: {error}") from error

    def replace_neighbor(self, neighbor: Neighbor) -> None:
        try:
            self._ipr.neigh(
                "replace", dst=neighbor.address, lladdr=neighbor.mac,
                ifindex=self._link_index(neighbor.interface), state=_NUD_PERMANENT,
            )  # fmt: skip
        except Exception as error:
            self._index.pop(neighbor.interface, None)
            raise RouteError(
                f"neighbor {neighbor.address} dev {neighbor.interface}: {error}"
            ) from error

    def delete_neighbor(self, neighbor: Neighbor) -> None:
        try:
            index = self._link_index(neighbor.interface)
            self._ipr.neigh("del", dst=neighbor.address, ifindex=index)
        except Exception:  # gone with its interface, or never there
            return


class RouteTable:
    def __init__(self, backend: RouteBackend, protocol: int = DEFAULT_PROTOCOL) -> None:
        self.backend = backend
        self.protocol = protocol
        self._desired: dict[str, Route] = {}
        self._programmed: dict[str, Route] = {}
        self._dirty: set[str] = set()
        self._neighbors: dict[str, Neighbor] = {}
        self._programmed_neighbors: dict[str, Neighbor] = {}
        self._dirty_neighbors: set[str] = set()
        self.needs_resync = True

    def set_neighbor(self, neighbor: Neighbor) -> None:
        if self._neighbors.get(neighbor.address) != neighbor:
            self._neighbors[neighbor.address] = neighbor
            self._dirty_neighbors.add(neighbor.address)

    def remove_neighbor(self, address: str) -> None:
        if self._neighbors.pop(address, None) is not None:
            self._dirty_neighbors.add(address)

    def set_route(self, route: Route) -> None:
        if self._desired.get(route.destination) != route:
            self._desired[route.destination] = route
            self._dirty.add(route.destination)

    def remove_route(self, destination: str) -> None:
        if self._desired.pop(destination, None) is not None:
            self._dirty.add(destination)

    def get(self, destination: str) -> Route | None:
        return self._desired.get(destination)

    def routes(self) -> dict[str, Route]:
        return dict(self._desired)

    def interface_changed(self, interface: str) -> None:
        """A link appeared/changed: its routes must be (re)programmed."""
        for destination, route in self._desired.items():
            if route.interface == interface:
                self._dirty.add(destination)
                self._programmed.pop(destination, None)
        for address, neighbor in self._neighbors.items():
            if neighbor.interface == interface:
                self._dirty_neighbors.add(address)
                self._programmed_neighbors.pop(address, None)

    @property
    def dirty(self) -> bool:
        return self.needs_resync or bool(self._dirty) or bool(self._dirty_neighbors)

    def apply(self) -> int:
        """Program what changed; returns the number of routes still pending (missing links)."""
        if self.needs_resync:
            self._resync()
        pending = 0
        for destination in sorted(self._dirty):
            desired = self._desired.get(destination)
            try:
                if desired is None:
                    programmed = self._programmed.pop(destination, None)
                    if programmed is not None:
                        self.backend.delete(programmed)
                elif self._programmed.get(destination) != desired:
                    self.backend.replace(desired)
                    self._programmed[destination] = desired
            except RouteError as error:
                log.debug("route not programmed yet: %s", error)
                pending += 1
                continue
            self._dirty.discard(destination)
        for address in sorted(self._dirty_neighbors):
            neighbor = self._neighbors.get(address)
            try:
                if neighbor is None:
                    old = self._programmed_neighbors.pop(address, None)
                    if old is not None:
                        self.backend.delete_neighbor(old)
                elif self._programmed_neighbors.get(address) != neighbor:
                    self.backend.replace_neighbor(neighbor)
                    self._programmed_neighbors[address] = neighbor
            except RouteError as error:
                log.debug("neighbor not programmed yet: %s", error)
                pending += 1
                continue
            self._dirty_neighbors.discard(address)
        return pending

    def _resync(self) -> None:
        existing = {r.destination: r for r in self.backend.list_routes(self.protocol)}
        for destination in existing.keys() - self._desired.keys():
            self.backend.delete(existing[destination])
        todo = [r for d, r in self._desired.items() if existing.get(d) != r]
        self._programmed = {d: r for d, r in existing.items() if d in self._desired}
        replace_many = getattr(self.backend, "replace_many", None)
        if replace_many is not None and len(todo) >= _BULK_THRESHOLD:
            failed = {r.destination for r in replace_many(todo)}
            for route in todo:
                if route.destination not in failed:
                    self._programmed[route.destination] = route
            self._dirty = set(failed)
        else:
            self._dirty = {r.destination for r in todo}
        # Neighbours vanish with their interface; a resync simply writes them all again.
        self._programmed_neighbors.clear()
        self._dirty_neighbors = set(self._neighbors)
        self.needs_resync = False

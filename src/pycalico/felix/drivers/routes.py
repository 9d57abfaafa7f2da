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

Route priority (metric): each route carries its kernel metric; the route manager asks for
Calico's ``ipv4NormalRoutePriority`` / ``ipv6NormalRoutePriority`` (default 1024) for workload
routes.  BIRD (confd's templates) announces a kernel route whose metric is below the normal
priority beneath its block, so a workload route at metric 0 would leak every pod's ``/32``.
The kernel keys a route by destination *and* metric, so a route of ours at another metric is a
different route: a metric change is make-before-break (replace the new one, delete the old one)
and the resync deletes every route of our protocol whose metric is not the desired one.

The CNI plugin's route (decision): the plugin adds the host route to a new workload with no
metric (0 for IPv4; the kernel's 1024 for IPv6) and protocol ``boot``, exactly as Calico's CNI
plugin does, because it cannot know Felix's configured priority; Felix then takes it over, as
Calico's Felix does (Calico's route table owns every route on a workload interface).  Our
ownership stays by protocol, widened by exactly one rule: a route *to a workload address Felix
programs, on that workload's own interface*, is a variant of Felix's route whatever its
protocol, and is deleted once Felix's own is in place.  Routes of other protocols to other
destinations, or through other interfaces, are never touched.  The kernel replaces a route
with the same destination and metric in place, so at the default IPv6 priority the plugin's
route simply becomes Felix's.  When ``deviceRouteProtocol`` is ``boot`` (3) itself, the
plugin's route is ours by protocol and the next resync removes it (no incremental delete: a
metric-0 delete is a wildcard in the kernel and could hit Felix's own route).

It also keeps Calico's static ARP entries for workloads (``nud permanent``, the workload's
MAC), replaced and deleted the same way.

Invariants: a route whose interface does not exist yet stays dirty and is retried on the next
apply (a link event triggers one); at most one route of ours per destination is left in the
kernel, at the desired metric; routes of other protocols are never touched except the
workload-interface variants above.
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
# What the CNI plugin (ours, and iproute2/netlink by default) marks a workload's host route with.
CNI_ROUTE_PROTOCOL = 3  # RTPROT_BOOT
NORMAL_ROUTE_PRIORITY = 1024  # Calico's ipv4NormalRoutePriority / ipv6NormalRoutePriority
_BULK_THRESHOLD = 16
# Permanent neighbours are never garbage-collected and do not count against the (global)
# neighbour-table limit, so a busy host cannot make a workload unreachable by ARP churn.
_NUD_PERMANENT = 0x80
_RTNH_F_ONLINK = 4


@dataclass(frozen=True, slots=True)
class Route:
    destination: str  # normalised CIDR
    interface: str = ""
    type: str = "unicast"  # or "blackhole"
    gateway: str = ""
    protocol: int = DEFAULT_PROTOCOL
    metric: int = 0  # the kernel's priority; 0 is IPv4's "none", IPv6 stores 0 as 1024


@dataclass(frozen=True, slots=True)
class Neighbor:
    """A static ARP entry: Calico pins each IPv4 workload address to the workload's MAC."""

    address: str
    interface: str
    mac: str


def normalise(destination: str) -> str:
    return str(ipaddress.ip_network(destination, strict=False))


def kernel_default_metric(destination: str) -> int:
    """The metric the kernel gives a route added without one (the CNI plugin's route)."""
    return NORMAL_ROUTE_PRIORITY if ":" in destination else 0


class RouteBackend(Protocol):
    def list_routes(self) -> list[Any]:
        """Every main-table route, of every protocol (the caller decides what is its own)."""
        ...

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

    @property
    def netlink(self) -> Any:
        """The netlink connection (on its own thread), shared with the VXLAN driver."""
        return self._ipr

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

    def list_routes(self) -> list[Route]:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in self._ipr.get_links()}
        self._index = {v: k for k, v in names.items()}
        out: list[Route] = []
        for family in (socket.AF_INET, socket.AF_INET6):
            for message in self._ipr.get_routes(family=family, table=MAIN_TABLE):
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
                        message["proto"],
                        message.get_attr("RTA_PRIORITY") or 0,
                    )
                )
        return out

    def replace(self, route: Route) -> None:
        kwargs: dict[str, Any] = {"dst": route.destination, "proto": route.protocol,
                                  "table": MAIN_TABLE}  # fmt: skip
        if route.metric:
            kwargs["priority"] = route.metric
        if route.type == "blackhole":
            kwargs["type"] = "blackhole"
        else:
            if route.interface:
                kwargs["oif"] = self._link_index(route.interface)
            if route.gateway:
                kwargs["gateway"] = route.gateway
                if route.interface:
                    kwargs["flags"] = _RTNH_F_ONLINK  # VXLAN: the remote VTEP is not on-link
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
            common = f"proto {route.protocol} metric {route.metric}"
            if route.type == "blackhole":
                lines.append(f"{family}route replace blackhole {route.destination} {common}")
            elif route.gateway and not route.interface:
                lines.append(
                    f"{family}route replace {route.destination} via {route.gateway} {common}"
                )
            elif route.gateway:
                lines.append(
                    f"{family}route replace {route.destination} via {route.gateway} "
                    f"dev {route.interface} {common} onlink"
                )
            else:
                lines.append(
                    f"{family}route replace {route.destination} dev {route.interface} "
                    f"scope link {common}"
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
        """Delete exactly ``route``: destination, protocol and metric (IPv4 metric 0 matches
        the lowest metric of that protocol, which is the metric-0 route when it exists).  A
        route of another protocol is also matched on its interface (looked up afresh)."""
        kwargs: dict[str, Any] = {"dst": route.destination, "proto": route.protocol,
                                  "table": MAIN_TABLE}  # fmt: skip
        if route.metric:
            kwargs["priority"] = route.metric
        if route.protocol != self.protocol and route.interface:
            found = self._ipr.link_lookup(ifname=route.interface)
            if not found:
                return  # gone with its interface
            kwargs["oif"] = found[0]
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
                programmed = self._programmed.get(destination)
                if desired is None:
                    if programmed is not None:
                        self.backend.delete(programmed)
                        del self._programmed[destination]
                elif programmed != desired:
                    # Make before break: another metric is another kernel route.
                    self.backend.replace(desired)
                    if programmed is not None and programmed.metric != desired.metric:
                        self.backend.delete(programmed)
                    self._programmed[destination] = desired
                    self._delete_cni_route(desired)
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

    def _delete_cni_route(self, desired: Route) -> None:
        """The CNI plugin's route to a workload Felix now routes (see the module docstring)."""
        if not _workload_route(desired) or self.protocol == CNI_ROUTE_PROTOCOL:
            return
        metric = kernel_default_metric(desired.destination)
        if metric != desired.metric:
            self.backend.delete(
                Route(desired.destination, desired.interface, protocol=CNI_ROUTE_PROTOCOL,
                      metric=metric)
            )  # fmt: skip

    def _resync(self) -> None:
        existing: dict[str, Route] = {}
        for route in self.backend.list_routes():
            want = self._desired.get(route.destination)
            same_metric = want is not None and want.metric == route.metric
            if route.protocol == self.protocol:
                if same_metric and route.destination not in existing:
                    existing[route.destination] = route
                else:  # not desired, or a stale metric variant of a desired one
                    self.backend.delete(route)
            elif (
                want is not None
                and not same_metric
                and _workload_route(want)
                and route.interface == want.interface
            ):
                self.backend.delete(route)  # the CNI plugin's route to a workload of ours
        todo = [r for d, r in self._desired.items() if existing.get(d) != r]
        self._programmed = dict(existing)
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


def _workload_route(route: Route) -> bool:
    """A route straight to a workload's interface (not a blackhole or a gateway route)."""
    return route.type == "unicast" and bool(route.interface) and not route.gateway

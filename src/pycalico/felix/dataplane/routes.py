"""The route manager: local workload addresses → the route driver.

What it is: ``/32``/``/128`` routes to each local workload's interface, at the normal route
priority (Calico's ``ipv4NormalRoutePriority``/``ipv6NormalRoutePriority``, default metric
1024, so BIRD does not announce them beneath their block); for IPv4 workloads with a MAC,
Calico's static ARP entry; and the list of addresses whose conntrack
entries must go because they left this node.  What it is not: netlink I/O (the route driver),
conntrack I/O (the conntrack driver; the apply loop hands it ``take_departed()``), or block
routes (BIRD programs those from BGP and confd's static blackholes).

Invariant: an address is reported departed only when no local endpoint holds it any more, so a
workload moving between interfaces keeps its flows' state only if it keeps its address here.
"""

from __future__ import annotations

import ipaddress

from pycalico.felix.drivers.routes import (
    NORMAL_ROUTE_PRIORITY,
    Neighbor,
    Route,
    RouteTable,
    normalise,
)
from pycalico.felix.messages import (
    Message,
    WorkloadEndpointID,
    WorkloadEndpointRemove,
    WorkloadEndpointUpdate,
)


class RouteManager:
    def __init__(
        self,
        routes: RouteTable,
        priority_v4: int = NORMAL_ROUTE_PRIORITY,
        priority_v6: int = NORMAL_ROUTE_PRIORITY,
    ) -> None:
        self.routes = routes
        self.priority_v4 = priority_v4
        self.priority_v6 = priority_v6
        self._endpoint_routes: dict[WorkloadEndpointID, dict[str, Route]] = {}
        self._dirty: set[str] = set()
        self._departed: set[str] = set()
        self._endpoint_neighbors: dict[WorkloadEndpointID, dict[str, Neighbor]] = {}

    def _workload_routes(self, update: WorkloadEndpointUpdate) -> dict[str, Route]:
        routes = {}
        for nets, metric in (
            (update.ipv4_nets, self.priority_v4),
            (update.ipv6_nets, self.priority_v6),
        ):
            for net in nets:
                destination = normalise(net)
                routes[destination] = Route(
                    destination, update.interface_name, protocol=self.routes.protocol,
                    metric=metric,
                )  # fmt: skip
        return routes

    def on_update(self, message: Message) -> None:
        if isinstance(message, WorkloadEndpointUpdate):
            self._update_neighbors(message.id, _workload_neighbors(message))
            new = self._workload_routes(message)
            old = self._endpoint_routes.get(message.id, {})
            if new != old:
                self._dirty.update(old.keys() | new.keys())
                self._endpoint_routes[message.id] = new
        elif isinstance(message, WorkloadEndpointRemove):
            self._update_neighbors(message.id, {})
            old = self._endpoint_routes.pop(message.id, {})
            self._dirty.update(old.keys())

    def _update_neighbors(self, endpoint: WorkloadEndpointID, new: dict[str, Neighbor]) -> None:
        # Neighbours are cheap and independent: hand them to the driver at once (no I/O here).
        old = self._endpoint_neighbors.pop(endpoint, {})
        for address in old.keys() - new.keys():
            self.routes.remove_neighbor(address)
        for neighbor in new.values():
            self.routes.set_neighbor(neighbor)
        if new:
            self._endpoint_neighbors[endpoint] = new

    @property
    def dirty(self) -> bool:
        return bool(self._dirty) or bool(self._departed)

    def complete_deferred_work(self) -> None:
        if not self._dirty:
            return
        # Index once: a burst of endpoint changes must not be quadratic.
        by_destination: dict[str, Route] = {}
        for routes in self._endpoint_routes.values():
            by_destination.update(routes)
        for destination in self._dirty:
            route = by_destination.get(destination)
            if route is None:
                previous = self.routes.get(destination)
                self.routes.remove_route(destination)
                if previous is not None and previous.interface:
                    network = ipaddress.ip_network(destination)
                    if network.prefixlen == network.max_prefixlen:
                        self._departed.add(str(network.network_address))
            else:
                self.routes.set_route(route)
        self._dirty.clear()

    def take_departed(self) -> list[str]:
        departed = sorted(self._departed)
        self._departed.clear()
        return departed


def _workload_neighbors(update: WorkloadEndpointUpdate) -> dict[str, Neighbor]:
    if not update.mac:
        return {}
    out = {}
    for net in update.ipv4_nets:
        network = ipaddress.ip_network(net, strict=False)
        if network.prefixlen == network.max_prefixlen:
            address = str(network.network_address)
            out[address] = Neighbor(address, update.interface_name, update.mac)
    return out

"""The VXLAN resolver (pure): VTEPs and remote-block routes from Nodes, pools and affinities."""

from __future__ import annotations

import random

from pycalico.felix.calc.vxlan import VXLANResolver
from pycalico.felix.messages import (
    Message,
    RemoteBlockRouteRemove,
    RemoteBlockRouteUpdate,
    VTEPRemove,
    VTEPUpdate,
)
from pycalico.lib.vxlan import vtep_mac
from pycalico.model.node import Node


def node(name: str, ip: str, tunnel: str | None = None, ip6: str | None = None,
         tunnel6: str | None = None, mac: str | None = None) -> Node:  # fmt: skip
    spec: dict[str, object] = {"bgp": {"ipv4Address": ip}}
    if ip6:
        spec["bgp"] = {"ipv4Address": ip, "ipv6Address": ip6}
    if tunnel:
        spec["ipv4VXLANTunnelAddr"] = tunnel
    if tunnel6:
        spec["ipv6VXLANTunnelAddr"] = tunnel6
    if mac:
        spec["vxlanTunnelMACAddr"] = mac
    return Node.model_validate({"metadata": {"name": name}, "spec": spec})


def cluster(mode: str = "Always") -> VXLANResolver:
    resolver = VXLANResolver("a")
    resolver.on_pool("p4", "10.65.0.0/16", mode)
    resolver.on_node("a", node("a", "10.99.0.1/24", "10.65.0.0", mac="66:00:00:00:00:0a"))
    resolver.on_node("b", node("b", "10.99.0.2/24", "10.65.1.0"))
    resolver.on_node("c", node("c", "10.99.1.3/24", "10.65.2.0"))
    for host, block in (("a", "10.65.0.0/26"), ("b", "10.65.1.0/26"), ("c", "10.65.2.0/26")):
        resolver.on_affinity(host, block, "confirmed")
    return resolver


def by_type(messages: list[Message], kind: type) -> list[Message]:
    return [m for m in messages if isinstance(m, kind)]


OWN = RemoteBlockRouteUpdate("10.65.0.0/26", "a", 4, False, "", blackhole=True)


def test_always_encapsulates_to_every_remote_block_and_blackholes_our_own() -> None:
    out = cluster().flush()
    vteps = by_type(out, VTEPUpdate)
    assert VTEPUpdate("a", 4, "10.65.0.0", "66:00:00:00:00:0a", "10.99.0.1") in vteps
    assert VTEPUpdate("b", 4, "10.65.1.0", vtep_mac("b"), "10.99.0.2") in vteps
    assert by_type(out, RemoteBlockRouteUpdate) == [
        OWN,
        RemoteBlockRouteUpdate("10.65.1.0/26", "b", 4, True, "10.65.1.0"),
        RemoteBlockRouteUpdate("10.65.2.0/26", "c", 4, True, "10.65.2.0"),
    ]
    # VTEPs come before the routes that need them.
    assert out.index(vteps[-1]) < out.index(by_type(out, RemoteBlockRouteUpdate)[0])


def test_cross_subnet_goes_direct_inside_the_subnet_and_encapsulates_across() -> None:
    routes = by_type(cluster("CrossSubnet").flush(), RemoteBlockRouteUpdate)
    assert routes == [
        OWN,
        RemoteBlockRouteUpdate("10.65.1.0/26", "b", 4, False, "10.99.0.2"),
        RemoteBlockRouteUpdate("10.65.2.0/26", "c", 4, True, "10.65.2.0"),
    ]


def test_changes_are_sent_as_differences() -> None:
    resolver = cluster()
    resolver.flush()
    assert resolver.flush() == []
    resolver.on_node("c", None)
    assert resolver.flush() == [RemoteBlockRouteRemove("10.65.2.0/26"), VTEPRemove("c", 4)]
    resolver.on_affinity("b", "10.65.1.0/26", "pendingDeletion")
    assert resolver.flush() == [RemoteBlockRouteRemove("10.65.1.0/26")]
    resolver.on_pool("p4", "10.65.0.0/16", "Never")
    # Nothing left to route (our blackhole goes too); VTEPs stay (the Nodes still name them).
    assert resolver.flush() == [RemoteBlockRouteRemove("10.65.0.0/26")]


def test_no_route_without_our_own_vtep_or_the_owners() -> None:
    resolver = cluster()
    resolver.on_node("a", node("a", "10.99.0.1/24"))  # we have no tunnel address yet
    assert by_type(resolver.flush(), RemoteBlockRouteUpdate) == [OWN]


def test_ipv6_vteps_and_routes() -> None:
    resolver = VXLANResolver("a")
    resolver.on_pool("p6", "fd00:65::/48", "Always")
    resolver.on_node("a", node("a", "10.99.0.1/24", ip6="fd00:99::1/64", tunnel6="fd00:65::"))
    resolver.on_node("b", node("b", "10.99.0.2/24", ip6="fd00:99::2/64", tunnel6="fd00:65::40"))
    resolver.on_affinity("b", "fd00:65::40/122", "confirmed")
    out = resolver.flush()
    assert VTEPUpdate("b", 6, "fd00:65::40", vtep_mac("b", 6), "fd00:99::2") in out
    assert RemoteBlockRouteUpdate("fd00:65::40/122", "b", 6, True, "fd00:65::40") in out


def test_incremental_output_ends_where_a_fresh_resolver_starts() -> None:
    rng = random.Random(7)
    resolver = VXLANResolver("n0")
    sent_vteps: dict[tuple[str, int], VTEPUpdate] = {}
    sent_routes: dict[str, RemoteBlockRouteUpdate] = {}
    state: list[tuple[str, tuple[object, ...]]] = []
    for _ in range(300):
        choice = rng.randrange(3)
        i = rng.randrange(4)
        if choice == 0:
            args: tuple[object, ...] = (f"n{i}", rng.choice([None, node(
                f"n{i}", f"10.99.{rng.randrange(2)}.{i + 1}/24", f"10.65.{i}.0")]))  # fmt: skip
            resolver.on_node(*args)  # type: ignore[arg-type]
            state.append(("node", args))
        elif choice == 1:
            args = ("p", "10.65.0.0/16", rng.choice(["Always", "CrossSubnet", "Never"]))
            resolver.on_pool(*args)  # type: ignore[arg-type]
            state.append(("pool", args))
        else:
            args = (f"n{i}", f"10.65.{rng.randrange(4)}.0/26", rng.choice(["confirmed", None]))
            resolver.on_affinity(*args)  # type: ignore[arg-type]
            state.append(("aff", args))
        for message in resolver.flush():
            if isinstance(message, VTEPUpdate):
                sent_vteps[(message.node, message.version)] = message
            elif isinstance(message, VTEPRemove):
                del sent_vteps[(message.node, message.version)]
            elif isinstance(message, RemoteBlockRouteUpdate):
                sent_routes[message.destination] = message
            elif isinstance(message, RemoteBlockRouteRemove):
                del sent_routes[message.destination]
    fresh = VXLANResolver("n0")
    for kind, args in state:
        {"node": fresh.on_node, "pool": fresh.on_pool, "aff": fresh.on_affinity}[kind](*args)  # type: ignore[operator]
    vteps = fresh.vteps()
    assert sent_vteps == vteps
    assert sent_routes == fresh.routes(vteps)


def test_vtep_mac_is_stable_local_and_unicast() -> None:
    mac = vtep_mac("node1")
    assert mac == vtep_mac("node1") != vtep_mac("node1", 6)
    first = int(mac.split(":")[0], 16)
    assert first & 0x02 and not first & 0x01

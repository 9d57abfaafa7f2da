"""A stateful fake kernel for pure unit tests of Felix's managers and drivers.

What it is: an nft backend that parses the flat scripts *our* renderer emits (not nft's whole
grammar) and keeps the resulting tables, chains, sets and map entries; plus fake route, sysctl,
link and conntrack backends.  It enforces what the real kernel enforces for those scripts:
transactions are atomic, a rule may only jump to a declared chain or use a declared set, a chain
or set still referenced cannot be deleted, deleting a missing element fails.
What it is not: a packet evaluator, or a parser of arbitrary nft syntax.

Invariant: a failed transaction leaves the state exactly as it was.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

from pycalico.felix.drivers.errors import NftError, RouteError
from pycalico.felix.drivers.routes import Neighbor, Route

_REF_CHAIN = re.compile(r"\b(?:jump|goto) ([A-Za-z0-9_.\-]+)")
_REF_SET = re.compile(r"@([A-Za-z0-9_.\-]+)")


@dataclass
class FakeSet:
    kind: str  # "set" or "map"
    type: str
    elements: set[str] = field(default_factory=set)  # for maps: 'key : verdict'


@dataclass
class FakeTable:
    chains: dict[str, list[str]] = field(default_factory=dict)
    hooks: dict[str, str] = field(default_factory=dict)
    sets: dict[str, FakeSet] = field(default_factory=dict)

    def references(self) -> tuple[set[str], set[str]]:
        chains: set[str] = set()
        sets: set[str] = set()
        for rules in self.chains.values():
            for rule in rules:
                chains.update(_REF_CHAIN.findall(rule))
                sets.update(_REF_SET.findall(rule))
        for fake_set in self.sets.values():
            for element in fake_set.elements:
                chains.update(_REF_CHAIN.findall(element))
        return chains, sets


def _split_elements(body: str) -> list[str]:
    inner = body.strip()
    if not (inner.startswith("{") and inner.endswith("}")):
        raise ValueError(f"element list {body!r} is not braced")
    return [item.strip() for item in inner[1:-1].split(",") if item.strip()]


def _map_key(element: str) -> str:
    return element.split(" : ", 1)[0].strip()


class FakeNft:
    """The nft backend: ``run(script)`` as one atomic transaction."""

    def __init__(self) -> None:
        self.tables: dict[str, FakeTable] = {}
        self.scripts: list[str] = []
        self.fail_next = 0  # fail the next N transactions (as if the kernel refused them)

    def run(self, text: str) -> None:
        self.scripts.append(text)
        if self.fail_next > 0:
            self.fail_next -= 1
            raise NftError("fake kernel: injected failure", text)
        working = copy.deepcopy(self.tables)
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                self._command(working, line)
            except (KeyError, ValueError) as error:
                raise NftError(f"fake kernel: line {number}: {error}: {line}", text) from None
        self.tables = working

    def table(self, name: str = "inet calico") -> FakeTable:
        return self.tables[name]

    def _command(self, tables: dict[str, FakeTable], line: str) -> None:
        words = line.split(" ", 5)
        verb, thing = words[0], words[1]
        table_name = f"{words[2]} {words[3]}"
        if thing == "table":
            if verb == "add":
                tables.setdefault(table_name, FakeTable())
            elif verb == "delete":
                if table_name not in tables:
                    raise KeyError(f"no table {table_name}")
                del tables[table_name]
            else:
                raise ValueError(f"unsupported {verb} table")
            return
        table = tables.get(table_name)
        if table is None:
            raise KeyError(f"no table {table_name}")
        name = words[4]
        rest = words[5] if len(words) > 5 else ""
        if thing == "chain":
            self._chain(table, verb, name, rest)
        elif thing in ("set", "map"):
            self._set(table, verb, thing, name, rest)
        elif thing == "rule" and verb == "add":
            if name not in table.chains:
                raise KeyError(f"no chain {name}")
            for target in _REF_CHAIN.findall(rest):
                if target not in table.chains:
                    raise KeyError(f"jump to undeclared chain {target}")
            for set_name in _REF_SET.findall(rest):
                if set_name not in table.sets:
                    raise KeyError(f"rule uses undeclared set {set_name}")
            table.chains[name].append(rest)
        elif thing == "element":
            self._element(table, verb, name, rest)
        else:
            raise ValueError(f"unsupported command {verb} {thing}")

    def _chain(self, table: FakeTable, verb: str, name: str, rest: str) -> None:
        if verb == "add":
            if name not in table.chains:
                table.chains[name] = []
                if rest:
                    table.hooks[name] = rest.strip("{} ")
        elif verb == "flush":
            if name not in table.chains:
                raise KeyError(f"no chain {name}")
            table.chains[name] = []
        elif verb == "delete":
            if name not in table.chains:
                raise KeyError(f"no chain {name}")
            if table.chains[name]:
                raise ValueError(f"chain {name} is not empty")
            if name in table.references()[0]:
                raise ValueError(f"chain {name} is still referenced")
            del table.chains[name]
            table.hooks.pop(name, None)
        else:
            raise ValueError(f"unsupported {verb} chain")

    def _set(self, table: FakeTable, verb: str, kind: str, name: str, rest: str) -> None:
        if verb == "add":
            if name not in table.sets:
                match = re.search(r"type ([^;]+);", rest)
                if match is None:
                    raise ValueError(f"set {name} without a type")
                table.sets[name] = FakeSet(kind, match.group(1).strip())
        elif verb == "delete":
            if name not in table.sets:
                raise KeyError(f"no {kind} {name}")
            if name in table.references()[1]:
                raise ValueError(f"{kind} {name} is still referenced")
            del table.sets[name]
        elif verb == "flush":
            table.sets[name].elements.clear()
        else:
            raise ValueError(f"unsupported {verb} {kind}")

    def _element(self, table: FakeTable, verb: str, name: str, rest: str) -> None:
        fake_set = table.sets.get(name)
        if fake_set is None:
            raise KeyError(f"no set {name}")
        for element in _split_elements(rest):
            if fake_set.kind == "map":
                key = _map_key(element)
                existing = {e for e in fake_set.elements if _map_key(e) == key}
                if verb == "add":
                    for target in _REF_CHAIN.findall(element):
                        if target not in table.chains:
                            raise KeyError(f"map entry to undeclared chain {target}")
                    if existing and element not in existing:
                        raise ValueError(f"map {name} already has key {key}")
                    fake_set.elements.add(element)
                elif not existing:
                    raise KeyError(f"map {name} has no key {key}")
                else:
                    fake_set.elements -= existing
            elif verb == "add":
                fake_set.elements.add(element)
            elif element not in fake_set.elements:
                raise KeyError(f"set {name} has no element {element}")
            else:
                fake_set.elements.remove(element)

    # --- helpers for assertions --------------------------------------------------------------

    def chain(self, name: str, table: str = "inet calico") -> list[str]:
        return self.tables[table].chains[name]

    def elements(self, name: str, table: str = "inet calico") -> set[str]:
        return set(self.tables[table].sets[name].elements)

    def map_entries(self, name: str, table: str = "inet calico") -> dict[str, str]:
        out: dict[str, str] = {}
        for element in self.tables[table].sets[name].elements:
            key, verdict = element.split(" : ", 1)
            out[key.strip('"')] = verdict
        return out


class FakeRoutes:
    """The route backend: a main table keyed, as the kernel keys it, by destination and metric."""

    def __init__(self, links: set[str] | None = None) -> None:
        self.routes: dict[tuple[str, int], Route] = {}
        self.neighbors: dict[str, Neighbor] = {}
        self.links = links if links is not None else set()
        self.calls = 0

    def add(self, route: Route) -> None:
        """A route somebody else (the CNI plugin, an operator) put in the table."""
        self.routes[(route.destination, route.metric)] = route

    def by_destination(self, destination: str) -> list[Route]:
        return sorted(
            (r for (d, _), r in self.routes.items() if d == destination), key=lambda r: r.metric
        )

    def destinations(self) -> set[str]:
        return {destination for destination, _ in self.routes}

    def list_routes(self) -> list[Route]:
        self.calls += 1
        return list(self.routes.values())

    def replace(self, route: Route) -> None:
        self.calls += 1
        if route.interface and route.interface not in self.links:
            raise RouteError(f"route {route.destination}: no such device {route.interface}")
        self.routes[(route.destination, route.metric)] = route

    def delete(self, route: Route) -> None:
        """Like the kernel: matched on destination, metric and protocol (and the interface,
        for a route given with one that is not of the programmed route's protocol)."""
        self.calls += 1
        key = (route.destination, route.metric)
        found = self.routes.get(key)
        if found is None or found.protocol != route.protocol:
            return
        if route.interface and found.interface != route.interface:
            return
        del self.routes[key]

    def replace_neighbor(self, neighbor: Neighbor) -> None:
        if neighbor.interface not in self.links:
            raise RouteError(f"neighbor {neighbor.address}: no such device {neighbor.interface}")
        self.neighbors[neighbor.address] = neighbor

    def delete_neighbor(self, neighbor: Neighbor) -> None:
        self.neighbors.pop(neighbor.address, None)


class FakeSysctls:
    def __init__(self, links: set[str] | None = None) -> None:
        self.values: dict[str, str] = {}
        self.links = links if links is not None else set()

    def write(self, path: str, value: str) -> None:
        self.values[path] = value

    def link_exists(self, interface: str) -> bool:
        return interface in self.links


class FakeConntrack:
    def __init__(self) -> None:
        self.flushed: list[str] = []

    def flush_addresses(self, addresses: list[str]) -> None:
        self.flushed.extend(addresses)


class FakeKernel:
    """All fake backends sharing one set of links."""

    def __init__(self) -> None:
        self.links: set[str] = set()
        self.nft = FakeNft()
        self.routes = FakeRoutes(self.links)
        self.sysctls = FakeSysctls(self.links)
        self.conntrack = FakeConntrack()

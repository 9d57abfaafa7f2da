"""nft script text: the commands one transaction is made of (pure).

What it is: string builders for the flat command form (``add chain inet calico X``, ``add rule
...``) that ``nft -f`` and libnftables accept as one atomic transaction.  What it is not: a
decision about *what* to send (the nft driver diffs desired and programmed state).

Invariants: every command names the table explicitly (flat form, one command per line), so any
subset of commands is itself a valid script; element lists are chunked to keep lines short.
"""

from __future__ import annotations

from collections.abc import Iterable

from pycalico.felix.rules.model import Chain, FlowtableDef, SetDef
from pycalico.felix.rules.names import TABLE

_CHUNK = 500


def add_table() -> str:
    return f"add table {TABLE}"


def delete_table() -> str:
    return f"delete table {TABLE}"


def declare_set(definition: SetDef) -> str:
    flags = f" flags {','.join(definition.flags)};" if definition.flags else ""
    return f"add {definition.kind} {TABLE} {definition.name} {{ type {definition.type};{flags} }}"


def delete_set(definition: SetDef) -> str:
    return f"delete {definition.kind} {TABLE} {definition.name}"


def flush_set(definition: SetDef) -> str:
    return f"flush {definition.kind} {TABLE} {definition.name}"


def declare_chain(chain: Chain) -> str:
    if chain.hook:
        return f"add chain {TABLE} {chain.name} {{ {chain.hook} }}"
    return f"add chain {TABLE} {chain.name}"


def fill_chain(chain: Chain, flush: bool) -> list[str]:
    lines = [f"flush chain {TABLE} {chain.name}"] if flush else []
    lines.extend(f"add rule {TABLE} {chain.name} {rule}" for rule in chain.rules)
    return lines


def delete_chain(name: str) -> list[str]:
    return [f"flush chain {TABLE} {name}", f"delete chain {TABLE} {name}"]


def _elements(verb: str, set_name: str, elements: Iterable[str]) -> list[str]:
    items = sorted(elements)
    return [
        f"{verb} element {TABLE} {set_name} {{ {', '.join(items[i : i + _CHUNK])} }}"
        for i in range(0, len(items), _CHUNK)
    ]


def add_elements(set_name: str, elements: Iterable[str]) -> list[str]:
    return _elements("add", set_name, elements)


def delete_elements(set_name: str, elements: Iterable[str]) -> list[str]:
    return _elements("delete", set_name, elements)


def map_element(interface: str, verdict: str) -> str:
    return f'"{interface}" : {verdict}'


def _device_list(devices: Iterable[str]) -> str:
    return ", ".join(f'"{device}"' for device in sorted(devices))


def add_flowtable(definition: FlowtableDef, devices: Iterable[str] = ()) -> str:
    """Create the flowtable, or add ``devices`` to an existing one (nft merges the hooks)."""
    listed = _device_list(devices)
    device_clause = f" devices = {{ {listed} }};" if listed else ""
    return (
        f"add flowtable {TABLE} {definition.name} "
        f"{{ hook {definition.hook} priority {definition.priority};{device_clause} }}"
    )


def delete_flowtable_devices(definition: FlowtableDef, devices: Iterable[str]) -> list[str]:
    """Unhook ``devices`` from an existing flowtable (no devices: no command)."""
    listed = _device_list(devices)
    if not listed:
        return []
    return [f"delete flowtable {TABLE} {definition.name} {{ devices = {{ {listed} }}; }}"]

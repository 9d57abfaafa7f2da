"""The nftables driver: desired state of ``table inet calico``, applied as one transaction.

What it is: a holder of desired chains, sets and verdict-map entries with a dirty set; ``apply``
turns the difference with what is programmed into ONE nft script and sends it in one call (the
libnftables binding, or ``nft -f -`` on stdin), so the kernel sees all of it or none of it.
What it is not: a renderer (``felix.rules``) or a decider of what should exist (the managers).

Invariants:

* Until the first successful apply, and after any failed one, the next apply replaces the whole
  table atomically (``add table; delete table; add table; ...``): stale state from a previous
  Felix is swept, and established flows never see a moment without rules.
* Incremental applies contain only the chains whose rules changed and the element deltas of
  the sets and maps that changed; command order inside the script respects references
  (declare sets and chains → elements → chain rules → map entries → delete chains → delete sets).
* The optional flowtable is declared before any chain (rules reference it); its device list is
  changed by delta (``add flowtable`` merges devices, ``delete flowtable {devices}`` unhooks
  them), and only devices that exist may be listed: the kernel refuses unknown names, and
  unhooks a device itself when it disappears (``flowtable_device_gone`` records that).  Adding
  or removing the flowtable itself is a full replace.
* A failed incremental apply is followed at once by a full atomic resync; if that fails too,
  ``NftError`` is raised and the programmed state is unknown (next apply is full again).
"""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Protocol

from pycalico.felix.drivers.errors import NftError
from pycalico.felix.rules import script
from pycalico.felix.rules.model import Chain, FlowtableDef, SetDef
from pycalico.felix.rules.names import TABLE

log = logging.getLogger(__name__)


class NftBackend(Protocol):
    def run(self, text: str) -> None:
        """Run one nft script atomically; raise ``NftError`` on failure."""


class NftCommandBackend:
    """One ``nft -f -`` process per transaction (the script goes on stdin)."""

    def __init__(self, nft: str = "nft") -> None:
        self.nft = nft

    def run(self, text: str) -> None:
        done = subprocess.run(
            [self.nft, "-f", "-"], input=text.encode(), capture_output=True, check=False
        )
        if done.returncode != 0:
            raise NftError(f"nft -f failed: {done.stderr.decode(errors='replace')[:2000]}", text)


class LibNftablesBackend:
    """The libnftables binding (``pip-nftables``): no process per transaction.

    The context is created on first use and stays bound to the network namespace it was created
    in, so create the backend in the namespace it will program.
    """

    def __init__(self) -> None:
        self._nft: Any = None

    def run(self, text: str) -> None:
        if self._nft is None:
            import nftables  # the binding is optional; the command backend needs nothing

            self._nft = nftables.Nftables()
        rc, _output, error = self._nft.cmd(text)
        if rc != 0:
            raise NftError(f"libnftables failed: {str(error)[:2000]}", text)


def default_backend() -> NftBackend:
    try:
        import nftables  # noqa: F401
    except ImportError:
        return NftCommandBackend()
    return LibNftablesBackend()


_PROBE_TABLE = "inet calico-flowtable-probe"


def flowtable_supported(backend: NftBackend) -> bool:
    """Whether the kernel has flowtables (``CONFIG_NF_FLOW_TABLE``): one self-cancelling batch.

    The transaction creates a scratch table with a flowtable and deletes it again, so on
    success nothing is left behind, and on failure the kernel rolled all of it back.
    """
    text = (
        f"add table {_PROBE_TABLE}\n"
        f"add flowtable {_PROBE_TABLE} probe {{ hook ingress priority filter; }}\n"
        f"delete table {_PROBE_TABLE}\n"
    )
    try:
        backend.run(text)
    except NftError as error:
        log.debug("flowtable probe failed: %s", error)
        return False
    return True


@dataclass(frozen=True, slots=True)
class ApplyStats:
    full: bool
    lines: int
    bytes: int
    seconds: float
    chains_written: int
    sets_written: int


class NftTable:
    """Desired vs programmed state of the ``calico`` table."""

    def __init__(self, backend: NftBackend) -> None:
        self.backend = backend
        self._chains: dict[str, Chain] = {}
        self._sets: dict[str, SetDef] = {}
        self._elements: dict[str, frozenset[str]] = {}
        self._map_entries: dict[str, dict[str, str]] = {}
        self._programmed_chains: dict[str, Chain] = {}
        self._programmed_sets: dict[str, SetDef] = {}
        self._programmed_elements: dict[str, frozenset[str]] = {}
        self._programmed_map_entries: dict[str, dict[str, str]] = {}
        self._dirty_chains: set[str] = set()
        self._dirty_sets: set[str] = set()
        self._dirty_maps: set[str] = set()
        self._flowtable: FlowtableDef | None = None
        self._flowtable_devices: frozenset[str] = frozenset()
        self._programmed_flowtable: FlowtableDef | None = None
        self._programmed_flowtable_devices: frozenset[str] = frozenset()
        self.needs_full = True
        self.last: ApplyStats | None = None
        self.failures = 0

    # --- desired state (cheap, no I/O) -----------------------------------------------------

    def set_chain(self, chain: Chain) -> None:
        if self._chains.get(chain.name) != chain:
            self._chains[chain.name] = chain
            self._dirty_chains.add(chain.name)

    def remove_chain(self, name: str) -> None:
        if self._chains.pop(name, None) is not None:
            self._dirty_chains.add(name)

    def set_set(self, definition: SetDef, elements: frozenset[str] = frozenset()) -> None:
        if self._sets.get(definition.name) != definition:
            self._sets[definition.name] = definition
            self._dirty_sets.add(definition.name)
            if definition.kind == "map":
                self._map_entries.setdefault(definition.name, {})
                self._dirty_maps.add(definition.name)
        if definition.kind == "set" and self._elements.get(definition.name) != elements:
            self._elements[definition.name] = elements
            self._dirty_sets.add(definition.name)

    def remove_set(self, name: str) -> None:
        if self._sets.pop(name, None) is not None:
            self._elements.pop(name, None)
            self._map_entries.pop(name, None)
            self._dirty_sets.add(name)
            self._dirty_maps.discard(name)

    def set_map_entry(self, map_name: str, key: str, verdict: str) -> None:
        entries = self._map_entries.setdefault(map_name, {})
        if entries.get(key) != verdict:
            entries[key] = verdict
            self._dirty_maps.add(map_name)

    def remove_map_entry(self, map_name: str, key: str) -> None:
        entries = self._map_entries.get(map_name, {})
        if entries.pop(key, None) is not None:
            self._dirty_maps.add(map_name)

    def set_flowtable(self, definition: FlowtableDef | None) -> None:
        """Declare the flowtable (None: no flowtable); its devices come from the setter below."""
        self._flowtable = definition

    def set_flowtable_devices(self, devices: frozenset[str]) -> None:
        self._flowtable_devices = devices

    def flowtable_device_gone(self, device: str) -> None:
        """The interface vanished: the kernel has unhooked it, so do not delete it again."""
        self._programmed_flowtable_devices = self._programmed_flowtable_devices - {device}

    @property
    def flowtable_devices(self) -> frozenset[str]:
        return self._flowtable_devices if self._flowtable is not None else frozenset()

    def _flowtable_dirty(self) -> bool:
        return self._flowtable != self._programmed_flowtable or (
            self._flowtable is not None
            and self._flowtable_devices != self._programmed_flowtable_devices
        )

    @property
    def dirty(self) -> bool:
        return (
            self.needs_full
            or bool(self._dirty_chains or self._dirty_sets or self._dirty_maps)
            or self._flowtable_dirty()
        )

    def chain(self, name: str) -> Chain | None:
        return self._chains.get(name)

    def counts(self) -> dict[str, int]:
        return {
            "chains": len(self._chains),
            "sets": sum(1 for s in self._sets.values() if s.kind == "set"),
            "rules": sum(len(c.rules) for c in self._chains.values()),
            "set_elements": sum(len(e) for e in self._elements.values()),
        }

    # --- scripts (pure) --------------------------------------------------------------------

    def full_script(self) -> list[str]:
        lines = [script.add_table(), script.delete_table(), script.add_table()]
        lines += [script.declare_set(s) for s in self._sets.values()]
        if self._flowtable is not None:
            lines.append(script.add_flowtable(self._flowtable, self._flowtable_devices))
        lines += [script.declare_chain(c) for c in self._chains.values()]
        for name, elements in self._elements.items():
            lines += script.add_elements(name, elements)
        for chain in self._chains.values():
            lines += script.fill_chain(chain, flush=False)
        for name, entries in self._map_entries.items():
            if entries and name in self._sets:
                lines += script.add_elements(
                    name, (script.map_element(k, v) for k, v in entries.items())
                )
        return lines

    def incremental_script(self) -> list[str] | None:
        """The delta script, or None when only a full replace can express the change."""
        declare: list[str] = []
        elements: list[str] = []
        fills: list[str] = []
        maps: list[str] = []
        delete_chains: list[str] = []
        delete_sets: list[str] = []
        if self._flowtable != self._programmed_flowtable:
            return None  # rules reference it: re-create the table rather than order deletions
        if self._flowtable is not None:
            new_devices = self._flowtable_devices
            old_devices = self._programmed_flowtable_devices
            declare += script.delete_flowtable_devices(self._flowtable, old_devices - new_devices)
            if new_devices - old_devices:
                declare.append(script.add_flowtable(self._flowtable, new_devices - old_devices))
        for name in sorted(self._dirty_sets):
            desired = self._sets.get(name)
            programmed = self._programmed_sets.get(name)
            if desired is not None and programmed is not None and desired != programmed:
                return None  # type change: recreate everything rather than juggle references
            if desired is None:
                if programmed is not None:
                    delete_sets.append(script.delete_set(programmed))
                continue
            if programmed is None:
                declare.append(script.declare_set(desired))
            if desired.kind == "set":
                new = self._elements.get(name, frozenset())
                old = self._programmed_elements.get(name, frozenset())
                elements += script.delete_elements(name, old - new)
                elements += script.add_elements(name, new - old)
        for name in sorted(self._dirty_chains):
            desired_chain = self._chains.get(name)
            programmed_chain = self._programmed_chains.get(name)
            if desired_chain == programmed_chain:
                continue
            if desired_chain is None:
                delete_chains.append(name)
                continue
            if programmed_chain is None:
                declare.append(script.declare_chain(desired_chain))
            elif programmed_chain.hook != desired_chain.hook:
                return None
            fills += script.fill_chain(desired_chain, flush=programmed_chain is not None)
        for name in sorted(self._dirty_maps):
            if name not in self._sets:
                continue
            new_entries = self._map_entries.get(name, {})
            old_entries = self._programmed_map_entries.get(name, {})
            removed = [k for k, v in old_entries.items() if new_entries.get(k) != v]
            added = [k for k, v in new_entries.items() if old_entries.get(k) != v]
            maps += script.delete_elements(name, (f'"{k}"' for k in removed))
            maps += script.add_elements(
                name, (script.map_element(k, new_entries[k]) for k in added)
            )
        deletes = [f"flush chain {TABLE} {n}" for n in delete_chains]
        deletes += [f"delete chain {TABLE} {n}" for n in delete_chains]
        return declare + elements + fills + maps + deletes + delete_sets

    # --- I/O -------------------------------------------------------------------------------

    def apply(self) -> ApplyStats | None:
        """Send what changed (one transaction); None if nothing was dirty."""
        if not self.dirty:
            return None
        start = time.perf_counter()
        lines = None if self.needs_full else self.incremental_script()
        full = lines is None
        if lines is not None and lines:
            try:
                self._run(lines)
            except NftError as error:
                self.failures += 1
                log.warning("incremental nft apply failed, resyncing the table: %s", error)
                full = True
        if full:
            lines = self.full_script()
            try:
                self._run(lines)
            except NftError:
                self.failures += 1
                self.needs_full = True
                raise
        assert lines is not None
        chains_written = len(self._dirty_chains)
        sets_written = len(self._dirty_sets)
        self._mark_programmed(full)
        text_bytes = sum(len(line) + 1 for line in lines)
        self.last = ApplyStats(
            full, len(lines), text_bytes, time.perf_counter() - start, chains_written, sets_written
        )
        return self.last

    def _run(self, lines: list[str]) -> None:
        self.backend.run("\n".join(lines) + "\n")

    def _mark_programmed(self, full: bool) -> None:
        self._programmed_flowtable = self._flowtable
        self._programmed_flowtable_devices = (
            self._flowtable_devices if self._flowtable is not None else frozenset()
        )
        if full:
            self._programmed_chains = dict(self._chains)
            self._programmed_sets = dict(self._sets)
            self._programmed_elements = dict(self._elements)
            self._programmed_map_entries = {k: dict(v) for k, v in self._map_entries.items()}
        else:
            # Only what was dirty can differ: keep this O(change), not O(table).
            for name in self._dirty_chains:
                _copy_key(self._chains, self._programmed_chains, name)
            for name in self._dirty_sets:
                _copy_key(self._sets, self._programmed_sets, name)
                _copy_key(self._elements, self._programmed_elements, name)
            for name in self._dirty_maps | self._dirty_sets:
                if name in self._map_entries:
                    self._programmed_map_entries[name] = dict(self._map_entries[name])
                else:
                    self._programmed_map_entries.pop(name, None)
        self._dirty_chains.clear()
        self._dirty_sets.clear()
        self._dirty_maps.clear()
        self.needs_full = False


def _copy_key(source: dict[str, Any], target: dict[str, Any], key: str) -> None:
    if key in source:
        target[key] = source[key]
    else:
        target.pop(key, None)

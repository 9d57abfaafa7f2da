"""The endpoint manager: workload and host endpoints → endpoint chains and dispatch entries.

What it is: keeps the latest message per endpoint; ``complete_deferred_work`` renders the
changed endpoints' chains, points the dispatch verdict maps at them, and asks the interface
driver for the workload interface's sysctls.  It also owns the static chains (base chains,
dispatch chains, ``cali-wl-to-host``, and the raw/mangle base chains of untracked and pre-DNAT
policy), re-rendered only when the wildcard host endpoint or the set of hooks in use changes.
What it is not: routes (``dataplane.routes``) or policy chains (``dataplane.policy``).

Invariants: a verdict-map entry for an interface exists exactly while an endpoint with that
interface exists, and always points at that endpoint's current chain; an interface with no
entry is dropped by the dispatch chain (fail closed).  A raw/mangle base chain exists exactly
while some host endpoint has untracked (resp. pre-DNAT) policy for its hook.
"""

from __future__ import annotations

from pycalico.felix.drivers.interfaces import InterfaceConfigurator
from pycalico.felix.drivers.nft import NftTable
from pycalico.felix.messages import (
    HostEndpointID,
    HostEndpointRemove,
    HostEndpointUpdate,
    Message,
    WorkloadEndpointID,
    WorkloadEndpointRemove,
    WorkloadEndpointUpdate,
)
from pycalico.felix.rules import endpoints, names, prefilter
from pycalico.felix.rules.model import PrefilterUse, RenderConfig

_HEP_MAPS = (
    names.MAP_FROM_HEP,
    names.MAP_TO_HEP,
    names.MAP_FROM_HEP_FORWARD,
    names.MAP_TO_HEP_FORWARD,
)


class EndpointManager:
    def __init__(
        self, nft: NftTable, interfaces: InterfaceConfigurator, config: RenderConfig
    ) -> None:
        self.nft = nft
        self.interfaces = interfaces
        self.config = config
        self._workloads: dict[WorkloadEndpointID, WorkloadEndpointUpdate] = {}
        self._programmed_workloads: dict[WorkloadEndpointID, WorkloadEndpointUpdate] = {}
        self._hosts: dict[HostEndpointID, HostEndpointUpdate] = {}
        self._programmed_hosts: dict[HostEndpointID, HostEndpointUpdate] = {}
        self._dirty_workloads: set[WorkloadEndpointID] = set()
        self._dirty_hosts: set[HostEndpointID] = set()
        self._static_done = False
        self._static_key: tuple[str, PrefilterUse, HostEndpointUpdate | None] | None = None
        self._static_names: set[str] = set()

    def on_update(self, message: Message) -> None:
        if isinstance(message, WorkloadEndpointUpdate):
            if self._workloads.get(message.id) != message:
                self._workloads[message.id] = message
                self._dirty_workloads.add(message.id)
        elif isinstance(message, WorkloadEndpointRemove):
            if self._workloads.pop(message.id, None) is not None:
                self._dirty_workloads.add(message.id)
        elif isinstance(message, HostEndpointUpdate):
            if self._hosts.get(message.id) != message:
                self._hosts[message.id] = message
                self._dirty_hosts.add(message.id)
        elif isinstance(message, HostEndpointRemove) and (
            self._hosts.pop(message.id, None) is not None
        ):
            self._dirty_hosts.add(message.id)

    @property
    def workload_count(self) -> int:
        return len(self._workloads)

    @property
    def host_endpoint_count(self) -> int:
        return len(self._hosts)

    def workloads(self) -> dict[WorkloadEndpointID, WorkloadEndpointUpdate]:
        return dict(self._workloads)

    @property
    def dirty(self) -> bool:
        return bool(self._dirty_workloads) or bool(self._dirty_hosts) or not self._static_done

    def hosts(self) -> dict[HostEndpointID, HostEndpointUpdate]:
        return dict(self._hosts)

    def complete_deferred_work(self) -> None:
        if not self._static_done:
            for definition in (*endpoints.dispatch_maps(), *prefilter.maps()):
                self.nft.set_set(definition)
        for endpoint_id in self._dirty_workloads:
            self._apply_workload(endpoint_id)
        for host_id in self._dirty_hosts:
            self._apply_host(host_id)
        if self._dirty_hosts or not self._static_done:
            self._apply_static()
        self._dirty_workloads.clear()
        self._dirty_hosts.clear()

    def _apply_static(self) -> None:
        """Re-render the static chains if what they depend on changed (O(host endpoints))."""
        wildcard = min(
            (h for h in self._hosts.values() if h.interface_name == "*"),
            key=lambda h: h.id.name,
            default=None,
        )
        in_use = prefilter.use(self._hosts.values())
        # The wildcard's prefilter chains are dispatch fallbacks only while it has them.
        fallback = wildcard if wildcard is not None and prefilter.use((wildcard,)) else None
        key = (wildcard.id.name if wildcard is not None else "", in_use, fallback)
        if self._static_done and key == self._static_key:
            return
        chains = (
            *endpoints.static_chains(self.config, key[0], in_use),
            *prefilter.static_chains(self.config, in_use, fallback),
        )
        for chain in chains:
            self.nft.set_chain(chain)
        names_now = {chain.name for chain in chains}
        for name in self._static_names - names_now:
            self.nft.remove_chain(name)
        self._static_names = names_now
        self._static_key = key
        self._static_done = True

    def _apply_workload(self, endpoint_id: WorkloadEndpointID) -> None:
        old = self._programmed_workloads.get(endpoint_id)
        new = self._workloads.get(endpoint_id)
        if old is not None and (new is None or new.interface_name != old.interface_name):
            interface = old.interface_name
            self.nft.remove_map_entry(names.MAP_FROM_WL, interface)
            self.nft.remove_map_entry(names.MAP_TO_WL, interface)
            self.nft.remove_chain(names.to_workload_chain(interface))
            self.nft.remove_chain(names.from_workload_chain(interface))
            self.interfaces.forget(interface)
        if new is None:
            self._programmed_workloads.pop(endpoint_id, None)
            return
        to_chain, from_chain = endpoints.workload_chains(new, self.config)
        self.nft.set_chain(to_chain)
        self.nft.set_chain(from_chain)
        self.nft.set_map_entry(names.MAP_TO_WL, new.interface_name, f"goto {to_chain.name}")
        self.nft.set_map_entry(names.MAP_FROM_WL, new.interface_name, f"goto {from_chain.name}")
        self.interfaces.want(new.interface_name, bool(new.allow_spoofed_source_prefixes))
        self._programmed_workloads[endpoint_id] = new

    def _apply_host(self, host_id: HostEndpointID) -> None:
        old = self._programmed_hosts.get(host_id)
        new = self._hosts.get(host_id)
        chain_names = names.host_endpoint_chains(host_id)
        if old is not None and (new is None or new.interface_name != old.interface_name):
            if old.interface_name != "*":
                for map_name in (*_HEP_MAPS, *prefilter.MAPS):
                    self.nft.remove_map_entry(map_name, old.interface_name)
            if new is None:
                for name in (*chain_names, *prefilter.chain_names(old)):
                    self.nft.remove_chain(name)
        if new is None:
            self._programmed_hosts.pop(host_id, None)
            return
        for chain in endpoints.host_endpoint_chains(new, self.config):
            self.nft.set_chain(chain)
        if new.interface_name != "*":
            for map_name, chain_name in zip(_HEP_MAPS, chain_names, strict=True):
                self.nft.set_map_entry(map_name, new.interface_name, f"goto {chain_name}")
        self._apply_prefilter(new)
        self._programmed_hosts[host_id] = new

    def _apply_prefilter(self, endpoint: HostEndpointUpdate) -> None:
        """The endpoint's untracked/pre-DNAT chains, and its entries in their verdict maps."""
        rendered = prefilter.host_endpoint_chains(endpoint, self.config)
        for (map_name, chain), name in zip(
            rendered.by_map(), prefilter.chain_names(endpoint), strict=True
        ):
            if chain is None:
                self.nft.remove_chain(name)
            else:
                self.nft.set_chain(chain)
            if endpoint.interface_name != "*":
                verdict = prefilter.map_verdict(chain)
                self.nft.set_map_entry(map_name, endpoint.interface_name, verdict)

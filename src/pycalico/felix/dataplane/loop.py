"""The dataplane: managers + drivers, and the throttled apply loop.

What it is: ``Dataplane.on_update(message)`` fans a message out to the managers (cheap, no
I/O); ``Dataplane.apply()`` lets each manager finish its deferred work and then has the drivers
program the kernel — interface sysctls, ONE nft transaction, routes, conntrack flushes of
departed addresses — in that order, so a new workload is policed before it is reachable.
``Dataplane.run(queue)`` is the asyncio loop the daemon uses: it drains every queued batch
before applying (coalescing is the back-pressure), applies at most ``max_applies_per_second``
times a second, retries failures, and resyncs periodically.  ``run`` does each apply — the
blocking kernel I/O: nft, netlink, /proc/sys, conntrack — on its own apply thread, so the event
loop keeps serving health checks, the syncer and status while the kernel works.

Invariants:

* Nothing touches the kernel before the first ``InSync``.  The first apply writes the host-wide
  forwarding sysctls (``ipForwarding: Enabled``, Calico's default; ``Disabled`` leaves them
  untouched), replaces the ``calico`` table atomically and resyncs Felix's routes (mark and
  sweep of stale state from a previous run, without interrupting established flows).
* A failed apply leaves the dirty state dirty; the next apply retries (nft: as a full atomic
  resync).
* While an apply runs on the apply thread (``applying``), the loop thread touches none of the
  state it uses: ``run`` is suspended waiting for it, queued messages wait in the queue, link
  events are held and replayed after it, and readers (``endpoint_statuses``) wait for the next
  report.  The apply thread is created by ``run``, so it is in the network namespace ``run``
  was started in (``/proc/sys/net`` follows the calling thread's namespace).
* Flowtable offload (``render.flowtable_offload``) is probed once, at the first apply: on a
  kernel without flowtables Felix logs a warning and runs without offload (policy unchanged)
  rather than failing every transaction.  When on, the flowtable's devices are exactly the
  workload interfaces the interface driver has configured (they exist), updated every apply.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from pycalico.felix.dataplane.endpoints import EndpointManager
from pycalico.felix.dataplane.ipip import IPIPManager
from pycalico.felix.dataplane.ipsets import IPSetManager
from pycalico.felix.dataplane.nat import NatManager
from pycalico.felix.dataplane.policy import PolicyManager
from pycalico.felix.dataplane.routes import RouteManager
from pycalico.felix.dataplane.vxlan import VXLANManager, VXLANOptions
from pycalico.felix.drivers.conntrack import ConntrackCommand
from pycalico.felix.drivers.errors import DataplaneError
from pycalico.felix.drivers.interfaces import InterfaceConfigurator, SysctlBackend
from pycalico.felix.drivers.nft import NftBackend, NftTable, flowtable_supported
from pycalico.felix.drivers.routes import NORMAL_ROUTE_PRIORITY, RouteBackend, RouteTable
from pycalico.felix.drivers.vxlan import VXLANBackend, VXLANTable
from pycalico.felix.messages import (
    ConfigUpdate,
    HostEndpointID,
    InSync,
    Message,
    WorkloadEndpointID,
)
from pycalico.felix.rules import endpoints as endpoint_rules
from pycalico.felix.rules.model import RenderConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DataplaneOptions:
    render: RenderConfig = field(default_factory=RenderConfig)
    route_protocol: int = 80
    # Workload route metrics: FelixConfiguration ipv4/ipv6NormalRoutePriority.
    route_priority_v4: int = NORMAL_ROUTE_PRIORITY
    route_priority_v6: int = NORMAL_ROUTE_PRIORITY
    ipv6_support: bool = True
    ip_forwarding: bool = True  # FelixConfiguration ipForwarding: Enabled
    max_applies_per_second: float = 10.0
    retry_interval: float = 1.0
    route_refresh_interval: float = 90.0
    nft_refresh_interval: float = 180.0
    vxlan: VXLANOptions = field(default_factory=VXLANOptions)


@dataclass(frozen=True, slots=True)
class ApplyReport:
    seconds: float
    nft_full: bool
    nft_lines: int
    nft_bytes: int
    routes_pending: int
    interfaces_missing: int
    conntrack_flushed: int


def host_sysctls(ipv6: bool) -> list[tuple[str, str]]:
    """The namespace-wide forwarding sysctls Felix writes when ``ipForwarding`` is Enabled."""
    values = [("net/ipv4/ip_forward", "1")]
    if ipv6:
        values.append(("net/ipv6/conf/all/forwarding", "1"))
    return values


class Dataplane:
    def __init__(
        self,
        options: DataplaneOptions,
        nft: NftBackend,
        routes: RouteBackend,
        sysctls: SysctlBackend,
        conntrack: Any | None = None,
        vxlan: VXLANBackend | None = None,
    ) -> None:
        self.options = options
        self.nft = NftTable(nft)
        self.route_table = RouteTable(routes, options.route_protocol)
        self.interfaces = InterfaceConfigurator(sysctls, ipv6=options.ipv6_support)
        self.conntrack = conntrack if conntrack is not None else ConntrackCommand()
        self.ipsets = IPSetManager(self.nft)
        self.policies = PolicyManager(self.nft, options.render)
        self.endpoints = EndpointManager(self.nft, self.interfaces, options.render)
        self.routes = RouteManager(
            self.route_table, options.route_priority_v4, options.route_priority_v6
        )
        self.nat = NatManager(self.nft, options.render.nat_outgoing_address)
        self.ipip = IPIPManager()
        self.managers: tuple[Any, ...] = (
            self.ipsets, self.policies, self.endpoints, self.routes, self.nat, self.ipip,
        )  # fmt: skip
        # The overlay, when the dataplane has a VXLAN driver (the daemon's always has).
        self.vxlan: VXLANManager | None = None
        if vxlan is not None:
            self.vxlan = VXLANManager(VXLANTable(vxlan), self.route_table, options.vxlan)
            self.managers += (self.vxlan,)
        self.in_sync = False
        self.config: dict[str, str] = {}
        self.last_report: ApplyReport | None = None
        self.healthy = False  # the last apply succeeded (readiness)
        # None until probed; then whether the flowtable is programmed.
        self.flowtable_offload: bool | None = None if options.render.flowtable_offload else False
        self.apply_count = 0
        self.failures = 0
        self._static_done = False
        self.applying = False  # an apply runs on the apply thread (see the invariants)
        self._held_links: list[tuple[str, bool]] = []
        self._wake = asyncio.Event()
        self.on_applied: list[Callable[[ApplyReport], None]] = []

    # --- input (no I/O) --------------------------------------------------------------------

    def on_update(self, message: Message) -> None:
        if isinstance(message, InSync):
            self.in_sync = True
        elif isinstance(message, ConfigUpdate):
            self.config = dict(message.values)
        else:
            for manager in self.managers:
                manager.on_update(message)
        self._wake.set()

    def on_updates(self, messages: list[Message]) -> None:
        for message in messages:
            self.on_update(message)

    def on_link(self, interface: str, present: bool) -> None:
        """A netlink link event (called on the loop's thread; held while an apply runs)."""
        if self.applying:
            self._held_links.append((interface, present))
            return
        if present:
            self.interfaces.link_added(interface)
            self.route_table.interface_changed(interface)
        else:
            self.interfaces.link_removed(interface)
            self.nft.flowtable_device_gone(interface)
        self._wake.set()

    # --- output ----------------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        overlay = self.vxlan is not None and self.vxlan.table.dirty
        return self.nft.dirty or self.route_table.dirty or self.interfaces.dirty or overlay

    def apply(self) -> ApplyReport | None:
        """Program the kernel with what changed; None before the first in-sync."""
        if not self.in_sync:
            return None
        start = time.perf_counter()
        if not self._static_done:
            self._static_config()
        if self.flowtable_offload is None:
            self._start_flowtable_offload()
        for manager in self.managers:
            manager.complete_deferred_work()
        missing = self.interfaces.apply()
        if self.flowtable_offload:
            self.nft.set_flowtable_devices(self.interfaces.configured_interfaces())
        stats = self.nft.apply()
        if self.vxlan is not None:
            self.vxlan.apply()  # devices before the routes through them
        pending = self.route_table.apply()
        departed = self.routes.take_departed()
        if departed:
            self.conntrack.flush_addresses(departed)
        report = ApplyReport(
            time.perf_counter() - start,
            stats.full if stats else False,
            stats.lines if stats else 0,
            stats.bytes if stats else 0,
            pending,
            missing,
            len(departed),
        )
        self.last_report = report
        self.healthy = True
        self.apply_count += 1
        for callback in self.on_applied:
            callback(report)
        return report

    def _static_config(self) -> None:
        """Host-wide kernel settings, once, at the first apply (Go Felix's static config):
        with ``ipForwarding: Enabled`` the node forwards (IPv6 too when IPv6 is on); with
        ``Disabled`` the sysctls are left as they are."""
        if self.options.ip_forwarding:
            for path, value in host_sysctls(self.options.ipv6_support):
                self.interfaces.backend.write(path, value)
        self._static_done = True

    def _start_flowtable_offload(self) -> None:
        self.flowtable_offload = flowtable_supported(self.nft.backend)
        if self.flowtable_offload:
            self.nft.set_flowtable(endpoint_rules.flowtable())
            return
        log.warning(
            "nftablesFlowTableOffload is Enabled but this kernel has no nftables flowtables "
            "(CONFIG_NF_FLOW_TABLE); running without offload"
        )
        # Before the first endpoint render, so the forward chain never references the flowtable.
        self.endpoints.config = replace(self.endpoints.config, flowtable_offload=False)

    def endpoint_statuses(self) -> dict[WorkloadEndpointID | HostEndpointID, str]:
        """Calico's endpoint status: up when the interface is configured and admin-up."""
        out: dict[WorkloadEndpointID | HostEndpointID, str] = {}
        for endpoint_id, update in self.endpoints.workloads().items():
            up = update.admin_up and self.interfaces.configured(update.interface_name)
            out[endpoint_id] = "up" if up else "down"
        for host_id, host in self.endpoints.hosts().items():
            present = host.interface_name == "*" or self.interfaces.backend.link_exists(
                host.interface_name
            )
            out[host_id] = "up" if present else "down"
        return out

    def counts(self) -> dict[str, int]:
        return {
            "endpoints": self.endpoints.workload_count + self.endpoints.host_endpoint_count,
            "policies": self.policies.policy_count,
            "profiles": self.policies.profile_count,
            "ip_sets": len(self.ipsets),
            "ipip_unsupported_pools": len(self.ipip.refused_pools),
            **self.nft.counts(),
        }

    # --- the loop --------------------------------------------------------------------------

    async def run(self, queue: asyncio.Queue[list[Message]]) -> None:
        """Consume message batches forever, applying with throttling, retries and refreshes."""
        min_interval = 1.0 / self.options.max_applies_per_second
        last_apply = 0.0
        last_route_refresh = last_nft_refresh = time.monotonic()
        getter: asyncio.Task[list[Message]] | None = None
        waker: asyncio.Task[bool] | None = None
        # One thread, created here so that it shares this thread's network namespace.
        kernel = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="felix-apply")
        try:
            while True:
                if getter is None:
                    getter = asyncio.ensure_future(queue.get())
                if waker is None:
                    self._wake.clear()
                    waker = asyncio.ensure_future(self._wake.wait())
                timeout = self.options.retry_interval if self.dirty else 5.0
                done, _ = await asyncio.wait(
                    {getter, waker}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if getter in done:
                    self.on_updates(getter.result())
                    getter = None
                    while not queue.empty():
                        self.on_updates(queue.get_nowait())
                if waker in done:
                    waker = None
                now = time.monotonic()
                if now - last_route_refresh > self.options.route_refresh_interval:
                    self.route_table.needs_resync = True
                    if self.vxlan is not None:
                        self.vxlan.table.needs_resync = True
                    last_route_refresh = now
                if now - last_nft_refresh > self.options.nft_refresh_interval:
                    self.nft.needs_full = True
                    last_nft_refresh = now
                if not self.in_sync or not self._has_work():
                    continue
                wait = last_apply + min_interval - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    while not queue.empty():
                        self.on_updates(queue.get_nowait())
                last_apply = time.monotonic()
                await self._apply_off_loop(kernel)
        finally:
            for task in (getter, waker):
                if task is not None:
                    task.cancel()
            kernel.shutdown(wait=False)

    async def _apply_off_loop(self, kernel: concurrent.futures.Executor) -> None:
        """``apply`` on the apply thread; the loop stays free meanwhile (see the invariants)."""
        self.applying = True
        try:
            await asyncio.get_running_loop().run_in_executor(kernel, self.apply)
        except DataplaneError as error:
            self.failures += 1
            self.healthy = False
            log.error("dataplane apply failed (will retry): %s", error)
        finally:
            self.applying = False
            held, self._held_links = self._held_links, []
            for interface, present in held:
                self.on_link(interface, present)

    def _has_work(self) -> bool:
        return self.dirty or any(manager.dirty for manager in self.managers)

"""The interface driver: Calico's per-interface sysctls for workload interfaces, and link events.

What it is: writes ``/proc/sys`` values when a workload interface (``cali*``) exists — proxy ARP
(so the pod's 169.254.1.1 gateway answers), ``proxy_delay=0``, ``route_localnet``, forwarding,
strict ``rp_filter`` (0 if the endpoint may spoof), ``accept_ra=0``, ``proxy_ndp`` and IPv6
forwarding (reference §3.1) — and a netlink link watcher that reports interfaces appearing and
disappearing.  What it is not: a creator of interfaces (the CNI plugin makes the veth).

Invariants: an interface is configured once per appearance (a removed and re-created veth is
configured again); a missing interface is retried when the watcher reports it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from typing import Any, Protocol

from pycalico.lib.sysctls import workload_sysctls

log = logging.getLogger(__name__)


class SysctlBackend(Protocol):
    def write(self, path: str, value: str) -> None: ...

    def link_exists(self, interface: str) -> bool: ...


class ProcSysctls:
    """Writes under ``/proc/sys`` of the current network namespace."""

    def __init__(self, root: str = "/proc/sys") -> None:
        self.root = root

    def write(self, path: str, value: str) -> None:
        full = os.path.join(self.root, path)
        try:
            with open(full, "w") as handle:
                handle.write(value)
        except FileNotFoundError:
            # IPv6 disabled on the interface, or the interface vanished meanwhile.
            log.debug("sysctl %s not present", full)

    def link_exists(self, interface: str) -> bool:
        # /proc/sys/net follows the calling thread's namespace; /sys follows the mount's.
        return os.path.exists(os.path.join(self.root, "net/ipv4/conf", interface))


class InterfaceConfigurator:
    def __init__(self, backend: SysctlBackend, ipv6: bool = True) -> None:
        self.backend = backend
        self.ipv6 = ipv6
        self._desired: dict[str, bool] = {}  # interface -> allow spoofing
        self._configured: dict[str, bool] = {}
        self._pending: set[str] = set()

    def want(self, interface: str, allow_spoofing: bool) -> None:
        if self._desired.get(interface) != allow_spoofing:
            self._desired[interface] = allow_spoofing
            self._pending.add(interface)

    def forget(self, interface: str) -> None:
        self._desired.pop(interface, None)
        self._configured.pop(interface, None)
        self._pending.discard(interface)

    def link_added(self, interface: str) -> None:
        self._configured.pop(interface, None)
        if interface in self._desired:
            self._pending.add(interface)

    def link_removed(self, interface: str) -> None:
        self._configured.pop(interface, None)
        if interface in self._desired:
            self._pending.add(interface)

    @property
    def dirty(self) -> bool:
        return bool(self._pending)

    def configured(self, interface: str) -> bool:
        return interface in self._configured

    def configured_interfaces(self) -> frozenset[str]:
        """Workload interfaces that exist and are configured (what a flowtable may list)."""
        return frozenset(self._configured)

    def apply(self) -> int:
        """Configure pending interfaces that exist; returns how many are still missing."""
        missing = 0
        for interface in sorted(self._pending):
            allow = self._desired.get(interface)
            if allow is None:
                self._pending.discard(interface)
                continue
            if not self.backend.link_exists(interface):
                missing += 1
                continue
            for path, value in workload_sysctls(interface, allow, self.ipv6):
                self.backend.write(path, value)
            self._configured[interface] = allow
            self._pending.discard(interface)
        return missing


class LinkWatcher:
    """Reports link add/remove events from a netlink socket, on a daemon thread.

    ``callback(name, present)`` is called from that thread: hand it to an event loop with
    ``loop.call_soon_threadsafe``.  The socket is opened in the caller's network namespace.
    """

    def __init__(self, callback: Callable[[str, bool], None]) -> None:
        self._callback = callback
        self._ipr: Any = None
        self._stop = False
        self._opened = threading.Event()
        self._error: BaseException | None = None
        # pyroute2's IPRoute must live on a thread without a running asyncio loop.
        self._thread = threading.Thread(target=self._run, name="felix-link-watch", daemon=True)
        self._thread.start()
        self._opened.wait(10)
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            from pyroute2 import IPRoute

            self._ipr = IPRoute()
            self._ipr.bind()
        except BaseException as error:
            self._error = error
            return
        finally:
            self._opened.set()
        while not self._stop:
            try:
                messages = self._ipr.get()
            except Exception:  # socket closed on stop
                return
            for message in messages:
                event = message.get("event")
                if event not in ("RTM_NEWLINK", "RTM_DELLINK"):
                    continue
                name = message.get_attr("IFLA_IFNAME")
                if name:
                    self._callback(name, event == "RTM_NEWLINK")

    def close(self) -> None:
        self._stop = True
        if self._ipr is not None:
            with contextlib.suppress(Exception):
                self._ipr.close()

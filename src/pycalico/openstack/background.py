"""The driver's background work in neutron-server: leadership, periodic resync, status feedback.

What it is: ``Background`` runs two loops on threads (eventlet green threads inside
neutron-server, whose ``threading`` and ``time`` are monkey-patched; real threads in tests):

* the leader loop campaigns for the election key; while this process leads it resyncs etcd to
  Neutron's view (``desired()``) at once and then every ``resync_interval`` seconds;
* the status loop, also only on the leader, lists and then watches Felix's status tree
  (``/calico/felix/v2/<region>/host/<host>/workload/openstack/...``) and reports each change as
  a Neutron port status through ``set_status(port_id, status)``; failed reports are retried on
  the next pass.

What it is not: Neutron glue (``mech_driver`` passes the two callables), nor the translation.

Invariants: only the leader writes in a resync or reports status; ``stop()`` ends both loops
and resigns; every error is logged and retried, never raised out of a loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from pycalico.openstack import mirror, translate
from pycalico.openstack.etcd_gateway import EtcdError, EtcdGateway

log = logging.getLogger(__name__)

STATUS_ROOT = "/calico/felix/v2/"


class Background:
    def __init__(
        self,
        etcd: EtcdGateway,
        desired: Callable[[], Mapping[str, dict[str, Any]]],
        set_status: Callable[[str, str], None],
        resync_interval: float = 60.0,
        election_ttl: int = 15,
    ) -> None:
        self.etcd = etcd
        self.desired = desired
        self.set_status = set_status
        self.resync_interval = resync_interval
        self.election = mirror.Election(etcd, ttl=election_ttl)
        self.leading = threading.Event()
        self.stopping = threading.Event()
        self.resyncs = 0
        self._pending: dict[str, str] = {}  # port id -> status not yet accepted by Neutron
        self._reported: dict[str, str] = {}  # port id -> status Neutron last accepted from us
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for target in (self._leader_loop, self._status_loop):
            thread = threading.Thread(target=target, name=f"calico-{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """End both loops and resign (after the leader loop's last campaign, so the key is
        free when this returns; the status loop ends with its current watch)."""
        self.stopping.set()
        for thread in self._threads[:1]:
            if thread is not threading.current_thread():
                thread.join(10)
        self.election.resign()

    def forget(self, port_id: str) -> None:
        """Neutron may have reset the port's status (a rebind): report Felix's again."""
        self._reported.pop(port_id, None)

    def resync_once(self) -> mirror.Plan:
        todo = mirror.resync(self.etcd, self.desired())
        self.resyncs += 1
        self._reported.clear()
        return todo

    def _leader_loop(self) -> None:
        next_resync = 0.0
        while not self.stopping.is_set():
            if self.election.campaign():
                if not self.leading.is_set():
                    log.info("calico: this neutron-server process is the leader")
                    self.leading.set()
                    next_resync = 0.0
                if time.monotonic() >= next_resync:
                    try:
                        self.resync_once()
                    except Exception:  # a resync must never kill the loop
                        log.exception("calico: resync failed; retried")
                    next_resync = time.monotonic() + self.resync_interval
            else:
                self.leading.clear()
            self.stopping.wait(min(self.election.ttl / 3, max(self.resync_interval, 0.5)))

    def _status_loop(self) -> None:
        while not self.stopping.is_set():
            if not self.leading.wait(1.0):
                continue
            try:
                self._follow_status()
            except (EtcdError, OSError, ValueError) as error:
                log.info("calico: status watch restarts: %s", error)
            except Exception:
                log.exception("calico: status watch failed; restarting")
            self.stopping.wait(0.2)

    def _report(self, port_id: str, status: str) -> None:
        if self._reported.get(port_id) != status:
            self._pending[port_id] = status
        for pending_id, pending_status in list(self._pending.items()):
            try:
                self.set_status(pending_id, pending_status)
            except Exception as error:  # Neutron refused (DB busy...): keep it for the next pass
                log.warning("calico: port %s status %s not set: %s", pending_id, pending_status,
                            error)  # fmt: skip
                continue
            self._pending.pop(pending_id, None)
            self._reported[pending_id] = pending_status

    def _follow_status(self) -> None:
        """List, then watch from the listed revision; a watch that ends is resumed by the
        caller with a fresh list (only changed statuses reach Neutron)."""
        items, revision = self.etcd.get_prefix(STATUS_ROOT)
        for item in items:
            if found := translate.status_key_port(item.key):
                self._report(found[1], translate.port_status(item.value))
        for event in self.etcd.watch(STATUS_ROOT, revision + 1, timeout=10.0):
            if self.stopping.is_set() or not self.leading.is_set():
                return
            found = translate.status_key_port(event.key)
            if found is None:
                continue
            value = event.value if event.kind != "DELETE" else None
            self._report(found[1], translate.port_status(value))

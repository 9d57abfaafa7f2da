"""The IPIP refusal: pools that ask for IPIP are reported, and nothing is programmed for them.

What it is: Go Felix's IPIP manager reduced to what this project can honour.  pycalico has no
IPIP dataplane, and its kernel has no ``ipip`` module, so a pool with ``ipipMode: Always`` or
``CrossSubnet`` is accepted in the datastore (refusing it at ``calicoctl apply`` would break
Calico's manifests, whose default pool asks for IPIP) and Felix logs, once per pool, an error
naming the pool, the mode and the missing kernel support, and counts such pools
(``felix_ipip_unsupported_pools``).  No tunnel device, tunnel route or IPIP rule is created, so
there is nothing half-programmed to clean up when the pool goes or changes to VXLAN.

What it is not: the kernel probe (``drivers.ipip``), which runs once, at the first IPIP pool.
Invariant: ``on_update`` does no I/O; the probe and the log happen in
``complete_deferred_work``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pycalico.felix.drivers.ipip import ipip_unsupported_reason
from pycalico.felix.messages import IPPoolRemove, IPPoolUpdate, Message

log = logging.getLogger(__name__)


class IPIPManager:
    def __init__(self, probe: Callable[[], str | None] = ipip_unsupported_reason) -> None:
        self._probe = probe
        self._modes: dict[str, str] = {}  # pool id -> ipipMode, IPIP pools only
        self._reported: dict[str, str] = {}
        self._dirty = False

    def on_update(self, message: Message) -> None:
        if isinstance(message, IPPoolUpdate):
            if message.ipip_mode in ("Always", "CrossSubnet"):
                if self._modes.get(message.id) != message.ipip_mode:
                    self._modes[message.id] = message.ipip_mode
                    self._dirty = True
            elif self._modes.pop(message.id, None) is not None:
                self._dirty = True
        elif isinstance(message, IPPoolRemove) and self._modes.pop(message.id, None) is not None:
            self._dirty = True

    @property
    def dirty(self) -> bool:
        return self._dirty

    @property
    def refused_pools(self) -> dict[str, str]:
        """Pool id -> ipipMode of every enabled pool that asks for IPIP."""
        return dict(self._modes)

    def complete_deferred_work(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        for pool, mode in self._modes.items():
            if self._reported.get(pool) == mode:
                continue
            reason = self._probe() or "pycalico has no IPIP dataplane"
            log.error(
                "IP pool %s has ipipMode %s, but %s: Felix programs no IPIP for it (no tunl0 "
                "device, no tunnel routes); use vxlanMode instead",
                pool,
                mode,
                reason,
            )
        self._reported = dict(self._modes)

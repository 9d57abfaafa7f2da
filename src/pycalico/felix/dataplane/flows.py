"""Felix's flow logs and policy-rule counters: the running part (docs/flows.md).

What it is: ``FlowLogs`` follows the dataplane messages (to name rules and endpoints), reads the
NFLOG group of the deny paths as packets arrive (``loop.add_reader``, no thread, no process) and
appends one JSON line per denied packet to ``<directory>/denied.jsonl``; every
``counters_interval`` it lists the table once and adds each rule's new packets/bytes to the
Prometheus counters ``felix_policy_rule_packets_total`` / ``felix_policy_rule_bytes_total``
(labels: kind, tier, policy, direction, rule_index, action).
What it is not: rendering (the ``counter`` and ``log group`` statements come from ``rules``),
or parsing/naming (``rules.flows``).

Invariants: opt-in (the daemon builds it only when ``flowLogsFileEnabled`` or
``policyRuleCountersEnabled``); a failing read is logged and retried at the next interval, it
never stops Felix; records are flushed per batch of packets, so a reader sees them at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import IO, Any

from prometheus_client import CollectorRegistry, Counter

from pycalico.felix.drivers import nflog
from pycalico.felix.rules import flows

log = logging.getLogger(__name__)

DENIED_FILE = "denied.jsonl"
LABELS = ("kind", "tier", "policy", "direction", "rule_index", "action")


def _libnftables() -> Any:
    """A libnftables context of this namespace, or None (then ``nft -j`` per read)."""
    try:
        import nftables
    except ImportError:
        return None
    return nftables.Nftables()


class FlowLogs:
    def __init__(
        self,
        node: str,
        *,
        directory: str = "",
        nflog_group: int = 0,
        counters_interval: float = 0.0,
        registry: CollectorRegistry | None = None,
        nft_factory: Callable[[], Any] | None = None,
    ) -> None:
        self.node = node
        self.directory = directory
        self.nflog_group = nflog_group
        self.counters_interval = counters_interval
        self.index = flows.RuleIndex()
        self.deltas = flows.CounterDeltas()
        self.totals: dict[flows.RuleIdentity, tuple[int, int]] = {}
        self.records_written = 0
        self._nft_factory = nft_factory
        self._nft: Any = None
        self._socket: nflog.NflogSocket | None = None
        self._file: IO[str] | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        registry = registry or CollectorRegistry()
        self.packets = Counter(
            "felix_policy_rule_packets", "Packets counted by one policy/profile rule.",
            LABELS, registry=registry,
        )  # fmt: skip
        self.bytes = Counter(
            "felix_policy_rule_bytes", "Bytes counted by one policy/profile rule.",
            LABELS, registry=registry,
        )  # fmt: skip
        self.denied = Counter(
            "felix_denied_flow_records", "Denied-packet records written to the flow log.",
            registry=registry,
        )  # fmt: skip

    @property
    def path(self) -> str:
        return os.path.join(self.directory, DENIED_FILE)

    def observe(self, messages: Iterable[object]) -> None:
        self.index.observe(messages)

    def start(self) -> None:
        """Bind the NFLOG group and start the counter loop (in the current network namespace)."""
        loop = self._loop = asyncio.get_running_loop()
        if self.nflog_group and self.directory:
            os.makedirs(self.directory, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open
            self._socket = nflog.NflogSocket(self.nflog_group)
            loop.add_reader(self._socket.fileno(), self.on_readable)
            log.info("Denied flows from NFLOG group %d to %s", self.nflog_group, self.path)
        if self.counters_interval > 0:
            self._nft = (self._nft_factory or _libnftables)()
            self._task = asyncio.ensure_future(self._counter_loop())

    def on_readable(self) -> None:
        if self._socket is None or self._file is None:
            return
        try:
            packets = self._socket.read()
        except OSError as error:
            log.warning("NFLOG read failed: %s", error)
            return
        self.write(packets, time.time())

    def write(self, packets: Iterable[flows.NflogPacket], now: float) -> None:
        if self._file is None:
            return
        count = 0
        for packet in packets:
            record = flows.denied_record(packet, self.index, self.node, now)
            if record is not None:
                self._file.write(json.dumps(record, sort_keys=True) + "\n")
                count += 1
        if count:
            self._file.flush()
            self.records_written += count
            self.denied.inc(count)

    async def _counter_loop(self) -> None:
        while True:  # sleep first: at start the dataplane has not created the table yet
            await asyncio.sleep(self.counters_interval)
            try:
                self.read_counters()
            except Exception as error:  # a failed read is retried next interval
                log.warning("rule counter read failed: %s", error)

    def read_counters(self) -> None:
        """One listing of the table: add every rule's new counts to the metrics."""
        document = nflog.read_rule_counters(self._nft)
        self.add_counts(flows.counter_samples(document))

    def add_counts(self, samples: Iterable[flows.CounterSample]) -> None:
        for rule_id, (packets, octets) in self.deltas.update(samples).items():
            identity = self.index.rule(rule_id)
            if identity is None:
                continue  # a rule of a policy removed since: nobody to name
            labels = identity.labels()
            self.packets.labels(**labels).inc(packets)
            self.bytes.labels(**labels).inc(octets)
            old = self.totals.get(identity, (0, 0))
            self.totals[identity] = (old[0] + packets, old[1] + octets)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._socket is not None:
            if self._loop is not None and not self._loop.is_closed():
                self._loop.remove_reader(self._socket.fileno())
            self._socket.close()
            self._socket = None
        if self._file is not None:
            self._file.close()
            self._file = None

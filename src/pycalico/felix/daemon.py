"""``calico-felix``: the per-node agent — syncer → calculation graph → dataplane, plus status.

What it is: the wiring.  It loads the bootstrap config (built-in < file < environment), connects
to etcd, runs the datastore ``Syncer`` into ``CalcGraph``, waits for the first in-sync to learn
the datastore config (FelixConfiguration ``default`` and ``node.<host>``), then builds the
dataplane with the effective config and feeds it every message.  Alongside: the link watcher,
the heartbeat/endpoint-status reporter, ``/liveness`` + ``/readiness`` and ``/metrics``.
What it is not: logic — every decision lives in ``felix.calc``, ``felix.dataplane``,
``felix.rules`` and ``felix.config``.

Invariants:

* Nothing touches the kernel before the first in-sync (the dataplane does not exist yet).
* A change to a restart-only parameter ends the process with ``EXIT_CONFIG_CHANGED`` (129)
  after an orderly shutdown; the kernel state is left in place for the next Felix.
* SIGTERM/SIGINT stop Felix without touching the kernel: rules, routes and sysctls stay, so
  workloads keep their connectivity while Felix is down.
* The datastore lock (ClusterInformation ``default`` ``datastoreReady: false``, see
  ``felix.calc.ready``) is honoured as Go Felix does: at start, Felix waits (live, not ready,
  logging "Waiting for datastore to be initialized (or migrated)") before it syncs anything;
  when the flag turns false while it runs, it forwards nothing more to the dataplane and exits
  with ``EXIT_DATASTORE_NOT_READY`` for its supervisor (calico-node) to restart it — the
  restarted Felix then waits.  Either way the kernel keeps the state it had; after the unlock
  the first apply brings it to the datastore's state of that moment.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import cast

from pycalico.datastore.api import KVStore
from pycalico.datastore.resource_syncer import ResourceBatch, ResourceSyncer
from pycalico.datastore.syncer import SyncStatus
from pycalico.datastore.updates import ResourceKey
from pycalico.felix import config as felix_config
from pycalico.felix.calc import CalcGraph
from pycalico.felix.calc import ready as ready_flag
from pycalico.felix.dataplane.flows import FlowLogs
from pycalico.felix.dataplane.loop import ApplyReport, Dataplane, DataplaneOptions
from pycalico.felix.dataplane.vxlan import VXLANOptions
from pycalico.felix.messages import ConfigUpdate, DatastoreNotReady, InSync, Message
from pycalico.felix.status import (
    EndpointStatusFiles,
    HttpServer,
    Metrics,
    StatusReporter,
    desired_status_files,
)
from pycalico.model.node import ClusterInformation

log = logging.getLogger("pycalico.felix")

_LEVELS = {"Debug": 10, "Info": 20, "Warning": 30, "Error": 40, "Fatal": 50}

# Go Felix ends with log.Fatal (status 1) on "datastore became unready"; calico-node restarts it.
EXIT_DATASTORE_NOT_READY = 1
# Logged once, when the first apply after in-sync has programmed the kernel.
PROGRAMMED_MESSAGE = "Dataplane programmed"
# Go Felix logs its waiting line on every 1 s poll; a watch does not poll, so repeat it this often.
WAITING_LOG_INTERVAL = 10.0


class ConfigChanged(Exception):
    def __init__(self, fields: list[str]) -> None:
        super().__init__(", ".join(fields))
        self.fields = fields


def setup_logging(config: felix_config.FelixConfig) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    fmt = logging.Formatter("%(asctime)s [%(levelname)s] felix %(name)s: %(message)s")
    screen = logging.StreamHandler(sys.stderr)
    screen.setLevel(_LEVELS[config.log_severity_screen])
    screen.setFormatter(fmt)
    root.addHandler(screen)
    path = config.log_file_path
    if path and path.lower() != "none":
        with contextlib.suppress(OSError):
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            file_handler = logging.FileHandler(path)
            file_handler.setLevel(_LEVELS[config.log_severity_file])
            file_handler.setFormatter(fmt)
            root.addHandler(file_handler)
    root.setLevel(logging.DEBUG)


def _real_dataplane(options: DataplaneOptions) -> Dataplane:
    from pycalico.felix.drivers.conntrack import ConntrackCommand
    from pycalico.felix.drivers.interfaces import ProcSysctls
    from pycalico.felix.drivers.nft import default_backend
    from pycalico.felix.drivers.routes import NetlinkRoutes
    from pycalico.felix.drivers.vxlan import NetlinkVXLAN

    routes = NetlinkRoutes(options.route_protocol)
    return Dataplane(
        options,
        default_backend(),
        routes,
        ProcSysctls(),
        ConntrackCommand(),
        vxlan=NetlinkVXLAN(routes.netlink),
    )


def dataplane_options(config: felix_config.FelixConfig) -> DataplaneOptions:
    return DataplaneOptions(
        render=config.render(),
        route_protocol=config.device_route_protocol,
        route_priority_v4=config.ipv4_normal_route_priority,
        route_priority_v6=config.ipv6_normal_route_priority,
        ipv6_support=config.ipv6_support,
        ip_forwarding=config.ip_forwarding == "Enabled",
        route_refresh_interval=config.route_refresh_interval or 90.0,
        nft_refresh_interval=config.iptables_refresh_interval or 180.0,
        vxlan=VXLANOptions(
            hostname=config.hostname,
            enabled=config.vxlan_enabled,
            vni=config.vxlan_vni,
            port=config.vxlan_port,
            mtu=config.vxlan_mtu,
            mtu_v6=config.vxlan_mtu_v6,
            mtu_file=config.mtu_file_path,
        ),
    )


class Felix:
    def __init__(
        self,
        bootstrap: felix_config.FelixConfig,
        kv: KVStore,
        file_values: dict[str, str] | None = None,
        environ: dict[str, str] | None = None,
        dataplane_factory: Callable[[DataplaneOptions], Dataplane] | None = None,
    ) -> None:
        self.config = bootstrap
        self.kv = kv
        self.file_values = file_values or {}
        self.environ = environ if environ is not None else dict(os.environ)
        self.hostname = bootstrap.hostname
        self.graph = CalcGraph(self.hostname)
        self.metrics = Metrics()
        self.dataplane: Dataplane | None = None
        self.flows: FlowLogs | None = None  # flow logs / rule counters (docs/flows.md), opt-in
        self.queue: asyncio.Queue[list[Message]] = asyncio.Queue()
        self.reporter = StatusReporter(
            kv, self.hostname, bootstrap.openstack_region, bootstrap.reporting_ttl
        )
        prefix = bootstrap.endpoint_status_path_prefix
        self.status_files = EndpointStatusFiles(prefix) if prefix else None
        self._datastore_config: dict[str, str] = {}
        self._tick = time.monotonic()
        self._link_watcher: object | None = None
        self._servers: list[HttpServer] = []
        self.health_port = 0
        self.metrics_port = 0
        self._dataplane_factory = dataplane_factory or _real_dataplane
        self._pending: list[Message] = []
        self._dataplane_task: asyncio.Task[None] | None = None
        self.datastore_locked = False  # waiting at start for datastoreReady to turn true
        # Set once in sync: before, ``config`` may lack FelixConfiguration (an early flush
        # carries an empty ConfigUpdate), whose reportingInterval calico-node's default sets to
        # 0s (heartbeat off).
        self._datastore_config_known = asyncio.Event()
        self._programmed = False  # the first apply has completed
        self._cluster_information = ResourceKey(
            "ClusterInformation", ready_flag.CLUSTER_INFORMATION_NAME
        )

    # --- health ------------------------------------------------------------------------------

    def live(self) -> bool:
        return time.monotonic() - self._tick < 30

    def ready(self) -> bool:
        dataplane = self.dataplane
        return (
            not self.datastore_locked
            and dataplane is not None
            and dataplane.in_sync
            and dataplane.last_report is not None
            and dataplane.healthy
            and self.live()
        )

    def _health_routes(self) -> dict[str, Callable[[], tuple[int, str, bytes]]]:
        def check(ok: bool) -> tuple[int, str, bytes]:
            return (200, "text/plain", b"ok\n") if ok else (503, "text/plain", b"not ready\n")

        def readiness() -> tuple[int, str, bytes]:
            if self.datastore_locked:
                return 503, "text/plain", f"{ready_flag.NOT_READY_STATUS}\n".encode()
            return check(self.ready())

        return {"/liveness": lambda: check(self.live()), "/readiness": readiness}

    # --- config ------------------------------------------------------------------------------

    def _effective(self, datastore: dict[str, str]) -> felix_config.FelixConfig:
        return felix_config.load(datastore, self.file_values, self.environ, self.hostname)

    def _on_config(self, update: ConfigUpdate) -> None:
        self._datastore_config = dict(update.values)
        new = self._effective(self._datastore_config)
        if self.dataplane is not None:
            changed = felix_config.restart_needed(self.config, new)
            if changed:
                raise ConfigChanged(changed)
        self.config = new
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                handler.setLevel(_LEVELS[new.log_severity_screen])
        self.reporter.ttl = max(1, int(new.reporting_ttl))

    # --- main loop ---------------------------------------------------------------------------

    async def run(self) -> int:
        tasks: list[asyncio.Task[object]] = []
        try:
            await self._start_servers()
            tasks.append(asyncio.ensure_future(self._ticker()))
            await self._wait_for_datastore_ready()
            tasks.append(asyncio.ensure_future(self._report_loop()))
            # The one typed stream, following exactly the kinds the graph has handlers for.
            stream = ResourceSyncer(self.kv, sorted(self.graph.kinds), all_affinities=True)
            async for batch in stream:
                start = time.perf_counter()
                messages = self.graph.on_batch(batch.updates, batch.in_sync)
                self.metrics.calc_time.observe(time.perf_counter() - start)
                if messages and isinstance(messages[0], DatastoreNotReady):
                    # Nothing from this flush on reaches the kernel; the next Felix waits.
                    log.warning(ready_flag.BECAME_UNREADY_MESSAGE)
                    return EXIT_DATASTORE_NOT_READY
                for message in messages:
                    if isinstance(message, ConfigUpdate):
                        self._on_config(message)
                if any(isinstance(message, InSync) for message in messages):
                    self._datastore_config_known.set()
                if self.dataplane is None:
                    self._pending += messages
                    if any(isinstance(message, InSync) for message in messages):
                        self._dataplane_task = self._start_dataplane(self._pending)
                        tasks.append(self._dataplane_task)
                        self._pending = []
                elif messages:
                    if self.flows is not None:
                        self.flows.observe(messages)
                    self.queue.put_nowait(messages)
                if self._dataplane_task is not None and self._dataplane_task.done():
                    self._dataplane_task.result()  # a crashed dataplane loop ends Felix
        except ConfigChanged as change:
            log.warning("Restart-only config changed (%s): exiting for a restart", change)
            return felix_config.EXIT_CONFIG_CHANGED
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._close()
        return 0

    async def _wait_for_datastore_ready(self) -> None:
        """Return once ClusterInformation ``default`` does not say ``datastoreReady: false``.

        Go Felix polls the flag every second before it creates its syncer; here a syncer on
        that one key answers as soon as ``calicoctl datastore migrate unlock`` writes it.
        """
        syncer = ResourceSyncer(self.kv, ["ClusterInformation"])
        info: ClusterInformation | None = None
        reminder: asyncio.Task[None] | None = None
        try:
            # batches() is an async generator: close it so its watch ends with the wait.
            stream = cast(AsyncGenerator[ResourceBatch, None], syncer.batches())
            async with contextlib.aclosing(stream) as batches:
                async for batch in batches:
                    for update in batch.updates:
                        if update.key == self._cluster_information:
                            resource = update.resource
                            info = resource if isinstance(resource, ClusterInformation) else None
                    if syncer.status is not SyncStatus.IN_SYNC:
                        continue
                    if ready_flag.datastore_ready(info):
                        if self.datastore_locked:
                            log.info("Datastore is ready (unlocked): starting to sync")
                        self.datastore_locked = False
                        return
                    self.datastore_locked = True
                    if reminder is None:
                        reminder = asyncio.ensure_future(self._log_locked())
        finally:
            if reminder is not None:
                reminder.cancel()
                await asyncio.gather(reminder, return_exceptions=True)

    @staticmethod
    async def _log_locked() -> None:
        while True:
            log.warning(
                "%s: ClusterInformation default has datastoreReady=false "
                "(calicoctl datastore migrate unlock ends it)",
                ready_flag.WAITING_MESSAGE,
            )
            await asyncio.sleep(WAITING_LOG_INTERVAL)

    def _start_dataplane(self, first: list[Message]) -> asyncio.Task[None]:
        log.info("In sync with the datastore: starting the dataplane for %s", self.hostname)
        dataplane = self._dataplane_factory(dataplane_options(self.config))
        dataplane.on_applied.append(self._on_applied)
        self.dataplane = dataplane
        self._watch_links(dataplane)
        self._start_flows(first)
        self.queue.put_nowait(first)
        return asyncio.ensure_future(dataplane.run(self.queue))

    def _start_flows(self, first: list[Message]) -> None:
        config = self.config
        if not (config.flow_logs_file_enabled or config.policy_rule_counters_enabled):
            return
        self.flows = FlowLogs(
            self.hostname,
            directory=config.flow_logs_file_directory if config.flow_logs_file_enabled else "",
            nflog_group=config.flow_logs_nflog_group if config.flow_logs_file_enabled else 0,
            counters_interval=(
                config.policy_rule_counters_interval if config.policy_rule_counters_enabled else 0
            ),
            registry=self.metrics.registry,
        )
        self.flows.observe(first)
        try:
            self.flows.start()
        except OSError as error:  # no nfnetlink_log, or the group is taken: Felix goes on
            log.error("flow logs unavailable: %s", error)

    def _watch_links(self, dataplane: Dataplane) -> None:
        from pycalico.felix.drivers.interfaces import LinkWatcher

        loop = asyncio.get_running_loop()
        prefixes = tuple(self.config.interface_prefix)

        def on_link(name: str, present: bool) -> None:
            if name.startswith(prefixes):
                loop.call_soon_threadsafe(dataplane.on_link, name, present)

        try:
            self._link_watcher = LinkWatcher(on_link)
        except Exception as error:  # netlink unavailable: periodic retries still converge
            log.warning("link watcher unavailable: %s", error)

    def _on_applied(self, report: ApplyReport) -> None:
        if not self._programmed:
            self._programmed = True
            # Operators (and bench.felix_cold_start) read this line: the dataplane is programmed.
            log.info(
                "%s: first apply %.3f s, %d nft bytes, %d routes pending",
                PROGRAMMED_MESSAGE,
                report.seconds,
                report.nft_bytes,
                report.routes_pending,
            )
        self.metrics.apply_time.observe(report.seconds)
        if report.nft_bytes:
            self.metrics.nft_bytes.observe(report.nft_bytes)
        if report.nft_full:
            self.metrics.resyncs.inc()
        if self.dataplane is not None:
            self.metrics.set_counts(self.dataplane.counts())
        log.debug("applied: %s", report)

    async def _ticker(self) -> None:
        while True:
            self._tick = time.monotonic()
            await asyncio.sleep(1)

    async def _report_loop(self) -> None:
        # As Go Felix, which reads its datastore config before it reports anything: a heartbeat
        # sent on the environment's defaults alone left, with calico-node's default
        # (reportingInterval 0s), a status key for 90 s and a last_reported_status for ever.
        await self._datastore_config_known.wait()
        next_heartbeat = 0.0
        while True:
            now = time.monotonic()
            interval = self.config.reporting_interval
            if interval > 0 and now >= next_heartbeat:
                await self.reporter.report()
                next_heartbeat = now + interval
            dataplane = self.dataplane
            if (
                dataplane is not None
                and dataplane.last_report is not None
                and not dataplane.applying
            ):
                statuses = dataplane.endpoint_statuses()
                workloads = dataplane.endpoints.workloads() if self.status_files else {}
                if self.config.endpoint_reporting_enabled:
                    await self.reporter.report_endpoints(statuses)
                else:
                    await self.reporter.clear_endpoints()
                if self.status_files is not None:
                    files = desired_status_files(statuses, workloads)
                    await asyncio.to_thread(self.status_files.reconcile, files)
            await asyncio.sleep(max(0.2, min(self.config.endpoint_reporting_delay_secs, 5.0)))

    async def _start_servers(self) -> None:
        if self.config.health_enabled:
            server = HttpServer(
                self.config.health_host,
                self.config.health_port,
                self._health_routes(),
            )
            self.health_port = await server.start()
            self._servers.append(server)
            log.info("Health endpoints on %s:%d", server.host, self.health_port)
        if self.config.prometheus_metrics_enabled:
            server = HttpServer(
                self.config.prometheus_metrics_host,
                self.config.prometheus_metrics_port,
                {"/metrics": self.metrics.exposition},
            )
            self.metrics_port = await server.start()
            self._servers.append(server)
            log.info("Metrics on %s:%d", server.host or "*", self.metrics_port)

    async def _close(self) -> None:
        if self.flows is not None:
            self.flows.close()
        for server in self._servers:
            await server.close()
        close = getattr(self._link_watcher, "close", None)
        if close is not None:
            close()


def _datastore_kv(config: felix_config.FelixConfig) -> KVStore:
    from pycalico.datastore.etcd import EtcdKVStore, TLSFiles

    tls = None
    if config.etcd_ca_file or config.etcd_cert_file or config.etcd_key_file:
        tls = TLSFiles(
            config.etcd_ca_file or None, config.etcd_cert_file or None,
            config.etcd_key_file or None,
        )  # fmt: skip
    return EtcdKVStore(list(config.etcd_endpoints), tls=tls)


async def _amain(config_file: str) -> int:
    file_values = felix_config.read_config_file(config_file)
    bootstrap = felix_config.load(None, file_values, dict(os.environ))
    setup_logging(bootstrap)
    kv = _datastore_kv(bootstrap)
    felix = Felix(bootstrap, kv, file_values, dict(os.environ))
    main = asyncio.ensure_future(felix.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, main.cancel)
    try:
        return await main
    except asyncio.CancelledError:
        log.info("Felix stopping (signal); the dataplane is left as it is")
        return 0
    finally:
        await kv.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="calico-felix", description="pycalico Felix agent")
    parser.add_argument(
        "--config-file",
        "-c",
        default=os.environ.get("FELIX_CONFIGFILE", felix_config.DEFAULT_CONFIG_FILE),
        help="Felix config file (INI, section [global]); default $FELIX_CONFIGFILE or %(default)s",
    )
    args = parser.parse_args(argv)
    try:
        return asyncio.run(_amain(args.config_file))
    except felix_config.ConfigError as error:
        print(f"calico-felix: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

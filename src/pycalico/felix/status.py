"""Felix's status: heartbeat and endpoint status in etcd, health over HTTP, Prometheus metrics.

What it is:

* ``StatusReporter`` — every ``reportingInterval`` writes ``{"time", "uptime", "first_update"}``
  to ``/calico/felix/v2/<region>/host/<host>/status`` under a lease of ``reportingTTL`` and to
  ``.../last_reported_status`` without one (reference §1.3); when endpoint reporting is on,
  ``{"status": "up|down"}`` per local endpoint, deleting keys of endpoints that are gone
  (including leftovers of a previous run, swept once after the first report).
* ``EndpointStatusFiles`` — Calico's endpoint status files (``felix/statusrep``, read by the CNI
  plugin): one file per local workload endpoint that is up, in
  ``<endpointStatusPathPrefix>/endpoint-status/``, named ``<orchestrator> <workload> <endpoint>``
  (each part URL path-escaped, so ``default/pod`` is ``default%2Fpod``) and holding the JSON
  ``{"ifaceName", "mac", "ipv4Nets", "ipv6Nets"}`` (empty ones omitted).  A file goes when its
  endpoint goes down or away; the first reconcile (and any after a file error) lists the
  directory, so files left by a previous run are swept.
* ``HttpServer`` — a tiny asyncio HTTP/1.0 server for ``/liveness``, ``/readiness`` (healthHost:
  healthPort) and ``/metrics`` (prometheusMetricsHost:prometheusMetricsPort).
* ``Metrics`` — Felix's Prometheus series (Calico's names where Calico has one).

What it is not: the decider of readiness (the daemon passes the checks in).
Invariant: datastore errors never escape a report (status is best effort; the next interval
retries, with a new lease if the old one expired).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import time
import urllib.parse
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from pycalico.datastore import paths
from pycalico.datastore.api import DatastoreError, KVStore, Lease
from pycalico.felix.messages import HostEndpointID, WorkloadEndpointID, WorkloadEndpointUpdate

log = logging.getLogger(__name__)

EndpointKey = WorkloadEndpointID | HostEndpointID


class StatusReporter:
    def __init__(
        self,
        kv: KVStore,
        hostname: str,
        region: str = "",
        ttl: float = 90.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kv = kv
        self.hostname = hostname
        self.region = region or None
        self.ttl = max(1, int(ttl))
        self.clock = clock
        self.started = clock()
        self._lease: Lease | None = None
        self._first = True
        self._endpoints: dict[EndpointKey, str] = {}
        self._swept = False
        self.reports = 0

    def _endpoint_key(self, endpoint: EndpointKey) -> str:
        if isinstance(endpoint, WorkloadEndpointID):
            return paths.workload_endpoint_status_key(
                self.hostname, endpoint.orchestrator, endpoint.workload, endpoint.endpoint,
                self.region,
            )  # fmt: skip
        return paths.host_endpoint_status_key(self.hostname, endpoint.name, self.region)

    async def report(self) -> bool:
        """One heartbeat; False if the datastore refused it (retried next time)."""
        value = json.dumps(
            {
                "time": datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z"),
                "uptime": round(self.clock() - self.started, 3),
                "first_update": self._first,
            }
        ).encode()
        try:
            if self._lease is None:
                self._lease = await self.kv.grant_lease(self.ttl)
            else:
                await self.kv.refresh_lease(self._lease)
            await self.kv.put(
                paths.felix_status_key(self.hostname, self.region), value, lease=self._lease
            )
            await self.kv.put(
                paths.felix_last_reported_status_key(self.hostname, self.region), value
            )
        except DatastoreError as error:
            log.warning("status report failed: %s", error)
            self._lease = None
            return False
        self._first = False
        self.reports += 1
        return True

    async def report_endpoints(self, statuses: Mapping[EndpointKey, str]) -> None:
        """Write changed endpoint statuses, delete gone ones (and, once, stale keys)."""
        try:
            if not self._swept:
                await self._sweep(statuses)
            for endpoint, status in statuses.items():
                if self._endpoints.get(endpoint) != status:
                    await self.kv.put(
                        self._endpoint_key(endpoint), json.dumps({"status": status}).encode()
                    )
                    self._endpoints[endpoint] = status
            for endpoint in list(self._endpoints.keys() - statuses.keys()):
                with contextlib.suppress(DatastoreError):
                    await self.kv.delete(self._endpoint_key(endpoint))
                del self._endpoints[endpoint]
        except DatastoreError as error:
            log.warning("endpoint status report failed: %s", error)

    async def _sweep(self, statuses: Mapping[EndpointKey, str]) -> None:
        keep = {self._endpoint_key(endpoint) for endpoint in statuses}
        prefix = paths.felix_host_prefix(self.hostname, self.region)
        listing = await self.kv.list(prefix)
        for item in listing.items:
            rest = item.key[len(prefix) :]
            if (rest.startswith(("workload/", "endpoint/"))) and item.key not in keep:
                with contextlib.suppress(DatastoreError):
                    await self.kv.delete(item.key)
        self._swept = True

    async def clear_endpoints(self) -> None:
        """Endpoint reporting was turned off: delete what we wrote."""
        for endpoint in list(self._endpoints):
            with contextlib.suppress(DatastoreError):
                await self.kv.delete(self._endpoint_key(endpoint))
        self._endpoints.clear()


STATUS_DIR = "endpoint-status"


def status_filename(endpoint: WorkloadEndpointID) -> str:
    """Calico's ``names.WorkloadEndpointKeyToStatusFilename``: Go's ``url.PathEscape`` of each
    part (which keeps ``$&+:=@``), joined by spaces."""
    parts = (endpoint.orchestrator, endpoint.workload, endpoint.endpoint)
    return " ".join(urllib.parse.quote(part, safe="$&+:=@") for part in parts)


def status_content(update: WorkloadEndpointUpdate) -> str:
    """The file's JSON, as Go's ``json.Marshal`` of epstatusfile's ``WorkloadEndpointStatus``."""
    fields = {
        "ifaceName": update.interface_name,
        "mac": update.mac,
        "ipv4Nets": list(update.ipv4_nets),
        "ipv6Nets": list(update.ipv6_nets),
    }
    return json.dumps({k: v for k, v in fields.items() if v}, separators=(",", ":"))


def desired_status_files(
    statuses: Mapping[EndpointKey, str],
    workloads: Mapping[WorkloadEndpointID, WorkloadEndpointUpdate],
) -> dict[str, str]:
    """File name -> content for every local workload endpoint whose status is up."""
    return {
        status_filename(endpoint): status_content(update)
        for endpoint, update in workloads.items()
        if statuses.get(endpoint) == "up"
    }


class EndpointStatusFiles:
    """Keeps ``<prefix>/endpoint-status/`` equal to the desired files (blocking file I/O: the
    daemon calls it off the event loop)."""

    def __init__(self, prefix: str) -> None:
        self.directory = os.path.join(prefix, STATUS_DIR)
        self._written: dict[str, str] | None = None  # None: read the directory first

    def reconcile(self, desired: Mapping[str, str]) -> bool:
        """Write new or changed files, delete the rest; False (and a resync next time) on an
        error."""
        try:
            if self._written is None:
                self._written = self._read_directory()
            written = self._written
            for name, content in desired.items():
                if written.get(name) != content:
                    self._write(name, content)
                    written[name] = content
            for name in list(written.keys() - desired.keys()):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.directory, name))
                del written[name]
        except OSError as error:
            log.warning("endpoint status files in %s: %s (will resync)", self.directory, error)
            self._written = None
            return False
        return True

    def _read_directory(self) -> dict[str, str]:
        os.makedirs(self.directory, mode=0o755, exist_ok=True)
        found: dict[str, str] = {}
        for entry in os.scandir(self.directory):
            if entry.is_file():
                try:
                    with open(entry.path, encoding="utf-8", errors="replace") as handle:
                        found[entry.name] = handle.read()
                except FileNotFoundError:
                    continue
        return found

    def _write(self, name: str, content: str) -> None:
        """Atomically (rename), so a reader never sees half a file."""
        path = os.path.join(self.directory, name)
        temporary = os.path.join(self.directory, f".{name}.tmp")
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(content)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)


class HttpServer:
    """GET-only HTTP/1.0: each route returns (status, content type, body)."""

    def __init__(
        self, host: str, port: int, routes: Mapping[str, Callable[[], tuple[int, str, bytes]]]
    ) -> None:
        self.host = host
        self.port = port
        self.routes = dict(routes)
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host or None, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = request.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else ""
            handler = self.routes.get(path)
            if handler is None:
                status, content_type, body = 404, "text/plain", b"not found\n"
            else:
                status, content_type, body = handler()
            reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}.get(status, "")
            writer.write(
                f"HTTP/1.0 {status} {reason}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


class Metrics:
    """Felix's Prometheus series, in a registry of their own (one per Felix)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.calc_time = Histogram(
            "felix_calc_graph_update_time_seconds",
            "Time to process one batch of datastore updates in the calculation graph.",
            registry=r,
        )
        self.apply_time = Histogram(
            "felix_int_dataplane_apply_time_seconds",
            "Time to apply one batch of changes to the dataplane.",
            registry=r,
        )
        self.apply_failures = Counter(
            "felix_int_dataplane_failures", "Dataplane apply failures.", registry=r
        )
        self.resyncs = Counter(
            "felix_resyncs_started", "Full nftables resyncs (first apply and after failures).",
            registry=r,
        )  # fmt: skip
        self.endpoints = Gauge(
            "felix_active_local_endpoints", "Local workload and host endpoints.", registry=r
        )
        self.policies = Gauge("felix_active_local_policies", "Active local policies.", registry=r)
        self.profiles = Gauge("felix_active_local_profiles", "Active local profiles.", registry=r)
        self.ip_sets = Gauge("felix_ipsets_calico", "IP sets (ids) programmed.", registry=r)
        self.rules = Gauge("felix_nft_rules", "Rules in the calico nftables table.", registry=r)
        self.chains = Gauge("felix_nft_chains", "Chains in the calico nftables table.", registry=r)
        self.set_elements = Gauge(
            "felix_nft_set_elements", "Elements in the calico table's sets.", registry=r
        )
        self.ipip_unsupported = Gauge(
            "felix_ipip_unsupported_pools",
            "IP pools with ipipMode Always/CrossSubnet, which this kernel cannot program.",
            registry=r,
        )
        self.nft_bytes = Histogram(
            "felix_nft_transaction_bytes",
            "Size of each nft transaction.",
            buckets=(256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304),
            registry=r,
        )

    def set_counts(self, counts: Mapping[str, int]) -> None:
        self.endpoints.set(counts.get("endpoints", 0))
        self.policies.set(counts.get("policies", 0))
        self.profiles.set(counts.get("profiles", 0))
        self.ip_sets.set(counts.get("ip_sets", 0))
        self.rules.set(counts.get("rules", 0))
        self.chains.set(counts.get("chains", 0))
        self.set_elements.set(counts.get("set_elements", 0))
        self.ipip_unsupported.set(counts.get("ipip_unsupported_pools", 0))

    def exposition(self) -> tuple[int, str, bytes]:
        return 200, "text/plain; version=0.0.4; charset=utf-8", generate_latest(self.registry)

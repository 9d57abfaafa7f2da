"""``calico-kube-controllers``: the executable (Calico's ``kube-controllers/cmd/kube-controllers``).

What it does, in order:

1. Reads the environment (``config.EnvConfig``: ``DATASTORE_TYPE`` -- only etcdv3 --,
   ``KUBECONFIG``, ``LOG_LEVEL`` and Calico's override variables; ``ETCD_ENDPOINTS`` and the
   other ``ETCD_*`` as calicoctl and Felix read them), exiting 1 with the variable named if one
   is wrong.
2. Connects to etcd and the API server and marks ``Startup`` ready in the status file once etcd
   answers (within 60 s, else exit 1).
3. Merges KubeControllersConfiguration ``default`` (read only) for the health loop, the
   metrics port and the log level, and starts them.
4. Campaigns for the Lease (``pycalico.k8s.lease``; ``LEADER_ELECTION=false`` skips it).  The
   leader creates ``default`` if absent, writes its ``status``, runs the enabled controllers
   (``supervisor``) and etcd compaction, and restarts the controllers when the merged
   configuration changes.  Losing the lease stops them; SIGTERM releases it.

``calico-kube-controllers -r`` / ``-l`` are Calico's ``check-status -r`` / ``-l``: read the
status file (``--status-file``, default ``/status/status.json``), print ``Ready`` and exit 0 if
every condition is ready, else print the reasons and exit 1.

What it is not: any controller's logic.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Mapping, Sequence

from pycalico.datastore.api import DatastoreError, KeyNotFound
from pycalico.datastore.config import DatastoreConfig
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.k8s.client import KubeClient, KubeError
from pycalico.k8s.lease import LeaderElector
from pycalico.kubecontrollers import metrics
from pycalico.kubecontrollers.config import (
    ConfigError,
    ElectionConfig,
    EnvConfig,
    RunConfig,
    parse_log_level,
)
from pycalico.kubecontrollers.health import run_health_checks
from pycalico.kubecontrollers.runconfig import RunConfigSource
from pycalico.kubecontrollers.status import DEFAULT_STATUS_FILE, StatusFile, check
from pycalico.kubecontrollers.supervisor import Supervisor, compact

log = logging.getLogger("calico-kube-controllers")

STARTUP_TIMEOUT = 60.0
_LEVELS = {
    "Trace": logging.DEBUG,
    "Debug": logging.DEBUG,
    "Info": logging.INFO,
    "Warning": logging.WARNING,
    "Error": logging.ERROR,
    "Fatal": logging.CRITICAL,
    "Panic": logging.CRITICAL,
}


def set_log_level(level: str) -> None:
    logging.getLogger().setLevel(_LEVELS.get(level, logging.INFO))


def _tls_hint(config: DatastoreConfig) -> str:
    """What to add to a datastore error when TLS runs without a client certificate: etcd with
    ``--client-cert-auth`` refuses such a client with an error that does not say why."""
    if config.uses_tls and config.etcd_cert_file is None:
        return " (TLS without a client certificate: ETCD_CERT_FILE and ETCD_KEY_FILE are unset)"
    return ""


async def _wait_for_datastore(store: ResourceStore, status: StatusFile, hint: str = "") -> None:
    """Calico's EnsureInitialized loop: etcd must answer within STARTUP_TIMEOUT."""
    status.set_ready("Startup", False, "initialized to false")
    deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT
    while True:
        try:
            with contextlib.suppress(KeyNotFound):
                await store.get("ClusterInformation", "default")
            break
        except DatastoreError as error:
            status.set_ready("Startup", False, f"Error initializing datastore: {error}{hint}")
            if asyncio.get_running_loop().time() > deadline:
                raise
            log.info("datastore not ready: %s%s", error, hint)
            await asyncio.sleep(2.0)
    status.set_ready("Startup", True)


async def _first_config(source: RunConfigSource) -> RunConfig:
    while True:
        try:
            return await source.peek()
        except DatastoreError as error:
            log.warning("cannot read KubeControllersConfiguration: %s; retrying", error)
            await asyncio.sleep(1.0)


async def _lead(source: RunConfigSource, supervisor: Supervisor, kv: EtcdKVStore) -> None:
    """The leader's work, until cancelled."""
    compactor: asyncio.Task[None] | None = None
    try:
        async for config in source.configs():
            set_log_level(config.log_level)
            log.info("running configuration: controllers %s", ", ".join(config.enabled))
            await supervisor.apply(config)
            if compactor is None:
                compactor = asyncio.create_task(compact(kv, config.etcd_v3_compaction_period))
    finally:
        if compactor is not None:
            compactor.cancel()
        await supervisor.stop()


def _elector(kube: KubeClient, election: ElectionConfig) -> LeaderElector:
    identity = election.identity or f"{socket.gethostname()}_{secrets.token_hex(4)}"
    gauge = metrics.LEADER.labels(election.name)
    gauge.set(0)
    return LeaderElector(
        kube,
        namespace=election.namespace,
        name=election.name,
        identity=identity,
        lease_duration=election.lease_duration,
        renew_deadline=election.renew_deadline,
        retry_period=election.retry_period,
        on_change=lambda leading: gauge.set(1 if leading else 0),
    )


async def run(env: Mapping[str, str], status_file: str) -> None:
    """The whole process, until cancelled."""
    env_config = EnvConfig.from_env(env)
    election = ElectionConfig.from_env(env)
    if not env_config.kubeconfig:
        raise ConfigError("KUBECONFIG: the path of a kubeconfig file is required")
    datastore = DatastoreConfig.from_env(env)
    kv = EtcdKVStore.from_config(datastore)
    kube = await KubeClient.from_kubeconfig(env_config.kubeconfig)
    background: list[asyncio.Task[None]] = []
    server = None
    try:
        store = ResourceStore(kv)
        status = StatusFile(status_file)
        await _wait_for_datastore(store, status, _tls_hint(datastore))
        source = RunConfigSource(store, env_config)
        first = await _first_config(source)
        set_log_level(first.log_level)
        if first.health_enabled:
            background.append(asyncio.create_task(run_health_checks(status, store, kube)))
        if first.prometheus_port:
            try:
                server = metrics.serve(first.prometheus_port)
            except OSError as error:
                log.error("cannot serve metrics on port %d: %s", first.prometheus_port, error)
        supervisor = Supervisor(kube, kv, store)
        if election.enabled:
            await _elector(kube, election).run(lambda: _lead(source, supervisor, kv))
        else:
            await _lead(source, supervisor, kv)
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        if server is not None:
            server.shutdown()
        await kube.close()
        await kv.close()


async def _main(env: Mapping[str, str], status_file: str) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await run(env, status_file)


def _arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="calico-kube-controllers",
        description="Calico's Kubernetes controllers (configuration from the environment).",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument(
        "--status-file",
        "-f",
        "--file",
        default=DEFAULT_STATUS_FILE,
        help="the status file to write (or, with -r/-l, to read)",
    )
    checks = parser.add_mutually_exclusive_group()
    checks.add_argument("-r", "--ready", action="store_true", help="check readiness and exit")
    checks.add_argument("-l", "--live", action="store_true", help="check liveness and exit")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _arguments(sys.argv[1:] if argv is None else argv)
    if arguments.version:
        print("calico-kube-controllers (pycalico)")
        return 0
    if arguments.ready or arguments.live:
        ready, line = check(arguments.status_file)
        print(line)
        return 0 if ready else 1
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s [%(levelname)s] %(name)s: %(message)s"
    )
    env = dict(os.environ)
    try:
        set_log_level(parse_log_level(EnvConfig.from_env(env).log_level, "LOG_LEVEL"))
        asyncio.run(_main(env, arguments.status_file))
    except (ConfigError, DatastoreError, KubeError) as error:
        print(f"calico-kube-controllers: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

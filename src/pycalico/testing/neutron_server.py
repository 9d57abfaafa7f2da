"""A real neutron-server for tests: a private PostgreSQL cluster, Neutron's schema, the server.

What it is: ``PostgresCluster`` (Debian's PostgreSQL, a throwaway cluster run as user
``postgres`` on a free loopback port, trust authentication), ``NeutronServer`` (config files
for ML2 with our ``calico`` mechanism driver or any other, ``neutron-db-manage upgrade heads``,
start/stop, readiness = the API answers), and ``NeutronAPI`` (plain HTTP/JSON against the
``noauth`` API, as an admin of one project).  Neutron runs from its own virtualenv (``make
neutron`` links it at ``.venv/neutron``); this clone's ``src/`` and a stub distribution that
declares the ``neutron.ml2.mechanism_drivers`` entry point ``calico`` are put on its
PYTHONPATH, so the server loads the driver from this working tree.
What it is not: a Keystone or Nova (the tests play Nova: they bind ports and plug netns).

Invariants: ``stop()`` ends every process started here and removes every temporary file, also
after a failed start, and is safe to call twice; nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
SRC = REPO / "src"


def neutron_venv() -> Path:
    """Neutron's virtualenv (``make neutron``), or an error that says how to get it."""
    for candidate in (REPO / ".venv" / "neutron", Path(sys.prefix) / "neutron"):
        if (candidate / "bin" / "neutron-server").exists():
            return candidate.resolve()
    raise FileNotFoundError("Neutron's virtualenv is missing: run `make neutron` (make setup)")


def postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not found:
        raise FileNotFoundError("PostgreSQL is missing: apt-get install postgresql")
    return found[-1].parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait(predicate: Any, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"{what} not ready after {timeout}s\n{tail}")


def _stop(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class PostgresCluster:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pycalico-pg-"))
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "postgres.log"

    def _as_postgres(self, *command: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *command], check=True,
                       capture_output=True, timeout=120)  # fmt: skip

    def start(self) -> PostgresCluster:
        shutil.chown(self.dir, "postgres")
        data, bin_dir = self.dir / "data", postgres_bin()
        self._as_postgres(str(bin_dir / "initdb"), "-A", "trust", "-U", "postgres", "-D",
                          str(data), "--no-sync")  # fmt: skip
        self.process = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", str(bin_dir / "postgres"), "-D", str(data),
             "-p", str(self.port), "-h", "127.0.0.1", "-k", str(self.dir), "-c", "fsync=off",
             "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        _wait(self._ready, 30, "PostgreSQL", self.log)
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"PostgreSQL exited: {self.log.read_text()[-2000:]}")
        done = subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", str(self.port)],
                              capture_output=True, check=False)  # fmt: skip
        return done.returncode == 0

    def create_database(self, name: str) -> str:
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-q",
                        "-c", f"CREATE DATABASE {name}"], check=True, capture_output=True)  # fmt: skip
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        _stop(self.process, signal.SIGINT)  # fast shutdown
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)


NEUTRON_CONF = """[DEFAULT]
core_plugin = ml2
service_plugins =
auth_strategy = noauth
transport_url = fake:/
bind_host = 127.0.0.1
bind_port = {port}
api_workers = 1
rpc_workers = 0
rpc_state_report_workers = 0
api_paste_config = {paste}
state_path = {state}
lock_path = {state}/lock
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
debug = false
use_stderr = true
[database]
connection = {db}
[oslo_concurrency]
lock_path = {state}/lock
[oslo_messaging_notifications]
driver = noop
[calico]
etcd_endpoints = {etcd}
resync_interval = {resync}
election_ttl = {ttl}
[ml2]
type_drivers = flat,local
tenant_network_types = local
mechanism_drivers = {drivers}
extension_drivers = port_security
[securitygroup]
enable_security_group = true
firewall_driver = noop
"""

ENTRY_POINTS = """[neutron.ml2.mechanism_drivers]
calico = pycalico.openstack.mech_driver:CalicoMechanismDriver
"""


class NeutronServer:
    def __init__(self, database: str, etcd_endpoints: Sequence[str] = (),
                 mechanism_drivers: str = "calico", resync_interval: float = 60.0,
                 election_ttl: int = 15) -> None:  # fmt: skip
        self.venv = neutron_venv()
        self.dir = Path(tempfile.mkdtemp(prefix="pycalico-neutron-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.dir / "neutron-server.log"
        self.process: subprocess.Popen[bytes] | None = None
        (self.dir / "lock").mkdir()
        stub = self.dir / "site" / "pycalico_openstack-0.0.dist-info"
        stub.mkdir(parents=True)
        (stub / "METADATA").write_text(
            "Metadata-Version: 2.1\nName: pycalico-openstack\nVersion: 0.0\n"
        )
        (stub / "entry_points.txt").write_text(ENTRY_POINTS)
        self.conf = self.dir / "neutron.conf"
        self.conf.write_text(NEUTRON_CONF.format(
            port=self.port, paste=self.venv / "etc" / "neutron" / "api-paste.ini", state=self.dir,
            db=database, etcd=",".join(etcd_endpoints) or "http://127.0.0.1:2379",
            resync=resync_interval, ttl=election_ttl, drivers=mechanism_drivers,
        ))  # fmt: skip

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
        env["PYTHONPATH"] = f"{SRC}:{self.dir / 'site'}"
        env["PATH"] = f"{self.venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
        env["XDG_CACHE_HOME"] = str(self.dir / "cache")  # stevedore's entry-point cache
        return env

    def migrate(self) -> None:
        done = subprocess.run(
            [str(self.venv / "bin" / "neutron-db-manage"), "--config-file", str(self.conf),
             "upgrade", "heads"], env=self.env(), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(
                f"neutron-db-manage failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
            )

    def start(self, timeout: float = 120.0) -> NeutronServer:
        self.process = subprocess.Popen(
            [str(self.venv / "bin" / "neutron-server"), "--config-file", str(self.conf)],
            env=self.env(), stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        _wait(self._ready, timeout, "neutron-server", self.log)
        return self

    def _ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"neutron-server exited:\n{self.log.read_text()[-4000:]}")
        try:
            with urllib.request.urlopen(self.url + "/v2.0/networks", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        """Stop the server at once (SIGKILL to its process group), keeping its files."""
        _stop(self.process, signal.SIGKILL)
        self.process = None

    def stop(self) -> None:
        _stop(self.process)
        self.process = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class NeutronAPIError(Exception):
    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {body[:500]}")
        self.status = status


class NeutronAPI:
    """Neutron's REST API (noauth: the headers say who we are — an admin of ``project``)."""

    def __init__(self, url: str, project: str = "0f0e0d0c0b0a4a09b8c7d6e5f4a3b2c1") -> None:
        self.url = url
        self.project = project

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            self.url + "/v2.0/" + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "X-Project-Id": self.project,
                     "X-Tenant-Id": self.project, "X-User-Id": "pycalico-test",
                     "X-Roles": "admin,member,reader"},
        )  # fmt: skip
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                raw = answer.read()
        except urllib.error.HTTPError as failure:
            raise NeutronAPIError(method, path, failure.code, failure.read().decode()) from None
        return json.loads(raw) if raw else None

    def create(self, kind: str, **fields: Any) -> dict[str, Any]:
        body = {"tenant_id": self.project, **fields}  # noauth: the project must be explicit
        created: dict[str, Any] = self.call("POST", kind + "s", {kind: body})[kind]
        return created

    def show(self, kind: str, ident: str) -> dict[str, Any]:
        shown: dict[str, Any] = self.call("GET", f"{kind}s/{ident}")[kind]
        return shown

    def update(self, kind: str, ident: str, **fields: Any) -> dict[str, Any]:
        updated: dict[str, Any] = self.call("PUT", f"{kind}s/{ident}", {kind: fields})[kind]
        return updated

    def delete(self, kind: str, ident: str) -> None:
        self.call("DELETE", f"{kind}s/{ident}")

    def list(self, kind: str, **filters: str) -> list[dict[str, Any]]:
        query = "&".join(f"{k}={v}" for k, v in filters.items())
        listed: list[dict[str, Any]] = self.call("GET", f"{kind}s" + (f"?{query}" if query else ""))[kind + "s"]  # fmt: skip
        return listed


@contextlib.contextmanager
def postgres() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@contextlib.contextmanager
def neutron(cluster: PostgresCluster, database: str, **options: Any) -> Iterator[NeutronServer]:
    """A migrated, running neutron-server on ``database`` of ``cluster``; stopped on exit."""
    server = NeutronServer(cluster.create_database(database), **options)
    try:
        server.migrate()
        yield server.start()
    finally:
        server.close()

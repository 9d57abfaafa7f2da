"""Launchers for real etcd processes: one member (``EtcdServer``) or a cluster (``EtcdCluster``).

Used by the test suite, ``make demo`` and the lab.  Each member listens on free loopback ports
and keeps its data in a temporary directory (on ``/dev/shm`` when available, so fsyncs are cheap)
that is removed when the member is stopped for good.

This module is not a client: the only requests it makes are plain HTTP calls to etcd's JSON
gateway (readiness, current revision, compaction), so it can be used from synchronous code such
as pytest fixtures.

Invariants:

* A started member answers ``/health`` before ``start()`` returns.
* By default no member outlives the interpreter that started it: members are killed at exit
  (``atexit``), and the kernel kills them if the starting thread dies (``setpriv --pdeathsig``),
  which covers a SIGKILLed test run; the data directories such a run leaves behind are swept by
  the next ``EtcdServer`` in any process.  ``die_with_parent=False`` makes a member that
  outlives its starter (the lab: pass a ``data_dir`` of your own and stop it by ``pid``).
* ``restart()`` keeps the ports and the data, so clients' endpoint lists stay valid.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import json
import os
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from pycalico.netns.ports import free_port as free_port  # re-exported for tests

ETCD_BINARY = "/usr/bin/etcd"
SETPRIV = "/usr/bin/setpriv"  # util-linux

_live: set[EtcdServer] = set()
_live_lock = threading.Lock()


def _kill_all_live() -> None:
    with _live_lock:
        members = list(_live)
    for member in members:
        with contextlib.suppress(Exception):
            member.kill()
        with contextlib.suppress(Exception):
            member.cleanup()


atexit.register(_kill_all_live)


def _temp_root() -> str:
    if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
        return "/dev/shm"
    return tempfile.gettempdir()


_DIR_PREFIX = "pycalico-etcd-"
_swept = False


def _directories_in_use() -> set[str]:
    """Data directories named on the command line of any live process."""
    in_use: set[str] = set()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        for arg in args:
            if _DIR_PREFIX.encode() in arg:
                in_use.add(arg.decode(errors="replace"))
    return in_use


def _owner_holds_lock(directory: Path) -> bool:
    try:
        descriptor = os.open(directory / "owner.lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(descriptor)
    return False


def sweep_stale_dirs(min_age: float = 60.0) -> int:
    """Remove data directories left behind when a member's starter was SIGKILLed (no finaliser
    ran): a directory is stale when no live process names it on its command line and it is
    older than ``min_age`` (so one being created right now by another process is left alone)."""
    in_use = _directories_in_use()
    removed = 0
    for directory in Path(_temp_root()).glob(f"{_DIR_PREFIX}*"):
        if any(path.startswith(str(directory)) for path in in_use):
            continue
        if _owner_holds_lock(directory):
            continue  # its EtcdServer object is alive, e.g. between stop() and start()
        try:
            if time.time() - directory.stat().st_mtime < min_age:
                continue
        except OSError:
            continue
        shutil.rmtree(directory, ignore_errors=True)
        removed += 1
    return removed


@dataclass(frozen=True)
class ServerTLS:
    """Serve clients over TLS, requiring a client certificate signed by ``ca_file``; the
    client pair is what this module's own HTTP checks present."""

    ca_file: str
    cert_file: str
    key_file: str
    client_cert_file: str
    client_key_file: str


def make_test_pki(directory: str | os.PathLike[str]) -> ServerTLS:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate (openssl)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    ca_key, ca = str(root / "ca.key"), str(root / "ca.pem")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
            "-days", "2", "-subj", "/CN=pycalico-test-ca")  # fmt: skip
    pairs = {}
    for name, extension in (
        ("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"),
        ("client", "extendedKeyUsage=clientAuth"),
    ):
        key, request, cert = (str(root / f"{name}.{ext}") for ext in ("key", "csr", "pem"))
        extfile = root / f"{name}.ext"
        extfile.write_text(extension + "\n")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", request,
                "-subj", f"/CN=pycalico-test-{name}")  # fmt: skip
        openssl("x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
                "-out", cert, "-days", "2", "-extfile", str(extfile))  # fmt: skip
        pairs[name] = (cert, key)
    return ServerTLS(
        ca_file=ca,
        cert_file=pairs["server"][0],
        key_file=pairs["server"][1],
        client_cert_file=pairs["client"][0],
        client_key_file=pairs["client"][1],
    )


class EtcdError(RuntimeError):
    """An etcd member failed to start or to answer its HTTP gateway."""


class EtcdServer:
    """One etcd member.  ``with EtcdServer() as etcd: ... etcd.endpoint ...``"""

    def __init__(
        self,
        *,
        name: str = "default",
        client_port: int | None = None,
        peer_port: int | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        initial_cluster: str | None = None,
        max_request_bytes: int | None = None,
        die_with_parent: bool = True,
        ready_timeout: float = 15.0,
        extra_args: tuple[str, ...] = (),
        tls: ServerTLS | None = None,
    ) -> None:
        self.name = name
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self._ports_chosen_here = client_port is None and peer_port is None
        self._ever_ready = False
        self._owned_dir = data_dir is None
        self._base_dir: Path | None = None if data_dir is None else Path(data_dir)
        self._initial_cluster = initial_cluster
        self.max_request_bytes = max_request_bytes
        self.die_with_parent = die_with_parent
        self.ready_timeout = ready_timeout
        self.extra_args = extra_args
        self.tls = tls
        self._process: subprocess.Popen[bytes] | None = None
        self._lock: int | None = None
        self._log: Any = None

    # --- addresses --------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    @property
    def data_dir(self) -> Path:
        return self._dir() / "data"

    @property
    def log_path(self) -> Path:
        return self._dir() / "etcd.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _dir(self) -> Path:
        global _swept
        if self._base_dir is None:
            if not _swept:
                _swept = True
                sweep_stale_dirs()
            self._base_dir = Path(tempfile.mkdtemp(prefix=_DIR_PREFIX, dir=_temp_root()))
            # Held for this object's lifetime (released by the kernel if the process dies), so
            # another process's sweep never takes a directory between stop() and start().
            self._lock = os.open(self._base_dir / "owner.lock", os.O_CREAT | os.O_RDWR, 0o600)
            fcntl.flock(self._lock, fcntl.LOCK_EX)
        return self._base_dir

    # --- lifecycle --------------------------------------------------------------------------

    def command(self) -> list[str]:
        cluster = self._initial_cluster or f"{self.name}={self.peer_url}"
        args = [
            ETCD_BINARY,
            "--name",
            self.name,
            "--data-dir",
            str(self.data_dir),
            "--listen-client-urls",
            self.endpoint,
            "--advertise-client-urls",
            self.endpoint,
            "--listen-peer-urls",
            self.peer_url,
            "--initial-advertise-peer-urls",
            self.peer_url,
            "--initial-cluster",
            cluster,
            "--initial-cluster-state",
            "new",
            # Loopback members: short heartbeats make elections (and failover tests) fast.
            "--heartbeat-interval",
            "50",
            "--election-timeout",
            "500",
            "--logger",
            "zap",
            "--log-level",
            "warn",
        ]
        if self.max_request_bytes is not None:
            args += ["--max-request-bytes", str(self.max_request_bytes)]
        if self.tls is not None:
            args += ["--cert-file", self.tls.cert_file, "--key-file", self.tls.key_file]
            args += ["--trusted-ca-file", self.tls.ca_file, "--client-cert-auth"]
        return args + list(self.extra_args)

    def launch(self) -> None:
        """Start the process without waiting for readiness (a cluster starts all, then waits)."""
        if self.running:
            return
        self._dir().mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap
        command = self.command()
        if self.die_with_parent:
            # setpriv sets the parent-death signal and execs etcd.  A preexec_fn would run
            # Python in the forked child, which deadlocks or crashes when gRPC's threads are
            # running in the parent (they are, in every async test).
            command = [SETPRIV, "--pdeathsig", "KILL", "--", *command]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=not self.die_with_parent,
        )
        if self.die_with_parent:
            with _live_lock:
                _live.add(self)

    def start(self) -> EtcdServer:
        for attempt in range(3):
            self.launch()
            try:
                self.wait_ready()
                return self
            except EtcdError:
                # free_port() only says a port was free a moment ago; another process (another
                # test session) may have taken it.  Ports we chose may be chosen again, but only
                # before this member ever ran: restart() must keep them.
                if (
                    attempt == 2
                    or not self._ports_chosen_here
                    or self._ever_ready
                    or "address already in use" not in self.log_tail()
                ):
                    raise
                self.kill()
                shutil.rmtree(self.data_dir, ignore_errors=True)  # bound to the old peer URL
                self.client_port, self.peer_port = free_port(), free_port()
        raise AssertionError("unreachable")

    def wait_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        last_error = "no answer"
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise EtcdError(f"etcd {self.name} exited during startup:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(
                    f"{self.endpoint}/health", timeout=1, context=self._ssl_context()
                ) as reply:
                    if json.loads(reply.read()).get("health") in ("true", True):
                        self._ever_ready = True
                        return
                    last_error = "unhealthy"
            except (OSError, urllib.error.URLError, ValueError) as error:
                last_error = str(error)
            time.sleep(0.02)
        raise EtcdError(f"etcd {self.name} not ready ({last_error}):\n{self.log_tail()}")

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM and wait; keeps the data so ``start()`` resumes it.  See ``close()``."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._reap()

    def kill(self) -> None:
        """SIGKILL (a crash): keeps the data so ``start()`` resumes it."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._reap()

    def restart(self) -> None:
        self.stop()
        self.start()

    def _reap(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def cleanup(self) -> None:
        """Remove the temporary data directory (only one this object created)."""
        if self._owned_dir and self._base_dir is not None:
            shutil.rmtree(self._base_dir, ignore_errors=True)
            self._base_dir = None
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None
        with _live_lock:
            _live.discard(self)

    def close(self) -> None:
        """Stop for good: kill the process and remove the temporary data."""
        self.kill()
        self.cleanup()

    def __enter__(self) -> EtcdServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # --- gateway helpers (synchronous, for tests and tools) ---------------------------------

    def _ssl_context(self) -> ssl.SSLContext | None:
        if self.tls is None:
            return None
        context = ssl.create_default_context(cafile=self.tls.ca_file)
        context.load_cert_chain(self.tls.client_cert_file, self.tls.client_key_file)
        return context

    def _gateway(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.endpoint}{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5, context=self._ssl_context()) as reply:
                result: dict[str, Any] = json.loads(reply.read())
                return result
        except urllib.error.HTTPError as error:
            raise EtcdError(f"{path}: {error.read().decode(errors='replace')}") from error

    def revision(self) -> int:
        """The store's current revision."""
        reply = self._gateway("/v3/kv/range", {"key": base64.b64encode(b"\0").decode()})
        return int(reply["header"]["revision"])

    def status(self) -> dict[str, Any]:
        """This member's ``/v3/maintenance/status`` (``leader``, ``header.member_id``, ...)."""
        return self._gateway("/v3/maintenance/status", {})

    def is_leader(self) -> bool:
        reply = self.status()
        return bool(reply.get("leader")) and reply.get("leader") == reply["header"]["member_id"]

    def compact(self, revision: int | None = None) -> int:
        """Compact history up to ``revision`` (default: the current revision); returns it."""
        target = self.revision() if revision is None else revision
        self._gateway("/v3/kv/compaction", {"revision": str(target), "physical": True})
        return target


class EtcdCluster:
    """``size`` members on loopback forming one cluster.  ``with EtcdCluster(3) as c: ...``"""

    def __init__(self, size: int = 3, *, ready_timeout: float = 20.0) -> None:
        peers = [free_port() for _ in range(size)]
        initial = ",".join(f"m{i}=http://127.0.0.1:{port}" for i, port in enumerate(peers))
        self.members = [
            EtcdServer(
                name=f"m{i}", peer_port=port, initial_cluster=initial, ready_timeout=ready_timeout
            )
            for i, port in enumerate(peers)
        ]

    @property
    def endpoints(self) -> list[str]:
        return [member.endpoint for member in self.members]

    @property
    def endpoint_string(self) -> str:
        """The ``ETCD_ENDPOINTS`` form: comma-separated URLs."""
        return ",".join(self.endpoints)

    def start(self) -> EtcdCluster:
        for member in self.members:
            member.launch()
        for member in self.members:
            member.wait_ready()
        return self

    def stop_member(self, index: int) -> None:
        self.members[index].stop()

    def kill_member(self, index: int) -> None:
        self.members[index].kill()

    def start_member(self, index: int) -> None:
        self.members[index].start()

    def close(self) -> None:
        for member in self.members:
            member.close()

    def __enter__(self) -> EtcdCluster:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def leader_index(self, timeout: float = 10.0) -> int:
        """The index of the member that is leader now (waits for an election to finish)."""
        deadline = time.monotonic() + timeout
        while True:
            for index, member in enumerate(self.members):
                if member.running:
                    with contextlib.suppress(EtcdError, OSError, KeyError):
                        if member.is_leader():
                            return index
            if time.monotonic() > deadline:
                raise EtcdError("no cluster member is leader")
            time.sleep(0.05)

    def running_member(self) -> EtcdServer:
        for member in self.members:
            if member.running:
                return member
        raise EtcdError("no cluster member is running")

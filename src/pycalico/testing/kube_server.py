"""Launcher for a real Kubernetes API server on a real etcd: ``KubeAPIServer`` and
``KubeControlPlane`` (etcd + API server), each writing a kubeconfig for its clients.

The command line, credentials and kubeconfig are ``pycalico.k8s.apiserver``'s (shared with the
Kubernetes lab).  The ``kube-apiserver`` binary is the one ``make setup`` builds from Kubernetes' own Go modules
and links into the virtualenv's ``bin`` (see the Makefile's ``kube`` target).  There is no
controller-manager, scheduler or kubelet: no default ServiceAccount is created, nothing is
garbage-collected, and a Pod bound to a node never finishes a graceful delete.

This module is not a client: its only request is an HTTPS ``/readyz`` probe, made with the
standard library so it can run from synchronous pytest fixtures.

Invariants:

* The server listens on 127.0.0.1 only, on a free port; its serving certificate is the
  self-signed one it writes into ``--cert-dir``, and that file is the kubeconfig's CA.
* The kubeconfig's user is an administrator (group ``system:masters``) authenticated by a bearer
  token from ``--token-auth-file``; authorization is RBAC, so other users get nothing by default.
* A started server answers ``/readyz`` before ``start()`` returns.
* Stopping is SIGTERM, then SIGKILL after a timeout; ``KubeControlPlane`` stops the API server
  before etcd.  By default the kernel kills the server if its starter dies (``setpriv
  --pdeathsig``) and ``atexit`` kills any still running, like ``EtcdServer``.
* Each server keeps its objects under its own etcd prefix, so it can share an etcd (the lab's)
  with Calico's ``/calico`` keys and with other API servers.
"""

from __future__ import annotations

import atexit
import contextlib
import secrets
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import IO

from pycalico.k8s import apiserver
from pycalico.k8s.apiserver import ADMIN_USER, SERVICE_ACCOUNT_ISSUER, SERVICE_CLUSTER_IP_RANGE
from pycalico.netns.ports import free_port
from pycalico.testing.etcd_server import SETPRIV, EtcdServer

__all__ = [
    "ADMIN_USER",
    "SERVICE_ACCOUNT_ISSUER",
    "SERVICE_CLUSTER_IP_RANGE",
    "KubeAPIServer",
    "KubeAPIServerError",
    "KubeControlPlane",
    "kube_binary",
]
_live: set[KubeAPIServer] = set()
_live_lock = threading.Lock()


def _kill_all_live() -> None:
    with _live_lock:
        servers = list(_live)
    for server in servers:
        with contextlib.suppress(Exception):
            server.close()


atexit.register(_kill_all_live)


class KubeAPIServerError(RuntimeError):
    """The API server binary is missing, or the server failed to start or to get ready."""


def kube_binary(name: str) -> str:
    """``kube-apiserver`` or ``kubectl``: the virtualenv's copy, else one on ``PATH``."""
    candidate = Path(sys.prefix) / "bin" / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise KubeAPIServerError(
            f"{name} not found in {candidate.parent} or PATH: run `make setup`"
        )
    return found


class KubeAPIServer:
    """One ``kube-apiserver`` on ``etcd_endpoint``.  ``with KubeAPIServer(url) as api: ...``"""

    def __init__(
        self,
        etcd_endpoint: str,
        *,
        port: int | None = None,
        etcd_prefix: str | None = None,
        service_cluster_ip_range: str = SERVICE_CLUSTER_IP_RANGE,
        ready_timeout: float = 90.0,
        die_with_parent: bool = True,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.etcd_endpoint = etcd_endpoint
        self.port = port or free_port()
        self._port_chosen_here = port is None
        self.etcd_prefix = etcd_prefix or f"/registry-{secrets.token_hex(4)}"
        self.service_cluster_ip_range = service_cluster_ip_range
        self.ready_timeout = ready_timeout
        self.die_with_parent = die_with_parent
        self.extra_args = extra_args
        self.token = secrets.token_hex(16)
        self.directory = Path(tempfile.mkdtemp(prefix="pycalico-kube-"))
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # --- addresses and files ----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def cert_dir(self) -> Path:
        return apiserver.cert_dir(self.directory)

    @property
    def ca_file(self) -> Path:
        """The self-signed serving certificate (with its signer) that clients trust."""
        return apiserver.ca_file(self.directory)

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def log_path(self) -> Path:
        return self.directory / "kube-apiserver.log"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _write_credentials(self) -> None:
        apiserver.write_credentials(self.directory, self.token)

    def command(self) -> list[str]:
        return apiserver.command(
            kube_binary("kube-apiserver"),
            self.directory,
            etcd_servers=self.etcd_endpoint,
            etcd_prefix=self.etcd_prefix,
            bind_address="127.0.0.1",
            advertise_address="127.0.0.1",
            port=self.port,
            service_cluster_ip_range=self.service_cluster_ip_range,
            extra_args=self.extra_args,
        )

    def write_kubeconfig(self) -> Path:
        document = apiserver.kubeconfig(self.url, self.ca_file, self.token)
        return apiserver.write_kubeconfig(self.kubeconfig, document)

    # --- lifecycle --------------------------------------------------------------------------

    def launch(self) -> None:
        if self.running:
            return
        self._write_credentials()
        self.write_kubeconfig()
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _reap
        command = self.command()
        if self.die_with_parent:
            command = [SETPRIV, "--pdeathsig", "KILL", "--", *command]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=not self.die_with_parent,
        )
        with _live_lock:
            _live.add(self)

    def start(self) -> KubeAPIServer:
        for attempt in range(3):
            self.launch()
            try:
                self.wait_ready()
                return self
            except KubeAPIServerError:
                # free_port() only says the port was free a moment ago.
                if (
                    attempt == 2
                    or not self._port_chosen_here
                    or "address already in use" not in self.log_tail()
                ):
                    raise
                self.stop()
                self.port = free_port()
        raise AssertionError("unreachable")

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def wait_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout or self.ready_timeout)
        last_error = "no answer"
        while time.monotonic() < deadline:
            if self._process is None or self._process.poll() is not None:
                raise KubeAPIServerError(
                    f"kube-apiserver exited during startup:\n{self.log_tail()}"
                )
            if self.ca_file.exists():
                request = urllib.request.Request(
                    f"{self.url}/readyz", headers={"Authorization": f"Bearer {self.token}"}
                )
                try:
                    with urllib.request.urlopen(
                        request, timeout=2, context=self._ssl_context()
                    ) as reply:
                        if reply.status == 200:
                            return
                except (OSError, urllib.error.URLError, ssl.SSLError) as error:
                    last_error = str(error)
            time.sleep(0.1)
        raise KubeAPIServerError(f"kube-apiserver not ready ({last_error}):\n{self.log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited after ``timeout`` seconds."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._reap()

    def _reap(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def close(self) -> None:
        """Stop for good and remove the server's directory (certificates, keys, kubeconfig)."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
        with _live_lock:
            _live.discard(self)

    def __enter__(self) -> KubeAPIServer:
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

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the real ``kubectl`` against this server (for tests and tools)."""
        return subprocess.run(
            [kube_binary("kubectl"), f"--kubeconfig={self.kubeconfig}", *args],
            check=check,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def wait_allowed(
        self, user: str, verb: str, resource: str, *extra: str, timeout: float = 30.0
    ) -> None:
        """Until ``kubectl auth can-i`` says ``user`` may: the RBAC authorizer learns of a new
        binding through its informers, a moment after the binding is created.  ``resource``
        may be ``<resource>/<subresource>``; ``extra`` are more arguments (``-n <ns>``)."""
        kind, _, sub = resource.partition("/")
        args = ["auth", "can-i", verb, kind, *([f"--subresource={sub}"] if sub else [])]
        deadline = time.monotonic() + timeout
        while self.kubectl(*args, *extra, f"--as={user}", check=False).stdout.strip() != "yes":
            if time.monotonic() > deadline:
                raise KubeAPIServerError(f"{user} never allowed to {verb} {resource}")
            time.sleep(0.1)


class KubeControlPlane:
    """A fresh etcd member and an API server on it; ``close()`` stops the API server first."""

    def __init__(self, *, api_extra_args: tuple[str, ...] = ()) -> None:
        self.etcd = EtcdServer(name="kube")
        self._api_extra_args = api_extra_args
        self.api: KubeAPIServer | None = None

    @property
    def apiserver(self) -> KubeAPIServer:
        if self.api is None:
            raise KubeAPIServerError("the control plane is not started")
        return self.api

    @property
    def kubeconfig(self) -> Path:
        return self.apiserver.kubeconfig

    def start(self) -> KubeControlPlane:
        self.etcd.start()
        self.api = KubeAPIServer(self.etcd.endpoint, extra_args=self._api_extra_args)
        self.api.start()
        return self

    def close(self) -> None:
        try:
            if self.api is not None:
                self.api.close()
        finally:
            self.etcd.close()

    def __enter__(self) -> KubeControlPlane:
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

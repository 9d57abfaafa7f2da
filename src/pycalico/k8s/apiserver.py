"""How pycalico runs a ``kube-apiserver``: its credentials, its command line and the kubeconfig
its clients use.  Shared by the test launcher (``pycalico.testing.kube_server``: loopback, a
fresh etcd) and the Kubernetes lab (``pycalico.lab.kube``: a control-plane namespace on the
lab's fabric, the lab's etcd).

What it is: file writers (service-account key pair, token file, kubeconfig) and the argument
list.  What it is not: a process supervisor (each caller starts, waits for and stops the server
its own way) or a client.

Invariants:

* The serving certificate is the self-signed one the server writes into ``--cert-dir``
  (``<cert dir>/apiserver.crt``, the kubeconfig's CA); it names the advertise address, the
  service's first address, ``localhost`` when bound to every address, and the DNS names
  ``kubernetes``, ``kubernetes.default``, ``kubernetes.default.svc``.
* The one user is an administrator (group ``system:masters``) authenticated by a bearer token
  from ``--token-auth-file``; authorization is RBAC, so other users get nothing by default.
* Each server keeps its objects under its own etcd prefix, so several can share one etcd (the
  lab's holds Calico's ``/calico`` keys too).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
ADMIN_USER = "pycalico-admin"


def cert_dir(directory: Path) -> Path:
    return directory / "certs"


def ca_file(directory: Path) -> Path:
    """The self-signed serving certificate (with its signer) that clients trust."""
    return cert_dir(directory) / "apiserver.crt"


def write_credentials(directory: Path, token: str) -> None:
    """The service-account signing key pair (kept when it exists) and the token file."""
    directory.mkdir(parents=True, exist_ok=True)
    key, public = directory / "sa.key", directory / "sa.pub"
    if not key.exists():
        subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True,
                       capture_output=True)  # fmt: skip
        subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-out", str(public)],
                       check=True, capture_output=True)  # fmt: skip
    tokens = directory / "tokens.csv"
    tokens.write_text(f'{token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
    tokens.chmod(0o600)


def command(
    binary: str,
    directory: Path,
    *,
    etcd_servers: str,
    etcd_prefix: str,
    bind_address: str,
    advertise_address: str,
    port: int,
    service_cluster_ip_range: str = SERVICE_CLUSTER_IP_RANGE,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The server's command line; ``directory`` holds what ``write_credentials`` wrote."""
    return [
        binary,
        f"--etcd-servers={etcd_servers}",
        f"--etcd-prefix={etcd_prefix}",
        f"--bind-address={bind_address}",
        f"--advertise-address={advertise_address}",
        f"--secure-port={port}",
        f"--cert-dir={cert_dir(directory)}",
        f"--service-account-key-file={directory / 'sa.pub'}",
        f"--service-account-signing-key-file={directory / 'sa.key'}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--token-auth-file={directory / 'tokens.csv'}",
        "--authorization-mode=RBAC",
        f"--service-cluster-ip-range={service_cluster_ip_range}",
        # No controller-manager maintains the `kubernetes` Service's endpoints (and a loopback
        # address is not a valid endpoint): do not reconcile them.
        "--endpoint-reconciler-type=none",
        "--allow-privileged=true",
        "--profiling=false",
        *extra_args,
    ]


def kubeconfig(
    server: str, ca: Path, token: str, *, tls_server_name: str = "", name: str = "pycalico"
) -> dict[str, Any]:
    """A kubeconfig for the administrator.  ``tls_server_name``: the name to check the
    certificate against when ``server`` is not an address it names (a relayed port)."""
    cluster: dict[str, Any] = {"server": server, "certificate-authority": str(ca)}
    if tls_server_name:
        cluster["tls-server-name"] = tls_server_name
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": ADMIN_USER, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": ADMIN_USER}}],
        "current-context": name,
    }


def write_kubeconfig(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    path.chmod(0o600)
    return path

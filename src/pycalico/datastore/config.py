"""Where the datastore is: ``DatastoreConfig`` from the environment or a ``CalicoAPIConfig`` file.

This follows Calico's client configuration (libcalico-go ``apiconfig``): ``DATASTORE_TYPE``
(only ``etcdv3`` is supported here), ``ETCD_ENDPOINTS`` (comma-separated http/https URLs),
``ETCD_CA_CERT_FILE``, ``ETCD_CERT_FILE``, ``ETCD_KEY_FILE``; each variable may also be given
with a ``CALICO_`` prefix, which wins, as in Calico.  A config file (calicoctl's ``--config``,
default ``/etc/calico/calicoctl.cfg`` when present) replaces the environment entirely.

This module reads files and the environment but opens no connection; ``EtcdKVStore.from_config``
does that.

Invariants: a ``DatastoreConfig`` is frozen, always has at least one endpoint, and every
endpoint is an ``http://`` or ``https://`` URL with a host (the port defaults to 2379).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from pycalico.datastore.api import DatastoreError

DEFAULT_CONFIG_FILE = "/etc/calico/calicoctl.cfg"
DEFAULT_ENDPOINT = "http://127.0.0.1:2379"
DEFAULT_PORT = 2379
ETCD_DATASTORE = "etcdv3"
KUBERNETES_DATASTORE = "kubernetes"


class DatastoreConfigError(DatastoreError):
    """The datastore configuration is missing, malformed, or asks for something unsupported."""


@dataclass(frozen=True, slots=True)
class DatastoreConfig:
    datastore_type: str = ETCD_DATASTORE
    etcd_endpoints: tuple[str, ...] = (DEFAULT_ENDPOINT,)
    etcd_ca_cert_file: str | None = None
    etcd_cert_file: str | None = None
    etcd_key_file: str | None = None

    def __post_init__(self) -> None:
        if self.datastore_type == KUBERNETES_DATASTORE:
            raise DatastoreConfigError(
                "datastoreType: 'kubernetes' is not supported by pycalico; use 'etcdv3'"
            )
        if self.datastore_type != ETCD_DATASTORE:
            raise DatastoreConfigError(
                f"datastoreType: unknown datastore type {self.datastore_type!r} "
                f"(expected {ETCD_DATASTORE!r})"
            )
        if not self.etcd_endpoints:
            raise DatastoreConfigError("etcdEndpoints: at least one endpoint is required")
        for endpoint in self.etcd_endpoints:
            _check_endpoint(endpoint)
        if (self.etcd_cert_file is None) != (self.etcd_key_file is None):
            raise DatastoreConfigError(
                "etcdCertFile/etcdKeyFile: a client certificate needs both the certificate "
                "and the key file"
            )

    @property
    def uses_tls(self) -> bool:
        return any(endpoint.startswith("https://") for endpoint in self.etcd_endpoints)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DatastoreConfig:
        env = os.environ if env is None else env

        def lookup(name: str) -> str | None:
            value = env.get(f"CALICO_{name}") or env.get(name)
            return value.strip() if value and value.strip() else None

        return cls(
            datastore_type=lookup("DATASTORE_TYPE") or ETCD_DATASTORE,
            etcd_endpoints=split_endpoints(lookup("ETCD_ENDPOINTS") or DEFAULT_ENDPOINT),
            etcd_ca_cert_file=lookup("ETCD_CA_CERT_FILE"),
            etcd_cert_file=lookup("ETCD_CERT_FILE"),
            etcd_key_file=lookup("ETCD_KEY_FILE"),
        )

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> DatastoreConfig:
        try:
            text = Path(path).read_text()
        except OSError as error:
            raise DatastoreConfigError(f"cannot read config file {path}: {error}") from error
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise DatastoreConfigError(f"config file {path} is not valid YAML: {error}") from error
        return cls.from_document(document, source=str(path))

    @classmethod
    def from_document(cls, document: Any, *, source: str = "config") -> DatastoreConfig:
        if not isinstance(document, dict):
            raise DatastoreConfigError(f"{source}: expected a CalicoAPIConfig mapping")
        kind = document.get("kind")
        if kind != "CalicoAPIConfig":
            raise DatastoreConfigError(f"{source}: kind: expected 'CalicoAPIConfig', got {kind!r}")
        api_version = document.get("apiVersion")
        if api_version not in ("projectcalico.org/v3", "v1"):
            raise DatastoreConfigError(
                f"{source}: apiVersion: expected 'projectcalico.org/v3', got {api_version!r}"
            )
        spec = document.get("spec") or {}
        if not isinstance(spec, dict):
            raise DatastoreConfigError(f"{source}: spec: expected a mapping")

        def text(name: str) -> str | None:
            value = spec.get(name)
            if value is None or value == "":
                return None
            if not isinstance(value, str):
                raise DatastoreConfigError(f"{source}: spec.{name}: expected a string")
            return value

        return cls(
            datastore_type=text("datastoreType") or ETCD_DATASTORE,
            etcd_endpoints=split_endpoints(text("etcdEndpoints") or DEFAULT_ENDPOINT),
            etcd_ca_cert_file=text("etcdCACertFile"),
            etcd_cert_file=text("etcdCertFile"),
            etcd_key_file=text("etcdKeyFile"),
        )

    @classmethod
    def load(
        cls,
        config_file: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> DatastoreConfig:
        """calicoctl's rule: an explicit file must exist; else the default file if present;
        else the environment."""
        if config_file is not None:
            return cls.from_file(config_file)
        if os.path.isfile(DEFAULT_CONFIG_FILE):
            return cls.from_file(DEFAULT_CONFIG_FILE)
        return cls.from_env(env)


def split_endpoints(value: str) -> tuple[str, ...]:
    return tuple(part.strip().rstrip("/") for part in value.split(",") if part.strip())


def _check_endpoint(endpoint: str) -> None:
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https"):
        raise DatastoreConfigError(
            f"etcdEndpoints: {endpoint!r} must start with http:// or https://"
        )
    try:
        port = parts.port
    except ValueError as error:
        raise DatastoreConfigError(f"etcdEndpoints: {endpoint!r} has a bad port") from error
    if not parts.hostname:
        raise DatastoreConfigError(f"etcdEndpoints: {endpoint!r} has no host")
    if port == 0:
        raise DatastoreConfigError(f"etcdEndpoints: {endpoint!r} has port 0")


def endpoint_target(endpoint: str) -> tuple[str, bool]:
    """``http://host:port`` → (``host:port``, uses TLS)."""
    parts = urlsplit(endpoint)
    host = parts.hostname or "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port or DEFAULT_PORT}", parts.scheme == "https"

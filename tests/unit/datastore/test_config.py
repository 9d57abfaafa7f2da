"""DatastoreConfig from the environment and from a CalicoAPIConfig file, as calicoctl reads it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycalico.datastore.config import DatastoreConfig, DatastoreConfigError


def test_defaults_to_local_etcd() -> None:
    config = DatastoreConfig.from_env({})
    assert config.datastore_type == "etcdv3"
    assert config.etcd_endpoints == ("http://127.0.0.1:2379",)
    assert not config.uses_tls


def test_environment_variables() -> None:
    config = DatastoreConfig.from_env(
        {
            "DATASTORE_TYPE": "etcdv3",
            "ETCD_ENDPOINTS": "https://10.0.0.1:2379, https://10.0.0.2:2379/",
            "ETCD_CA_CERT_FILE": "/ca.pem",
            "ETCD_CERT_FILE": "/cert.pem",
            "ETCD_KEY_FILE": "/key.pem",
        }
    )
    assert config.etcd_endpoints == ("https://10.0.0.1:2379", "https://10.0.0.2:2379")
    assert (config.etcd_ca_cert_file, config.etcd_cert_file, config.etcd_key_file) == (
        "/ca.pem",
        "/cert.pem",
        "/key.pem",
    )
    assert config.uses_tls
    prefixed = DatastoreConfig.from_env(
        {"ETCD_ENDPOINTS": "http://a:1", "CALICO_ETCD_ENDPOINTS": "http://b:2"}
    )
    assert prefixed.etcd_endpoints == ("http://b:2",)


def test_kubernetes_and_bad_endpoints_are_clear_errors() -> None:
    with pytest.raises(DatastoreConfigError, match="not supported"):
        DatastoreConfig.from_env({"DATASTORE_TYPE": "kubernetes"})
    with pytest.raises(DatastoreConfigError, match="must start with http"):
        DatastoreConfig.from_env({"ETCD_ENDPOINTS": "10.0.0.1:2379"})
    with pytest.raises(DatastoreConfigError, match="etcdCertFile"):
        DatastoreConfig.from_env({"ETCD_CERT_FILE": "/cert.pem"})


def test_calico_api_config_file(tmp_path: Path) -> None:
    path = tmp_path / "calicoctl.cfg"
    path.write_text(
        "apiVersion: projectcalico.org/v3\n"
        "kind: CalicoAPIConfig\n"
        "metadata:\n"
        "spec:\n"
        '  datastoreType: "etcdv3"\n'
        '  etcdEndpoints: "http://etcd1:2379,http://etcd2:2379"\n'
        "  etcdCACertFile: /etc/ca.pem\n"
    )
    config = DatastoreConfig.load(path, env={"ETCD_ENDPOINTS": "http://ignored:1"})
    assert config.etcd_endpoints == ("http://etcd1:2379", "http://etcd2:2379")
    assert config.etcd_ca_cert_file == "/etc/ca.pem"
    path.write_text("apiVersion: projectcalico.org/v3\nkind: Pod\n")
    with pytest.raises(DatastoreConfigError, match="kind"):
        DatastoreConfig.from_file(path)
    with pytest.raises(DatastoreConfigError, match="cannot read"):
        DatastoreConfig.from_file(tmp_path / "missing.cfg")

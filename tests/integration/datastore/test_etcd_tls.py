"""EtcdKVStore over TLS with a client certificate, configured the Calico way."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pycalico.datastore.api import DatastoreError
from pycalico.datastore.config import DatastoreConfig
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.testing.etcd_server import EtcdServer, ServerTLS, make_test_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ServerTLS:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_etcd(pki: ServerTLS) -> Iterator[EtcdServer]:
    with EtcdServer(name="tls", tls=pki) as server:
        yield server


async def test_tls_with_client_certificate_from_the_environment(
    tls_etcd: EtcdServer, pki: ServerTLS
) -> None:
    assert tls_etcd.endpoint.startswith("https://")
    config = DatastoreConfig.from_env(
        {
            "ETCD_ENDPOINTS": tls_etcd.endpoint,
            "ETCD_CA_CERT_FILE": pki.ca_file,
            "ETCD_CERT_FILE": pki.client_cert_file,
            "ETCD_KEY_FILE": pki.client_key_file,
        }
    )
    kv = EtcdKVStore.from_config(config)
    try:
        revision = await kv.put("/calico/t/tls", b"secret")
        got = await kv.get("/calico/t/tls")
        assert got is not None and (got.value, got.revision) == (b"secret", revision)
    finally:
        await kv.close()


async def test_tls_without_a_client_certificate_is_refused(
    tls_etcd: EtcdServer, pki: ServerTLS
) -> None:
    config = DatastoreConfig.from_env(
        {"ETCD_ENDPOINTS": tls_etcd.endpoint, "ETCD_CA_CERT_FILE": pki.ca_file}
    )
    kv = EtcdKVStore.from_config(config, retry_timeout=0.5)
    try:
        with pytest.raises(DatastoreError):
            await kv.get("/calico/t/tls")
    finally:
        await kv.close()

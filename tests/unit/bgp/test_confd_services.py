"""confd watches Kubernetes for Service advertisement only while the BGPConfiguration asks for
it and it has a kubeconfig (the watch itself is tested against the real API server in
tests/integration/k8s/test_node_kubernetes.py)."""

from __future__ import annotations

from pathlib import Path

from pycalico.bgp.confd import Confd
from pycalico.datastore import paths
from pycalico.datastore.updates import decode_update
from pycalico.model.codec import encode_value
from pycalico.testing.memory_kv import MemoryKVStore

from .scenarios import config

# Nothing listens on port 9: the watch keeps retrying, which is all this test needs.
KUBECONFIG = """apiVersion: v1
kind: Config
current-context: c
clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
users: [{name: u, user: {token: t}}]
"""


def set_default(confd: Confd, **spec: object) -> None:
    key = paths.resource_key("bgpconfigurations", "default")
    update = decode_update(key, encode_value(config("default", **spec)), 1)
    assert update is not None
    confd.state.apply(update)


async def test_watch_runs_only_while_service_ranges_are_configured(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    confd = Confd(MemoryKVStore(), "node1", str(tmp_path / "bird.cfg"), kubeconfig=str(kubeconfig))
    try:
        set_default(confd, logSeverityScreen="Info")
        await confd.sync_service_watch()
        assert confd.service_watch is None and confd.service_routes() == frozenset()

        set_default(confd, serviceClusterIPs=[{"cidr": "10.96.0.0/12"}])
        await confd.sync_service_watch()
        watch = confd.service_watch
        assert watch is not None and not watch.synced
        # Renders wait for the watch's first list (the grace is 10 s; nothing answers here).
        assert confd.waiting_for_services()
        await confd.sync_service_watch()  # still wanted: the same watch
        assert confd.service_watch is watch
        # The ranges need no Kubernetes: they are in the build before the watch has listed.
        assert confd.build().ipv4.service_routes == ("10.96.0.0/12",)

        set_default(confd, serviceClusterIPs=[])
        await confd.sync_service_watch()
        assert confd.service_watch is None
        assert not confd.waiting_for_services()
    finally:
        await confd.stop_service_watch()


async def test_no_kubeconfig_no_watch(tmp_path: Path) -> None:
    confd = Confd(MemoryKVStore(), "node1", str(tmp_path / "bird.cfg"))
    set_default(confd, serviceClusterIPs=[{"cidr": "10.96.0.0/12"}])
    await confd.sync_service_watch()
    assert confd.service_watch is None
    # The ranges are still announced (they need no Kubernetes).
    assert confd.build().ipv4.service_routes == ("10.96.0.0/12",)

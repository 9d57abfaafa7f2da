"""Fixtures for the OpenStack driver against a real neutron-server (module scope: one server).

* ``etcd``/``gateway``: a real etcd and the driver's own JSON-gateway client to look at it;
* ``neutron``: PostgreSQL + migrated neutron-server with ML2 ``calico`` (resync every 2 s);
* ``api``: Neutron's REST API; ``compute``: two compute nodes (namespaces on a bridge, etcd via
  a loopback relay) each running a real Felix with ``interfacePrefix: tap,cali``.

Everything is stopped and removed at module end, also on failure.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from pycalico.openstack.etcd_gateway import EtcdGateway
from pycalico.testing import neutron_server
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.netns_fabric import Fabric, FabricNode
from pycalico.testing.openstack import FelixOnNode

pytestmark = pytest.mark.root
RESYNC = 2.0


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdServer]:
    if os.geteuid() != 0 or shutil.which("etcd") is None:
        pytest.skip("needs root and etcd")
    try:
        neutron_server.neutron_venv()
        neutron_server.postgres_bin()
    except FileNotFoundError as missing:
        pytest.skip(str(missing))
    with EtcdServer(name="openstack") as server:
        yield server


@pytest.fixture(scope="module")
def gateway(etcd: EtcdServer) -> EtcdGateway:
    return EtcdGateway([etcd.endpoint])


@pytest.fixture(scope="module")
def postgres(etcd: EtcdServer) -> Iterator[neutron_server.PostgresCluster]:
    with neutron_server.postgres() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def neutron(
    etcd: EtcdServer, postgres: neutron_server.PostgresCluster
) -> Iterator[neutron_server.NeutronServer]:
    with neutron_server.neutron(postgres, "neutron", etcd_endpoints=[etcd.endpoint],
                                resync_interval=RESYNC, election_ttl=4) as server:  # fmt: skip
        yield server


@pytest.fixture(scope="module")
def api(neutron: neutron_server.NeutronServer) -> neutron_server.NeutronAPI:
    return neutron_server.NeutronAPI(neutron.url)


@pytest.fixture(scope="module")
def compute(etcd: EtcdServer, gateway: EtcdGateway) -> Iterator[list[FabricNode]]:
    felixes: list[FelixOnNode] = []
    with Fabric("ostk", subnet="10.214.0", etcd_endpoint=etcd.endpoint) as fabric:
        try:
            nodes = [fabric.add_node(1, "compute-1"), fabric.add_node(2, "compute-2")]
            for node in nodes:
                felixes.append(FelixOnNode(node, gateway).start())
            yield nodes
        finally:
            for felix in felixes:
                felix.stop()

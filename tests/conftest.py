"""Shared fixtures: real etcd members, a clean key/value store per test, the ``root`` marker.

* ``etcd`` (session): one real etcd member (``EtcdServer``); tests that stop or restart it must
  leave it running.
* ``etcd_cluster`` (function): a fresh 3-member ``EtcdCluster``.
* ``kv`` (function, async): an ``EtcdKVStore`` on ``etcd`` with the whole keyspace emptied first.
* ``store`` (function, async): a ``ResourceStore`` over ``kv``.
* ``memory_kv`` (function): a ``MemoryKVStore`` driven by ``fake_clock``.
* ``kube_plane`` (session): one real kube-apiserver on its own etcd member (``KubeControlPlane``;
  the ``kv`` fixture's wipes of the shared etcd never touch it), stopped API server first, then
  etcd, whatever the tests did; ``kube`` (function, async): a ``KubeClient`` on it.

Under pytest-xdist (``make test`` runs ``-n``), ``LabLanesScheduling`` hands out the test files
in the order they are collected, each a unit of work (module fixtures are built once, as with
``--dist loadfile``), except the files that bring up whole labs: those form two units, the lanes
of ``LAB_LANES``, each run by one worker in turn.  So at most two labs share the machine's cores
at a time, while the other workers take the rest.

The fault drills' table (``tests/faults``) is gathered here, from the user properties of the
test reports: this file is the one conftest the controlling process of a pytest-xdist run loads,
and the reports are what reaches it from the workers.

Every etcd process is killed by the fixture finalisers, by ``atexit`` in
``pycalico.testing.etcd_server``, and by the kernel if the test run itself is killed.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from xdist.scheduler import LoadScopeScheduling

from pycalico.k8s.client import KubeClient
from pycalico.testing.etcd_server import EtcdCluster, EtcdServer
from pycalico.testing.kube_server import KubeControlPlane
from pycalico.testing.memory_kv import FakeClock, MemoryKVStore

FAULT_ROW = "fault_row"  # user property: (fault, packets lost, seconds to recover, consistency)
_FAULT_ROWS: list[tuple[str, ...]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":  # the last report of a test carries all of its properties
        _FAULT_ROWS.extend(
            tuple(value) for name, value in report.user_properties if name == FAULT_ROW
        )


def fault_table() -> str:
    lines = [
        "| fault | packets lost | seconds to recover | consistency check |",
        "| --- | --- | --- | --- |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in _FAULT_ROWS]
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _FAULT_ROWS:
        return
    terminalreporter.write_line("\nFault drills:\n" + fault_table())
    target = os.environ.get("PYCALICO_FAULTS_TABLE")
    if target:
        Path(target).write_text(fault_table() + "\n")


# Files (or directories, ending in "/") that bring up whole labs, in two lanes of about equal
# time, each run longest file first (seconds in brackets: a 4-worker run of the whole suite).
LAB_LANES = {
    "tests/e2e/test_lab.py": "labs-1",  # 230
    "tests/e2e/test_lab_kubernetes.py": "labs-1",  # 95
    "tests/e2e/test_ui.py": "labs-1",  # 65
    "tests/e2e/test_vxlan.py": "labs-1",  # 45
    "tests/e2e/test_ip_forwarding.py": "labs-1",  # 30
    "tests/e2e/test_lab_outside.py": "labs-1",  # 25
    "tests/e2e/test_netpol_lab.py": "labs-2",  # 190
    "tests/e2e/test_docs.py": "labs-2",  # 130, its blocks in order (a block uses the lab before)
    "tests/e2e/test_restart.py": "labs-2",  # 115
    "tests/faults/": "labs-2",  # 70, one lab for the package (``faultlab``)
}
# The other files that start right after the lanes: the slowest single setup (a neutron-server),
# which at the end of the run would keep its worker alone for minutes.
START_EARLY = ("tests/integration/openstack/",)


def _covers(prefix: str, path: str) -> bool:
    return path == prefix or (prefix.endswith("/") and path.startswith(prefix))


def work_unit(path: str) -> str:
    """The pytest-xdist unit of work of the test file at ``path`` (relative to the repository):
    its lane, or the file itself."""
    return next((lane for prefix, lane in LAB_LANES.items() if _covers(prefix, path)), path)


def run_order(path: str) -> tuple[int, int]:
    """Where the test file at ``path`` goes in the run: the lanes' files first, in the order of
    ``LAB_LANES``, then ``START_EARLY``, then the rest in their collection order."""
    lanes = [index for index, prefix in enumerate(LAB_LANES) if _covers(prefix, path)]
    if lanes:
        return (0, lanes[0])
    return (1, 0) if any(_covers(prefix, path) for prefix in START_EARLY) else (2, 0)


class LabLanesScheduling(LoadScopeScheduling):
    """pytest-xdist's scheduling by scope, the scope of a test being its file's group."""

    def _split_scope(self, nodeid: str) -> str:
        return work_unit(nodeid.split("::", 1)[0])


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> LabLanesScheduling:
    # A scheduler of our own rather than xdist_group marks: pytest-xdist 3.8 names a marked
    # test's group by rewriting ``item._nodeid``, which pytest 9.2 no longer reads.  Units in
    # collection order (``run_order``), not xdist's default of the units with most tests first:
    # the lanes start at once, and no long unit is left to run alone at the end.
    config.option.loadscopereorder = False
    return LabLanesScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A stable sort: tests keep their order within a file (test_docs' blocks depend on it).
    items.sort(key=lambda item: run_order(item.nodeid.split("::", 1)[0]))
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def etcd() -> Iterator[EtcdServer]:
    server = EtcdServer(name="pytest")
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def etcd_cluster() -> Iterator[EtcdCluster]:
    cluster = EtcdCluster(3)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
async def kv(etcd: EtcdServer) -> AsyncIterator[Any]:
    from pycalico.datastore.etcd import EtcdKVStore

    if not etcd.running:  # a previous test stopped it and failed before restarting it
        etcd.start()
    store = EtcdKVStore([etcd.endpoint])
    try:
        await store.delete_prefix("")
        yield store
    finally:
        await store.close()


@pytest.fixture
async def store(kv: Any) -> Any:
    from pycalico.datastore.resources import ResourceStore

    return ResourceStore(kv)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def memory_kv(fake_clock: FakeClock) -> MemoryKVStore:
    return MemoryKVStore(clock=fake_clock)


@pytest.fixture(scope="session")
def kube_plane() -> Iterator[KubeControlPlane]:
    plane = KubeControlPlane()
    try:
        plane.start()
        yield plane
    finally:
        plane.close()


@pytest.fixture
async def kube(kube_plane: KubeControlPlane) -> AsyncIterator[KubeClient]:
    client = await KubeClient.from_kubeconfig(kube_plane.kubeconfig)
    try:
        yield client
    finally:
        await client.close()

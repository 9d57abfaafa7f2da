"""Felix honours the datastore lock (ClusterInformation ``default`` ``datastoreReady: false``).

As Go Felix: started while locked, it waits (live, not ready) and programs nothing; when the flag
turns false while it runs, it forwards nothing more to the dataplane and exits (status 1) for
calico-node to restart it, and the restarted Felix waits.  After ``unlock`` the kernel is brought
to the datastore's state of that moment.

Two layers: the daemon in process against real etcd with the fake kernel (no root: what reaches
the dataplane, and when), and Felix supervised by calico-node's real ``Supervisor`` in a node
namespace with packets between pods (root).  The lock is written as ``calicoctl datastore migrate
lock`` writes it (``pycalico.ctl.datastore.set_datastore_ready``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from pycalico.ctl.datastore import set_datastore_ready
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.datastore.resources import ResourceStore
from pycalico.felix import config as felix_config
from pycalico.felix import daemon
from pycalico.felix.calc import key_of
from pycalico.felix.calc import ready as ready_flag
from pycalico.felix.dataplane.loop import Dataplane, DataplaneOptions
from pycalico.node.agent import ChildSpec, Supervisor
from pycalico.testing import felix_calc as build
from pycalico.testing import felix_world, netns
from pycalico.testing.connectivity import ConnectivityChecker, Probe
from pycalico.testing.fake_kernel import FakeKernel
from pycalico.testing.felix_world import put, reachability, serving
from pycalico.testing.netns_fabric import EtcdRelay

PODS = {"a": "10.67.0.1", "b": "10.67.0.2", "c": "10.67.0.3"}
LABELS = {"a": {"role": "attacker"}, "b": {"role": "web"}, "c": {"role": "client"}}
RELAY_PORT = 23790
DENY_ATTACKER = build.global_policy(
    "deny-attacker",
    selector="all()",
    ingress=[{"action": "Deny", "source": {"selector": "role == 'attacker'"}}, {"action": "Allow"}],
)
ATTACKER_BLOCKED = {("a", "b"), ("a", "c")}


async def eventually(condition: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not after {timeout}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


# --- the daemon in process: real etcd, fake kernel --------------------------------------------


class InProcessFelix:
    def __init__(self, kv: EtcdKVStore, hostname: str) -> None:
        environ = {
            "FELIX_FELIXHOSTNAME": hostname,
            "FELIX_HEALTHENABLED": "false",
            "FELIX_REPORTINGINTERVAL": "0",
            "FELIX_LOGFILEPATH": "none",
            "FELIX_ENDPOINTSTATUSPATHPREFIX": "",  # no status files on the host
        }
        bootstrap = felix_config.load(None, {}, environ, hostname)
        self.kernel = FakeKernel()
        self.factory_calls = 0
        self.felix = daemon.Felix(bootstrap, kv, {}, environ, self._factory)
        self.task: asyncio.Task[int] | None = None

    def _factory(self, options: DataplaneOptions) -> Dataplane:
        self.factory_calls += 1
        k = self.kernel
        return Dataplane(options, k.nft, k.routes, k.sysctls, k.conntrack)

    def start(self) -> None:
        self.task = asyncio.ensure_future(self.felix.run())

    def readiness(self) -> tuple[int, bytes]:
        code, _, body = self.felix._health_routes()["/readiness"]()
        return code, body

    def programmed(self) -> str:
        """Everything in the fake ``calico`` table, as text (empty: nothing programmed)."""
        if "inet calico" not in self.kernel.nft.tables:
            return ""
        table = self.kernel.nft.table()
        return "\n".join(f"{name}: {rules}" for name, rules in sorted(table.chains.items()))

    async def stop(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)


@pytest.fixture
async def in_process(kv: EtcdKVStore) -> AsyncIterator[InProcessFelix]:
    felix = InProcessFelix(kv, "lock-host")
    try:
        yield felix
    finally:
        await felix.stop()


def _applied(felix: InProcessFelix) -> Callable[[], bool]:
    dataplane = felix.felix.dataplane
    return lambda: dataplane is not None and dataplane.last_report is not None


async def test_locked_at_start_waits_then_an_unlock_programs_everything(
    kv: EtcdKVStore, in_process: InProcessFelix
) -> None:
    store = ResourceStore(kv)
    await set_datastore_ready(store, False)
    await put(kv, build.namespace_profile("default"))
    await put(kv, build.workload("pod-a", ips=["10.67.0.1"], node="lock-host", labels=LABELS["a"]))
    await put(kv, DENY_ATTACKER)
    in_process.start()
    await eventually(lambda: in_process.felix.datastore_locked, 5.0, "Felix to see the lock")
    await asyncio.sleep(0.5)  # time enough to have synced and programmed, were it not locked
    assert in_process.factory_calls == 0 and in_process.programmed() == ""
    code, body = in_process.readiness()
    assert code == 503 and b"locked" in body and in_process.felix.live()

    await set_datastore_ready(store, True)
    await eventually(lambda: _applied(in_process)(), 10.0, "the first apply after unlock")
    assert "deny-attacker" in in_process.programmed()
    await eventually(lambda: in_process.readiness()[0] == 200, 2.0, "readiness after unlock")


async def test_lock_while_running_forwards_nothing_more_and_exits_for_a_restart(
    kv: EtcdKVStore, in_process: InProcessFelix, caplog: pytest.LogCaptureFixture
) -> None:
    store = ResourceStore(kv)
    await set_datastore_ready(store, True)
    await put(kv, build.namespace_profile("default"))
    await put(kv, build.workload("pod-a", ips=["10.67.0.1"], node="lock-host", labels=LABELS["a"]))
    in_process.start()
    await eventually(lambda: _applied(in_process)(), 5.0, "the first apply")
    dataplane = in_process.felix.dataplane
    assert dataplane is not None
    seen: list[object] = []
    forward = dataplane.on_updates

    def spy(messages: list[Any]) -> None:
        seen.extend(messages)
        forward(messages)

    dataplane.on_updates = spy  # type: ignore[method-assign]
    # A policy written right after the lock is ordered after it: it must not reach the kernel.
    await set_datastore_ready(store, False)
    await put(kv, DENY_ATTACKER)
    assert in_process.task is not None
    code = await asyncio.wait_for(asyncio.shield(in_process.task), 5.0)
    assert code == daemon.EXIT_DATASTORE_NOT_READY == 1  # run() has ended its dataplane task
    assert "deny-attacker" not in in_process.programmed()
    assert not any("deny-attacker" in repr(message) for message in seen)
    assert ready_flag.BECAME_UNREADY_MESSAGE in caplog.text


# --- supervised Felix in a node namespace, with packets ---------------------------------------


@pytest.fixture
def matrix(world: tuple[netns.Topology, EtcdRelay]) -> Iterator[ConnectivityChecker]:
    with serving(world[0], PODS) as checker:
        yield checker


class SupervisedFelix:
    """``calico-felix`` in the node namespace, run and restarted by calico-node's Supervisor."""

    def __init__(self, topo: netns.Topology) -> None:
        self.node = topo.node
        self.hostname = f"felix-lock-{topo.tag}"
        self.log_dir = tempfile.mkdtemp(prefix="felix-lock-")
        self.health_port = 29099
        felix = os.path.join(os.path.dirname(sys.executable), "calico-felix")
        self.spec = ChildSpec(
            "felix",
            ["ip", "netns", "exec", self.node, felix],
            env={
                **os.environ,
                "FELIX_ETCDENDPOINTS": f"http://127.0.0.1:{RELAY_PORT}",
                "FELIX_FELIXHOSTNAME": self.hostname,
                "FELIX_LOGFILEPATH": "none",
                "FELIX_LOGSEVERITYSCREEN": "Info",
                "FELIX_HEALTHENABLED": "true",
                "FELIX_HEALTHPORT": str(self.health_port),
                "FELIX_REPORTINGINTERVAL": "0",
                "FELIX_CONFIGFILE": "/nonexistent",
                "FELIX_ENDPOINTSTATUSPATHPREFIX": "",  # no status files on the host
            },
        )
        self.supervisor = Supervisor(self.log_dir)
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.ensure_future(self.supervisor.supervise(self.spec))

    @property
    def starts(self) -> int:
        state = self.supervisor.children.get("felix")
        return state.starts if state is not None else 0

    @property
    def last_exit(self) -> int | None:
        state = self.supervisor.children.get("felix")
        return state.last_exit if state is not None else None

    def readiness(self) -> tuple[int, str]:
        try:
            with netns.enter(self.node):
                sock = socket.create_connection(("127.0.0.1", self.health_port), timeout=1)
            with sock:
                sock.sendall(b"GET /readiness HTTP/1.0\r\n\r\n")
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            head, _, body = data.decode().partition("\r\n\r\n")
            return int(head.split()[1]), body
        except (OSError, ValueError, IndexError):
            return 0, ""

    async def wait_for(self, what: str, condition: Callable[[], bool], timeout: float) -> None:
        try:
            await eventually(condition, timeout, what)
        except AssertionError as error:
            raise AssertionError(f"{error}\n--- felix log ---\n{self.tail()}") from None

    async def wait_ready(self) -> None:
        await self.wait_for("Felix ready", lambda: self.readiness()[0] == 200, 20.0)

    async def wait_locked(self) -> None:
        await self.wait_for(
            "Felix waiting for the lock to end",
            lambda: (lambda r: r[0] == 503 and "locked" in r[1])(self.readiness()),
            20.0,
        )

    def nft(self) -> str:
        return netns.netns_run(self.node, "nft", "list", "table", "inet", "calico", check=False)

    def tail(self, lines: int = 60) -> str:
        with contextlib.suppress(OSError), open(os.path.join(self.log_dir, "felix.log")) as log:
            return "".join(log.readlines()[-lines:])
        return ""

    async def close(self) -> None:
        await self.supervisor.stop_all()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        for name in os.listdir(self.log_dir):
            os.unlink(os.path.join(self.log_dir, name))
        os.rmdir(self.log_dir)


@pytest.fixture
async def supervised(world: tuple[netns.Topology, EtcdRelay]) -> AsyncIterator[SupervisedFelix]:
    topo, _ = world
    felix = SupervisedFelix(topo)
    try:
        yield felix
    finally:
        await felix.close()
        netns.netns_run(topo.node, "nft", "delete", "table", "inet", "calico", check=False)
        netns.netns_run(topo.node, "ip", "route", "flush", "proto", "80", check=False)


def matrix_of(blocked: set[tuple[str, str]] | None = None) -> dict[Probe, bool]:
    return reachability(PODS, blocked or ())


async def write_pods(kv: EtcdKVStore, topo: netns.Topology, hostname: str) -> None:
    await felix_world.write_pods(kv, topo, hostname, PODS, LABELS)


async def holds(
    felix: SupervisedFelix, checker: ConnectivityChecker, expected: dict[Probe, bool], for_s: float
) -> None:
    """``expected`` holds now and still after ``for_s`` seconds (time Felix would need)."""
    for _ in range(2):
        actual = await asyncio.to_thread(checker.measure, expected)
        wrong = {probe: got for probe, got in actual.items() if got != expected[probe]}
        assert not wrong, f"changed while locked: {wrong}\n--- felix log ---\n{felix.tail()}"
        await asyncio.sleep(for_s)


async def converges(
    felix: SupervisedFelix, checker: ConnectivityChecker, expected: dict[Probe, bool], within: float
) -> None:
    try:
        await asyncio.to_thread(checker.check, expected, within)
    except AssertionError as error:
        raise AssertionError(f"{error}\n--- felix log ---\n{felix.tail()}") from None


async def lock_and_wait_for_restart(
    store: ResourceStore, felix: SupervisedFelix, change: Callable[[], Awaitable[None]]
) -> None:
    starts = felix.starts
    await set_datastore_ready(store, False)
    await felix.wait_for("Felix to exit and be restarted", lambda: felix.starts > starts, 10.0)
    assert felix.last_exit == 1, felix.tail()
    await felix.wait_locked()
    await change()


@pytest.mark.root
async def test_policy_added_while_locked_is_enforced_only_after_unlock(
    kv: EtcdKVStore,
    world: tuple[netns.Topology, EtcdRelay],
    supervised: SupervisedFelix,
    matrix: ConnectivityChecker,
) -> None:
    topo, _ = world
    store = ResourceStore(kv)
    await set_datastore_ready(store, True)
    await write_pods(kv, topo, supervised.hostname)
    supervised.start()
    await supervised.wait_ready()
    await converges(supervised, matrix, matrix_of(), 5.0)

    await lock_and_wait_for_restart(store, supervised, lambda: put(kv, DENY_ATTACKER))
    await holds(supervised, matrix, matrix_of(), 1.0)
    assert "deny-attacker" not in supervised.nft()

    await set_datastore_ready(store, True)
    await converges(supervised, matrix, matrix_of(ATTACKER_BLOCKED), 10.0)
    log = supervised.tail(400)
    assert ready_flag.BECAME_UNREADY_MESSAGE in log and ready_flag.WAITING_MESSAGE in log


@pytest.mark.root
async def test_policy_deleted_while_locked_stays_enforced_until_unlock(
    kv: EtcdKVStore,
    world: tuple[netns.Topology, EtcdRelay],
    supervised: SupervisedFelix,
    matrix: ConnectivityChecker,
) -> None:
    topo, _ = world
    store = ResourceStore(kv)
    await set_datastore_ready(store, True)
    await write_pods(kv, topo, supervised.hostname)
    await put(kv, DENY_ATTACKER)
    supervised.start()
    await supervised.wait_ready()
    await converges(supervised, matrix, matrix_of(ATTACKER_BLOCKED), 5.0)

    async def delete_policy() -> None:
        await kv.delete(key_of(DENY_ATTACKER))

    await lock_and_wait_for_restart(store, supervised, delete_policy)
    await holds(supervised, matrix, matrix_of(ATTACKER_BLOCKED), 1.0)
    assert "deny-attacker" in supervised.nft()

    await set_datastore_ready(store, True)
    await converges(supervised, matrix, matrix_of(), 10.0)
    assert "deny-attacker" not in supervised.nft()


@pytest.mark.root
async def test_felix_started_while_locked_programs_nothing_until_unlock(
    kv: EtcdKVStore,
    world: tuple[netns.Topology, EtcdRelay],
    supervised: SupervisedFelix,
    matrix: ConnectivityChecker,
) -> None:
    topo, _ = world
    store = ResourceStore(kv)
    await set_datastore_ready(store, False)
    await write_pods(kv, topo, supervised.hostname)
    await put(kv, DENY_ATTACKER)
    supervised.start()
    await supervised.wait_locked()
    await asyncio.sleep(0.5)
    assert supervised.nft() == "" and supervised.starts == 1
    routes = netns.netns_run(topo.node, "ip", "route", "show", "proto", "80", check=False)
    assert routes.strip() == ""
    # Without Felix's routes and proxy ARP no pod reaches another yet.
    await holds(supervised, matrix, {probe: False for probe in matrix_of()}, 0.1)

    await set_datastore_ready(store, True)
    await converges(supervised, matrix, matrix_of(ATTACKER_BLOCKED), 2.0)
    await supervised.wait_ready()

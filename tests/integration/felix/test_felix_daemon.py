"""``calico-felix`` end to end: real etcd, the real calculation graph, real nftables, packets.

Felix runs as a process inside a node namespace (etcd reached through a loopback relay); the
test writes Calico resources to etcd and checks connectivity matrices between pods.  Requires
root.  The etcd-outage test takes about 40 s (marked slow).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import pytest

from pycalico.datastore import paths
from pycalico.datastore.etcd import EtcdKVStore
from pycalico.felix.calc import key_of
from pycalico.model.meta import Resource
from pycalico.model.node import FelixConfiguration
from pycalico.testing import felix_calc as build
from pycalico.testing import felix_world, netns
from pycalico.testing.connectivity import ConnectivityChecker, Probe
from pycalico.testing.etcd_server import EtcdServer, free_port
from pycalico.testing.felix_world import pod_workload, put, reachability, serving
from pycalico.testing.netns_fabric import EtcdRelay

pytestmark = pytest.mark.root

PODS = {"a": "10.66.0.1", "b": "10.66.0.2", "c": "10.66.0.3"}
LABELS = {"a": {"role": "attacker"}, "b": {"role": "web"}, "c": {"role": "client"}}
RELAY_PORT = 23790


class FelixProcess:
    def __init__(self, node: str, hostname: str, etcd_port: int) -> None:
        self.node = node
        self.hostname = hostname
        self.health_port = free_port()
        self.metrics_port = free_port()
        self.env = {
            **os.environ,
            "FELIX_ETCDENDPOINTS": f"http://127.0.0.1:{etcd_port}",
            "FELIX_FELIXHOSTNAME": hostname,
            "FELIX_LOGFILEPATH": "none",
            "FELIX_LOGSEVERITYSCREEN": "Info",
            "FELIX_HEALTHENABLED": "true",
            "FELIX_HEALTHPORT": str(self.health_port),
            "FELIX_PROMETHEUSMETRICSENABLED": "true",
            "FELIX_PROMETHEUSMETRICSHOST": "127.0.0.1",
            "FELIX_PROMETHEUSMETRICSPORT": str(self.metrics_port),
            "FELIX_REPORTINGINTERVAL": "1",
            "FELIX_ENDPOINTREPORTINGENABLED": "true",
            "FELIX_CONFIGFILE": "/nonexistent",
            "FELIX_ENDPOINTSTATUSPATHPREFIX": "",  # no status files on the host
        }
        # Open for the process's lifetime; closed and removed in cleanup().
        self.log = tempfile.NamedTemporaryFile(prefix="felix-", suffix=".log", delete=False)  # noqa: SIM115
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        felix = os.path.join(os.path.dirname(sys.executable), "calico-felix")
        self.process = subprocess.Popen(
            ["ip", "netns", "exec", self.node, felix],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def http(self, port: int, path: str) -> tuple[int, str]:
        with netns.enter(self.node):
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
        with sock:
            sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.decode().partition("\r\n\r\n")
        return int(head.split()[1]), body

    def wait_ready(self, timeout: float = 20.0) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            assert self.process is not None and self.process.poll() is None, self.tail()
            with contextlib.suppress(OSError, ValueError, IndexError):
                if self.http(self.health_port, "/readiness")[0] == 200:
                    return time.monotonic() - start
            time.sleep(0.1)
        raise AssertionError(f"felix not ready after {timeout}s\n{self.tail()}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def tail(self, lines: int = 40) -> str:
        with open(self.log.name, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])

    def cleanup(self) -> None:
        self.stop()
        # ip netns exec leaves felix as its child; make sure nothing survives.
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)


@pytest.fixture
def felix(world: tuple[netns.Topology, EtcdRelay]) -> Iterator[FelixProcess]:
    topo, _ = world
    process = FelixProcess(topo.node, f"felix-{topo.tag}", RELAY_PORT)
    try:
        yield process
    finally:
        process.cleanup()
        # Leave the node namespace clean for the next test: no table, no Felix routes.
        netns.netns_run(topo.node, "nft", "delete", "table", "inet", "calico", check=False)
        netns.netns_run(topo.node, "ip", "route", "flush", "proto", "80", check=False)


@pytest.fixture
def matrix(world: tuple[netns.Topology, EtcdRelay]) -> Iterator[ConnectivityChecker]:
    with serving(world[0], PODS) as checker:
        yield checker


async def check(
    felix: FelixProcess,
    checker: ConnectivityChecker,
    expected: dict[Probe, bool],
    deadline: float = 5.0,
) -> float:
    """``checker.check`` off the event loop; on failure the message ends with Felix's log."""
    try:
        return await asyncio.to_thread(checker.check, expected, deadline)
    except AssertionError as error:
        raise AssertionError(f"{error}\n--- felix log ---\n{felix.tail(60)}") from None


def workload(topo: netns.Topology, key: str, **fields: Any) -> Resource:
    """The pod's WorkloadEndpoint, as the CNI plugin writes it (with the pod's MAC)."""
    return pod_workload(topo, key, PODS[key], **fields)


async def write_pods(kv: EtcdKVStore, topo: netns.Topology, hostname: str) -> None:
    await felix_world.write_pods(kv, topo, hostname, PODS, LABELS)


def matrix_of(blocked: set[tuple[str, str]] = frozenset()) -> dict[Probe, bool]:  # type: ignore[assignment]
    return reachability(PODS, blocked)


DENY_ATTACKER = build.global_policy(
    "deny-attacker",
    selector="all()",
    ingress=[{"action": "Deny", "source": {"selector": "role == 'attacker'"}}, {"action": "Allow"}],
)
ATTACKER_BLOCKED = {("a", "b"), ("a", "c")}


async def test_policy_from_etcd_enforced_and_status_reported(
    kv: EtcdKVStore,
    world: tuple[netns.Topology, EtcdRelay],
    felix: FelixProcess,
    matrix: ConnectivityChecker,
) -> None:
    topo, _ = world
    await write_pods(kv, topo, felix.hostname)
    felix.start()
    await asyncio.to_thread(felix.wait_ready)
    await check(felix, matrix, matrix_of())

    # How fast is bench's business (bench.felix_e2e, bench.felix_cold_start); here: that it is.
    await put(kv, DENY_ATTACKER)
    await check(felix, matrix, matrix_of(ATTACKER_BLOCKED), 10.0)

    await kv.delete(key_of(DENY_ATTACKER))
    await check(felix, matrix, matrix_of(), 10.0)

    # A label change moves c into the attacker selector and back out.
    await put(kv, DENY_ATTACKER)
    c = workload(topo, "c", node=felix.hostname, labels={"role": "attacker"})
    await put(kv, c)
    await check(felix, matrix, matrix_of(ATTACKER_BLOCKED | {("c", "a"), ("c", "b")}), 2.0)
    await write_pods(kv, topo, felix.hostname)
    await check(felix, matrix, matrix_of(ATTACKER_BLOCKED), 2.0)

    # Status: heartbeat under a lease, endpoint statuses "up", health and metrics over HTTP.
    status = await kv.get(paths.felix_status_key(felix.hostname))
    assert status is not None and status.lease != 0
    heartbeat = json.loads(status.value)
    assert set(heartbeat) == {"time", "uptime", "first_update"}
    assert await kv.get(paths.felix_last_reported_status_key(felix.hostname)) is not None
    endpoint_key = paths.workload_endpoint_status_key(
        felix.hostname, "k8s", "default/pod-a", "eth0"
    )
    for _ in range(50):
        endpoint_status = await kv.get(endpoint_key)
        if endpoint_status is not None:
            break
        await asyncio.sleep(0.1)
    assert endpoint_status is not None and json.loads(endpoint_status.value) == {"status": "up"}
    assert felix.http(felix.health_port, "/liveness")[0] == 200
    code, metrics = felix.http(felix.metrics_port, "/metrics")
    assert code == 200
    assert "felix_int_dataplane_apply_time_seconds_count" in metrics
    assert "felix_active_local_endpoints 3.0" in metrics
    assert felix.stop() == 0, felix.tail()


async def wait_listening(namespace: str, port: int, timeout: float = 10.0) -> None:
    """Until a TCP socket listens on ``port`` in ``namespace`` (a server that just started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listening = netns.netns_run(namespace, "ss", "-Hltn", f"sport = :{port}", check=False)
        if listening.strip():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"nothing listens on port {port} in {namespace} after {timeout}s")


async def test_restart_during_flow_keeps_it_and_sweeps_policy_deleted_while_down(
    kv: EtcdKVStore,
    world: tuple[netns.Topology, EtcdRelay],
    felix: FelixProcess,
    matrix: ConnectivityChecker,
) -> None:
    topo, _ = world
    await write_pods(kv, topo, felix.hostname)
    await put(kv, DENY_ATTACKER)
    felix.start()
    await asyncio.to_thread(felix.wait_ready)
    await check(felix, matrix, matrix_of(ATTACKER_BLOCKED))

    server = subprocess.Popen(
        ["ip", "netns", "exec", topo.pods["b"].name, "iperf3", "-s", "-1", "-p", "5201"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await wait_listening(topo.pods["b"].name, 5201)
        client = subprocess.Popen(
            ["ip", "netns", "exec", topo.pods["c"].name, "iperf3", "-c", PODS["b"], "-p", "5201",
             "-u", "-b", "20M", "-t", "6", "-J"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        await asyncio.sleep(1.5)
        felix.kill()
        await kv.delete(key_of(DENY_ATTACKER))  # deleted while Felix is down
        felix.start()
        await asyncio.to_thread(felix.wait_ready)
        out, err = await asyncio.to_thread(client.communicate, timeout=30)
        assert client.returncode == 0, err.decode()
        summary: dict[str, Any] = json.loads(out)["end"]["sum"]
        assert summary["lost_percent"] < 1.0, summary
    finally:
        server.kill()
        server.wait()
    # The policy deleted while Felix was down is gone from the kernel.
    await check(felix, matrix, matrix_of(), 2.0)
    assert "deny-attacker" not in netns.netns_run(
        topo.node, "nft", "list", "table", "inet", "calico"
    )


@pytest.mark.slow
async def test_etcd_outage_keeps_connectivity_and_later_policy_is_enforced(
    kv: EtcdKVStore,
    etcd_server: EtcdServer,
    world: tuple[netns.Topology, EtcdRelay],
    felix: FelixProcess,
    matrix: ConnectivityChecker,
) -> None:
    topo, _ = world
    await write_pods(kv, topo, felix.hostname)
    felix.start()
    await asyncio.to_thread(felix.wait_ready)
    await check(felix, matrix, matrix_of())
    etcd_server.stop()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert felix.process is not None and felix.process.poll() is None, felix.tail()
            actual = await asyncio.to_thread(matrix.measure, matrix_of())
            assert all(actual.values()), actual
            await asyncio.sleep(2)
    finally:
        etcd_server.start()
    store = EtcdKVStore([etcd_server.endpoint])
    try:
        await put(store, DENY_ATTACKER)
    finally:
        await store.close()
    await check(felix, matrix, matrix_of(ATTACKER_BLOCKED), 10.0)


async def test_restart_only_config_change_exits_for_restart(
    kv: EtcdKVStore, world: tuple[netns.Topology, EtcdRelay], felix: FelixProcess
) -> None:
    topo, _ = world
    await write_pods(kv, topo, felix.hostname)
    felix.start()
    await asyncio.to_thread(felix.wait_ready)
    config = FelixConfiguration.model_validate(
        {"metadata": {"name": f"node.{felix.hostname}"},
         "spec": {"defaultEndpointToHostAction": "Accept"}}
    )  # fmt: skip
    await put(kv, config)
    assert felix.process is not None
    code = await asyncio.to_thread(felix.process.wait, 10)
    assert code == 129, felix.tail()


# --- a matrix of policy scenarios, in Calico's own terms ---------------------------------------

SCENARIO_PODS = {  # key: (namespace, labels)
    "a": ("default", {"role": "attacker"}),
    "b": ("default", {"role": "web"}),
    "c": ("other", {"role": "client"}),
}
ALL_PROBES = [
    Probe(src, dst, port, proto)
    for src in PODS
    for dst in PODS
    if src != dst
    for port, proto in ((80, "tcp"), (81, "tcp"), (53, "udp"), (0, "icmp"))
]


def expect(blocked: Any) -> dict[Probe, bool]:
    """``blocked(probe) -> bool``: True where the scenario must drop the probe."""
    return {probe: not blocked(probe) for probe in ALL_PROBES}


def to_b(probe: Probe) -> bool:
    return probe.destination == "b"


SCENARIOS: list[tuple[str, list[Resource], Any]] = [
    (
        "namespace selector",
        [build.policy("from-other", namespace="default", selector="role == 'web'",
                      ingress=[{"action": "Allow", "source": {
                          "namespaceSelector": "projectcalico.org/name == 'other'"}}])],
        lambda p: to_b(p) and p.source != "c",
    ),
    (
        "ports and port ranges",
        [build.global_policy("web-ports", selector="role == 'web'", ingress=[
            {"action": "Allow", "protocol": "TCP", "destination": {"ports": ["79:80"]}},
            {"action": "Allow", "protocol": "UDP", "destination": {"ports": [53]}}])],
        lambda p: to_b(p) and (p.protocol == "icmp" or p.port == 81),
    ),
    (
        "egress rule with nets",
        [build.global_policy("attacker-egress", selector="role == 'attacker'", types=["Egress"],
                             egress=[{"action": "Allow", "destination": {"nets": ["10.66.0.2/32"]}}])],
        lambda p: p.source == "a" and p.destination == "c",
    ),
    (
        "notNets",
        [build.global_policy("not-attacker", selector="role == 'web'", ingress=[
            {"action": "Allow", "source": {"notNets": ["10.66.0.1/32"]}}])],
        lambda p: to_b(p) and p.source == "a",
    ),
    (
        "Pass to the next tier",
        [build.tier("security", order=100),
         build.global_policy("security.pass-clients", tier="security", selector="role == 'web'",
                             ingress=[{"action": "Pass", "source": {"selector": "role == 'client'"}},
                                      {"action": "Deny"}]),
         build.global_policy("web-80", selector="role == 'web'",
                             ingress=[{"action": "Allow", "protocol": "TCP",
                                       "destination": {"ports": [80]}}])],
        lambda p: to_b(p) and not (p.source == "c" and p.port == 80),
    ),
    (
        "order: Deny before Allow",
        [build.global_policy("deny-80", order=10, selector="role == 'web'",
                             ingress=[{"action": "Deny", "protocol": "TCP",
                                       "destination": {"ports": [80]}}]),
         build.global_policy("allow-all", order=20, selector="role == 'web'",
                             ingress=[{"action": "Allow"}])],
        lambda p: to_b(p) and p.port == 80,
    ),
    (
        "tier default action Pass falls back to the profile",
        [build.tier("observe", order=50, default_action="Pass"),
         build.global_policy("observe.log", tier="observe", selector="role == 'web'",
                             ingress=[{"action": "Log"}])],
        lambda p: False,
    ),
    (
        "tier default action Deny ends evaluation",
        [build.tier("observe", order=50, default_action="Deny"),
         build.global_policy("observe.log", tier="observe", selector="role == 'web'",
                             ingress=[{"action": "Log"}])],
        to_b,
    ),
]  # fmt: skip


async def put_scenario_pods(kv: EtcdKVStore, topo: netns.Topology, felix: FelixProcess) -> None:
    """The policy matrix's pods (``SCENARIO_PODS``) and their namespaces' profiles."""
    await put(kv, build.namespace_profile("default"))
    await put(kv, build.namespace_profile("other"))
    for key, (namespace, labels) in SCENARIO_PODS.items():
        await put(kv, workload(topo, key, namespace=namespace, node=felix.hostname, labels=labels))


async def test_policy_scenarios_match_their_reachability_matrix(
    kv: EtcdKVStore, world: tuple[netns.Topology, EtcdRelay], felix: FelixProcess
) -> None:
    topo, _ = world
    await put_scenario_pods(kv, topo, felix)
    with serving(topo, PODS, tcp_ports=(80, 81)) as checker:
        felix.start()
        await asyncio.to_thread(felix.wait_ready)
        baseline = expect(lambda p: False)
        await check(felix, checker, baseline)
        for name, resources, blocked in SCENARIOS:
            for resource in resources:
                await put(kv, resource)
            try:
                await check(felix, checker, expect(blocked), 3.0)
            except AssertionError as error:
                raise AssertionError(f"scenario {name!r}:\n{error}") from None
            for resource in reversed(resources):
                await kv.delete(key_of(resource))
            try:
                await check(felix, checker, baseline, 3.0)
            except AssertionError as error:
                raise AssertionError(f"after removing scenario {name!r}:\n{error}") from None

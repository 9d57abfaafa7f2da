"""Four calico-nodes with real BIRD, each in a network namespace on a shared bridge, one etcd.

One cluster for the whole module (starting it costs seconds); the tests run in file order and
each leaves the cluster as the next expects:

1. full mesh, dual stack: every node has 3 Established ``Mesh_`` sessions per family;
   ``calicoctl node status`` shows them;
2. IPAM blocks claimed on node 1 and node 2 become BIRD kernel routes on every other node (and
   a blackhole on the owner), and a pod on node 2 pings a pod on node 1; an IPv6 block too;
   the pods' own routes, programmed by Felix's route driver over the plugin-style metric-0
   route, stay local at the normal priority (metric 1024, as Calico's Felix programs them;
   at metric 0 BIRD would announce every pod's /32); a pod route of better priority (lower metric) is announced beneath its
   block and installed elsewhere at that metric, and withdrawn when it is normal again;
3. an external router (gobgpd) as a global BGPPeer, with a TCP-MD5 password from a
   secretKeyRef, gets every pod block and nothing else;
4. route reflectors (mesh off, BGPPeers by peerSelector): other nodes have exactly 2 sessions,
   routes stay complete, pods still ping; stopping one reflector keeps them;
5. BIRD SIGKILLed on a node: calico-node restarts it, sessions and routes come back, and with
   graceful restart a ping flow through that node keeps going;
6. confd SIGKILLed: calico-node restarts it and the new one renders the next change.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pycalico.felix import messages as m
from pycalico.felix.dataplane.routes import RouteManager
from pycalico.felix.drivers.routes import NORMAL_ROUTE_PRIORITY, NetlinkRoutes, RouteTable
from pycalico.testing import netns
from pycalico.testing.bgp_cluster import BgpCluster, GoBgp, wait_for
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.netns_fabric import FabricNode

pytestmark = [pytest.mark.root, pytest.mark.slow]

ROUTER_AS = 65000


class FelixRoutes:
    """Felix's own route manager and driver programming a node's pod routes (the cluster runs
    without Felix's policy dataplane): the pod's route ends where Felix leaves it — at the normal
    priority, the plugin-style metric-0 route the fabric made taken over."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        with netns.enter(namespace):
            self.backend = NetlinkRoutes()
        self.table = RouteTable(self.backend)
        self.table.needs_resync = False  # a running Felix seeing a new pod: the incremental path
        self.manager = RouteManager(self.table)

    def apply(self) -> None:
        with netns.enter(self.namespace):
            self.manager.complete_deferred_work()
            assert self.table.apply() == 0

    def add_pod(self, pod: str, interface: str, address: str) -> None:
        wep = m.WorkloadEndpointID("k8s", f"default/{pod}", "eth0")
        self.manager.on_update(m.WorkloadEndpointUpdate(wep, interface, "", (address,), (), (), ()))
        self.apply()

    def set_metric(self, destination: str, metric: int) -> None:
        """Re-program a pod's route at another metric (as Calico does for a migrating VM)."""
        route = self.table.get(destination)
        assert route is not None
        self.table.set_route(dataclasses.replace(route, metric=metric))
        self.apply()


@pytest.fixture(scope="module")
def felix_routes(cluster: BgpCluster) -> Iterator[dict[str, FelixRoutes]]:
    """node name -> its Felix route driver."""
    drivers = {node.name: FelixRoutes(node.namespace) for node in cluster.nodes[:2]}
    yield drivers
    for driver in drivers.values():
        driver.backend.close()


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The nodes' CALICO_BGP_SECRETS_DIR: ``<dir>/<secret name>/<key>`` files."""
    return tmp_path_factory.mktemp("bgp-secrets")


@pytest.fixture(scope="module")
def cluster(etcd: EtcdServer, secrets: Path) -> Iterator[BgpCluster]:
    if not etcd.running:
        etcd.start()
    with BgpCluster(
        etcd.endpoint,
        4,
        prefix="pcbt",
        subnet6="fd00:213",
        pool6="fd70::/48",
        extra_env={"CALICO_BGP_SECRETS_DIR": str(secrets)},
    ) as built:
        built.call(lambda kv: kv.delete_prefix(""))
        built.start()
        try:
            yield built
        except BaseException:
            raise
        finally:
            for node in built.nodes:
                sys.stderr.write(built.logs(node)[-3000:] + "\n")


@pytest.fixture(scope="module")
def pods(cluster: BgpCluster, felix_routes: dict[str, FelixRoutes]) -> dict[str, tuple[str, str]]:
    """pod name -> (namespace, address): pod-a on node 1, pod-b on node 2."""
    result = {}
    for tag, node in (("pa", cluster.nodes[0]), ("pb", cluster.nodes[1])):
        address = cluster.assign(node, f"k8s-pod-network.{tag}")
        pod_ip = str(address.ip)
        namespace = cluster.fabric.add_pod(node, f"{pod_ip}/32", tag)
        interface = f"cali{cluster.fabric.prefix}{tag}"[:15]  # the fabric's host-side veth
        felix_routes[node.name].add_pod(tag, interface, f"{pod_ip}/32")
        shown = cluster.fabric.routes(node.namespace)
        assert [(r.get("protocol"), r.get("metric", 0)) for r in shown if r["dst"] == pod_ip] == [
            ("80", 1024)
        ], shown
        result[tag] = (namespace, pod_ip)
    return result


@pytest.fixture(scope="module")
def block6(cluster: BgpCluster) -> str:
    """An IPv6 block claimed by node 1."""
    address = cluster.assign(cluster.nodes[0], "k8s-pod-network.pa6", version=6)
    return str(address.network)


def routes6_complete(cluster: BgpCluster, block: str) -> bool:
    owner = cluster.nodes[0]
    assert owner.address6 is not None
    for node in cluster.nodes[1:]:
        if node.process is None or node.process.poll() is not None:
            continue
        route = cluster.kernel_routes(node, 6).get(block)
        if route is None or route.get("gateway") != owner.address6.split("/")[0]:
            return False
    return block in cluster.kernel_routes(owner, 6)


def names(kind: str, nodes: list[FabricNode]) -> set[str]:
    """Protocol names for sessions with ``nodes``, both families."""
    found = set()
    for node in nodes:
        found.add(f"{kind}_{node.ip.replace('.', '_')}")
        assert node.address6 is not None
        found.add(f"{kind}_{node.address6.split('/')[0].replace(':', '_')}")
    return found


def blocks_of(cluster: BgpCluster, pods: dict[str, tuple[str, str]]) -> dict[str, str]:
    """block CIDR -> owning node's IP, for the two pods' blocks."""
    owners = {"pa": cluster.nodes[0], "pb": cluster.nodes[1]}
    return {
        str(ipaddress.ip_interface(f"{address}/26").network): owners[tag].ip
        for tag, (_, address) in pods.items()
    }


def routes_complete(cluster: BgpCluster, blocks: dict[str, str]) -> bool:
    for node in cluster.nodes:
        if node.process is None or node.process.poll() is not None:
            continue
        routes = cluster.kernel_routes(node)
        for block, owner in blocks.items():
            route = routes.get(block)
            if route is None:
                return False
            if owner == node.ip:
                if route.get("type") != "blackhole":
                    return False
            elif route.get("gateway") != owner:
                return False
    return True


def test_full_mesh(cluster: BgpCluster) -> None:
    for node in cluster.nodes:
        expected = names("Mesh", [other for other in cluster.nodes if other != node])
        try:
            wait_for(
                lambda node=node, expected=expected: set(cluster.established(node)) == expected, 30
            )
        except TimeoutError:
            pytest.fail(f"{node.name}: {cluster.bgp_protocols(node)}\n{cluster.logs(node)}")
    # The node's Node resource carries the autodetected address.
    registered = cluster.get("Node", "node1")
    assert registered.spec.bgp.ipv4_address == "10.213.0.1/24"  # type: ignore[attr-defined]
    status = subprocess.run(
        [
            str(Path(sys.executable).parent / "calicoctl"),
            "node",
            "status",
            "--bird-socket",
            cluster.nodes[0].bird_socket,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert status.returncode == 0, status.stderr
    assert status.stdout.startswith("Calico process is running.\n\nIPv4 BGP status\n")
    for other in ("10.213.0.2", "10.213.0.3", "10.213.0.4"):
        row = next(line for line in status.stdout.splitlines() if f" {other} " in line)
        assert "node-to-node mesh" in row and "Established" in row, row
    assert "\nIPv6 BGP status\n" in status.stdout
    for other in ("fd00:213::2", "fd00:213::3", "fd00:213::4"):
        row = next(line for line in status.stdout.splitlines() if f" {other} " in line)
        assert "node-to-node mesh" in row and "Established" in row, row


def test_blocks_become_routes_and_pods_reach_each_other(
    cluster: BgpCluster, pods: dict[str, tuple[str, str]], block6: str
) -> None:
    blocks = blocks_of(cluster, pods)
    assert len(blocks) == 2
    try:
        wait_for(lambda: routes_complete(cluster, blocks), 30)
    except TimeoutError:
        pytest.fail(f"routes: { {n.name: cluster.kernel_routes(n) for n in cluster.nodes} }")
    # Only blocks: the pods' /32 routes stay local (they are inside the owner's block).  The
    # plugin-style metric-0 route the fabric adds first may be announced for a moment (as with
    # Calico's CNI plugin and Felix); once Felix's route driver has taken it over, it is gone.
    for node in cluster.nodes[2:]:
        try:
            wait_for(lambda n=node: set(cluster.kernel_routes(n)) == set(blocks), 10)  # type: ignore[misc]
        except TimeoutError:
            pytest.fail(f"{node.name} has pod routes: {cluster.kernel_routes(node)}")
    pod_b_namespace, _ = pods["pb"]
    _, pod_a_ip = pods["pa"]
    assert wait_for(lambda: cluster.ping(pod_b_namespace, pod_a_ip), 15)
    try:
        wait_for(lambda: routes6_complete(cluster, block6), 20)
    except TimeoutError:
        pytest.fail(
            f"IPv6 {block6}: { {n.name: cluster.kernel_routes(n, 6) for n in cluster.nodes} }"
        )


def test_better_priority_pod_route_is_announced_beneath_its_block(
    cluster: BgpCluster, pods: dict[str, tuple[str, str]], felix_routes: dict[str, FelixRoutes]
) -> None:
    owner, observer = cluster.nodes[0], cluster.nodes[2]
    _, pod_ip = pods["pa"]
    destination = f"{pod_ip}/32"

    def metric_seen() -> object:
        route = cluster.kernel_routes(observer).get(pod_ip)
        return None if route is None else route.get("metric", 0)

    felix = felix_routes[owner.name]
    felix.set_metric(destination, 512)
    try:
        # The local preference carries the priority: the observer installs metric 512.
        wait_for(lambda: metric_seen() == 512, 20)
    except TimeoutError:
        pytest.fail(f"{observer.name}: {cluster.fabric.routes(observer.namespace)}")
    finally:
        felix.set_metric(destination, NORMAL_ROUTE_PRIORITY)
    assert wait_for(lambda: metric_seen() is None, 20), cluster.kernel_routes(observer)


def test_external_router_gets_every_block_and_nothing_else(
    cluster: BgpCluster, pods: dict[str, tuple[str, str]], secrets: Path
) -> None:
    """The peering is also TCP-MD5 protected: the password comes from a secretKeyRef."""
    blocks = blocks_of(cluster, pods)
    (secrets / "bgp-secrets").mkdir()
    (secrets / "bgp-secrets" / "router").write_text("s3cret pass\n")
    namespace, address = cluster.fabric.add_router(100)
    router = GoBgp(cluster.fabric, namespace, address, ROUTER_AS)
    router.start([(node.ip, 64512) for node in cluster.nodes], password="s3cret pass")
    try:
        cluster.apply(
            {
                "apiVersion": "projectcalico.org/v3",
                "kind": "BGPPeer",
                "metadata": {"name": "external-router"},
                "spec": {
                    "peerIP": address,
                    "asNumber": ROUTER_AS,
                    "password": {"secretKeyRef": {"name": "bgp-secrets", "key": "router"}},
                },
            }
        )
        try:
            wait_for(lambda: len(router.established()) == 4, 30)
            wait_for(lambda: router.prefixes() == set(blocks), 20)
        except TimeoutError:
            pytest.fail(
                f"router sessions {router.established()}, prefixes {router.prefixes()}, "
                f"node1 {cluster.bgp_protocols(cluster.nodes[0])}"
            )
        name = f"Global_{address.replace('.', '_')}"
        assert name in cluster.established(cluster.nodes[0])
        with open(cluster.nodes[0].bird_config) as file:
            assert 'password "s3cret pass";' in file.read()
        time.sleep(1)  # nothing more arrives later
        assert router.prefixes() == set(blocks)
    finally:
        cluster.delete("BGPPeer", "external-router")
        router.stop()


def test_route_reflectors(
    cluster: BgpCluster, pods: dict[str, tuple[str, str]], block6: str
) -> None:
    blocks = blocks_of(cluster, pods)
    reflectors = cluster.nodes[2:]
    clients = cluster.nodes[:2]
    for node in reflectors:
        current = cluster.get("Node", node.name)
        manifest = {
            "apiVersion": "projectcalico.org/v3",
            "kind": "Node",
            "metadata": {"name": node.name, "labels": {"route-reflector": "true"}},
            "spec": {
                "bgp": {
                    "ipv4Address": current.spec.bgp.ipv4_address,  # type: ignore[attr-defined]
                    "ipv6Address": current.spec.bgp.ipv6_address,  # type: ignore[attr-defined]
                    "routeReflectorClusterID": "244.0.0.1",
                }
            },
        }
        cluster.apply(manifest)
    cluster.apply(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "BGPPeer",
            "metadata": {"name": "peer-with-route-reflectors"},
            "spec": {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"},
        },
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "BGPConfiguration",
            "metadata": {"name": "default"},
            "spec": {"nodeToNodeMeshEnabled": False},
        },
    )
    want = names("Node", reflectors)
    for node in clients:
        try:
            wait_for(lambda node=node: set(cluster.bgp_protocols(node)) == want, 20)
            wait_for(lambda node=node: set(cluster.established(node)) == want, 30)
        except TimeoutError:
            pytest.fail(f"{node.name}: {cluster.bgp_protocols(node)}")
    for node in reflectors:
        others = names("Node", [o for o in cluster.nodes if o != node])
        wait_for(lambda node=node, others=others: set(cluster.established(node)) == others, 30)
    wait_for(lambda: routes_complete(cluster, blocks), 30)
    wait_for(lambda: routes6_complete(cluster, block6), 30)
    pod_b_namespace, _ = pods["pb"]
    _, pod_a_ip = pods["pa"]
    assert wait_for(lambda: cluster.ping(pod_b_namespace, pod_a_ip), 15)

    # One reflector stops: the other one still carries every route.
    cluster.fabric.stop_node(reflectors[0])
    stopped = f"Node_{reflectors[0].ip.replace('.', '_')}"
    for node in clients:
        wait_for(lambda node=node: stopped not in cluster.established(node), 20)
    time.sleep(1)
    assert routes_complete(cluster, blocks)
    assert cluster.ping(pod_b_namespace, pod_a_ip, count=3)


def test_bird_killed_is_restarted_and_graceful_restart_keeps_the_flow(
    cluster: BgpCluster, pods: dict[str, tuple[str, str]]
) -> None:
    blocks = blocks_of(cluster, pods)
    victim = cluster.nodes[1]  # hosts pod-b; a client of the remaining reflector
    pid = cluster.bird_pid(victim)
    assert pid is not None
    pod_b_namespace, _ = pods["pb"]
    _, pod_a_ip = pods["pa"]
    # A flow from pod-b (through node 2) to pod-a, five pings a second, across the kill.
    flow = subprocess.Popen(
        [
            "nsenter",
            f"--net=/var/run/netns/{pod_b_namespace}",
            "ping",
            "-n",
            "-i",
            "0.2",
            "-c",
            "40",
            "-W",
            "1",
            pod_a_ip,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        time.sleep(1)
        subprocess.run(["kill", "-9", str(pid)], check=True)
        new_pid = wait_for(
            lambda: (p := cluster.bird_pid(victim)) is not None and p != pid and p, 15
        )
        assert new_pid != pid
        reflector = cluster.nodes[3]
        name = f"Node_{reflector.ip.replace('.', '_')}"
        wait_for(lambda: name in cluster.established(victim), 30)
        wait_for(lambda: routes_complete(cluster, blocks), 30)
        output, _ = flow.communicate(timeout=30)
    finally:
        if flow.poll() is None:
            flow.kill()
            flow.wait()
    received = int(output.split(" received")[0].rsplit(" ", 1)[-1])
    print(output.splitlines()[-2])
    # Graceful restart: the peers keep node 2's routes (and node 2 keeps its kernel routes)
    # while BIRD is down, so the flow loses nothing or next to nothing.
    assert received >= 39, output


def confd_pid(cluster: BgpCluster, node: FabricNode) -> int | None:
    for pid in cluster.fabric.pids(node.namespace):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as file:
                words = file.read().split(b"\0")
        except OSError:
            continue
        if b"-confd" in words:
            return pid
    return None


def test_confd_killed_is_restarted_and_renders_again(cluster: BgpCluster) -> None:
    node = cluster.nodes[1]
    pid = confd_pid(cluster, node)
    assert pid is not None
    subprocess.run(["kill", "-9", str(pid)], check=True)
    wait_for(lambda: (p := confd_pid(cluster, node)) is not None and p != pid, 15)
    cluster.apply(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "BGPConfiguration",
            "metadata": {"name": f"node.{node.name}"},
            "spec": {"logSeverityScreen": "Debug"},
        }
    )

    def debugging() -> bool:
        with open(node.bird_config) as file:
            return "debug all;" in file.read()

    try:
        wait_for(debugging, 20)
    except TimeoutError:
        pytest.fail(cluster.logs(node))

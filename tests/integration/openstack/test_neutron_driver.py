"""The ``calico`` ML2 driver end to end: real neutron-server, PostgreSQL, etcd, Felix, netns.

The suite plays Nova: it creates ports bound to compute nodes through Neutron's API and plugs
"VM" namespaces on the ports' tap devices; Felix on each node does the rest.  Covered: ports ->
WorkloadEndpoints, security groups -> policy, packets (TCP 22 in only, ICMP once allowed),
ACTIVE status from Felix's reports, the leader's resync (restores a deleted endpoint, removes a
stale one, leaves foreign keys alone), port deletion, and a neutron-server killed during churn.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from pycalico.openstack import translate
from pycalico.openstack.etcd_gateway import EtcdGateway
from pycalico.testing.calicoctl import Calicoctl
from pycalico.testing.connectivity import ConnectivityChecker, Endpoint, Probe
from pycalico.testing.netns_fabric import FabricNode, ip
from pycalico.testing.neutron_server import NeutronAPI, NeutronAPIError, NeutronServer
from pycalico.testing.openstack import node_routes, plug_vm, tap_name, unplug

pytestmark = pytest.mark.root
T = TypeVar("T")
CIDR, GATEWAY = "10.28.0.0/24", "10.28.0.1"


def eventually(check: Callable[[], T], timeout: float = 15.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
            failure: Exception = AssertionError(f"{what}: got {result!r}")
        except (AssertionError, NeutronAPIError) as error:
            failure = error
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}") from failure
        time.sleep(0.1)


def weps(gateway: EtcdGateway) -> dict[str, dict[str, Any]]:
    items, _ = gateway.get_prefix(translate.WEP_PREFIX)
    return {item.key: json.loads(item.value) for item in items}


@pytest.fixture(scope="module")
def network(api: NeutronAPI) -> dict[str, Any]:
    net = api.create("network", name="vms", **{"provider:network_type": "local"})
    api.create("subnet", network_id=net["id"], cidr=CIDR, ip_version=4, gateway_ip=GATEWAY)
    return net


@pytest.fixture(scope="module")
def ssh_only(api: NeutronAPI) -> dict[str, Any]:
    group = api.create("security_group", name="ssh only")
    api.create("security_group_rule", security_group_id=group["id"], direction="ingress",
               ethertype="IPv4", protocol="tcp", port_range_min=22, port_range_max=22)  # fmt: skip
    return group


def vm_port(api: NeutronAPI, network: dict[str, Any], group: dict[str, Any], host: str,
            device: str) -> dict[str, Any]:  # fmt: skip
    return api.create("port", network_id=network["id"], device_id=device,
                      device_owner="compute:nova", security_groups=[group["id"]],
                      **{"binding:host_id": host})  # fmt: skip


@pytest.fixture(scope="module")
def vms(
    api: NeutronAPI, network: dict[str, Any], ssh_only: dict[str, Any], compute: list[FabricNode]
) -> Iterator[dict[str, tuple[dict[str, Any], str]]]:
    """Two VMs, one per compute node: name -> (port, VM namespace)."""
    plugged: dict[str, tuple[dict[str, Any], str]] = {}
    try:
        for name, node in zip(("a", "b"), compute, strict=True):
            port = vm_port(api, network, ssh_only, node.name, f"vm-{name}")
            plugged[name] = (port, plug_vm(node, port, GATEWAY))
        # The fabric's routes between the nodes (what BGP would announce).
        for node, other in ((compute[0], compute[1]), (compute[1], compute[0])):
            peer_vm = plugged["b" if node is compute[0] else "a"][0]
            address = peer_vm["fixed_ips"][0]["ip_address"]
            ip(node.namespace, "route", "add", f"{address}/32", "via", other.ip)
        yield plugged
    finally:
        for _, vm in plugged.values():
            unplug(vm)


def test_ports_become_endpoints_policy_and_traffic(
    api: NeutronAPI, gateway: EtcdGateway, ssh_only: dict[str, Any],
    vms: dict[str, tuple[dict[str, Any], str]],
) -> None:  # fmt: skip
    found = eventually(lambda: len(weps(gateway)) == 2 and weps(gateway), what="two WEPs")
    port_a = vms["a"][0]
    wep = found[translate.endpoint_key(port_a) or ""]
    assert wep["spec"]["interfaceName"] == tap_name(port_a)
    assert wep["spec"]["ipNetworks"] == [port_a["fixed_ips"][0]["ip_address"] + "/32"]
    assert wep["spec"]["ipv4Gateway"] == GATEWAY
    assert wep["metadata"]["labels"][translate.SG_LABEL_PREFIX + ssh_only["id"]] == "ssh_only"
    policy = gateway.get(translate.policy_key(ssh_only["id"]))
    assert policy is not None
    assert json.loads(policy.value)["spec"]["ingress"][0]["destination"] == {"ports": [22]}
    for port, _ in vms.values():
        eventually(lambda p=port: api.show("port", p["id"])["status"] == "ACTIVE",  # type: ignore[misc]
                   20.0, f"port {port['id']} ACTIVE")  # fmt: skip
    checker = ConnectivityChecker(
        {n: Endpoint(vm, port["fixed_ips"][0]["ip_address"]) for n, (port, vm) in vms.items()}
    )
    try:
        checker.serve(["a", "b"], tcp_ports=(22, 80), udp_ports=())
        pairs = (("a", "b"), ("b", "a"))
        closed = {Probe(s, d, 22): True for s, d in pairs}
        closed |= {Probe(s, d, 80): False for s, d in pairs}
        closed |= {Probe(s, d, 0, "icmp"): False for s, d in pairs}
        checker.check(closed, deadline=15.0)
        api.create("security_group_rule", security_group_id=ssh_only["id"], direction="ingress",
                   ethertype="IPv4", protocol="icmp")  # fmt: skip
        checker.check(closed | {Probe(s, d, 0, "icmp"): True for s, d in pairs}, deadline=15.0)
    finally:
        checker.stop()


def test_resync_restores_deleted_and_removes_stale_endpoints(
    gateway: EtcdGateway, vms: dict[str, tuple[dict[str, Any], str]]
) -> None:
    key = translate.endpoint_key(vms["a"][0]) or ""
    original = eventually(lambda: gateway.get(key), what="WEP a")
    stale = translate.WEP_PREFIX + "compute--1-openstack-gone-0000"
    foreign = translate.POLICY_PREFIX + "admin-written"
    gateway.put(stale, original.value)
    gateway.put(foreign, "{}")
    gateway.delete(key)
    restored = eventually(lambda: gateway.get(key), 10.0, "the resync restores the WEP")
    assert translate.comparable(restored.value) == translate.comparable(original.value)
    eventually(lambda: gateway.get(stale) is None, 10.0, "the resync removes the stale WEP")
    assert gateway.get(foreign) is not None, "keys the mirror does not own are left alone"
    gateway.delete(foreign)


def test_port_delete_removes_endpoint_and_addresses(
    api: NeutronAPI, gateway: EtcdGateway, network: dict[str, Any], ssh_only: dict[str, Any],
    compute: list[FabricNode], etcd: Any,
) -> None:  # fmt: skip
    node = compute[0]
    port = vm_port(api, network, ssh_only, node.name, "vm-c")
    vm = plug_vm(node, port, GATEWAY, prefix="osdel")
    try:
        key = translate.endpoint_key(port) or ""
        address = port["fixed_ips"][0]["ip_address"]
        eventually(lambda: gateway.get(key), what="WEP c")
        eventually(lambda: f"{address} dev {tap_name(port)}" in node_routes(node), 15.0,
                   "Felix's route to VM c")  # fmt: skip
        api.delete("port", port["id"])
        eventually(lambda: gateway.get(key) is None, what="WEP c deleted")
        eventually(lambda: address not in node_routes(node), 15.0, "route to VM c gone")
        assert address not in {p["fixed_ips"][0]["ip_address"] for p in api.list("port")}
    finally:
        unplug(vm)
    # Neutron allocates the addresses (Calico IPAM is not involved): the check finds only the
    # remaining VMs' addresses in use, and nothing inconsistent.
    report = Calicoctl(etcd.endpoint).ok("ipam", "check")
    assert "found 0 problems" in report, report
    assert f"Found {len(weps(gateway))} workload IPs." in report, report


def test_port_moving_host_or_unbound_moves_or_drops_its_endpoint(
    api: NeutronAPI, gateway: EtcdGateway, network: dict[str, Any], ssh_only: dict[str, Any],
    compute: list[FabricNode],
) -> None:  # fmt: skip
    port = vm_port(api, network, ssh_only, compute[0].name, "vm-mover")
    try:
        before = translate.endpoint_key(port) or ""
        eventually(lambda: gateway.get(before), what="WEP on compute-1")
        moved = api.update("port", port["id"], **{"binding:host_id": compute[1].name})
        after = translate.endpoint_key(moved) or ""
        assert after != before and compute[1].name.replace("-", "--") in after
        eventually(lambda: gateway.get(after) and gateway.get(before) is None, what="moved WEP")
        api.update("port", port["id"], **{"binding:host_id": ""})
        eventually(lambda: gateway.get(after) is None, what="an unbound port has no WEP")
    finally:
        api.delete("port", port["id"])


def test_neutron_restarted_during_port_churn_etcd_equals_neutron(
    api: NeutronAPI, gateway: EtcdGateway, neutron: NeutronServer, network: dict[str, Any],
    ssh_only: dict[str, Any], compute: list[FabricNode],
) -> None:  # fmt: skip
    stop = threading.Event()
    made: list[str] = []

    def churn() -> None:
        index = 0
        while not stop.is_set():
            index += 1
            try:
                port = vm_port(api, network, ssh_only, compute[index % 2].name, f"churn-{index}")
                made.append(port["id"])
                if index % 3 == 0:
                    api.delete("port", made.pop(0))
            except (NeutronAPIError, OSError):
                time.sleep(0.1)  # the server is down: Nova would retry too

    worker = threading.Thread(target=churn, daemon=True)
    worker.start()
    try:
        eventually(lambda: len(made) >= 3, 30.0, "churn under way")
        neutron.kill()
        neutron.start()
        count = len(made)
        eventually(lambda: len(made) >= count + 3, 30.0, "churn after the restart")
    finally:
        stop.set()
        worker.join(60)

    def mirrored() -> bool:
        want = {translate.endpoint_key(p) for p in api.list("port") if translate.endpoint_key(p)}
        return set(weps(gateway)) == want

    eventually(mirrored, 20.0, "etcd's WEPs equal Neutron's bound ports")
    for port_id in made:
        api.delete("port", port_id)
    eventually(mirrored, 20.0, "churn ports gone from etcd")

"""OpenStack: N VM ports through Neutron's API until Calico has them, against doing nothing.

What this measures, in one run (needs root; real etcd, PostgreSQL, two neutron-servers, Felix):

* **calico**: neutron-server with ML2 ``calico``; a compute node (namespace) running Felix with
  ``interfacePrefix: tap,cali``.  The clock starts before the first port is created and stops
  when every port's WorkloadEndpoint is in etcd and every port is ACTIVE in Neutron (Felix saw
  the tap up and reported it; the driver's leader turned that into the port status).  Ports are
  created 4 at a time (like Nova booting VMs in parallel), each bound to the node; as each create
  returns, the suite plays Nova and plugs the port's tap device on the node.
* **reference, do-nothing**: the same ports with the same parallelism and plugging against a
  second neutron-server (same PostgreSQL cluster, its own database) whose only mechanism driver
  is Neutron's ``logger`` (logs the calls, binds nothing, writes nothing); the clock stops when
  every create has returned.
* **ratio** = calico / do-nothing: what Calico adds to getting N ports, end to end.

Rounds alternate (do-nothing, calico, ...), ports deleted between rounds (not timed); medians.
Run: ``sudo .venv/bin/python -m bench.openstack_ports`` (``--quick``: 20 ports, one round each;
``--ports N``, ``--rounds R``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pycalico.openstack import translate
from pycalico.openstack.etcd_gateway import EtcdGateway
from pycalico.testing import neutron_server as ns
from pycalico.testing.etcd_server import EtcdServer
from pycalico.testing.netns_fabric import Fabric, FabricNode, ip
from pycalico.testing.openstack import FelixOnNode, plug_tap, tap_name

PARALLEL = 4


def setup_network(api: ns.NeutronAPI) -> tuple[str, str]:
    net = api.create("network", name="bench", **{"provider:network_type": "local"})
    api.create("subnet", network_id=net["id"], cidr="10.30.0.0/20", ip_version=4)
    group = api.create("security_group", name="bench")
    return net["id"], group["id"]


def create_ports(api: ns.NeutronAPI, node: FabricNode, network: str, group: str, count: int,
                 tag: str) -> list[dict[str, Any]]:  # fmt: skip
    def one(index: int) -> dict[str, Any]:
        port = api.create("port", network_id=network, device_id=f"{tag}-{index}",
                          device_owner="compute:nova", security_groups=[group],
                          **{"binding:host_id": node.name})  # fmt: skip
        plug_tap(node, port)
        return port

    with ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(one, range(count)))


def wait(done: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def calico_ready(api: ns.NeutronAPI, etcd: EtcdGateway, ports: list[dict[str, Any]]) -> bool:
    items, _ = etcd.get_prefix(translate.WEP_PREFIX)
    keys = {item.key for item in items}
    if not all(translate.endpoint_key(port) in keys for port in ports):
        return False
    statuses = {port["id"]: port["status"] for port in api.list("port")}
    return all(statuses.get(port["id"]) == "ACTIVE" for port in ports)


def clean(api: ns.NeutronAPI, node: FabricNode, ports: list[dict[str, Any]]) -> None:
    with ThreadPoolExecutor(PARALLEL) as pool:
        list(pool.map(lambda port: api.delete("port", port["id"]), ports))
    for port in ports:
        ip(node.namespace, "link", "del", tap_name(port), check=False)


def one_round(kind: str, api: ns.NeutronAPI, node: FabricNode, net: tuple[str, str], count: int,
              etcd: EtcdGateway, index: int) -> float:  # fmt: skip
    start = time.monotonic()
    ports = create_ports(api, node, net[0], net[1], count, f"{kind}{index}")
    if kind == "calico":
        wait(lambda: calico_ready(api, etcd, ports), 300, "ports ACTIVE with WEPs in etcd")
    elapsed = time.monotonic() - start
    clean(api, node, ports)
    if kind == "calico":
        wait(lambda: not etcd.get_prefix(translate.WEP_PREFIX)[0], 60, "WEPs removed")
    return elapsed


def run(count: int, rounds: int) -> dict[str, Any]:
    with EtcdServer(name="bench-openstack") as etcd_server, ns.postgres() as cluster, \
            Fabric("osb", subnet="10.215.0", etcd_endpoint=etcd_server.endpoint) as fabric:  # fmt: skip
        etcd = EtcdGateway([etcd_server.endpoint])
        nodes = {
            "calico": fabric.add_node(1, "compute-1"),
            "logger": fabric.add_node(2, "compute-2"),
        }
        felix = FelixOnNode(nodes["calico"], etcd).start()
        try:
            with ns.neutron(cluster, "calico", etcd_endpoints=[etcd_server.endpoint]) as calico, \
                    ns.neutron(cluster, "nothing", mechanism_drivers="logger") as nothing:  # fmt: skip
                apis = {"calico": ns.NeutronAPI(calico.url), "logger": ns.NeutronAPI(nothing.url)}
                nets = {kind: setup_network(api) for kind, api in apis.items()}
                times: dict[str, list[float]] = {"logger": [], "calico": []}
                for index in range(rounds):
                    for kind in ("logger", "calico"):
                        took = one_round(
                            kind, apis[kind], nodes[kind], nets[kind], count, etcd, index
                        )
                        times[kind].append(took)
                        print(f"  round {index + 1} {kind}: {took:.2f} s", flush=True)
        finally:
            felix.stop()
    calico_s, nothing_s = statistics.median(times["calico"]), statistics.median(times["logger"])
    return {"ports": count, "rounds": rounds, "calico_s": round(calico_s, 2),
            "nothing_s": round(nothing_s, 2), "ratio": round(calico_s / nothing_s, 2),
            "load": round(os.getloadavg()[0], 1)}  # fmt: skip


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.openstack_ports", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="20 ports, one round each")
    parser.add_argument("--ports", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.openstack_ports needs root (network namespaces, Felix)")
        return 1
    count, rounds = (20, 1) if args.quick else (args.ports, args.rounds)
    result = run(count, rounds)
    print(f"{count} ports: calico {result['calico_s']} s (every WEP in etcd, every port ACTIVE); "
          f"do-nothing driver {result['nothing_s']} s (every create returned); "
          f"ratio {result['ratio']}")  # fmt: skip
    print(json.dumps(result))
    print("command: flock /tmp/pycalico-root.lock .venv/bin/python -m bench.openstack_ports")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

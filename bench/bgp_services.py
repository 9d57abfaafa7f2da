"""confd's render cost with Service advertisement: one node's build + render with 5000
``externalTrafficPolicy: Local`` Services (half with an endpoint on this node, so 2500 /32s)
against the same node with none.

Pure, no root: ``.venv/bin/python -m bench.bgp_services [--services 5000] [--trials 20]
[--quick]``.
Measured (best of the trials, one process): **none** = ``render(build(inputs))`` with the
service ranges set but no Services; **with Services** = the same plus choosing the routes
(``advertised_routes`` over every Service and EndpointSlice, as confd does on each render) and
rendering them; the selection alone is printed too.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from typing import Any

from pycalico.bgp.processor import BgpInputs, build
from pycalico.bgp.render import render
from pycalico.bgp.services import ServiceRanges, advertised_routes
from pycalico.model.bgp import BGPConfiguration
from pycalico.model.ipam import IPPool
from pycalico.model.node import Node

ME = "node-1"


def inputs() -> BgpInputs:
    nodes = {
        f"node-{i}": Node.model_validate(
            {"metadata": {"name": f"node-{i}"}, "spec": {"bgp": {"ipv4Address": f"10.0.0.{i}/24"}}}
        )
        for i in range(1, 4)
    }
    config = BGPConfiguration.model_validate(
        {"metadata": {"name": "default"}, "spec": {"serviceClusterIPs": [{"cidr": "10.96.0.0/12"}]}}
    )
    pool = IPPool.model_validate({"metadata": {"name": "p"}, "spec": {"cidr": "192.168.0.0/16"}})
    return BgpInputs(node_name=ME, nodes=nodes, configs={"default": config}, pools=[pool])


def objects(count: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    services, slices = [], []
    for i in range(count):
        name = f"svc-{i}"
        services.append(
            {
                "metadata": {"namespace": "default", "name": name},
                "spec": {
                    "type": "NodePort",
                    "externalTrafficPolicy": "Local",
                    "clusterIP": f"10.96.{i // 250}.{i % 250 + 1}",
                },
            }
        )
        where = ME if i % 2 == 0 else "node-2"
        slices.append(
            {
                "metadata": {
                    "namespace": "default",
                    "name": f"{name}-x",
                    "labels": {"kubernetes.io/service-name": name},
                },
                "endpoints": [{"addresses": ["192.168.0.1"], "nodeName": where}],
            }
        )
    return services, slices


def best(work: Callable[[], object], trials: int) -> float:
    times = []
    for _ in range(trials):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=5000)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="500 Services, 3 trials")
    args = parser.parse_args()
    if args.quick:
        args.services, args.trials = 500, 3
    base = inputs()
    spec = base.configs["default"].spec
    ranges = ServiceRanges.of(spec)
    services, slices = objects(args.services)

    def with_services() -> str:
        routes = advertised_routes(ranges, services, slices, ME)
        return render(build(dataclasses.replace(base, service_routes=routes)))

    routes = advertised_routes(ranges, services, slices, ME)
    none = best(lambda: render(build(base)), args.trials)
    full = best(with_services, args.trials)
    selection = best(lambda: advertised_routes(ranges, services, slices, ME), args.trials)
    print(
        f"{args.services} Services ({len(routes)} local /32s): render {full * 1000:.1f} ms "
        f"(selection {selection * 1000:.1f} ms) vs none {none * 1000:.1f} ms "
        f"= {full / none:.0f}x"
    )


if __name__ == "__main__":
    main()

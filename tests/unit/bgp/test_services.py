"""Service advertisement (``pycalico.bgp.services``) against Calico's confd static-routes cases.

The Services and endpoints are those of Calico's ``mesh/static-routes`` mock data (its Endpoints
written as the EndpointSlices the endpoint-slice controller makes of them); the expected routes
are those of its compiled templates ``mesh/static-routes/bird{,6}_aggr.cfg`` and
``bird{,6}_ipam.cfg``, and of ``mesh/static-routes-exclude-node``.
"""

from __future__ import annotations

from typing import Any

import pytest

from pycalico.bgp.processor import build
from pycalico.bgp.render import render
from pycalico.bgp.services import (
    EXCLUDE_LABEL,
    ServiceRanges,
    advertised_routes,
    family_statics,
    service_routes,
)
from pycalico.model.bgp import BGPConfigurationSpec

from .scenarios import config, node, static_routes


def spec(**fields: Any) -> BGPConfigurationSpec:
    return config("default", **fields).spec


CALICO_RANGES = ServiceRanges.of(
    spec(
        serviceClusterIPs=[{"cidr": "10.101.0.0/16"}, {}, {"cidr": "fd00:96::/112"}],
        serviceLoadBalancerIPs=[{"cidr": "80.15.0.0/24"}, {}],
    )
)


def service(name: str, cluster_ip: str, policy: str = "Local", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "LoadBalancer",
        "externalTrafficPolicy": policy,
        "clusterIP": cluster_ip,
        **spec,
    }
    status = body.pop("status", None)
    result: dict[str, Any] = {"metadata": {"namespace": "default", "name": name}, "spec": body}
    if status:
        result["status"] = status
    return result


def endpoint_slice(
    service_name: str, address: str, node_name: str, ready: bool | None = None
) -> dict[str, Any]:
    endpoint: dict[str, Any] = {"addresses": [address], "nodeName": node_name}
    if ready is not None:
        endpoint["conditions"] = {"ready": ready}
    return {
        "metadata": {
            "namespace": "default",
            "name": f"{service_name}-abcde",
            "labels": {"kubernetes.io/service-name": service_name},
        },
        "addressType": "IPv6" if ":" in address else "IPv4",
        "endpoints": [endpoint],
    }


# Calico's mesh/static-routes kubectl-input.yaml.
SERVICES = [
    service("service-1", "10.101.0.101"),  # endpoint on kube-master: announced
    service("service-2", "10.101.0.102"),  # endpoint on kube-node-1 only
    service("service-v6-1", "fd00:96::25"),  # IPv6 service, IPv4 endpoint on kube-master
    service("service-v6-2", "fd00:96::28"),  # IPv6 endpoint on kube-master: announced
]
SLICES = [
    endpoint_slice("service-1", "192.168.2.1", "kube-master"),
    endpoint_slice("service-2", "192.168.2.2", "kube-node-1"),
    endpoint_slice("service-v6-1", "192.168.2.1", "kube-master"),
    endpoint_slice("service-v6-2", "fd5f:807a:4532::43", "kube-master"),
]


def test_calico_static_routes_case_local_services() -> None:
    routes = advertised_routes(CALICO_RANGES, SERVICES, SLICES, "kube-master")
    assert routes == {"10.101.0.101/32", "fd00:96::28/128"}
    assert advertised_routes(CALICO_RANGES, SERVICES, SLICES, "kube-node-1") == {"10.101.0.102/32"}


def test_calico_static_routes_case_statics_and_kernel_rejects() -> None:
    routes = advertised_routes(CALICO_RANGES, SERVICES, SLICES, "kube-master")
    # bird_aggr.cfg "Static routes" and bird_ipam.cfg "Don't program static routes into kernel"
    assert family_statics(CALICO_RANGES, routes, False, 4) == (
        ("10.101.0.0/16", "10.101.0.101/32", "80.15.0.0/24"),
        ("10.101.0.0/16", "80.15.0.0/24"),
    )
    # bird6_aggr.cfg / bird6_ipam.cfg
    assert family_statics(CALICO_RANGES, routes, False, 6) == (
        ("fd00:96::/112", "fd00:96::28/128"),
        ("fd00:96::/112",),
    )


def test_calico_exclude_node_case() -> None:
    # mesh/static-routes-exclude-node: kube-master announces nothing, still rejects the range.
    ranges = ServiceRanges.of(
        spec(serviceClusterIPs=[{"cidr": "10.101.0.0/16"}, {"cidr": "fd00:96::/112"}])
    )
    routes = advertised_routes(ranges, SERVICES, SLICES, "kube-master")
    assert family_statics(ranges, routes, True, 4) == ((), ("10.101.0.0/16",))
    master = node("kube-master", "10.192.0.2/16", labels={EXCLUDE_LABEL: "true"})
    inputs = static_routes()
    excluded_inputs = type(inputs)(
        **{**inputs.__dict__, "nodes": {**inputs.nodes, "kube-master": master}}
    )
    text = render(build(excluded_inputs))
    assert "blackhole;  # Service address" not in text
    assert "if ( net ~ 10.101.0.0/16 ) then { reject; }" in text


def test_golden_static_routes_render_as_calico_announces() -> None:
    text = render(build(static_routes()))
    for line in (
        "route 10.101.0.0/16 blackhole;  # Service address",
        "route 10.101.0.101/32 blackhole;  # Service address",
        "route 80.15.0.0/24 blackhole;  # Service address",
        "route fd00:96::28/128 blackhole;  # Service address",
        "if ( net ~ 10.101.0.101/32 ) then { accept; }",
        "if ( net ~ fd00:96::/112 ) then { accept; }",
        "if ( net ~ 80.15.0.0/24 ) then { reject; }",
    ):
        assert line in text, line
    assert "if ( net ~ 10.101.0.101/32 ) then { reject; }" not in text  # only ranges rejected
    # The accept comes after calico_aggr() and before the pools, as in Calico's bird_ipam.cfg.
    export = text[text.index("function calico_export_to_bgp_peers(") :]
    assert (
        export.index("calico_aggr();")
        < export.index("10.101.0.0/16")
        < export.index("192.168.0.0/16")
    )


def test_no_ranges_no_routes_and_no_kernel_rejects() -> None:
    ranges = ServiceRanges.of(None)
    assert not ranges.wanted
    assert advertised_routes(ranges, SERVICES, SLICES, "kube-master") == frozenset()
    assert family_statics(ranges, (), False, 4) == ((), ())


@pytest.mark.parametrize(
    ("svc", "families", "expected"),
    [
        # Cluster policy: the ranges cover it; no /32.
        (service("a", "10.101.0.5", "Cluster"), {4}, set()),
        # Headless and ExternalName Services are never announced.
        (service("b", "None"), {4}, set()),
        (service("c", "10.101.0.6", type="ExternalName"), {4}, set()),
        # Not ready / no local endpoint.
        (service("d", "10.101.0.7"), set(), set()),
        # External IPs inside serviceExternalIPs, others skipped.
        (
            service("e", "10.101.0.8", externalIPs=["172.16.0.9", "9.9.9.9"]),
            {4},
            {"10.101.0.8/32", "172.16.0.9/32"},
        ),
        # LB ingress inside serviceLoadBalancerIPs only.
        (
            service(
                "f",
                "10.101.0.9",
                status={"loadBalancer": {"ingress": [{"ip": "80.15.0.1"}, {"ip": "90.15.0.1"}]}},
            ),
            {4},
            {"10.101.0.9/32", "80.15.0.1/32"},
        ),
        # Cluster policy with a single-IP LoadBalancer entry: announced everywhere.
        (
            service(
                "g",
                "10.101.0.10",
                "Cluster",
                status={"loadBalancer": {"ingress": [{"ip": "80.16.0.1"}]}},
            ),
            set(),
            {"10.101.0.10/32", "80.16.0.1/32"},
        ),
    ],
)
def test_service_routes_follow_calico(
    svc: dict[str, Any], families: set[int], expected: set[str]
) -> None:
    ranges = ServiceRanges.of(
        spec(
            serviceClusterIPs=[{"cidr": "10.101.0.0/16"}],
            serviceExternalIPs=[{"cidr": "172.16.0.0/16"}],
            serviceLoadBalancerIPs=[{"cidr": "80.15.0.0/24"}, {"cidr": "80.16.0.1/32"}],
        )
    )
    assert service_routes(svc, ranges, frozenset(families)) == expected


def test_not_ready_endpoint_is_not_local() -> None:
    slices = [endpoint_slice("service-1", "192.168.2.1", "kube-master", ready=False)]
    assert advertised_routes(CALICO_RANGES, SERVICES[:1], slices, "kube-master") == frozenset()
    slices = [endpoint_slice("service-1", "192.168.2.1", "kube-master", ready=True)]
    assert advertised_routes(CALICO_RANGES, SERVICES[:1], slices, "kube-master") == {
        "10.101.0.101/32"
    }

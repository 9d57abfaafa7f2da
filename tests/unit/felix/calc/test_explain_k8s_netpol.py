"""explain over Kubernetes NetworkPolicies: the converter's policies, Kubernetes' semantics.

Each scenario is a Kubernetes NetworkPolicy (wire form) converted by kube-controllers' own
converter (``pycalico.k8s.conversion.network_policy``), then explained for every probe among
three pods in two namespaces; the expected reachability is what Kubernetes specifies for the
policy (isolation per direction, OR of peers, ports, ipBlock except), and explain must name the
Kubernetes object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pycalico.felix.calc.explain import Cluster, explain
from pycalico.felix.rules.model import RenderConfig
from pycalico.k8s.conversion.network_policy import convert_network_policy
from pycalico.testing import felix_calc as build
from pycalico.testing.connectivity import Probe

PODS = {  # key: (namespace, labels, address)
    "a": ("default", {"app": "db"}, "10.66.0.1"),
    "b": ("default", {"app": "web"}, "10.66.0.2"),
    "c": ("other", {"app": "client"}, "10.66.0.3"),
}
PROBES = [
    Probe(src, dst, port, proto)
    for src in PODS
    for dst in PODS
    if src != dst
    for port, proto in ((80, "tcp"), (81, "tcp"), (53, "udp"), (0, "icmp"))
]


def knp(name: str, namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": spec}


SCENARIOS: list[tuple[str, dict[str, Any], Callable[[Probe], bool]]] = [
    (
        "default-deny ingress in a namespace",
        knp("deny-all", "default", {"podSelector": {}, "policyTypes": ["Ingress"]}),
        lambda p: PODS[p.destination][0] == "default",
    ),
    (
        "db allows TCP 80 from web only",
        knp("db", "default", {
            "podSelector": {"matchLabels": {"app": "db"}},
            "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                         "ports": [{"protocol": "TCP", "port": 80}]}],
        }),
        lambda p: p.destination == "a" and not (p.source == "b" and p.port == 80
                                                and p.protocol == "tcp"),
    ),
    (
        "web allows everything from namespaces labelled team=blue",
        knp("web", "default", {
            "podSelector": {"matchLabels": {"app": "web"}},
            "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}],
        }),
        lambda p: p.destination == "b" and p.source != "c",
    ),
    (
        "client egress to an ipBlock with an except",
        knp("client", "other", {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "10.66.0.0/24",
                                            "except": ["10.66.0.1/32"]}}]}],
        }),
        lambda p: p.source == "c" and p.destination == "a",
    ),
    (
        "default-deny egress, UDP 53 allowed",
        knp("dns-only", "default", {
            "podSelector": {},
            "policyTypes": ["Egress"],
            "egress": [{"ports": [{"protocol": "UDP", "port": 53}]}],
        }),
        lambda p: PODS[p.source][0] == "default" and p.protocol != "udp",
    ),
]  # fmt: skip


def cluster(policy: dict[str, Any]) -> Cluster:
    return Cluster(
        workload_endpoints=[
            build.workload(f"pod-{key}", namespace=ns, labels=labels, ips=[address])
            for key, (ns, labels, address) in PODS.items()
        ],
        policies=[convert_network_policy(policy).policy],
        profiles=[
            build.namespace_profile("default", {"team": "red"}),
            build.namespace_profile("other", {"team": "blue"}),
        ],
        default_config=RenderConfig(),
    )


def end(key: str) -> str:
    return f"{PODS[key][0]}/pod-{key}"


@pytest.mark.parametrize(("name", "policy", "blocked"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_kubernetes_network_policy_scenario(
    name: str, policy: dict[str, Any], blocked: Callable[[Probe], bool]
) -> None:
    world = cluster(policy)
    wrong = {}
    named = set()
    for probe in PROBES:
        port = None if probe.protocol == "icmp" else probe.port
        answer = explain(world, end(probe.source), end(probe.destination), probe.protocol, port)
        if (answer.verdict == "allow") == blocked(probe):
            wrong[str(probe)] = answer.verdict
        for side in (answer.egress, answer.ingress):
            if side is not None:
                named |= {r.kubernetes for r in side.reasons.values()}
    assert not wrong, f"{name}: explain disagrees with Kubernetes semantics on {wrong}"
    meta = policy["metadata"]
    assert f"NetworkPolicy {meta['namespace']}/{meta['name']}" in named

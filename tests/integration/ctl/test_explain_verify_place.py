"""``explain --verify`` finds a workload's namespaces also when another set of namespaces on the
machine looks the same: the same pod address behind the same interface indexes (two labs, or two
kind clusters, allocate alike).  Found by running two labs side by side.  Requires root."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pycalico.ctl import explain_verify
from pycalico.model.endpoints import WorkloadEndpoint
from pycalico.testing import netns

pytestmark = pytest.mark.root

ADDRESS = "10.66.0.5"


@pytest.fixture
def twins() -> Iterator[tuple[netns.Topology, netns.Topology]]:
    first, second = netns.Topology(), netns.Topology()
    try:
        for topology in (first, second):
            topology.create_node()
            topology.add_pod("a", ADDRESS)  # fresh namespaces: the same indexes in both
        yield first, second
    finally:
        first.cleanup()
        second.cleanup()


def endpoint(interface: str) -> WorkloadEndpoint:
    return WorkloadEndpoint.model_validate(
        {
            "metadata": {"namespace": "default"},
            "spec": {
                "orchestrator": "k8s",
                "node": "node1",
                "pod": "a",
                "endpoint": "eth0",
                "interfaceName": interface,
                "ipNetworks": [f"{ADDRESS}/32"],
            },
        }
    )


def test_the_peer_namespace_not_only_the_indexes_decides(
    twins: tuple[netns.Topology, netns.Topology],
) -> None:
    for topology in twins:
        pod = topology.pods["a"]
        place = explain_verify.find_place(endpoint(pod.interface), ADDRESS)
        assert place == explain_verify.Place(topology.node, pod.name)

"""IPPools through the calculation graph into the NAT pool sets (graph + dataplane, fake kernel)."""

from __future__ import annotations

from pycalico.datastore.updates import ResourceKey
from pycalico.felix.calc import CalcGraph
from pycalico.felix.dataplane.loop import Dataplane, DataplaneOptions
from pycalico.felix.messages import IPPoolRemove, IPPoolUpdate
from pycalico.model.ipam import IPPool
from pycalico.testing.fake_kernel import FakeKernel
from pycalico.testing.felix_calc import HOSTNAME


def ippool(name: str, cidr: str, **spec: object) -> IPPool:
    return IPPool.model_validate({"metadata": {"name": name}, "spec": {"cidr": cidr, **spec}})


def test_pool_fields_reach_the_message() -> None:
    graph = CalcGraph(HOSTNAME)
    graph.on_resource(ippool("p", "10.70.0.0/16", disabled=True, ipipMode="Always"))
    (update,) = [u for u in graph.flush() if isinstance(u, IPPoolUpdate)]
    assert update == IPPoolUpdate(
        "10.70.0.0/16", "10.70.0.0/16", False, ipip_mode="Always", disabled=True
    )


def test_a_pool_whose_cidr_changes_is_removed_then_added() -> None:
    graph = CalcGraph(HOSTNAME)
    graph.on_resource(ippool("p", "10.70.0.0/16"))
    graph.flush()
    graph.on_resource(ippool("p", "10.71.0.0/16", natOutgoing=True))
    messages = graph.flush()
    assert IPPoolRemove("10.70.0.0/16") in messages
    assert IPPoolUpdate("10.71.0.0/16", "10.71.0.0/16", True) in messages


def test_pool_sets_follow_the_datastore_incrementally() -> None:
    graph, kernel = CalcGraph(HOSTNAME), FakeKernel()
    dataplane = Dataplane(DataplaneOptions(), kernel.nft, kernel.routes, kernel.sysctls)

    def sync() -> None:
        dataplane.on_updates(graph.flush())
        dataplane.apply()

    graph.on_resource(ippool("a", "10.64.0.0/16", natOutgoing=True))
    graph.on_resource(ippool("b", "10.65.0.0/16", disabled=True))
    graph.on_resource(ippool("v6", "fd00:70::/48", natOutgoing=True))
    graph.on_in_sync()
    sync()
    assert kernel.nft.elements("cali40all-ipam-pools") == {"10.64.0.0/15"}
    assert kernel.nft.elements("cali40masq-ipam-pools") == {"10.64.0.0/16"}
    assert kernel.nft.elements("cali60masq-ipam-pools") == {"fd00:70::/48"}
    scripts = len(kernel.nft.scripts)

    graph.on_delete(ResourceKey.of(ippool("b", "10.65.0.0/16")))
    sync()
    assert kernel.nft.elements("cali40all-ipam-pools") == {"10.64.0.0/16"}
    assert len(kernel.nft.scripts) == scripts + 1
    assert "chain" not in kernel.nft.scripts[-1]  # elements only, no chain rewrite


def test_load_balancer_only_is_exactly_allowed_uses_load_balancer() -> None:
    graph = CalcGraph(HOSTNAME)
    graph.on_resource(ippool("lb", "10.90.0.0/24", allowedUses=["LoadBalancer"]))
    graph.on_resource(ippool("w", "10.91.0.0/24", allowedUses=["Workload", "Tunnel"]))
    updates = {u.id: u for u in graph.flush() if isinstance(u, IPPoolUpdate)}
    assert updates["10.90.0.0/24"].load_balancer_only
    assert not updates["10.91.0.0/24"].load_balancer_only

"""Typed stream input, configuration, pools, in-sync, and the sequencer's coalescing."""

from __future__ import annotations

from pycalico.datastore.updates import ResourceKey, ResourceUpdate
from pycalico.felix.calc import CalcGraph, EventSequencer, key_of
from pycalico.felix.messages import (
    ConfigUpdate,
    InSync,
    IPPoolRemove,
    IPPoolUpdate,
    IPSetDeltaUpdate,
    IPSetRemove,
    IPSetType,
    IPSetUpdate,
    WorkloadEndpointUpdate,
)
from pycalico.model.codec import encode_value
from pycalico.model.ipam import IPPool
from pycalico.model.node import FelixConfiguration
from pycalico.testing.felix_calc import HOSTNAME, global_policy, stored, workload


def _config(name: str, **spec: object) -> FelixConfiguration:
    return FelixConfiguration.model_validate({"metadata": {"name": name}, "spec": spec})


def test_stream_updates_dispatch_by_kind_and_garbage_counts_as_deleted() -> None:
    graph = CalcGraph(HOSTNAME)
    pod = workload("w", labels={"app": "x"}, ips=["10.0.0.1"])
    graph.on_updates(
        stored(
            (key_of(pod), encode_value(pod)),
            ("/calico/ipam/v2/handle/whatever", b"{}"),  # not a v3 resource: not in the stream
            ("/calico/resources/v3/projectcalico.org/bgppeers/peer", b"{}"),  # no handler
        )
    )
    assert graph.stats.updates == 1
    graph.on_in_sync()
    messages = graph.flush()
    assert [type(m) for m in messages] == [
        ConfigUpdate,
        type(messages[1]),  # the kns.default profile (missing, so empty)
        WorkloadEndpointUpdate,
        InSync,
    ]
    (garbage,) = stored((key_of(pod), b'{"kind": "WorkloadEndpoint", "spec": {"bogus": 1}}'))
    assert garbage.key == ResourceKey.of(pod) and garbage.resource is None
    graph.on_update(garbage)
    removed = graph.flush()
    assert [type(m).__name__ for m in removed] == ["WorkloadEndpointRemove", "ActiveProfileRemove"]
    assert graph.flush() == []  # InSync is sent once


def test_in_sync_waits_for_the_flush_after_it() -> None:
    graph = CalcGraph(HOSTNAME)
    assert not any(isinstance(m, InSync) for m in graph.flush())
    graph.on_in_sync()
    assert graph.flush() == [InSync()]


def test_effective_felix_configuration_node_overrides_default() -> None:
    graph = CalcGraph(HOSTNAME)
    graph.on_resource(
        _config(
            "default",
            logSeverityScreen="Info",
            ipv6Support=False,
            failsafeInboundHostPorts=[{"protocol": "TCP", "port": 22}],
            reportingInterval="30s",
            failsafeOutboundHostPorts=[],
        )
    )
    graph.on_resource(_config(f"node.{HOSTNAME}", logSeverityScreen="Debug"))
    graph.on_resource(_config("node.other", logSeverityScreen="Warning"))
    (config,) = graph.flush()
    assert isinstance(config, ConfigUpdate)
    assert dict(config.values) == {
        "failsafeInboundHostPorts": "tcp:22",
        "failsafeOutboundHostPorts": "none",
        "ipv6Support": "false",
        "logSeverityScreen": "Debug",
        "reportingInterval": "30s",
    }
    assert graph.flush() == []
    graph.on_delete(ResourceKey("FelixConfiguration", f"node.{HOSTNAME}"))
    (config,) = graph.flush()
    assert isinstance(config, ConfigUpdate) and dict(config.values)["logSeverityScreen"] == "Info"


def test_configuration_read_from_stored_values_drops_go_zero_values() -> None:
    graph = CalcGraph(HOSTNAME)
    value = _config("default", interfacePrefix="cali")
    graph.on_updates(stored((key_of(value), encode_value(value))))
    (config,) = graph.flush()
    assert isinstance(config, ConfigUpdate) and config.values == (("interfacePrefix", "cali"),)


def test_pools() -> None:
    graph = CalcGraph(HOSTNAME)
    pool = IPPool.model_validate(
        {"metadata": {"name": "p"}, "spec": {"cidr": "10.65.0.0/16", "natOutgoing": True}}
    )
    graph.on_resource(pool)
    messages = graph.flush()
    assert IPPoolUpdate("10.65.0.0/16", "10.65.0.0/16", True) in messages
    graph.on_delete(ResourceKey.of(pool))
    assert IPPoolRemove("10.65.0.0/16") in graph.flush()


def test_sequencer_coalesces_set_updates() -> None:
    sequencer = EventSequencer()
    sequencer.on_ipset_update("s:1", IPSetType.NET, frozenset({"a"}))
    sequencer.on_ipset_delta("s:1", frozenset({"b"}), frozenset({"a"}))
    assert sequencer.flush() == [IPSetUpdate("s:1", IPSetType.NET, frozenset({"b"}))]
    sequencer.on_ipset_delta("s:1", frozenset({"c"}), frozenset())
    sequencer.on_ipset_delta("s:1", frozenset(), frozenset({"c", "b"}))
    assert sequencer.flush() == [IPSetDeltaUpdate("s:1", frozenset(), frozenset({"b"}))]
    # Added and removed between flushes, never sent: nothing at all.
    sequencer.on_ipset_update("s:2", IPSetType.NET, frozenset())
    sequencer.on_ipset_remove("s:2")
    sequencer.on_ipset_remove("s:1")
    assert sequencer.flush() == [IPSetRemove("s:1")]


def test_unchanged_recomputation_sends_nothing() -> None:
    graph = CalcGraph(HOSTNAME)
    pod = workload("w", labels={"app": "x"}, ips=["10.0.0.1"])
    graph.on_resource(pod)
    graph.on_resource(global_policy("p", selector="app == 'x'", ingress=[{"action": "Allow"}]))
    graph.flush()
    graph.on_resource(pod)
    graph.on_resource(global_policy("p", selector="app == 'x'", ingress=[{"action": "Allow"}]))
    assert graph.flush() == []


def test_a_policy_that_stops_parsing_counts_as_deleted() -> None:
    graph = CalcGraph(HOSTNAME)
    pod = workload("w", labels={"app": "x"}, ips=["10.0.0.1"])
    good = global_policy("p", selector="app == 'x'", ingress=[{"action": "Allow"}])
    graph.on_resource(pod)
    graph.on_updates(stored((key_of(good), encode_value(good))))
    assert any(type(m).__name__ == "ActivePolicyUpdate" for m in graph.flush())
    bad_selector = encode_value(good).replace(b"app == 'x'", b"app === 'x'")
    graph.on_updates(stored((key_of(good), bad_selector)))
    assert "ActivePolicyRemove" in [type(m).__name__ for m in graph.flush()]
    bad_rule = global_policy(
        "p",
        selector="app == 'x'",
        ingress=[{"action": "Allow", "source": {"selector": "role == 'db'"}}],
    )
    graph.on_updates(
        stored((key_of(bad_rule), encode_value(bad_rule).replace(b"role ==", b"role =!")))
    )
    assert graph.flush() == []  # still absent: an invalid rule does not bring it back
    assert graph.stats.invalid_resources == 2


def test_summary_counts_the_desired_state() -> None:
    graph = CalcGraph(HOSTNAME)
    graph.on_resource(workload("w", labels={"app": "x"}, ips=["10.0.0.1"]))
    graph.on_resource(workload("v", labels={"app": "y"}, ips=["10.0.0.2"], node="elsewhere"))
    graph.on_resource(
        global_policy(
            "p",
            selector="app == 'x'",
            ingress=[{"action": "Allow", "source": {"selector": "has(app)"}}, {"action": "Deny"}],
        )
    )
    summary = graph.summary()
    assert (summary.local_endpoints, summary.active_policies, summary.active_profiles) == (1, 1, 1)
    assert (summary.ip_sets, summary.ip_set_members, summary.rules) == (1, 2, 2)


def test_on_updates_pauses_the_collector_and_restores_it() -> None:
    import gc

    graph = CalcGraph(HOSTNAME)
    pod = workload("w", ips=["10.0.0.1"])
    seen: list[bool] = []
    original = graph.on_update

    def spy(update: ResourceUpdate) -> None:
        seen.append(gc.isenabled())
        original(update)

    graph.on_update = spy  # type: ignore[method-assign]
    assert gc.isenabled()
    graph.on_updates(stored((key_of(pod), encode_value(pod))))
    assert seen == [False] and gc.isenabled()

"""Properties of the whole graph over random update sequences (hypothesis).

* Ordering: the checking ``DataplaneModel`` raises if any flushed message references an IP set,
  policy or profile it was not sent, or removes one still referenced.
* Incremental = from scratch: after any sequence of updates and flushes, the dataplane state
  equals what a fresh graph computes from the final datastore state alone.

``FELIX_CALC_EXAMPLES=3000`` runs a longer search (about 25 s).
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pycalico.datastore.updates import ResourceKey
from pycalico.felix.calc import CalcGraph, key_of
from pycalico.model.meta import Resource
from pycalico.model.node import FelixConfiguration
from pycalico.testing.felix_calc import (
    HOSTNAME,
    DataplaneModel,
    global_network_set,
    global_policy,
    host_endpoint,
    namespace_profile,
    network_set,
    policy,
    profile,
    tier,
    workload,
)

NODES = st.sampled_from([HOSTNAME, "node-b"])
NAMESPACES = st.sampled_from(["a", "b"])
IPS = st.lists(st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3", "fd00::1"]), max_size=2)
LABELS = st.dictionaries(
    st.sampled_from(["app", "role"]), st.sampled_from(["web", "db", "x"]), max_size=2
)
SELECTORS = st.sampled_from(
    ["", "all()", "app == 'web'", "app == 'db'", "role in {'x', 'db'}", "!has(role)", "app != 'x'"]
)
PORTS = st.lists(
    st.fixed_dictionaries(
        {"name": st.sampled_from(["http", "pg"]), "protocol": st.just("TCP"), "port": st.just(80)}
    ),
    max_size=1,
)


@st.composite
def entity(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    selector = draw(SELECTORS)
    if selector:
        out["selector"] = selector
    if draw(st.booleans()):
        out["namespaceSelector"] = draw(st.sampled_from(["env == 'prod'", "all()", "global()"]))
    if draw(st.booleans()):
        out["notSelector"] = draw(st.sampled_from(["role == 'x'", "app == 'db'"]))
    if draw(st.booleans()):
        out["serviceAccounts"] = {"names": ["sa1"]}
    return out


@st.composite
def rule(draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {"action": draw(st.sampled_from(["Allow", "Deny", "Pass", "Log"]))}
    source = draw(entity())
    if source:
        out["source"] = source
    if draw(st.booleans()):
        out["protocol"] = "TCP"
        out["destination"] = {"ports": draw(st.sampled_from([["http"], [80, "pg"], ["80:90"]]))}
    return out


RULES = st.lists(rule(), max_size=2)


@st.composite
def workloads(draw: st.DrawFn) -> Resource:
    return workload(
        draw(st.sampled_from(["p1", "p2", "p3"])),
        namespace=draw(NAMESPACES),
        node=draw(NODES),
        labels=draw(LABELS),
        ips=draw(IPS),
        service_account=draw(st.sampled_from([None, "sa1"])),
        ports=draw(PORTS),
        profiles=draw(
            st.sampled_from([None, ["shared"], ["shared", "projectcalico-default-allow"]])
        ),
    )


@st.composite
def policies(draw: st.DrawFn) -> Resource:
    name = draw(st.sampled_from(["one", "two"]))
    tier_name = draw(st.sampled_from(["default", "t1"]))
    spec: dict[str, Any] = {
        "selector": draw(SELECTORS),
        "tier": tier_name,
        "order": draw(st.sampled_from([None, 1, 2])),
        "ingress": draw(RULES),
        "egress": draw(RULES),
    }
    if draw(st.booleans()):
        spec["performanceHints"] = ["AssumeNeededOnEveryNode"]
    full_name = name if tier_name == "default" else f"{tier_name}.{name}"
    if draw(st.booleans()):
        return policy(full_name, namespace=draw(NAMESPACES), **spec)
    flags = draw(st.sampled_from([{}, {"doNotTrack": True}, {"preDNAT": True}]))
    if flags or draw(st.booleans()):
        spec["applyOnForward"] = True
    if "preDNAT" in flags:
        spec["egress"] = []
    return global_policy(full_name, **spec, **flags)


@st.composite
def others(draw: st.DrawFn) -> Resource:
    choice = draw(st.integers(0, 6))
    if choice == 0:
        return namespace_profile(draw(NAMESPACES), {"env": draw(st.sampled_from(["prod", "dev"]))})
    if choice == 1:
        return profile("shared", labels_to_apply=draw(LABELS), ingress=draw(RULES))
    if choice == 2:
        return tier("t1", order=draw(st.sampled_from([None, 5, 2_000_000])), default_action="Pass")
    if choice == 3:
        return network_set(
            "ns1", draw(st.sampled_from([["192.0.2.0/24"], ["10.0.0.1/32"]])), **draw(LABELS)
        )
    if choice == 4:
        return global_network_set("gns", ["198.51.100.0/24"], **draw(LABELS))
    if choice == 5:
        return host_endpoint("h1", node=draw(NODES), labels=draw(LABELS), ips=draw(IPS))
    return FelixConfiguration.model_validate(
        {
            "metadata": {"name": draw(st.sampled_from(["default", f"node.{HOSTNAME}"]))},
            "spec": {"logSeverityScreen": draw(st.sampled_from(["Info", "Debug"]))},
        }
    )


RESOURCES = st.one_of(workloads(), workloads(), policies(), policies(), others())
STEPS = st.lists(st.sampled_from(["put", "put", "put", "delete", "flush"]), min_size=3, max_size=40)


def _from_scratch(state: dict[str, Resource], order: list[str]) -> DataplaneModel:
    graph = CalcGraph(HOSTNAME)
    for key in order:
        graph.on_resource(state[key])
    graph.on_in_sync()
    dataplane = DataplaneModel()
    dataplane.apply(graph.flush())
    return dataplane


@settings(
    max_examples=int(os.environ.get("FELIX_CALC_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(STEPS, st.data())
def test_incremental_equals_from_scratch_and_ordering_holds(
    steps: list[str], data: st.DataObject
) -> None:
    graph = CalcGraph(HOSTNAME)
    dataplane = DataplaneModel()  # raises SequencingError on any ordering violation
    state: dict[str, Resource] = {}
    for step in steps:
        if step == "flush":
            dataplane.apply(graph.flush())
        elif step == "delete" and state:
            key = data.draw(st.sampled_from(sorted(state)))
            graph.on_delete(ResourceKey.of(state.pop(key)))
        else:
            resource = data.draw(RESOURCES)
            state[key_of(resource)] = resource
            graph.on_resource(resource)
    graph.on_in_sync()
    dataplane.apply(graph.flush())
    assert dataplane.in_sync
    keys = sorted(state)
    assert dataplane.snapshot() == _from_scratch(state, keys).snapshot()
    assert dataplane.snapshot() == _from_scratch(state, keys[::-1]).snapshot()

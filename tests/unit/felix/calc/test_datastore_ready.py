"""The datastore lock in the calc graph: ClusterInformation ``datastoreReady`` → DatastoreNotReady.

Go Felix (libcalico-go's clusterinfo processor → ``ReadyFlagKey`` → ConfigBatcher →
EventSequencer.flushReadyFlag) sends ``DatastoreNotReady`` first in the flush after the flag
turns false; its daemon then forwards nothing more and exits for a restart.
"""

from __future__ import annotations

from typing import Any

from pycalico.datastore.updates import ResourceKey
from pycalico.felix.calc import CalcGraph, key_of
from pycalico.felix.calc import ready as ready_flag
from pycalico.felix.messages import (
    ActivePolicyUpdate,
    DatastoreNotReady,
    InSync,
    Message,
)
from pycalico.model.codec import encode_value
from pycalico.model.node import ClusterInformation
from pycalico.testing.felix_calc import HOSTNAME, global_policy, stored, workload

INFO_PATH = ResourceKey("ClusterInformation", ready_flag.CLUSTER_INFORMATION_NAME).path


def _info(name: str = "default", **spec: Any) -> ClusterInformation:
    return ClusterInformation.model_validate({"metadata": {"name": name}, "spec": spec})


def _set(graph: CalcGraph, info: ClusterInformation | None) -> None:
    if info is None:
        graph.on_updates(stored((INFO_PATH, None)))
    else:
        graph.on_updates(stored((key_of(info), encode_value(info))))


def _synced_graph() -> CalcGraph:
    graph = CalcGraph(HOSTNAME)
    graph.on_resource(workload("w", labels={"app": "x"}, ips=["10.0.0.1"]))
    _set(graph, _info(datastoreReady=True))
    graph.on_in_sync()
    assert not any(isinstance(m, DatastoreNotReady) for m in graph.flush())
    return graph


def _not_ready(messages: list[Message]) -> int:
    return sum(isinstance(m, DatastoreNotReady) for m in messages)


def test_only_an_explicit_false_is_not_ready() -> None:
    assert ready_flag.datastore_ready(None)
    assert ready_flag.datastore_ready(_info())
    assert ready_flag.datastore_ready(_info(datastoreReady=True))
    assert not ready_flag.datastore_ready(_info(datastoreReady=False))
    # A value that does not decode arrives from the stream as a delete: ready.
    graph = _synced_graph()
    _set(graph, _info(datastoreReady=False))
    graph.flush()
    graph.on_updates(stored((INFO_PATH, b"not json")))
    assert graph.datastore_ready


def test_lock_is_sent_first_in_the_flush_ahead_of_updates_in_the_same_batch() -> None:
    graph = _synced_graph()
    graph.on_resource(global_policy("deny", selector="all()", ingress=[{"action": "Deny"}]))
    _set(graph, _info(datastoreReady=False))
    messages = graph.flush()
    assert isinstance(messages[0], DatastoreNotReady), messages
    assert _not_ready(messages) == 1
    # The policy is computed (the graph stays exact) but comes after: the daemon stops at [0].
    assert any(isinstance(m, ActivePolicyUpdate) for m in messages[1:])
    assert not graph.datastore_ready
    assert graph.flush() == []


def test_lock_during_the_snapshot_comes_before_in_sync() -> None:
    graph = CalcGraph(HOSTNAME)
    _set(graph, _info(datastoreReady=False))
    graph.on_resource(workload("w", labels={"app": "x"}, ips=["10.0.0.1"]))
    graph.on_in_sync()
    messages = graph.flush()
    assert isinstance(messages[0], DatastoreNotReady)
    assert isinstance(messages[-1], InSync)


def test_only_the_change_to_not_ready_is_reported() -> None:
    graph = _synced_graph()
    _set(graph, _info(datastoreReady=False))
    assert _not_ready(graph.flush()) == 1
    _set(graph, _info(datastoreReady=False, calicoVersion="v3.99"))  # still locked
    assert _not_ready(graph.flush()) == 0
    _set(graph, _info(datastoreReady=True))
    assert _not_ready(graph.flush()) == 0 and graph.datastore_ready
    _set(graph, _info(datastoreReady=False))
    assert _not_ready(graph.flush()) == 1


def test_absent_unset_or_other_names_do_not_lock() -> None:
    graph = _synced_graph()
    _set(graph, _info())  # datastoreReady unset
    _set(graph, None)  # ClusterInformation deleted
    _set(graph, _info("other", datastoreReady=False))  # not the singleton
    assert _not_ready(graph.flush()) == 0 and graph.datastore_ready


def test_a_lock_then_unlock_before_the_flush_still_reports_it() -> None:
    # As Go's sequencer: once signalled, the restart happens; the next Felix re-reads the flag.
    graph = _synced_graph()
    _set(graph, _info(datastoreReady=False))
    _set(graph, _info(datastoreReady=True))
    messages = graph.flush()
    assert isinstance(messages[0], DatastoreNotReady)
    assert graph.datastore_ready

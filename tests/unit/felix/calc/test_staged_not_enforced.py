"""Staged policies are recorded, never enforced: Felix's calculation graph ignores their keys."""

from __future__ import annotations

from typing import Any

from pycalico.felix.calc import CalcGraph, key_of
from pycalico.felix.messages import ActivePolicyUpdate, WorkloadEndpointUpdate
from pycalico.model.codec import encode_value
from pycalico.model.meta import Resource
from pycalico.model.staged import (
    StagedGlobalNetworkPolicy,
    StagedKubernetesNetworkPolicy,
    StagedNetworkPolicy,
)
from pycalico.testing.felix_calc import HOSTNAME, Harness, global_policy, stored, workload

DENY_ALL = {"selector": "all()", "ingress": [{"action": "Deny"}], "egress": [{"action": "Deny"}]}


def _staged(model: type[Resource], name: str, namespace: str | None, spec: dict[str, Any]) -> Any:
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    return model.model_validate({"metadata": metadata, "spec": spec}).with_defaults()  # type: ignore[attr-defined]


def _all_staged() -> list[Resource]:
    return [
        _staged(StagedGlobalNetworkPolicy, "staged-deny", None, DENY_ALL),
        _staged(StagedNetworkPolicy, "staged-deny", "default", DENY_ALL),
        _staged(
            StagedKubernetesNetworkPolicy,
            "staged-deny",
            "default",
            {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
        ),
    ]


def test_a_staged_policy_selecting_an_endpoint_gives_it_no_policy(harness: Harness) -> None:
    harness.put(workload("w1", labels={"app": "web"}, ips=["10.0.0.1"]), *_all_staged())
    assert harness.tiers("w1") == ()
    assert harness.dataplane.policies == {}
    assert not any(isinstance(m, ActivePolicyUpdate) for m in harness.last)
    # The same spec as an enforced GlobalNetworkPolicy does select it (the check can fail).
    harness.put(global_policy("enforced-deny", **DENY_ALL))
    assert [p.name for tier in harness.tiers("w1") for p in tier.ingress_policies] == [
        "enforced-deny"
    ]


def test_staged_keys_from_the_syncer_are_skipped_and_a_staged_delete_removes_nothing() -> None:
    graph = CalcGraph(HOSTNAME)
    pod = workload("w1", labels={"app": "web"}, ips=["10.0.0.1"])
    enforced = global_policy("deny", **DENY_ALL)
    staged_delete = _staged(StagedGlobalNetworkPolicy, "deny", None, {"stagedAction": "Delete"})
    updates = [(key_of(r), encode_value(r)) for r in (pod, enforced, staged_delete)]
    updates += [(key_of(r), encode_value(r)) for r in _all_staged()]
    graph.on_updates(stored(*updates))
    assert graph.stats.updates == 2  # no handler for staged kinds: Felix's stream skips them
    assert not any(kind.startswith("Staged") for kind in graph.kinds)
    endpoints = [m for m in graph.flush() if isinstance(m, WorkloadEndpointUpdate)]
    (endpoint,) = endpoints
    assert [p.name for tier in endpoint.tiers for p in tier.ingress_policies] == ["deny"]

"""Kubernetes node labels copied to the Calico Node (Calico's ``syncNodeLabels`` cases)."""

from __future__ import annotations

import json

from pycalico.kubecontrollers.node_labels import (
    KUBE_LABELS_ANNOTATION,
    kube_node_name,
    synced_labels,
)
from pycalico.model.node import Node


def copied(keys: dict[str, str]) -> dict[str, str]:
    return {KUBE_LABELS_ANNOTATION: json.dumps(keys, sort_keys=True, separators=(",", ":"))}


def test_first_sync_adds_kube_labels_and_keeps_user_labels() -> None:
    result = synced_labels({"user": "x"}, None, {"zone": "a"})
    assert result.labels == {"user": "x", "zone": "a"}
    assert result.annotations == {KUBE_LABELS_ANNOTATION: '{"zone":"a"}'}
    assert result.changed


def test_label_removed_in_kubernetes_is_removed_but_user_label_stays() -> None:
    result = synced_labels({"user": "x", "zone": "a"}, copied({"zone": "a"}), {})
    assert result.labels == {"user": "x"}
    assert result.annotations == copied({})


def test_kubernetes_value_wins_for_a_key_it_has_and_is_then_owned() -> None:
    first = synced_labels({"zone": "user-set"}, None, {"zone": "a"})
    assert first.labels == {"zone": "a"}
    second = synced_labels(first.labels, first.annotations, {})
    assert second.labels == {}  # the key came from Kubernetes: gone with it (as Calico)


def test_value_change_is_copied() -> None:
    result = synced_labels({"zone": "a"}, copied({"zone": "a"}), {"zone": "b"})
    assert result.labels == {"zone": "b"} and result.changed


def test_second_application_changes_nothing() -> None:
    first = synced_labels({"user": "x"}, {"other": "y"}, {"zone": "a", "rack": "1"})
    second = synced_labels(first.labels, first.annotations, {"zone": "a", "rack": "1"})
    assert not second.changed
    assert second.annotations["other"] == "y"


def test_unreadable_annotation_is_a_first_sync() -> None:
    result = synced_labels({"user": "x"}, {KUBE_LABELS_ANNOTATION: "{not json"}, {"a": "1"})
    assert result.labels == {"user": "x", "a": "1"}
    assert result.annotations == copied({"a": "1"})


def node(orch_refs: list[dict[str, str]] | None) -> Node:
    spec = {} if orch_refs is None else {"orchRefs": orch_refs}
    return Node.model_validate({"metadata": {"name": "calico-1"}, "spec": spec})


def test_kube_node_name_from_orch_refs_only() -> None:
    assert kube_node_name(node([{"orchestrator": "k8s", "nodeName": "kube-1"}])) == "kube-1"
    assert kube_node_name(node([{"orchestrator": "openstack", "nodeName": "x"}])) is None
    assert kube_node_name(node([{"orchestrator": "k8s"}])) is None
    assert kube_node_name(node(None)) is None

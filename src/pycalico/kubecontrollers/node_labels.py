"""Kubernetes node labels copied to the Calico Node (PURE): Calico's ``syncNodeLabels``.

Calico records the labels it copied from the Kubernetes node in the Calico Node's annotation
``projectcalico.org/kube-labels`` (the Kubernetes labels as a JSON object), so that on the next
sync it removes only labels that came from Kubernetes and vanished there: labels set on the
Calico Node by hand (``calicoctl label``) survive unless Kubernetes has a label of the same key,
whose value wins.  ``kube_node_name`` maps a Calico Node to its Kubernetes node.

Invariants: ``synced_labels`` leaves every label whose key never came from Kubernetes untouched;
applying it twice changes nothing the second time; the annotation always holds exactly the
Kubernetes labels last copied.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from pycalico.model.node import Node

KUBE_LABELS_ANNOTATION = "projectcalico.org/kube-labels"
ORCHESTRATOR_K8S = "k8s"


def kube_node_name(node: Node) -> str | None:
    """The Kubernetes node of a Calico Node: its ``orchRefs`` entry with orchestrator k8s
    (Calico's ``getK8sNodeName``); None for a node Kubernetes does not manage."""
    for ref in node.spec.orch_refs or []:
        if ref.orchestrator == ORCHESTRATOR_K8S:
            return ref.node_name or None
    return None


@dataclass(frozen=True, slots=True)
class LabelSync:
    labels: dict[str, str]
    annotations: dict[str, str]
    changed: bool  # whether labels or the annotation differ from what the node holds


def _previously_copied(annotations: Mapping[str, str]) -> dict[str, str]:
    text = annotations.get(KUBE_LABELS_ANNOTATION)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        return {}  # unreadable: treat as a first sync (Calico logs and skips; we recover)
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def synced_labels(
    calico_labels: Mapping[str, str] | None,
    calico_annotations: Mapping[str, str] | None,
    kube_labels: Mapping[str, str] | None,
) -> LabelSync:
    """The Calico Node's labels and annotations after copying ``kube_labels`` onto it."""
    labels = dict(calico_labels or {})
    annotations = dict(calico_annotations or {})
    wanted = dict(kube_labels or {})
    for key in _previously_copied(annotations):
        if key not in wanted:
            labels.pop(key, None)
    labels.update(wanted)
    annotations[KUBE_LABELS_ANNOTATION] = json.dumps(wanted, sort_keys=True, separators=(",", ":"))
    changed = labels != dict(calico_labels or {}) or annotations != dict(calico_annotations or {})
    return LabelSync(labels=labels, annotations=annotations, changed=changed)

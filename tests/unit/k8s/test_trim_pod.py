"""trim_pod keeps exactly what the pod controller's conversion reads."""

from __future__ import annotations

from typing import Any

from pycalico.k8s.conversion.pods import trim_pod, workload_endpoint_data

POD: dict[str, Any] = {
    "metadata": {
        "name": "web",
        "namespace": "ns1",
        "labels": {"app": "web"},
        "annotations": {
            "cni.projectcalico.org/podIPs": "10.65.0.2/32",
            "kubectl.kubernetes.io/last-applied-configuration": "x" * 4000,
        },
        "uid": "u",
        "managedFields": [{"manager": "kubectl"}],
    },
    "spec": {
        "serviceAccountName": "builder",
        "nodeName": "node1",
        "containers": [{"name": "main", "image": "busybox", "env": [{"name": "A", "value": "1"}]}],
    },
    "status": {"phase": "Running", "podIP": "10.65.0.2", "conditions": [{"type": "Ready"}]},
}


def test_trimmed_pod_converts_the_same_and_is_small() -> None:
    trimmed = trim_pod(POD)
    assert workload_endpoint_data(trimmed) == workload_endpoint_data(POD)
    assert trimmed == {
        "metadata": {
            "name": "web",
            "namespace": "ns1",
            "labels": {"app": "web"},
            "annotations": {"cni.projectcalico.org/podIPs": "10.65.0.2/32"},
        },
        "spec": {"serviceAccountName": "builder", "nodeName": "node1"},
        "status": {"podIP": "10.65.0.2"},
    }


def test_a_bare_pod_stays_bare() -> None:
    assert trim_pod({"metadata": {"name": "p"}}) == {
        "metadata": {"name": "p"},
        "spec": {},
        "status": {},
    }

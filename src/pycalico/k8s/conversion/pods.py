"""Pods to the WorkloadEndpoint fields kube-controllers' pod controller keeps in sync.

The CNI plugin creates WorkloadEndpoints; the pod controller only keeps each one's labels and
service account in step with its pod (Calico's ``WorkloadEndpointData``: pod, namespace, labels,
service account).  Calico's facts followed here:

* labels = the pod's labels, then ``projectcalico.org/namespace: <ns>`` and
  ``projectcalico.org/orchestrator: k8s`` (overriding a pod label of the same key), then
  ``projectcalico.org/serviceaccount: <sa>`` when the pod names a service account shorter than 63
  characters (a longer one is not a valid label value, so it is left out).
* The service account name is ``spec.serviceAccountName`` ("" when unset).
* Calico derives this from its full pod conversion, which fails for a pod whose IPs (status or
  ``cni.projectcalico.org/podIP(s)`` annotations) do not parse, or whose
  ``cni.projectcalico.org/allowedSourcePrefixes`` annotation is not a JSON list of CIDRs, or
  whose ``cni.projectcalico.org/floatingIPs`` is not JSON while it has an IP; the controller
  then skips the pod (logging the error).  The same pods raise ``ConversionError`` here.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pycalico.k8s.conversion.objects import (
    ConversionError,
    KubeObject,
    annotations_of,
    labels_of,
    name_of,
    namespace_of,
    spec_of,
)
from pycalico.k8s.conversion.selectors import ORCHESTRATOR_K8S, ORCHESTRATOR_LABEL

NAMESPACE_LABEL = "projectcalico.org/namespace"
SERVICE_ACCOUNT_LABEL = "projectcalico.org/serviceaccount"
_MAX_LABEL_VALUE = 63  # Calico keeps the label only below this length
POD_IP = "cni.projectcalico.org/podIP"
POD_IPS = "cni.projectcalico.org/podIPs"
AWS_POD_IPS = "vpc.amazonaws.com/pod-ips"
FLOATING_IPS = "cni.projectcalico.org/floatingIPs"
ALLOWED_SOURCE_PREFIXES = "cni.projectcalico.org/allowedSourcePrefixes"


@dataclass(frozen=True)
class WorkloadEndpointData:
    """What the pod controller writes into a pod's WorkloadEndpoint."""

    pod: str
    namespace: str
    labels: Mapping[str, str] = field(default_factory=dict)
    service_account: str = ""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.pod}"


def _pod_ip_texts(pod: KubeObject, annotations: Mapping[str, str]) -> list[str]:
    """Calico's order: status.podIPs, status.podIP, then the Calico and AWS annotations."""
    status: Mapping[str, Any] = pod.get("status") or {}
    if status.get("podIPs"):
        return [str(entry.get("ip", "")) for entry in status["podIPs"]]
    if status.get("podIP"):
        return [str(status["podIP"])]
    for key, plural in ((POD_IPS, True), (POD_IP, False), (AWS_POD_IPS, True)):
        if annotations.get(key):
            return annotations[key].split(",") if plural else [annotations[key]]
    return []


def _check_ip(text: str) -> None:
    try:
        if "/" in text:
            ipaddress.ip_network(text, strict=False)
        else:
            ipaddress.ip_address(text)
    except ValueError as error:
        raise ConversionError(f"pod IP {text!r} does not parse: {error}") from error


def _check_annotations(annotations: Mapping[str, str], has_ip: bool) -> None:
    prefixes = annotations.get(ALLOWED_SOURCE_PREFIXES)
    if prefixes:
        try:
            values = json.loads(prefixes)
            if not isinstance(values, list):
                raise ValueError("not a list")
            for value in values:
                ipaddress.ip_network(str(value), strict=False)
                if "/" not in str(value):
                    raise ValueError(f"{value!r} has no prefix length")
        except ValueError as error:
            raise ConversionError(
                f"metadata.annotations[{ALLOWED_SOURCE_PREFIXES!r}]: {error}"
            ) from error
    floating = annotations.get(FLOATING_IPS)
    if floating is not None and has_ip:
        try:
            json.loads(floating)
        except ValueError as error:
            raise ConversionError(f"metadata.annotations[{FLOATING_IPS!r}]: {error}") from error


def workload_endpoint_data(pod: KubeObject) -> WorkloadEndpointData:
    """The WorkloadEndpoint fields for Kubernetes Pod ``pod`` (wire form)."""
    name = name_of(pod)
    namespace = namespace_of(pod)
    annotations = annotations_of(pod)
    ips = _pod_ip_texts(pod, annotations)
    for text in ips:
        _check_ip(text)
    _check_annotations(annotations, has_ip=bool(ips))
    account = str(spec_of(pod).get("serviceAccountName") or "")
    labels = labels_of(pod)
    labels[NAMESPACE_LABEL] = namespace
    labels[ORCHESTRATOR_LABEL] = ORCHESTRATOR_K8S
    if account and len(account) < _MAX_LABEL_VALUE:
        labels[SERVICE_ACCOUNT_LABEL] = account
    return WorkloadEndpointData(
        pod=name, namespace=namespace, labels=labels, service_account=account
    )


_ANNOTATIONS_READ = (POD_IP, POD_IPS, AWS_POD_IPS, FLOATING_IPS, ALLOWED_SOURCE_PREFIXES)


def trim_pod(pod: KubeObject) -> dict[str, Any]:
    """Only the fields ``workload_endpoint_data`` reads (the pod controller keeps thousands of
    pods; a whole pod is kilobytes of containers and status it never looks at)."""
    metadata: Mapping[str, Any] = pod.get("metadata") or {}
    spec: Mapping[str, Any] = pod.get("spec") or {}
    status: Mapping[str, Any] = pod.get("status") or {}
    annotations: Mapping[str, Any] = metadata.get("annotations") or {}
    kept: dict[str, Any] = {
        "metadata": {
            key: metadata[key] for key in ("name", "namespace", "labels") if key in metadata
        },
        "spec": {key: spec[key] for key in ("serviceAccountName", "nodeName") if key in spec},
        "status": {key: status[key] for key in ("podIP", "podIPs") if key in status},
    }
    wanted = {key: annotations[key] for key in _ANNOTATIONS_READ if key in annotations}
    if wanted:
        kept["metadata"]["annotations"] = wanted
    return kept

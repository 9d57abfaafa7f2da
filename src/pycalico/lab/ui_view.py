"""What ``calico-lab ui`` shows, as JSON-ready data: pods by node and namespace, BGP peers, the
reachability matrix.

What it is: pure shaping of data the lab already read (WorkloadEndpoints from etcd, BIRD's
peer rows, the matrix's verdicts) into the dicts the page's JavaScript renders.  What it is
not: any reading (``pycalico.lab.ui_sources``) or serving (``pycalico.lab.ui``).

Invariants: every list is sorted (nodes, namespaces, pods, peers), so the page never reorders
between refreshes; a pod's addresses are given without prefix length.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pycalico.model.endpoints import WorkloadEndpoint


def pod_of(endpoint: WorkloadEndpoint) -> dict[str, Any]:
    """One WorkloadEndpoint as the page's pod row."""
    spec = endpoint.spec
    labels = {
        key: value
        for key, value in sorted((endpoint.metadata.labels or {}).items())
        if not key.startswith("projectcalico.org/")
    }
    return {
        "name": spec.pod or spec.workload or endpoint.metadata.name,
        "namespace": endpoint.metadata.namespace or "",
        "node": spec.node or "",
        "addresses": [network.split("/")[0] for network in spec.ip_networks or []],
        "interface": spec.interface_name or "",
        "endpoint": endpoint.metadata.name,
        "labels": labels,
    }


def pods_by_node(
    endpoints: Iterable[WorkloadEndpoint], nodes: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """``[{node, namespaces: [{namespace, pods: [...]}]}]``; every node in ``nodes`` appears,
    also one without pods, and so does a node only an endpoint names."""
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = {node: {} for node in nodes}
    for endpoint in endpoints:
        pod = pod_of(endpoint)
        grouped.setdefault(pod["node"], {}).setdefault(pod["namespace"], []).append(pod)
    return [
        {
            "node": node,
            "namespaces": [
                {"namespace": ns, "pods": sorted(found, key=lambda p: str(p["name"]))}
                for ns, found in sorted(namespaces.items())
            ],
        }
        for node, namespaces in sorted(grouped.items())
    ]


def peer_view(peers: Iterable[Any]) -> list[dict[str, str]]:
    """``pycalico.ctl.node.PeerRow``s (what ``calicoctl node status`` prints) as dicts."""
    rows = [
        {
            "address": peer.address,
            "type": peer.peer_type,
            "state": peer.state,
            "since": peer.since,
            "info": peer.info,
            "established": "yes" if peer.info.startswith("Established") else "no",
        }
        for peer in peers
    ]
    return sorted(rows, key=lambda row: row["address"])


def matrix_view(
    pods: Sequence[str], actual: Mapping[tuple[str, str, str], bool], seconds: float
) -> dict[str, Any]:
    """Rows are sources, columns destinations; a cell maps each probe column (``icmp``,
    ``tcp``, and ``icmp6``/``tcp6`` in a dual-stack lab) to whether it reached the pod."""
    cells: dict[str, dict[str, dict[str, bool]]] = {}
    for (source, destination, column), reached in sorted(actual.items()):
        cells.setdefault(source, {}).setdefault(destination, {})[column] = reached
    reachable = sum(1 for reached in actual.values() if reached)
    return {
        "pods": list(pods),
        "cells": cells,
        "summary": f"{reachable} of {len(actual)} probes reached their pod ({seconds:.1f}s)",
    }


def _flow_endpoint(record: Mapping[str, Any], side: str) -> str:
    name = record.get(f"{side}_endpoint") or ""
    address = record.get(f"{side}_ip", "")
    return f"{name} ({address})" if name else str(address)


def denied_by(record: Mapping[str, Any]) -> str:
    """The rule that denied a flow record (``calicoctl flows``' fields): ``tier/policy
    ingress[2]``, a tier's end, or no profile matching."""
    direction = record.get("direction", "")
    kind = record.get("kind", "")
    if kind == "EndOfTier":
        return f"tier {record.get('tier', '')}: {direction} end-of-tier"
    if kind == "NoProfile":
        return f"profiles: {direction} no profile matched"
    if kind == "Unknown":
        return str(record.get("prefix", "?"))
    tier = record.get("tier", "")
    owner = f"{tier}/{record.get('policy', '')}" if tier else f"profile {record.get('policy', '')}"
    return f"{owner} {direction}[{record.get('rule_index', '')}]"


def flow_view(records: Iterable[Mapping[str, Any]], newest: int) -> list[dict[str, Any]]:
    """The ``newest`` denied-flow records, newest first, as the page's rows (``time`` stays
    seconds since the epoch; the page shows it in the reader's time zone)."""

    def when(record: Mapping[str, Any]) -> float:
        try:
            return float(record.get("time", 0) or 0)
        except (TypeError, ValueError):
            return 0.0

    ordered = sorted(records, key=when)[-newest:] if newest > 0 else []
    return [
        {
            "time": when(record),
            "node": str(record.get("node", "")),
            "source": _flow_endpoint(record, "source"),
            "destination": _flow_endpoint(record, "destination"),
            "protocol": str(record.get("protocol", "")),
            "port": str(record.get("destination_port") or ""),
            "denied_by": denied_by(record),
        }
        for record in reversed(ordered)
    ]

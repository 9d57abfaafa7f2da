"""Where ``calico-lab ui`` reads what it shows: the lab's state, each node's BIRD, etcd's
WorkloadEndpoints, the reachability matrix, and ``calicoctl``'s ``flows`` and ``explain``.

What it is: blocking reads (the server runs them in worker threads), each returning
``ui_view``'s JSON-ready data.  Nodes and BGP sessions come from the same paths as
``calico-lab status`` (calico-node's pid, Felix's readiness) and ``calicoctl node status``
(BIRD's control socket, ``pycalico.ctl.node.peer_rows``); pods from etcd, not from the lab's
state file, so the page shows what Calico sees.  Denied flows and explain are an adapter over
the ``calicoctl`` next to this Python: a command it lacks is reported as not available.
What it is not: HTTP (``pycalico.lab.ui``) or formatting (``pycalico.lab.ui_view``).

Invariants: a node whose BIRD does not answer shows no peers and says why, rather than failing
the page; ``calicoctl`` runs with the lab's etcd (through the host relay) and a timeout.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import subprocess
import sys
from functools import cache
from typing import Any

from pycalico.bgp.bird import BirdControl, BirdError
from pycalico.ctl.node import peer_rows
from pycalico.datastore.resources import ResourceStore
from pycalico.lab import cluster, matrix, store, ui_view
from pycalico.lab.state import LabState, NodeState

CALICOCTL = os.path.join(os.path.dirname(sys.executable), "calicoctl")
CALICOCTL_TIMEOUT = 20.0
FLOWS_FILE = "denied.jsonl"
RECENT_FLOWS = 50


def _peers(node: NodeState) -> tuple[list[dict[str, str]], str]:
    try:
        rows = asyncio.run(BirdControl(cluster.bird_socket(node), timeout=2.0).protocols())
    except (BirdError, OSError) as error:
        return [], f"BIRD did not answer: {error}"
    return ui_view.peer_view(peer_rows(rows)), ""


def nodes(lab: LabState) -> list[dict[str, Any]]:
    """Each node: address, role, calico-node running, Felix ready, BGP peers (as
    ``calicoctl node status`` reads them from the node's BIRD)."""
    found = []
    for node, status in zip(lab.nodes, cluster.statuses(lab), strict=True):
        peers, problem = _peers(node) if status.running else ([], "calico-node is not running")
        found.append(
            {
                "name": node.name,
                "addresses": [a for a in (node.address, node.address6) if a],
                "route_reflector": node.route_reflector,
                "running": status.running,
                "felix_ready": status.felix_ready,
                "expected_sessions": cluster.expected_sessions(lab, node),
                "peers": peers,
                "problem": problem,
            }
        )
    return found


def pods(lab: LabState) -> list[dict[str, Any]]:
    """Pods by node and namespace, from the WorkloadEndpoints in etcd."""

    async def read(resources: ResourceStore) -> list[Any]:
        return list((await resources.list("WorkloadEndpoint")).items)

    endpoints = store.call(lab.host_endpoints, read)
    return ui_view.pods_by_node(endpoints, [node.name for node in lab.nodes])


def reachability(lab: LabState, deadline: float = 5.0) -> dict[str, Any]:
    """The lab's ``check`` matrix, measured now (blocked cells retried for ``deadline`` s)."""
    if len(lab.pods) < 2:
        return {"pods": [p.name for p in lab.pods], "cells": {}, "summary": "needs two pods"}
    result = matrix.run(lab.pods, deadline=deadline)
    return ui_view.matrix_view([p.name for p in lab.pods], result.actual, result.seconds)


def _calicoctl(lab: LabState, args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATASTORE_TYPE": "etcdv3", "ETCD_ENDPOINTS": lab.host_endpoints}
    return subprocess.run(
        [CALICOCTL, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=CALICOCTL_TIMEOUT,
        check=False,
    )


@cache
def has_command(name: str) -> bool:
    """Whether this pycalico's calicoctl has the command (``explain`` and ``flows`` are newer
    than the UI: the page says "not available" until they are there)."""
    try:
        done = subprocess.run(
            [CALICOCTL, name, "--help"], capture_output=True, timeout=CALICOCTL_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def flows(lab: LabState) -> dict[str, Any]:
    """The most recent denied flows of every node, read with ``calicoctl flows --denied``
    from each flow log under the lab's state directory."""
    if not has_command("flows"):
        return {"available": False, "reason": "calicoctl has no flows command yet"}
    pattern = os.path.join(lab.state_dir, "**", FLOWS_FILE)
    records: list[dict[str, Any]] = []
    errors = []
    for path in sorted(glob.glob(pattern, recursive=True)):
        done = _calicoctl(
            lab, ["flows", "--denied", "-o", "json", "--directory", os.path.dirname(path)]
        )
        if done.returncode != 0:
            errors.append(done.stderr.strip())
            continue
        for line in done.stdout.splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    if not glob.glob(pattern, recursive=True):
        errors.append(f"no {FLOWS_FILE} under {lab.state_dir}: is Felix's flowLogsFileEnabled on?")
    return {
        "available": True,
        "records": ui_view.flow_view(records, RECENT_FLOWS),
        "errors": errors,
    }


def explain(
    lab: LabState, source: str, destination: str, port: str, protocol: str
) -> dict[str, Any]:
    """``calicoctl explain --from --to --port --protocol -o json`` against the lab's etcd."""
    if not has_command("explain"):
        return {"available": False, "reason": "calicoctl has no explain command yet"}
    args = ["explain", "--from", source, "--to", destination, "--protocol", protocol, "-o", "json"]
    if port:
        args += ["--port", port]
    done = _calicoctl(lab, args)
    if done.returncode != 0:
        return {"available": True, "error": done.stderr.strip() or f"exit {done.returncode}"}
    return {"available": True, "answer": json.loads(done.stdout)}

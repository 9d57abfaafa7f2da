"""Checks across resources that must pass before a write command writes anything.

A single document can be valid on its own and still be refused: an IPPool whose CIDR overlaps
another pool (in the same input or already stored), a pool whose CIDR or block size would change
(both are immutable), a ClusterInformation (calico/node owns it; calicoctl refuses to write it).
Calico finds these one resource at a time while writing; here they are found for the whole
input first, so that one refused document means nothing is written.

Pure: the caller fetches the stored pools and passes them in.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from pycalico.ctl.results import Verb
from pycalico.model.codec import encode_resource
from pycalico.model.meta import Resource
from pycalico.model.validation import Problem

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_READONLY_OPERATION = {
    "apply": ("apply", "resource is readonly"),
    "create": ("create or apply", ""),
    "replace": ("apply or replace", ""),
    "delete": ("delete", ""),
}


def readonly_problem(verb: Verb) -> str:
    """calicoctl's refusal of a ClusterInformation write."""
    operation, reason = _READONLY_OPERATION.get(verb.name, (verb.name, ""))
    text = f"operation {operation} is not supported on ClusterInformation"
    return f"{text}: {reason}" if reason else text


def _label(resource: Resource) -> str:
    return f"{resource.kind} '{resource.name}'"


def _pool_fields(resource: Resource) -> tuple[IPNetwork | None, Any]:
    spec: Mapping[str, Any] = encode_resource(resource).get("spec") or {}
    try:
        network: IPNetwork | None = ipaddress.ip_network(str(spec.get("cidr")), strict=False)
    except ValueError:
        network = None
    return network, spec.get("blockSize")


def write_problems(
    verb: Verb,
    resources: Sequence[Resource],
    stored_pools: Sequence[Resource] = (),
) -> list[Problem]:
    """Every reason to refuse the whole input before writing it."""
    problems: list[Problem] = []
    if verb.name == "validate":
        return problems
    for resource in resources:
        if resource.kind == "ClusterInformation":
            problems.append(Problem(_label(resource), "", readonly_problem(verb)))
    if verb.name == "delete":
        return problems
    problems.extend(_pool_problems(verb, resources, stored_pools))
    return problems


def _pool_problems(
    verb: Verb, resources: Sequence[Resource], stored_pools: Sequence[Resource]
) -> list[Problem]:
    problems: list[Problem] = []
    new_pools = [r for r in resources if r.kind == "IPPool"]
    if not new_pools:
        return problems
    stored = {p.name: p for p in stored_pools}
    incoming_names = {p.name for p in new_pools}
    # The pools as they will be once the input is written: stored ones not being replaced,
    # then each incoming pool in turn (so two new pools in one file are checked too).
    others: list[tuple[str, IPNetwork]] = []
    for pool in stored_pools:
        network, _ = _pool_fields(pool)
        if network is not None and pool.name not in incoming_names:
            others.append((pool.name, network))
    for pool in new_pools:
        network, block_size = _pool_fields(pool)
        if network is None:
            continue  # the pool's own validation has reported its CIDR
        old = stored.get(pool.name)
        if old is not None:
            if verb.name != "create":  # a create of an existing pool fails as "already exists"
                problems.extend(_changed_pool_problems(pool, network, block_size, old))
            others.append((pool.name, network))
            continue
        for other_name, other in others:
            if other.version == network.version and other.overlaps(network):
                problems.append(
                    Problem(
                        _label(pool),
                        "spec.cidr",
                        f"IPPool({pool.name}) CIDR overlaps with IPPool({other_name}) CIDR {other}",
                    )
                )
        others.append((pool.name, network))
    return problems


def _changed_pool_problems(
    pool: Resource, network: IPNetwork, block_size: Any, old: Resource
) -> list[Problem]:
    """An update may not change a pool's CIDR or block size (Calico checks no overlap then)."""
    problems = []
    old_network, old_block_size = _pool_fields(old)
    if old_network is not None and old_network != network:
        problems.append(
            Problem(_label(pool), "spec.cidr", f"IPPool CIDR cannot be modified ({network})")
        )
    if block_size is not None and old_block_size not in (None, block_size):
        problems.append(
            Problem(
                _label(pool),
                "spec.blockSize",
                f"IPPool BlockSize cannot be modified ({block_size})",
            )
        )
    return problems

"""Seeding helpers for IPAM tests and benchmarks: IPPool and Node values written straight to a
``KVStore`` in Calico's v3 JSON, and a quick snapshot of the IPAM keys.

Test support only: real clusters create these with ``calicoctl apply`` (which validates them)
and ``calico-node`` (which registers nodes).  No validation happens here beyond what IPAM needs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pycalico.datastore.api import KVStore
from pycalico.ipam import keys


def pool_value(
    name: str,
    cidr: str,
    *,
    block_size: int | None = None,
    disabled: bool = False,
    node_selector: str | None = None,
    allowed_uses: Sequence[str] | None = None,
    assignment_mode: str | None = None,
) -> bytes:
    spec: dict[str, Any] = {"cidr": cidr, "disabled": disabled}
    if block_size is not None:
        spec["blockSize"] = block_size
    if node_selector is not None:
        spec["nodeSelector"] = node_selector
    if allowed_uses is not None:
        spec["allowedUses"] = list(allowed_uses)
    if assignment_mode is not None:
        spec["assignmentMode"] = assignment_mode
    return json.dumps(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPPool",
            "metadata": {"name": name},
            "spec": spec,
        }
    ).encode()


async def put_pool(kv: KVStore, name: str, cidr: str, **options: Any) -> None:
    await kv.put(keys.ippool_key(name), pool_value(name, cidr, **options))


def node_value(name: str, labels: Mapping[str, str] | None = None) -> bytes:
    metadata: dict[str, Any] = {"name": name}
    if labels:
        metadata["labels"] = dict(labels)
    return json.dumps(
        {"apiVersion": "projectcalico.org/v3", "kind": "Node", "metadata": metadata, "spec": {}}
    ).encode()


async def put_node(kv: KVStore, name: str, labels: Mapping[str, str] | None = None) -> None:
    await kv.put(keys.node_key(name), node_value(name, labels))


async def ipam_keys(kv: KVStore) -> dict[str, bytes]:
    """Every key under ``/calico/ipam/v2/`` with its value (for 'nothing left behind' checks)."""
    listed = await kv.list(keys.IPAM_ROOT)
    return {item.key: item.value for item in listed.items if item.key != keys.CONFIG_KEY}

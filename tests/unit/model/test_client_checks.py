"""The pure cross-resource checks the client layer uses: pool overlap and immutable fields."""

from __future__ import annotations

from typing import Any

from pycalico.model.codec import decode_resource, immutable_field_changes, pool_overlaps
from pycalico.model.ipam import IPPool


def _pool(name: str, cidr: str, **spec: Any) -> IPPool:
    pool = decode_resource(
        {
            "apiVersion": "projectcalico.org/v3",
            "kind": "IPPool",
            "metadata": {"name": name},
            "spec": {"cidr": cidr, **spec},
        }
    )
    assert isinstance(pool, IPPool)
    return pool


def test_overlapping_pools() -> None:
    existing = [_pool("a", "10.0.0.0/16"), _pool("v6", "fd00::/48")]
    assert pool_overlaps(_pool("b", "10.1.0.0/16"), existing) is None
    assert pool_overlaps(_pool("b", "10.0.128.0/17"), existing) == (
        "IPPool 'b' (10.0.128.0/17) overlaps IPPool 'a' (10.0.0.0/16)"
    )
    assert pool_overlaps(_pool("c", "10.0.0.0/8"), existing) is not None
    assert pool_overlaps(_pool("d", "fd00:0:0:1::/64"), existing) is not None
    # Re-applying a pool under its own name is not an overlap with itself.
    assert pool_overlaps(_pool("a", "10.0.0.0/16"), existing) is None


def test_pool_cidr_and_block_size_are_immutable() -> None:
    old = _pool("a", "10.0.0.0/16")
    assert immutable_field_changes(old, _pool("a", "10.0.0.0/16", natOutgoing=True)) == []
    assert immutable_field_changes(old, _pool("a", "10.1.0.0/16")) == ["spec.cidr"]
    assert immutable_field_changes(old, _pool("a", "10.0.0.0/16", blockSize=28)) == [
        "spec.blockSize"
    ]
    assert immutable_field_changes(old, _pool("a", "10.2.0.0/16", blockSize=24)) == [
        "spec.cidr",
        "spec.blockSize",
    ]

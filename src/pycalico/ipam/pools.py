"""Which IP pools an assignment may use, and the order a node walks a pool's blocks in.

Pure: no I/O.  The allocator reads IPPool and Node values from the datastore and hands them here.
An IPPool is read from its stored v3 JSON into the few fields IPAM needs (``Pool``), with
Calico's defaults filled in; the full resource model lives in ``pycalico.model``.

Rules (reference §5, libcalico-go ``determinePools``):

* disabled pools are never used for new assignments;
* pools named in the request are used unconditionally (selectors ignored) but must exist and be
  enabled, else "the given pool (<cidr>) does not exist, or is not enabled";
* otherwise every enabled ``Automatic`` pool whose ``nodeSelector`` matches the node's labels
  (and ``namespaceSelector`` the namespace's, when one is given);
* then only pools whose ``allowedUses`` include the intended use.

A node walks a pool's block CIDRs from a pseudo-random start seeded by the FNV-32 hash of its
name (so concurrent requests on one node head for the same block instead of claiming several)
and wraps round once.  Same seed, same order; it is not bit-identical to Go's math/rand.
"""

from __future__ import annotations

import ipaddress
import json
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pycalico.ipam.records import IPAddress, IPNetwork

USE_WORKLOAD = "Workload"
USE_TUNNEL = "Tunnel"
USE_LOAD_BALANCER = "LoadBalancer"
DEFAULT_ALLOWED_USES = (USE_WORKLOAD, USE_TUNNEL)
ASSIGNMENT_AUTOMATIC = "Automatic"
ASSIGNMENT_MANUAL = "Manual"

NO_QUALIFIED_POOL = "cannot find a qualified ippool"


class PoolSelectionError(Exception):
    """No usable pool for a request; the message is Calico's."""


@dataclass(frozen=True, slots=True)
class Pool:
    name: str
    cidr: IPNetwork
    block_size: int
    disabled: bool = False
    node_selector: str = "all()"
    namespace_selector: str = ""
    allowed_uses: tuple[str, ...] = DEFAULT_ALLOWED_USES
    assignment_mode: str = ASSIGNMENT_AUTOMATIC
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def version(self) -> int:
        return self.cidr.version

    def contains(self, address: IPAddress) -> bool:
        return address.version == self.cidr.version and address in self.cidr

    def block_for(self, address: IPAddress) -> IPNetwork:
        return ipaddress.ip_network(f"{address}/{self.block_size}", strict=False)

    @property
    def num_blocks(self) -> int:
        return 1 << (self.block_size - self.cidr.prefixlen)

    def block_at(self, index: int) -> IPNetwork:
        step = 1 << (self.cidr.max_prefixlen - self.block_size)
        return ipaddress.ip_network(f"{self.cidr.network_address + index * step}/{self.block_size}")

    @classmethod
    def from_resource_json(cls, data: bytes | str) -> Pool:
        """From a stored ``projectcalico.org/v3`` IPPool; defaults as Calico's."""
        raw = json.loads(data)
        spec = raw.get("spec") or {}
        name = (raw.get("metadata") or {}).get("name", "")
        if "cidr" not in spec:
            raise ValueError(f"IPPool {name!r}: spec.cidr is missing")
        cidr = ipaddress.ip_network(spec["cidr"], strict=False)
        block_size = int(spec.get("blockSize") or (26 if cidr.version == 4 else 122))
        if block_size < cidr.prefixlen:
            # Calico allows a pool smaller than a block: the block is then the pool itself.
            block_size = cidr.prefixlen
        return cls(
            name=name,
            cidr=cidr,
            block_size=block_size,
            disabled=bool(spec.get("disabled", False)),
            node_selector=spec.get("nodeSelector") or "all()",
            namespace_selector=spec.get("namespaceSelector") or "",
            allowed_uses=tuple(spec.get("allowedUses") or DEFAULT_ALLOWED_USES),
            assignment_mode=spec.get("assignmentMode") or ASSIGNMENT_AUTOMATIC,
        )


def selector_matches(selector: str, labels: Mapping[str, str]) -> bool:
    """Evaluate a Calico selector with the model's parser; empty and ``all()`` match all."""
    text = selector.strip()
    if text in ("", "all()"):
        return True
    # Imported on first use: most requests see only all() and skip the parser's import cost.
    from pycalico.model.selectors import parse

    try:
        return bool(parse(text).evaluate(dict(labels)))
    except Exception as exc:  # a stored selector that no longer parses
        raise PoolSelectionError(f"selector {text!r} cannot be evaluated: {exc}") from exc


def pool_for_address(pools: Sequence[Pool], address: IPAddress) -> Pool | None:
    for pool in pools:
        if pool.contains(address):
            return pool
    return None


def resolve_requested(
    requested: Sequence[str], pools: Sequence[Pool], version: int
) -> list[IPNetwork]:
    """Turn pool names or CIDRs from a CNI config into CIDRs (CNI ``ResolvePools``)."""
    out: list[IPNetwork] = []
    for item in requested:
        try:
            cidr: IPNetwork | None = ipaddress.ip_network(item, strict=False)
        except ValueError as exc:
            cidr = next((p.cidr for p in pools if p.name == item), None)
            if cidr is None:
                raise PoolSelectionError(f"error parsing pool {item!r}: {exc}") from None
        assert cidr is not None
        if cidr.version != version:
            raise PoolSelectionError(f"{str(cidr.network_address)!r} isn't a IPv{version} address")
        out.append(cidr)
    return out


def select_pools(
    pools: Sequence[Pool],
    *,
    version: int,
    requested: Sequence[IPNetwork] = (),
    node_labels: Mapping[str, str] | None = None,
    namespace_labels: Mapping[str, str] | None = None,
    use: str = USE_WORKLOAD,
) -> list[Pool]:
    """The pools a request may assign from, in datastore (name) order."""
    enabled = [p for p in pools if p.version == version and not p.disabled]
    if not enabled:
        raise PoolSelectionError(NO_QUALIFIED_POOL)
    by_cidr = {p.cidr: p for p in enabled}
    chosen: list[Pool] = []
    for cidr in requested:
        pool = by_cidr.get(cidr)
        if pool is None:
            raise PoolSelectionError(f"the given pool ({cidr}) does not exist, or is not enabled")
        chosen.append(pool)
    if not requested:
        for pool in enabled:
            if pool.assignment_mode != ASSIGNMENT_AUTOMATIC:
                continue
            if not selector_matches(pool.node_selector, node_labels or {}):
                continue
            namespace_given = namespace_labels is not None and pool.namespace_selector
            if namespace_given and not selector_matches(
                pool.namespace_selector, namespace_labels or {}
            ):
                continue
            chosen.append(pool)
    if not chosen:
        raise PoolSelectionError("no configured Calico pools for this node")
    allowed = [p for p in chosen if use in p.allowed_uses]
    if not allowed:
        raise PoolSelectionError(f"{NO_QUALIFIED_POOL}, no pools match the required use ({use})")
    return allowed


def fnv32(data: bytes) -> int:
    """FNV-1 32-bit (Go's ``hash/fnv.New32``)."""
    value = 0x811C9DC5
    for byte in data:
        value = (value * 0x01000193) & 0xFFFFFFFF
        value ^= byte
    return value


def block_walk(pool: Pool, host: str, *, seed: int | None = None) -> Iterator[IPNetwork]:
    """Every block CIDR of ``pool`` once, from a start point seeded by the host name."""
    total = pool.num_blocks
    if seed is None:
        seed = fnv32(host.encode())
    start = random.Random(seed).randrange(total) if total > 1 else 0
    for step in range(total):
        yield pool.block_at((start + step) % total)

"""PURE: the decisions IPAM makes before it touches the datastore.

Whether an assignment request is well formed, which pools serve each address family, the
affinity type a request claims blocks with, and how many blocks a node may hold.  No I/O: the
allocator (``pycalico.ipam.assign``) and the node batcher (``pycalico.ipam.batching``) feed it
what they read and act on what it returns.

Invariant: a request that fails here has written nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pycalico.ipam import keys
from pycalico.ipam.api import AutoAssignRequest, IPAMError, NoQualifiedPool
from pycalico.ipam.pools import USE_LOAD_BALANCER, Pool, PoolSelectionError, select_pools
from pycalico.ipam.records import (
    AFFINITY_TYPE_HOST,
    AFFINITY_TYPE_VIRTUAL,
    DEFAULT_MAX_BLOCKS_PER_HOST,
    IPAMConfig,
)
from pycalico.ipam.reservations import Reservations

NO_RESERVATIONS = Reservations()


@dataclass(frozen=True, slots=True)
class FamilyPlan:
    """What one address family of an auto-assign request may use."""

    version: int
    num: int
    pools: list[Pool]
    all_pools: list[Pool]
    node_labels: Mapping[str, str]
    reservations: Reservations = field(default=NO_RESERVATIONS)


def check_handle_id(handle_id: str) -> None:
    """A handle id becomes an etcd key segment: it must be non-empty and free of ``/``."""
    try:
        keys.handle_key(handle_id)
    except ValueError as exc:
        raise IPAMError(f"handle_id: {exc}") from None


def check_request(request: AutoAssignRequest) -> None:
    """IPAMError naming the field when an auto-assign request cannot be served."""
    if not request.node:
        raise IPAMError("node: a node name is required to assign addresses")
    if request.num4 < 0 or request.num6 < 0:
        raise IPAMError("num4/num6: address counts must not be negative")
    if request.num4 == 0 and request.num6 == 0:
        raise IPAMError("num4/num6: nothing to assign (both IPv4 and IPv6 are off)")
    if request.handle_id is not None:
        check_handle_id(request.handle_id)


def affinity_type_for(use: str) -> str:
    """Load-balancer addresses come from ``virtual`` blocks, everything else from host ones."""
    return AFFINITY_TYPE_VIRTUAL if use == USE_LOAD_BALANCER else AFFINITY_TYPE_HOST


def plan_family(
    request: AutoAssignRequest,
    version: int,
    num: int,
    pools: list[Pool],
    node_labels: Mapping[str, str],
    reservations: Reservations = NO_RESERVATIONS,
) -> FamilyPlan:
    """The pools ``request`` may take ``num`` IPv``version`` addresses from (NoQualifiedPool if
    none; IPAMError if the request names pools of the other family)."""
    requested = request.ipv4_pools if version == 4 else request.ipv6_pools
    for cidr in requested:
        if cidr.version != version:
            raise IPAMError(
                f"provided IPv{version} IPPools list contains one or more IPv{10 - version} IPPools"
            )
    try:
        chosen = select_pools(
            pools,
            version=version,
            requested=requested,
            node_labels=node_labels,
            namespace_labels=request.namespace_labels,
            use=request.use,
        )
    except PoolSelectionError as exc:
        raise NoQualifiedPool(str(exc)) from None
    return FamilyPlan(version, num, chosen, pools, node_labels, reservations)


def max_blocks(request: AutoAssignRequest, config: IPAMConfig) -> int:
    """How many blocks the node may hold: the request's limit, capped by the config's."""
    limit = request.max_blocks_per_host
    if config.max_blocks_per_host > 0 and (limit == 0 or limit > config.max_blocks_per_host):
        limit = config.max_blocks_per_host
    return limit or DEFAULT_MAX_BLOCKS_PER_HOST

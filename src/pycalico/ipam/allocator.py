"""``IPAM``: Calico's IPAM client, composed of a block store, an allocator and a releaser.

This is libcalico-go's ``ipamClient`` (reference §5) on our datastore boundary, and the one
public entry point: auto-assign, assign a given address, release by address or handle, block
affinities, and the queries ``calicoctl ipam`` needs.  It holds no logic of its own; each call
goes to one part:

* ``store.BlockStore`` — datastore reads and compare-and-swap writes of config, pools, blocks,
  affinities and handles, the claim protocol, and a long-lived allocator's caches;
* ``planner`` (PURE) — request checks, pool choice, block limits;
* ``assign.Allocator`` — auto-assign and assign, with ``batching.NodeBatcher`` behind it;
* ``release.Releaser`` — releases and the queries by address and handle.

It is not the CNI plugin (``pycalico.cni``) and not ``calicoctl`` (``pycalico.ctl.ipam``).
Every write is a compare-and-swap retried a bounded number of times (``RETRIES``, Calico's 100).
The invariants are stated where they are kept: the claim protocol in ``store``, assignment in
``assign``, releasing in ``release``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

from pycalico.datastore.api import KVStore
from pycalico.ipam.api import (
    AddressInUse,
    AddressNotInPool,
    AllocationInfo,
    AssignmentIncomplete,
    Assignments,
    AutoAssignRequest,
    HandleNotFound,
    IPAMError,
    NodeNotFound,
    NoQualifiedPool,
    ReleaseConflict,
    TooManyRetries,
)
from pycalico.ipam.assign import Allocator
from pycalico.ipam.blocks import AllocationBlock, ReleaseOption
from pycalico.ipam.pools import USE_WORKLOAD, Pool
from pycalico.ipam.records import (
    AFFINITY_TYPE_HOST,
    IPAddress,
    IPAMConfig,
    IPInterface,
    IPNetwork,
)
from pycalico.ipam.release import Releaser
from pycalico.ipam.reservations import Reservations
from pycalico.ipam.store import RETRIES, BlockStore

__all__ = [
    "IPAM",
    "RETRIES",
    "AddressInUse",
    "AddressNotInPool",
    "AllocationInfo",
    "AssignmentIncomplete",
    "Assignments",
    "AutoAssignRequest",
    "HandleNotFound",
    "IPAMError",
    "NoQualifiedPool",
    "NodeNotFound",
    "ReleaseConflict",
    "TooManyRetries",
]


class IPAM:
    """Calico IPAM over a ``KVStore``.  Safe for many concurrent callers and processes.

    ``cache_seconds > 0`` is for long-lived callers (the node agent): IPAM config, pools,
    IP reservations and node labels are reused for that long, blocks and handles it wrote are
    remembered, and concurrent single-address requests of a node are combined.
    ``after_block_claimed`` runs between creating a claimed block and confirming its affinity
    (tests use it to crash there).
    """

    def __init__(
        self,
        kv: KVStore,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        retries: int = RETRIES,
        cache_seconds: float = 0.0,
        after_block_claimed: Callable[[IPNetwork], None] = lambda cidr: None,
    ) -> None:
        self.store = BlockStore(
            kv,
            clock=clock,
            retries=retries,
            cache_seconds=cache_seconds,
            after_block_claimed=after_block_claimed,
        )
        self.releaser = Releaser(self.store)
        self.allocator = Allocator(self.store, self.releaser)

    @property
    def kv(self) -> KVStore:
        return self.store.kv

    # -- assignment --

    async def auto_assign(self, request: AutoAssignRequest) -> tuple[Assignments, Assignments]:
        """Assign ``num4`` IPv4 and ``num6`` IPv6 addresses to ``node``, all or nothing."""
        return await self.allocator.auto_assign(request)

    async def assign_ip(
        self,
        address: IPAddress,
        *,
        node: str,
        handle_id: str | None = None,
        attrs: Mapping[str, str] | None = None,
        use: str = USE_WORKLOAD,
    ) -> IPInterface:
        """Assign exactly ``address`` (claiming its block for ``node`` if it has no block)."""
        return await self.allocator.assign_ip(
            address, node=node, handle_id=handle_id, attrs=attrs, use=use
        )

    # -- release --

    async def release_ips(self, options: Sequence[ReleaseOption]) -> list[IPAddress]:
        """Release addresses; returns those that were not allocated (see ``Releaser``)."""
        return await self.releaser.release_ips(options)

    async def release_by_handle(self, handle_id: str, *, sequence_number: int | None = None) -> int:
        """Release every address held by ``handle_id``; HandleNotFound if there is none."""
        return await self.releaser.release_by_handle(handle_id, sequence_number=sequence_number)

    def wrote_handle(self, handle_id: str) -> bool:
        """Whether this allocator itself last wrote ``handle_id`` (see ``BlockStore``)."""
        return self.store.wrote_handle(handle_id)

    async def release_block_affinity(
        self,
        host: str,
        cidr: IPNetwork,
        *,
        require_empty: bool = True,
        required_sequence: int | None = None,
        affinity_type: str = AFFINITY_TYPE_HOST,
    ) -> None:
        """Give up ``host``'s claim on a block (see ``BlockStore.release_block_affinity``)."""
        await self.store.release_block_affinity(
            host,
            cidr,
            require_empty=require_empty,
            required_sequence=required_sequence,
            affinity_type=affinity_type,
        )

    async def release_host_affinities(self, host: str, *, require_empty: bool = True) -> int:
        """Release ``host``'s affinity for all its (empty, by default) blocks; returns how many."""
        return await self.store.release_host_affinities(host, require_empty=require_empty)

    # -- queries and configuration --

    async def allocation_info(self, address: IPAddress) -> AllocationInfo | None:
        """Who holds ``address``, or None when it is not allocated."""
        return await self.releaser.allocation_info(address)

    async def addresses_by_handle(self, handle_id: str) -> list[IPAddress]:
        return await self.releaser.addresses_by_handle(handle_id)

    async def get_config(self) -> IPAMConfig:
        return await self.store.get_config()

    async def set_config(self, config: IPAMConfig) -> None:
        await self.store.set_config(config)

    async def list_pools(self) -> list[Pool]:
        return await self.store.list_pools()

    async def list_reservations(self) -> Reservations:
        return await self.store.list_reservations()

    async def node_labels(self, node: str) -> dict[str, str]:
        return await self.store.node_labels(node)

    async def list_blocks(self, version: int | None = None) -> list[tuple[int, AllocationBlock]]:
        return await self.store.list_blocks(version)

"""The IPAM allocator's public types: its errors, requests and results.

Pure data, no I/O.  ``pycalico.ipam.allocator`` re-exports every name here, so callers import
them from either module.  Every error's ``str()`` is the message a user should see; where
Calico has a message for the same condition, it is Calico's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pycalico.datastore.api import DatastoreError
from pycalico.ipam.pools import USE_WORKLOAD
from pycalico.ipam.records import IPAddress, IPInterface, IPNetwork

TOO_MANY_RETRIES = "Max retries hit - excessive concurrent IPAM requests"


# --- errors -----------------------------------------------------------------------------------


class IPAMError(Exception):
    """Root of the allocator's errors; ``str(error)`` is the message a user should see."""


class NoQualifiedPool(IPAMError):
    pass


class NodeNotFound(IPAMError):
    def __init__(self, node: str) -> None:
        super().__init__(
            f"resource does not exist: Node({node}); IPAM assigns addresses only to nodes "
            "registered in the datastore (calico-node registers them)"
        )
        self.node = node


class AssignmentIncomplete(IPAMError):
    """Fewer addresses than requested; nothing stays allocated (all-or-nothing)."""


class AddressNotInPool(IPAMError):
    pass


class AddressInUse(IPAMError):
    pass


class HandleNotFound(IPAMError):
    def __init__(self, handle_id: str) -> None:
        super().__init__(f"resource does not exist: IPAMHandle({handle_id})")
        self.handle_id = handle_id


class ReleaseConflict(IPAMError):
    """A sequence-checked release found the address reused; nothing was released."""


class TooManyRetries(IPAMError):
    def __init__(self) -> None:
        super().__init__(TOO_MANY_RETRIES)


class _NoFreeBlocks(Exception):
    pass


class _BlockLimit(Exception):
    pass


class _ClaimConflict(DatastoreError):
    """Another node claimed the block first: a lost race, retried like a lost CAS."""


class _StaleAffinity(Exception):
    pass


# --- requests and results -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AutoAssignRequest:
    num4: int = 1
    num6: int = 0
    handle_id: str | None = None
    attrs: Mapping[str, str] = field(default_factory=dict)
    node: str = ""
    ipv4_pools: Sequence[IPNetwork] = ()
    ipv6_pools: Sequence[IPNetwork] = ()
    max_blocks_per_host: int = 0
    use: str = USE_WORKLOAD
    namespace_labels: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Assignments:
    version: int
    requested: int
    addresses: tuple[IPInterface, ...] = ()
    messages: tuple[str, ...] = ()

    def shortfall_message(self) -> str | None:
        """Calico's ``PartialFulfillmentError`` text, or None when the request was met."""
        if len(self.addresses) >= self.requested:
            return None
        text = (
            f"Assigned {len(self.addresses)} out of {self.requested} requested "
            f"IPv{self.version} addresses"
        )
        return "".join([text, *(f"; {m}" for m in self.messages)])


@dataclass(frozen=True, slots=True)
class AllocationInfo:
    """Who holds an address (``calicoctl ipam show --ip``)."""

    address: IPAddress
    block: IPNetwork
    handle_id: str | None
    attributes: Mapping[str, str]
    sequence_number: int

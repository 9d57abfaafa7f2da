"""IPAM consistency check (``calicoctl ipam check``): what in the IPAM keys does not add up.

``load_snapshot`` reads every IPAM key, IPPool, Node and WorkloadEndpoint once; ``analyse`` is
pure and turns that snapshot into findings, each a sentence that says what is there, why it is
a problem and what clears it.  Not here: repairing anything (the allocator and
``calicoctl ipam release`` do that) or rendering (``pycalico.ctl.ipam``).

Findings (``kind``):

* ``allocation-without-handle``: an address allocated under a handle that does not exist or
  does not count it;
* ``handle-without-addresses``: a handle counting more addresses in a block than the block
  holds for it (what a process killed between the handle write and the block write leaves);
* ``block-affine-to-missing-node`` / ``affinity-for-missing-node``: claims by nodes that are
  not registered;
* ``pending-affinity``: a claim interrupted between writing the affinity and confirming it;
* ``affinity-without-block``, ``stale-affinity``, ``block-without-affinity``: the two halves
  of a claim disagree;
* ``address-with-two-owners``: one address allocated in two blocks, or used by two endpoints;
* ``address-in-use-without-allocation``: a workload endpoint uses an address of a pool that
  IPAM has not allocated;
* ``allocation-outside-pools``, ``corrupt-block``.

Invariant: a store written only by completed allocator calls has no findings.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from pycalico.datastore import paths
from pycalico.datastore.api import KVStore
from pycalico.ipam import keys
from pycalico.ipam.blocks import AllocationBlock, CorruptBlock
from pycalico.ipam.pools import Pool, pool_for_address
from pycalico.ipam.records import BlockAffinity, IPAddress, IPAMHandle, IPNetwork, sanitize_handle
from pycalico.lib.addresses import address_order

WORKLOADENDPOINTS_PREFIX = paths.resource_prefix("workloadendpoints")


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    message: str
    block: str | None = None
    address: str | None = None
    handle: str | None = None
    node: str | None = None


@dataclass(frozen=True, slots=True)
class AffinityEntry:
    host: str
    cidr: IPNetwork
    affinity_type: str
    state: str


@dataclass(slots=True)
class Snapshot:
    blocks: list[AllocationBlock] = field(default_factory=list)
    corrupt_blocks: list[tuple[str, str]] = field(default_factory=list)
    affinities: list[AffinityEntry] = field(default_factory=list)
    handles: dict[str, IPAMHandle] = field(default_factory=dict)
    nodes: set[str] = field(default_factory=set)
    pools: list[Pool] = field(default_factory=list)
    endpoint_addresses: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Report:
    findings: Sequence[Finding]
    blocks: int
    allocations: int
    handles: int

    @property
    def clean(self) -> bool:
        return not self.findings

    def to_json(self) -> str:
        return json.dumps(
            {
                "summary": {
                    "blocks": self.blocks,
                    "allocations": self.allocations,
                    "handles": self.handles,
                    "findings": len(self.findings),
                },
                "findings": [asdict(f) for f in self.findings],
            },
            indent=2,
        )


async def load_snapshot(kv: KVStore) -> Snapshot:
    snapshot = Snapshot()
    listed = await kv.list(keys.IPAM_ROOT)
    for item in listed.items:
        if keys.parse_block_key(item.key) is not None:
            try:
                snapshot.blocks.append(AllocationBlock.from_json(item.value))
            except (CorruptBlock, ValueError, KeyError, TypeError) as exc:
                snapshot.corrupt_blocks.append((item.key, str(exc)))
        elif (affinity := keys.parse_affinity_key(item.key)) is not None:
            state = BlockAffinity.from_json(item.value).state
            snapshot.affinities.append(
                AffinityEntry(affinity.host, affinity.cidr, affinity.affinity_type, state)
            )
        elif (handle_id := keys.parse_handle_key(item.key)) is not None:
            snapshot.handles[sanitize_handle(handle_id)] = IPAMHandle.from_json(item.value)
    for item in (await kv.list(keys.NODES_PREFIX)).items:
        snapshot.nodes.add(item.key.rsplit("/", 1)[1])
    for item in (await kv.list(keys.IPPOOLS_PREFIX)).items:
        try:
            snapshot.pools.append(Pool.from_resource_json(item.value))
        except (ValueError, KeyError):
            continue
    for item in (await kv.list(WORKLOADENDPOINTS_PREFIX)).items:
        try:
            spec = json.loads(item.value).get("spec") or {}
        except ValueError:
            continue
        name = item.key[len(WORKLOADENDPOINTS_PREFIX) :]
        for network in spec.get("ipNetworks") or []:
            snapshot.endpoint_addresses.setdefault(str(network).split("/")[0], []).append(name)
    return snapshot


def analyse(snapshot: Snapshot) -> Report:
    findings: list[Finding] = []
    allocations = 0
    counted: dict[tuple[str, str], int] = {}  # (handle, block cidr) -> addresses in the block
    owners: dict[IPAddress, list[str]] = {}
    blocks_by_cidr = {b.cidr: b for b in snapshot.blocks}
    affinity_by_block: dict[IPNetwork, list[AffinityEntry]] = {}
    for entry in snapshot.affinities:
        affinity_by_block.setdefault(entry.cidr, []).append(entry)

    for key, problem in snapshot.corrupt_blocks:
        findings.append(Finding("corrupt-block", f"block at {key} cannot be read: {problem}"))

    for block in snapshot.blocks:
        cidr = str(block.cidr)
        for problem in block.validate():
            findings.append(Finding("corrupt-block", problem, block=cidr))
        if block.validate():
            continue
        host = block.host
        if host is not None and host not in snapshot.nodes:
            findings.append(
                Finding(
                    "block-affine-to-missing-node",
                    f"block {cidr} is affine to node {host}, which does not exist; release it "
                    f"with the node's other IPAM data once its workloads are gone",
                    block=cidr,
                    node=host,
                )
            )
        if host is not None and not any(
            e.host == host and e.affinity_type == "host"
            for e in affinity_by_block.get(block.cidr, [])
        ):
            findings.append(
                Finding(
                    "block-without-affinity",
                    f"block {cidr} names node {host} but that node has no affinity key for it "
                    "(an affinity release was interrupted)",
                    block=cidr,
                    node=host,
                )
            )
        outside = pool_for_address(snapshot.pools, block.cidr.network_address) is None
        if snapshot.pools and outside and block.in_use_ordinals():
            findings.append(
                Finding(
                    "allocation-outside-pools",
                    f"block {cidr} holds {len(block.in_use_ordinals())} address(es) but lies "
                    "in no IP pool (was its pool deleted?)",
                    block=cidr,
                )
            )
        for ordinal in block.in_use_ordinals():
            allocations += 1
            address = block.address(ordinal)
            owners.setdefault(address, []).append(cidr)
            attribute = block.attributes[block.allocations[ordinal]]  # type: ignore[index]
            if attribute.handle_id is None:
                findings.append(
                    Finding(
                        "allocation-without-handle",
                        f"address {address} in block {cidr} is allocated without a handle; "
                        f"release it with 'calicoctl ipam release --ip={address}'",
                        block=cidr,
                        address=str(address),
                    )
                )
                continue
            handle = sanitize_handle(attribute.handle_id)
            counted[(handle, cidr)] = counted.get((handle, cidr), 0) + 1

    for (handle, cidr), count in sorted(counted.items()):
        recorded = snapshot.handles.get(handle)
        held = 0 if recorded is None else recorded.block.get(cidr, 0)
        if held < count:
            holder = blocks_by_cidr[_network(cidr)]
            for address in holder.addresses_by_handle(handle)[held:]:
                findings.append(
                    Finding(
                        "allocation-without-handle",
                        f"address {address} in block {cidr} is allocated to handle {handle}, "
                        f"which {'does not exist' if recorded is None else 'does not count it'}; "
                        f"release it with 'calicoctl ipam release --ip={address}'",
                        block=cidr,
                        address=str(address),
                        handle=handle,
                    )
                )

    for handle, recorded in sorted(snapshot.handles.items()):
        for cidr, held in sorted(recorded.block.items()):
            actual = counted.get((handle, cidr), 0)
            if held > actual:
                findings.append(
                    Finding(
                        "handle-without-addresses",
                        f"handle {handle} counts {held} address(es) in block {cidr} but the block "
                        f"holds {actual} for it (an assignment was interrupted after counting); "
                        f"a CNI DEL of the container or releasing the handle clears it",
                        block=cidr,
                        handle=handle,
                    )
                )

    for entry in snapshot.affinities:
        cidr = str(entry.cidr)
        claimed = blocks_by_cidr.get(entry.cidr)
        name = f"{entry.affinity_type}:{entry.host}"
        if entry.affinity_type == "host" and entry.host not in snapshot.nodes:
            findings.append(
                Finding(
                    "affinity-for-missing-node",
                    f"node {entry.host} does not exist but holds an affinity for block {cidr}",
                    block=cidr,
                    node=entry.host,
                )
            )
        if claimed is None:
            findings.append(
                Finding(
                    "affinity-without-block",
                    f"{entry.state} affinity of {name} for block {cidr}, which does not exist: "
                    "a block claim was interrupted before the block was written; harmless — the "
                    "node's next assignment creates the block or another node's claim wins and "
                    "the affinity is then deleted as stale",
                    block=cidr,
                    node=entry.host,
                )
            )
        elif claimed.affinity != name:
            findings.append(
                Finding(
                    "stale-affinity",
                    f"affinity of {name} for block {cidr}, but the block belongs to "
                    f"{claimed.affinity or 'no node'}; the node's next assignment deletes it",
                    block=cidr,
                    node=entry.host,
                )
            )
        elif entry.state != "confirmed":
            findings.append(
                Finding(
                    "pending-affinity",
                    f"{entry.state} affinity of {name} for block {cidr}, which is claimed by "
                    f"that node: a claim was interrupted between creating the block and "
                    "confirming it (routes are not yet advertised for it); the node's next "
                    "assignment confirms it",
                    block=cidr,
                    node=entry.host,
                )
            )

    for address, blocks in sorted(owners.items(), key=lambda item: address_order(item[0])):
        if len(blocks) > 1:
            findings.append(
                Finding(
                    "address-with-two-owners",
                    f"address {address} is allocated in blocks {', '.join(blocks)}",
                    address=str(address),
                )
            )
    for address_text, endpoints in sorted(
        snapshot.endpoint_addresses.items(),
        key=lambda item: address_order(ipaddress.ip_address(item[0])),
    ):
        used = ipaddress.ip_address(address_text)
        if used not in owners and pool_for_address(snapshot.pools, used) is not None:
            findings.append(
                Finding(
                    "address-in-use-without-allocation",
                    f"address {address_text} is used by workload endpoint "
                    f"{', '.join(endpoints)} but IPAM has not allocated it, so it may be "
                    "handed to another workload",
                    address=address_text,
                )
            )
        if len(endpoints) > 1:
            findings.append(
                Finding(
                    "address-with-two-owners",
                    f"address {address_text} is used by workload endpoints {', '.join(endpoints)}",
                    address=address_text,
                )
            )
    return Report(
        findings=findings,
        blocks=len(snapshot.blocks),
        allocations=allocations,
        handles=len(snapshot.handles),
    )


def _network(cidr: str) -> IPNetwork:
    return ipaddress.ip_network(cidr)


async def check(kv: KVStore) -> Report:
    return analyse(await load_snapshot(kv))


def summary_lines(report: Report) -> list[str]:
    lines = [
        f"Found {report.blocks} IPAM blocks.",
        f"Found {report.allocations} allocated IPs.",
        f"Found {report.handles} IPAM handles.",
    ]
    if report.clean:
        lines.append("Check complete; found 0 problems.")
    else:
        lines.append(f"Check complete; found {len(report.findings)} problems.")
        lines.extend(f"  [{f.kind}] {f.message}" for f in report.findings)
    return lines

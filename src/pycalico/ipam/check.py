"""IPAM consistency check (``calicoctl ipam check``): what in the IPAM keys does not add up.

``load_snapshot`` reads every IPAM key, IPPool, Node, WorkloadEndpoint and the ClusterInformation
once; ``analyse`` is pure and turns that snapshot into findings, each a sentence that says what
is there, why it is a problem and what clears it.  Not here: repairing anything (the allocator
and ``calicoctl ipam release`` do that), the report file format (``check_report``) or rendering
(``pycalico.ctl.ipam_check``).

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

Besides findings, ``analyse`` cross-references every allocation with what uses its address, as
calicoctl does: workload endpoints (``Workload(ns/name)``), node tunnel addresses
(``Node(name)``: IPIP, VXLAN and WireGuard, IPv4 and IPv6 — calicoctl looks at IPv4 only, but an
IPv6 tunnel address reported as leaked would be released) and Windows' reserved addresses.  An
allocation nothing uses is *leaked* (``inUse: false`` in the report); a handle no allocation
refers to is a leaked handle.  Leaks are not findings: an address allocated by a CNI ADD whose
endpoint is not written yet, or by ``calico-ipam`` under another CNI plugin, is one too, so only
an operator who has ruled that out (``calicoctl ipam release --from-report``) acts on them.

Invariant: a store written only by completed allocator calls has no findings.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

from pycalico import __version__
from pycalico.datastore import paths
from pycalico.datastore.api import KVStore
from pycalico.ipam import keys
from pycalico.ipam.blocks import AllocationAttribute, AllocationBlock, CorruptBlock
from pycalico.ipam.check_report import (
    CheckReport,
    ClusterStamp,
    LeakedHandle,
    ReportAllocation,
    report_json,
)
from pycalico.ipam.pools import Pool, pool_for_address
from pycalico.ipam.records import (
    WINDOWS_RESERVED_HANDLE,
    BlockAffinity,
    IPAddress,
    IPAMHandle,
    IPNetwork,
    sanitize_handle,
)
from pycalico.lib.addresses import address_order
from pycalico.model.node import ClusterInformation

WORKLOADENDPOINTS_PREFIX = paths.resource_prefix("workloadendpoints")
CLUSTER_INFORMATION_KEY = paths.resource_key("clusterinformations", "default")
# Where a Node keeps the tunnel addresses IPAM allocated for it.
_NODE_TUNNEL_FIELDS = (
    ("bgp", "ipv4IPIPTunnelAddr"),
    (None, "ipv4VXLANTunnelAddr"),
    (None, "ipv6VXLANTunnelAddr"),
    ("wireguard", "interfaceIPv4Address"),
    ("wireguard", "interfaceIPv6Address"),
)


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
    # Tunnel address -> nodes that name it.
    node_addresses: dict[str, list[str]] = field(default_factory=dict)
    # Sanitized handle id -> (the id as its key spells it, the key's etcd revision).
    handle_keys: dict[str, tuple[str, int]] = field(default_factory=dict)
    cluster: ClusterStamp | None = None


@dataclass(frozen=True, slots=True)
class Report:
    findings: Sequence[Finding]
    blocks: int
    allocations: int
    handles: int
    # The cross-reference calicoctl reports (see the module docstring).
    ips: Sequence[ReportAllocation] = ()
    in_use: Mapping[str, Sequence[str]] = field(default_factory=dict)  # address -> owners
    leaked_handles: Sequence[LeakedHandle] = ()
    missing_handles: Sequence[str] = ()
    block_affinities: Sequence[tuple[str, str]] = ()  # (cidr, affinity or "<none>")
    active_pools: Sequence[str] = ()
    node_ips: int = 0
    workload_ips: int = 0
    cluster: ClusterStamp | None = None

    @property
    def clean(self) -> bool:
        return not self.findings

    @property
    def leaked(self) -> list[ReportAllocation]:
        return [a for a in self.ips if not a.in_use]

    def unallocated_in_use(self) -> tuple[list[str], list[str]]:
        """In-use addresses IPAM has not allocated: (outside active pools, inside them)."""
        allocated = {a.ip for a in self.ips}
        pools = [ipaddress.ip_network(p) for p in self.active_pools]
        outside, inside = [], []
        for address in self.in_use:
            if address in allocated:
                continue
            parsed = ipaddress.ip_address(address)
            if any(parsed.version == p.version and parsed in p for p in pools):
                inside.append(address)
            else:
                outside.append(address)
        return outside, inside

    def check_report(self, version: str = __version__) -> CheckReport:
        return CheckReport(
            version=version,
            cluster=self.cluster or ClusterStamp(),
            allocations=tuple(self.ips),
            leaked_handles=tuple(self.leaked_handles),
        )

    def to_json(self, version: str = __version__) -> str:
        """calicoctl's report, plus pycalico's own ``summary`` and ``findings``."""
        out = report_json(self.check_report(version))
        out["summary"] = {
            "blocks": self.blocks,
            "allocations": self.allocations,
            "handles": self.handles,
            "findings": len(self.findings),
            "leakedIPs": len(self.leaked),
            "leakedHandles": len(self.leaked_handles),
        }
        out["findings"] = [asdict(f) for f in self.findings]
        return json.dumps(out, indent=2)


def _normalise(text: object) -> str | None:
    try:
        return str(ipaddress.ip_interface(str(text)).ip)
    except ValueError:
        return None


def _node_tunnel_addresses(spec: Mapping[str, object]) -> list[str]:
    found = []
    for section, name in _NODE_TUNNEL_FIELDS:
        holder = spec.get(section) if section else spec
        value = holder.get(name) if isinstance(holder, dict) else None
        if value and (address := _normalise(value)) is not None:
            found.append(address)
    return found


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
    for item in listed.items:
        if (handle_id := keys.parse_handle_key(item.key)) is not None:
            snapshot.handle_keys[sanitize_handle(handle_id)] = (handle_id, item.revision)
    for item in (await kv.list(keys.NODES_PREFIX)).items:
        name = item.key.rsplit("/", 1)[1]
        snapshot.nodes.add(name)
        try:
            spec = json.loads(item.value).get("spec") or {}
        except (ValueError, AttributeError):
            continue
        for address in _node_tunnel_addresses(spec if isinstance(spec, dict) else {}):
            snapshot.node_addresses.setdefault(address, []).append(name)
    for item in (await kv.list(keys.IPPOOLS_PREFIX)).items:
        try:
            snapshot.pools.append(Pool.from_resource_json(item.value))
        except (ValueError, KeyError):
            continue
    for item in (await kv.list(WORKLOADENDPOINTS_PREFIX)).items:
        try:
            spec = json.loads(item.value).get("spec") or {}
        except (ValueError, AttributeError):
            continue
        name = item.key[len(WORKLOADENDPOINTS_PREFIX) :]
        for network in spec.get("ipNetworks") or []:
            if (used := _normalise(network)) is not None:
                snapshot.endpoint_addresses.setdefault(used, []).append(name)
    snapshot.cluster = await load_cluster_stamp(kv)
    return snapshot


async def load_cluster_stamp(kv: KVStore) -> ClusterStamp | None:
    """ClusterInformation ``default`` as reports record it; None when it does not exist."""
    cluster = await kv.get(CLUSTER_INFORMATION_KEY)
    if cluster is None:
        return None
    try:
        spec = json.loads(cluster.value).get("spec") or {}
    except (ValueError, AttributeError):
        spec = {}
    try:
        locked = ClusterInformation.model_validate(
            {"metadata": {"name": "default"}, "spec": spec}
        ).datastore_locked
    except ValueError:
        locked = False  # unreadable: not an explicit lock
    return ClusterStamp(
        guid=str(spec.get("clusterGUID") or ""),
        revision=str(cluster.revision),
        cluster_type=str(spec.get("clusterType") or ""),
        locked=locked,
    )


def analyse(snapshot: Snapshot) -> Report:
    """Every finding of the consistency check over one snapshot of the IPAM data."""
    findings: list[Finding] = []
    allocations = 0
    counted: dict[tuple[str, str], int] = {}  # (handle, block cidr) -> addresses in the block
    owners: dict[IPAddress, list[str]] = {}
    affinity_by_block: dict[IPNetwork, list[AffinityEntry]] = {}
    for entry in snapshot.affinities:
        affinity_by_block.setdefault(entry.cidr, []).append(entry)

    for key, problem in snapshot.corrupt_blocks:
        findings.append(Finding("corrupt-block", f"block at {key} cannot be read: {problem}"))
    for block in snapshot.blocks:
        problems = block.validate()
        for problem in problems:
            findings.append(Finding("corrupt-block", problem, block=str(block.cidr)))
        if problems:
            continue
        findings.extend(_block_shape_findings(block, snapshot, affinity_by_block))
        allocations += len(block.in_use_ordinals())
        findings.extend(_allocation_findings(block, counted, owners))
    findings.extend(_handle_findings(snapshot, counted))
    findings.extend(_affinity_findings(snapshot))
    findings.extend(_owner_findings(snapshot, owners))
    return _cross_reference(
        snapshot,
        Report(
            findings=findings,
            blocks=len(snapshot.blocks),
            allocations=allocations,
            handles=len(snapshot.handles),
        ),
    )


def _block_shape_findings(
    block: AllocationBlock,
    snapshot: Snapshot,
    affinity_by_block: Mapping[IPNetwork, list[AffinityEntry]],
) -> list[Finding]:
    """What is wrong with one (readable) block itself: its owner, its affinity, its pool."""
    findings: list[Finding] = []
    cidr = str(block.cidr)
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
        e.host == host and e.affinity_type == "host" for e in affinity_by_block.get(block.cidr, [])
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
    return findings


def _allocation_findings(
    block: AllocationBlock,
    counted: dict[tuple[str, str], int],
    owners: dict[IPAddress, list[str]],
) -> list[Finding]:
    """Allocations without a handle; counts each handle's addresses and each address's blocks
    into ``counted`` and ``owners``."""
    findings: list[Finding] = []
    cidr = str(block.cidr)
    for ordinal in block.in_use_ordinals():
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
    return findings


def _handle_findings(snapshot: Snapshot, counted: Mapping[tuple[str, str], int]) -> list[Finding]:
    """Addresses their handle does not count, and handle counts without addresses."""
    findings: list[Finding] = []
    blocks_by_cidr = {b.cidr: b for b in snapshot.blocks}
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
    return findings


def _affinity_findings(snapshot: Snapshot) -> list[Finding]:
    """Affinities of missing nodes, without a block, stale or left pending."""
    findings: list[Finding] = []
    blocks_by_cidr = {b.cidr: b for b in snapshot.blocks}
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
    return findings


def _owner_findings(snapshot: Snapshot, owners: Mapping[IPAddress, list[str]]) -> list[Finding]:
    """Addresses held twice, and addresses endpoints use that IPAM has not allocated."""
    findings: list[Finding] = []
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
    return findings


def attributes_text(attribute: AllocationAttribute | None) -> str:
    """calicoctl's rendering of an allocation's attributes: ``Main:<handle> Extra:k=v,...``."""
    if attribute is None:
        return "<missing>"
    extra = ",".join(f"{k}={v}" for k, v in sorted((attribute.secondary or {}).items()))
    return f"Main:{attribute.handle_id or '<none>'} Extra:{extra}"


def _is_windows_reserved(attribute: AllocationAttribute) -> bool:
    return (attribute.handle_id or "").lower() == WINDOWS_RESERVED_HANDLE


def _cross_reference(snapshot: Snapshot, counts: Report) -> Report:
    """Add calicoctl's view to ``counts``: who uses each allocated address, what is leaked."""
    in_use: dict[str, list[str]] = {}
    for address, names in snapshot.node_addresses.items():
        in_use.setdefault(address, []).extend(f"Node({n})" for n in names)
    for address, names in snapshot.endpoint_addresses.items():
        in_use.setdefault(address, []).extend(f"Workload({n})" for n in names)
    referenced: set[str] = set()
    records: list[tuple[AllocationBlock, int, AllocationAttribute]] = []
    for block in snapshot.blocks:
        for ordinal in block.in_use_ordinals():
            attribute = block.attributes[block.allocations[ordinal]]  # type: ignore[index]
            records.append((block, ordinal, attribute))
            if _is_windows_reserved(attribute):
                in_use.setdefault(str(block.address(ordinal)), []).append("Reserved for Windows")
            elif attribute.handle_id:
                referenced.add(sanitize_handle(attribute.handle_id))
    allocations = []
    for block, ordinal, attribute in records:
        address = str(block.address(ordinal))
        extra = dict(attribute.secondary or {})
        node = extra.get("node") or block.host or ""
        owners = tuple(in_use.get(address, ()))
        allocations.append(
            ReportAllocation(
                ip=address,
                handle="" if _is_windows_reserved(attribute) else attribute.handle_id or "",
                sequence_number=block.sequence_for(ordinal),
                pod=extra.get("pod", ""),
                namespace=extra.get("namespace", ""),
                node=node,
                type=extra.get("type", ""),
                creation_timestamp=extra.get("timestamp", ""),
                in_use=bool(owners),
                borrowed=node != (block.host or ""),
                owners=owners,
                block=str(block.cidr),
                attributes=attributes_text(attribute),
            )
        )
    allocations.sort(key=lambda a: (address_order(ipaddress.ip_address(a.ip)), a.block))
    # A block that cannot be read may refer to any handle: call none leaked then.
    leaked_handles = (
        []
        if snapshot.corrupt_blocks
        else [
            LeakedHandle(id=raw, revision=str(revision))
            for handle, (raw, revision) in sorted(snapshot.handle_keys.items())
            if handle not in referenced
        ]
    )
    return replace(
        counts,
        ips=allocations,
        in_use={a: tuple(o) for a, o in sorted(in_use.items(), key=_by_address)},
        leaked_handles=leaked_handles,
        missing_handles=sorted(referenced - snapshot.handles.keys()),
        block_affinities=[
            (str(b.cidr), b.affinity or "<none>")
            for b in sorted(snapshot.blocks, key=lambda b: address_order(b.cidr.network_address))
        ],
        active_pools=[str(p.cidr) for p in snapshot.pools if not p.disabled],
        node_ips=sum(len(n) for n in snapshot.node_addresses.values()),
        workload_ips=sum(len(n) for n in snapshot.endpoint_addresses.values()),
        cluster=snapshot.cluster,
    )


def _by_address(item: tuple[str, object]) -> tuple[int, int]:
    return address_order(ipaddress.ip_address(item[0]))


def _network(cidr: str) -> IPNetwork:
    return ipaddress.ip_network(cidr)


async def check(kv: KVStore) -> Report:
    return analyse(await load_snapshot(kv))

"""``calicoctl ipam check`` output and ``calicoctl ipam release --from-report``'s releases.

What it is: the text ``check`` prints (calicoctl's scan lines, with the addresses themselves
under ``--show-all-ips`` / ``--show-problem-ips``) and the release of what check reports call
leaked.  What it is not: the analysis (``pycalico.ipam.check``), the report format and the rules
for refusing a report (``pycalico.ipam.check_report``), or the click commands
(``pycalico.ctl.ipam``).

Invariants of ``release_from_reports``:

* Nothing is written unless ``vet_reports`` accepts the reports.
* Every address is released with the sequence number (and handle) the report recorded, so an
  address released and reassigned since the report is never freed: it is skipped and named.
* A handle is deleted only at the revision the report recorded, and only while no block it
  counts addresses in holds any for it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from pycalico.datastore.api import DatastoreError, KeyNotFound, KVStore, RevisionConflict
from pycalico.ipam import keys
from pycalico.ipam.allocator import IPAM
from pycalico.ipam.api import ReleaseConflict
from pycalico.ipam.blocks import AllocationBlock, CorruptBlock, ReleaseOption
from pycalico.ipam.check import Report, load_cluster_stamp
from pycalico.ipam.check_report import (
    CheckReport,
    LeakedAddress,
    LeakedHandle,
    ReportAllocation,
    merge_reports,
    vet_reports,
)
from pycalico.ipam.records import IPAMHandle, IPNetwork, sanitize_handle

# --- check output -------------------------------------------------------------------------------


def summary_lines(
    report: Report, show_all_ips: bool = False, show_problem_ips: bool = False
) -> list[str]:
    """What ``calicoctl ipam check`` prints after its first line.

    calicoctl's scan lines, with the addresses themselves under ``show_all_ips`` (every
    allocation, block by block, and every address in use with its owner) or
    ``show_problem_ips`` (implied by ``show_all_ips``: leaked addresses, addresses with several
    owners or without allocation, handles without addresses, handles named by blocks that do
    not exist).  The problem count is pycalico's findings; leaks are counted on their own lines.
    """
    problems = show_problem_ips or show_all_ips
    return [
        *_inventory_lines(report, show_all_ips),
        *_leak_lines(report, problems),
        *_unallocated_lines(report, problems),
        *_handle_lines(report, problems),
        *_verdict_lines(report),
    ]


def _inventory_lines(report: Report, show_all_ips: bool) -> list[str]:
    """Blocks, allocations, handles, pools and the addresses in use."""
    lines = [f"Found {report.blocks} IPAM blocks."]
    if show_all_ips:
        by_block: dict[str, list[ReportAllocation]] = {}
        for allocation in report.ips:
            by_block.setdefault(allocation.block, []).append(allocation)
        for cidr, affinity in report.block_affinities:
            lines.append(f" IPAM block {cidr} affinity={affinity}:")
            lines.extend(
                f"  {a.ip} allocated; attrs {a.attributes}" for a in by_block.get(cidr, [])
            )
    lines += [
        f"Found {report.allocations} allocated IPs.",
        f"Found {report.handles} IPAM handles.",
        f"Found {len(report.active_pools)} active IP pools.",
    ]
    if show_all_ips:
        lines.extend(
            f"  {address} belongs to {owner}"
            for address, owners in report.in_use.items()
            for owner in owners
        )
    return [
        *lines,
        f"Found {report.node_ips} node tunnel IPs.",
        f"Found {report.workload_ips} workload IPs.",
        f"Workloads and nodes are using {len(report.in_use)} IPs.",
    ]


def _leak_lines(report: Report, show_problem_ips: bool) -> list[str]:
    lines = ["Scanning for IPs that are allocated but not actually in use..."]
    leaked = report.leaked
    if show_problem_ips:
        lines.extend(f"  {a.ip} leaked; attrs {a.attributes}" for a in leaked)
    lines.append(
        f"Found {len({a.ip for a in leaked})} IPs that are allocated in IPAM but not actually "
        "in use."
    )
    return lines


def _unallocated_lines(report: Report, show_problem_ips: bool) -> list[str]:
    lines = ["Scanning for IPs that are in use by a workload or node but not allocated in IPAM..."]
    outside, inside = report.unallocated_in_use()
    if show_problem_ips:
        for address, owners in report.in_use.items():
            if len(owners) > 1:
                lines.append(f"  {address} has multiple owners.")
            if address in outside:
                lines.extend(
                    f"  {address} in use by {o} is not in any active IP pool." for o in owners
                )
            elif address in inside:
                lines.extend(
                    f"  {address} in use by {o} and in active IPAM pool but has no IPAM allocation."
                    for o in owners
                )
    return [
        *lines,
        f"Found {len(outside)} in-use IPs that are not in active IP pools.",
        f"Found {len(inside)} in-use IPs that are in active IP pools but have no corresponding "
        "IPAM allocation.",
    ]


def _handle_lines(report: Report, show_problem_ips: bool) -> list[str]:
    lines = ["Scanning for IPAM handles with no matching IPs..."]
    if show_problem_ips:
        lines.extend(f"  {h.id} doesn't have any active IPs." for h in report.leaked_handles)
    matched = report.handles - len(report.leaked_handles)
    lines += [
        f"Found {len(report.leaked_handles)} handles with no matching IPs (and {matched} handles "
        "with matches).",
        "Scanning for IPs with missing handle...",
    ]
    if show_problem_ips:
        lines.extend(
            f"  {h} is in use in a block but doesn't exist." for h in report.missing_handles
        )
    lines.append(
        f"Found {len(report.missing_handles)} handles mentioned in blocks with no matching handle "
        "resource."
    )
    return lines


def _verdict_lines(report: Report) -> list[str]:
    lines = []
    if report.leaked or report.leaked_handles:
        lines.append(
            "Leaked IPs and handles are not counted as problems (a workload being set up looks "
            "the same). To release them while no workloads are being set up: write a report "
            "with -o FILE, then run 'calicoctl ipam release --from-report=FILE'."
        )
    if report.clean:
        lines.append("Check complete; found 0 problems.")
    else:
        lines.append(f"Check complete; found {len(report.findings)} problems.")
        lines.extend(f"  [{f.kind}] {f.message}" for f in report.findings)
    return lines


# --- release --from-report ----------------------------------------------------------------------


async def release_from_reports(
    kv: KVStore, reports: Sequence[tuple[str, CheckReport]], force: bool, version: str
) -> list[str]:
    """Release what every report calls leaked; the lines calicoctl prints for it.

    ReportError (before anything is written) when the reports must be refused.
    """
    lines = vet_reports(reports, await load_cluster_stamp(kv), version, force)
    addresses, handles = merge_reports(report for _, report in reports)
    if addresses:
        lines += await _release_addresses(kv, addresses)
    else:
        lines.append("Report didn't contain any leaked IPs to clean up.")
    if handles:
        lines += await _delete_handles(kv, handles)
    else:
        lines.append("Report didn't contain any handles to clean up.")
    lines.append("You may now unlock the data store.")
    return lines


def _option(leaked: LeakedAddress) -> ReleaseOption:
    return ReleaseOption(
        ipaddress.ip_address(leaked.ip),
        sequence_number=leaked.sequence_number,
        handle_id=sanitize_handle(leaked.handle) if leaked.handle else None,
    )


async def _release_addresses(kv: KVStore, addresses: Sequence[LeakedAddress]) -> list[str]:
    lines = [f"Releasing {len(addresses)} old IPs..."]
    allocator = IPAM(kv)
    blocks = [block for _, block in await allocator.list_blocks()]
    gone = 0
    by_block: dict[IPNetwork, list[ReleaseOption]] = {}
    for leaked in addresses:
        option = _option(leaked)
        block = _holder(blocks, option)
        if block is None or block.attribute_for(option.address) is None:
            gone += 1  # released (and not reassigned) since the report
        else:
            by_block.setdefault(block.cidr, []).append(option)
    released = 0
    skipped: list[str] = []
    for options in by_block.values():
        try:
            not_allocated = await allocator.release_ips(options)
            gone += len(not_allocated)
            released += len(options) - len(not_allocated)
            continue
        except ReleaseConflict:
            pass
        # One of the block's addresses changed since the report: the block's release is all or
        # nothing, so release the others one by one and leave the changed one alone.
        for option in options:
            try:
                not_allocated = await allocator.release_ips([option])
            except ReleaseConflict as exc:
                skipped.append(f"  {option.address}: {exc}")
                continue
            gone += len(not_allocated)
            released += 1 - len(not_allocated)
    lines.append(f"Released {released} IPs successfully")
    if gone:
        lines.append(
            f"{gone} addresses marked as leaked in the report had already been cleaned up."
        )
    if skipped:
        lines.append(
            f"{len(skipped)} addresses changed since the report was made (reassigned?) and were "
            "not released:"
        )
        lines += skipped
    return lines


def _holder(blocks: Sequence[AllocationBlock], option: ReleaseOption) -> AllocationBlock | None:
    address = option.address
    return next(
        (b for b in blocks if b.cidr.version == address.version and address in b.cidr), None
    )


async def _delete_handles(kv: KVStore, handles: Sequence[LeakedHandle]) -> list[str]:
    marks = []
    errors = []
    for handle in handles:
        try:
            deleted = await _delete_handle(kv, handle)
        except DatastoreError as exc:
            errors.append(f"Deleting handle {handle.id} failed: {exc}.")
            marks.append("!")
            continue
        marks.append("." if deleted else "x")
    return [
        f"Deleting {len(handles)} handles...",
        "Key: '.' = Deleted OK; 'x' = skip, handle missing/changed.",
        "".join(marks),
        *errors,
        f"Released {marks.count('.')} handles; {marks.count('x')} skipped; {len(errors)} errors.",
    ]


async def _delete_handle(kv: KVStore, leaked: LeakedHandle) -> bool:
    key = keys.handle_key(leaked.id)
    current = await kv.get(key)
    if current is None or str(current.revision) != leaked.revision:
        return False
    # An assignment writes the handle before the block: a block that holds addresses for the
    # handle now means an assignment completed since the report, and the handle is in use.
    handle_id = sanitize_handle(leaked.id)
    try:
        counted_in = list(IPAMHandle.from_json(current.value).block)
    except (ValueError, KeyError, TypeError, AttributeError):
        return False  # not a handle we can read: leave it alone
    for cidr in counted_in:
        stored = await kv.get(keys.block_key(ipaddress.ip_network(cidr)))
        if stored is None:
            continue
        try:
            holds = AllocationBlock.from_json(stored.value).addresses_by_handle(handle_id)
        except (CorruptBlock, ValueError, KeyError, TypeError):
            return False  # cannot tell: leave the handle alone
        if holds:
            return False
    try:
        await kv.delete(key, revision=current.revision)
    except (RevisionConflict, KeyNotFound):
        return False
    return True

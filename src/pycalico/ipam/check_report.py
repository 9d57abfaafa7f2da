"""The ``calicoctl ipam check -o FILE`` report: calicoctl's JSON shape, written and read back.

What it is: the records a report holds (``ReportAllocation``, ``LeakedHandle``, ``ClusterStamp``,
``CheckReport``), their JSON in calicoctl's field names, strict parsing of a report file for
``calicoctl ipam release --from-report``, the intersection of several reports, and the rules by
which release refuses a report.  What it is not: the analysis that fills a report
(``pycalico.ipam.check``) or the releases themselves (``pycalico.ctl.ipam``).  Pure: no I/O.

The shape is calicoctl's ``Report``::

    {"version", "clusterGUID", "datastoreLocked", "clusterInformationRevision", "clusterType",
     "allocations": {"<ip>": [{"ip", "handle"?, "sequenceNumber"?, "pod"?, "namespace"?,
                              "node"?, "type"?, "creationTimestamp"?, "inUse", "borrowed"?,
                              "owners"}]},
     "leakedHandles"?: [{"ID", "UID", "Revision"}]}

pycalico adds ``summary`` and ``findings`` (its own consistency findings); calicoctl ignores keys
it does not know, and so does ``parse_report``.

Invariants:

* ``parse_report`` accepts a report only if release can act on it safely: every allocation that
  is not in use carries its sequence number, so a release from the report never frees an
  address that was reassigned after the report was made.
* ``vet_reports`` refuses as calicoctl does: a report of another cluster (GUID), or a set of
  reports none of which is at the current ClusterInformation revision, always; a report written
  by another version, or a datastore that is not locked, unless forced (it then warns).
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class ReportError(ValueError):
    """A report file that cannot be used, or a report set release must refuse."""


@dataclass(frozen=True, slots=True)
class ReportAllocation:
    """One allocated address as calicoctl reports it; ``block`` and ``attributes`` are for
    printing only and are not part of the file."""

    ip: str
    handle: str = ""
    sequence_number: int | None = None
    pod: str = ""
    namespace: str = ""
    node: str = ""
    type: str = ""
    creation_timestamp: str = ""
    in_use: bool = False
    borrowed: bool = False
    owners: tuple[str, ...] = ()
    block: str = field(default="", compare=False)
    attributes: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class LeakedHandle:
    """A handle no block allocation refers to, at the etcd revision it had when reported."""

    id: str
    revision: str
    uid: str | None = None


@dataclass(frozen=True, slots=True)
class ClusterStamp:
    """ClusterInformation ``default`` as a report records it (empty when there is none)."""

    guid: str = ""
    revision: str = ""
    cluster_type: str = ""
    # ``ClusterInformation.datastore_locked`` when the report was written.
    locked: bool = False


@dataclass(frozen=True, slots=True)
class CheckReport:
    version: str
    cluster: ClusterStamp
    allocations: tuple[ReportAllocation, ...]
    leaked_handles: tuple[LeakedHandle, ...] = ()


# --- writing ------------------------------------------------------------------------------------


def allocation_json(allocation: ReportAllocation) -> dict[str, Any]:
    out: dict[str, Any] = {"ip": allocation.ip}
    if allocation.handle:
        out["handle"] = allocation.handle
    if allocation.sequence_number is not None:
        out["sequenceNumber"] = allocation.sequence_number
    for key, value in (
        ("pod", allocation.pod),
        ("namespace", allocation.namespace),
        ("node", allocation.node),
        ("type", allocation.type),
        ("creationTimestamp", allocation.creation_timestamp),
    ):
        if value:
            out[key] = value
    out["inUse"] = allocation.in_use
    if allocation.borrowed:
        out["borrowed"] = True
    # Go marshals an empty owner list as null; calicoctl's reports do too.
    out["owners"] = list(allocation.owners) or None
    return out


def report_json(report: CheckReport) -> dict[str, Any]:
    by_ip: dict[str, list[dict[str, Any]]] = {}
    for allocation in report.allocations:
        by_ip.setdefault(allocation.ip, []).append(allocation_json(allocation))
    out: dict[str, Any] = {
        "version": report.version,
        "clusterGUID": report.cluster.guid,
        "datastoreLocked": report.cluster.locked,
        "clusterInformationRevision": report.cluster.revision,
        "clusterType": report.cluster.cluster_type,
        "allocations": by_ip,
    }
    if report.leaked_handles:
        out["leakedHandles"] = [
            {"ID": h.id, "UID": h.uid, "Revision": h.revision} for h in report.leaked_handles
        ]
    return out


# --- reading ------------------------------------------------------------------------------------


def _string(raw: Mapping[str, Any], key: str, where: str, required: bool = False) -> str:
    value = raw.get(key)
    if value is None:
        if required:
            raise ReportError(f"{where}: missing {key!r}")
        return ""
    if not isinstance(value, str):
        raise ReportError(f"{where}: {key!r} must be a string, not {type(value).__name__}")
    return value


def _allocation(raw: Any, where: str) -> ReportAllocation:
    if not isinstance(raw, dict):
        raise ReportError(f"{where}: must be an object")
    text = _string(raw, "ip", where, required=True)
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ReportError(f"{where}: 'ip' {text!r} is not an IP address") from None
    in_use = raw.get("inUse", False)
    if not isinstance(in_use, bool):
        raise ReportError(f"{where}: 'inUse' must be true or false")
    sequence = raw.get("sequenceNumber")
    if sequence is not None and (
        isinstance(sequence, bool) or not isinstance(sequence, int) or sequence < 0
    ):
        raise ReportError(f"{where}: 'sequenceNumber' must be a non-negative integer")
    if sequence is None and not in_use:
        raise ReportError(
            f"{where}: leaked address {address} has no 'sequenceNumber', so releasing it could "
            "free the address after it was reassigned; make a new report"
        )
    owners = raw.get("owners") or []
    if not isinstance(owners, list) or not all(isinstance(o, str) for o in owners):
        raise ReportError(f"{where}: 'owners' must be a list of strings")
    return ReportAllocation(
        ip=str(address),
        handle=_string(raw, "handle", where),
        sequence_number=sequence,
        pod=_string(raw, "pod", where),
        namespace=_string(raw, "namespace", where),
        node=_string(raw, "node", where),
        type=_string(raw, "type", where),
        creation_timestamp=_string(raw, "creationTimestamp", where),
        in_use=in_use,
        borrowed=raw.get("borrowed") is True,
        owners=tuple(owners),
    )


def _leaked_handle(raw: Any, where: str) -> LeakedHandle:
    if not isinstance(raw, dict):
        raise ReportError(f"{where}: must be an object")
    uid = raw.get("UID")
    return LeakedHandle(
        id=_string(raw, "ID", where, required=True),
        revision=_string(raw, "Revision", where, required=True),
        uid=uid if isinstance(uid, str) else None,
    )


def parse_report(text: str | bytes, name: str) -> CheckReport:
    """A report from its file contents; ReportError names the file and what is wrong."""
    try:
        raw = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ReportError(f"{name} is not JSON: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("allocations"), dict):
        raise ReportError(
            f"{name} is not an IPAM check report (no 'allocations' object); "
            "make one with 'calicoctl ipam check -o FILE'"
        )
    stamp = ClusterStamp(
        guid=_string(raw, "clusterGUID", name, required=True),
        revision=_string(raw, "clusterInformationRevision", name, required=True),
        cluster_type=_string(raw, "clusterType", name),
        locked=raw.get("datastoreLocked") is True,
    )
    allocations: list[ReportAllocation] = []
    for address, entries in raw["allocations"].items():
        if not isinstance(entries, list):
            raise ReportError(f"{name}: allocations[{address!r}] must be a list")
        for index, entry in enumerate(entries):
            allocations.append(_allocation(entry, f"{name}: allocations[{address!r}][{index}]"))
    handles_raw = raw.get("leakedHandles") or []
    if not isinstance(handles_raw, list):
        raise ReportError(f"{name}: 'leakedHandles' must be a list")
    return CheckReport(
        version=_string(raw, "version", name, required=True),
        cluster=stamp,
        allocations=tuple(allocations),
        leaked_handles=tuple(
            _leaked_handle(h, f"{name}: leakedHandles[{i}]") for i, h in enumerate(handles_raw)
        ),
    )


# --- releasing ----------------------------------------------------------------------------------


def vet_reports(
    reports: Sequence[tuple[str, CheckReport]],
    current: ClusterStamp | None,
    version: str,
    force: bool,
) -> list[str]:
    """calicoctl's checks before releasing anything; returns the warnings ``force`` turned into.

    ``reports`` are (file name, report); ``current`` is the cluster's ClusterInformation now
    (None when it does not exist).  ReportError when release must not go ahead.
    """
    if current is None:
        raise ReportError(
            "ClusterInformation 'default' does not exist, so the reports cannot be matched to "
            "this cluster. Refusing to release"
        )
    warnings: list[str] = []
    found_current = False
    for name, report in reports:
        if report.cluster.guid != current.guid:
            raise ReportError(
                f"cluster does not match the provided report ({name}): mismatched cluster GUID "
                f"(report {report.cluster.guid or '<none>'}, cluster {current.guid or '<none>'})."
                " Refusing to release"
            )
        if report.version != version:
            if not force:
                raise ReportError(
                    f"the provided report ({name}) was produced using a different version "
                    f"({report.version}) of calicoctl. Refusing to release"
                )
            warnings.append(
                "WARNING: Report was produced using a different version of calicoctl. "
                "Ignoring due to --force option"
            )
        if report.cluster.revision == current.revision:
            found_current = True
    if not found_current:
        seen = ", ".join(sorted({r.cluster.revision or "<none>" for _, r in reports}))
        raise ReportError(
            "the provided reports are all stale - at least one should be up-to-date "
            f"(ClusterInformation revision in the reports: {seen}; now: {current.revision}). "
            "Please generate a new report while the data store is locked and try again"
        )
    if not current.locked:
        if not force:
            raise ReportError(
                "data store is not locked. Either lock the data store, or re-run with --force"
            )
        warnings.append("WARNING: Data store is not locked. Ignoring due to --force option")
    return warnings


@dataclass(frozen=True, slots=True)
class LeakedAddress:
    """An address every report calls leaked, with what the release must still match."""

    ip: str
    sequence_number: int
    handle: str


def merge_reports(
    reports: Iterable[CheckReport],
) -> tuple[list[LeakedAddress], list[LeakedHandle]]:
    """What every report agrees is leaked: addresses not in use in all of them (the first
    report's sequence number and handle, which all must share) and handles at one revision."""
    addresses: dict[str, LeakedAddress] | None = None
    handles: dict[str, LeakedHandle] | None = None
    for report in reports:
        these: dict[str, LeakedAddress] = {}
        for a in report.allocations:
            if a.in_use or a.sequence_number is None:
                continue
            entry = LeakedAddress(a.ip, a.sequence_number, a.handle)
            if addresses is None or addresses.get(a.ip) == entry:
                these[a.ip] = entry
        addresses = these
        these_handles = {
            h.id: h for h in report.leaked_handles if handles is None or handles.get(h.id) == h
        }
        handles = these_handles
    ordered = sorted((addresses or {}).values(), key=lambda a: _address_key(a.ip))
    return ordered, sorted((handles or {}).values(), key=lambda h: h.id)


def _address_key(text: str) -> tuple[int, int]:
    address = ipaddress.ip_address(text)
    return address.version, int(address)

"""The cross-reference behind ``ipam check --show-*-ips`` (pure ``analyse``) and the report file
format (``pycalico.ipam.check_report``): round trip, intersection of reports, refusals."""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime

import pytest

from pycalico.ipam.blocks import AllocationBlock
from pycalico.ipam.check import AffinityEntry, Snapshot, analyse
from pycalico.ipam.check_report import (
    ClusterStamp,
    LeakedAddress,
    ReportError,
    merge_reports,
    parse_report,
    vet_reports,
)
from pycalico.ipam.pools import Pool
from pycalico.ipam.records import IPAMHandle

CIDR = ipaddress.ip_network("10.65.0.0/29")
STAMP = ClusterStamp(guid="g", revision="7", cluster_type="bgp", locked=True)


def snapshot() -> Snapshot:
    """Ordinal 0 a pod with its endpoint, 1 a leaked pod, 2 the node's tunnel, 3 Windows'."""
    block = AllocationBlock.new(
        CIDR, affinity="host:n1", claim_time=datetime(2026, 1, 1, tzinfo=UTC), sequence_number=1
    )
    block.auto_assign(1, "web", {"node": "n1", "pod": "web", "namespace": "ns"})
    block.auto_assign(1, "old", {"node": "n2", "pod": "old", "namespace": "ns"})
    block.auto_assign(1, "tunnel", {"node": "n1", "type": "vxlanTunnelAddress"})
    block.auto_assign(1, "windows-reserved-ipam-handle", None)
    return Snapshot(
        blocks=[block],
        affinities=[AffinityEntry("n1", CIDR, "host", "confirmed")],
        handles={
            h: IPAMHandle({str(CIDR): 1})
            for h in ("web", "old", "tunnel", "windows-reserved-ipam-handle", "orphan")
        },
        handle_keys={"orphan": ("orphan", 42), "web": ("web", 40)},
        nodes={"n1", "n2"},
        pools=[Pool("p", ipaddress.ip_network("10.65.0.0/16"), 29)],
        endpoint_addresses={"10.65.0.0": ["ns/web"], "10.65.9.9": ["ns/stray"]},
        node_addresses={"10.65.0.2": ["n1"]},
        cluster=STAMP,
    )


def test_analyse_cross_references_allocations_with_their_users() -> None:
    report = analyse(snapshot())
    by_ip = {a.ip: a for a in report.ips}
    assert by_ip["10.65.0.0"].owners == ("Workload(ns/web)",) and by_ip["10.65.0.0"].in_use
    assert by_ip["10.65.0.2"].owners == ("Node(n1)",)
    assert by_ip["10.65.0.3"].owners == ("Reserved for Windows",)
    assert by_ip["10.65.0.3"].handle == ""
    assert [a.ip for a in report.leaked] == ["10.65.0.1"]
    assert by_ip["10.65.0.1"].borrowed and by_ip["10.65.0.1"].node == "n2"
    assert by_ip["10.65.0.1"].attributes == "Main:old Extra:namespace=ns,node=n2,pod=old"
    assert [h.id for h in report.leaked_handles] == ["orphan"]
    assert report.leaked_handles[0].revision == "42"
    assert report.unallocated_in_use() == ([], ["10.65.9.9"])


def test_report_round_trip_and_shape() -> None:
    text = analyse(snapshot()).to_json(version="v-test")
    raw = json.loads(text)
    assert list(raw)[:7] == [
        "version",
        "clusterGUID",
        "datastoreLocked",
        "clusterInformationRevision",
        "clusterType",
        "allocations",
        "leakedHandles",
    ]
    assert raw["leakedHandles"] == [{"ID": "orphan", "UID": None, "Revision": "42"}]
    parsed = parse_report(text, "r.json")
    assert parsed.version == "v-test" and parsed.cluster.locked
    assert parsed.allocations == tuple(analyse(snapshot()).ips)
    leaked, handles = merge_reports([parsed])
    assert leaked == [LeakedAddress("10.65.0.1", 1, "old")]
    assert [h.id for h in handles] == ["orphan"]


def test_several_reports_release_only_what_all_agree_on() -> None:
    first = parse_report(analyse(snapshot()).to_json(), "a")
    later = snapshot()
    later.endpoint_addresses["10.65.0.1"] = ["ns/old"]  # it was in use after all
    later.handle_keys["orphan"] = ("orphan", 43)  # rewritten since
    second = parse_report(analyse(later).to_json(), "b")
    assert merge_reports([first, second]) == ([], [])
    assert merge_reports([first, first])[0] == merge_reports([first])[0]


@pytest.mark.parametrize(
    ("stamp", "version", "force", "problem"),
    [
        (None, "1", True, "ClusterInformation 'default' does not exist"),
        (ClusterStamp(guid="other", revision="7"), "1", True, "mismatched cluster GUID"),
        (ClusterStamp(guid="g", revision="8", locked=True), "1", True, "all stale"),
        (STAMP, "2", False, r"different version \(1\) of calicoctl"),
        (ClusterStamp(guid="g", revision="7", locked=False), "1", False, "not locked"),
    ],
)
def test_vet_refuses(stamp: ClusterStamp | None, version: str, force: bool, problem: str) -> None:
    report = parse_report(analyse(snapshot()).to_json(version="1"), "r.json")
    with pytest.raises(ReportError, match=problem):
        vet_reports([("r.json", report)], stamp, version, force)


def test_vet_warns_when_forced() -> None:
    report = parse_report(analyse(snapshot()).to_json(version="1"), "r.json")
    assert vet_reports([("r.json", report)], STAMP, "1", False) == []
    unlocked = ClusterStamp(guid="g", revision="7", locked=False)
    assert vet_reports([("r.json", report)], unlocked, "2", True) == [
        "WARNING: Report was produced using a different version of calicoctl. Ignoring due to "
        "--force option",
        "WARNING: Data store is not locked. Ignoring due to --force option",
    ]

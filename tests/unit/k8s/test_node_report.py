"""The pure half of calico-node's Kubernetes feedback: condition and annotation patches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from pycalico.k8s.node_report import (
    AS_NUMBER,
    IPV4_ADDRESS,
    IPV6_ADDRESS,
    annotation_patch,
    bgp_annotations,
    condition_status_patch,
    network_condition,
)
from pycalico.model.node import NodeBGPSpec

NOW = datetime(2026, 12, 6, 4, 5, 6, tzinfo=UTC)


def test_calico_up_makes_the_network_available_with_calicos_reason() -> None:
    assert network_condition(calico_up=True, now=NOW) == {
        "type": "NetworkUnavailable",
        "status": "False",
        "reason": "CalicoIsUp",
        "message": "Calico is running on this node",
        "lastTransitionTime": "2026-12-06T04:05:06Z",
        "lastHeartbeatTime": "2026-12-06T04:05:06Z",
    }


def test_calico_down_makes_it_unavailable() -> None:
    condition = network_condition(calico_up=False, now=NOW)
    assert (condition["status"], condition["reason"]) == ("True", "CalicoIsDown")


def test_times_are_written_in_utc() -> None:
    local = NOW.astimezone(timezone(timedelta(hours=2)))
    assert network_condition(calico_up=True, now=local)["lastHeartbeatTime"].endswith("04:05:06Z")


def test_status_patch_carries_only_our_condition() -> None:
    patch = condition_status_patch(calico_up=True, now=NOW)
    assert [c["type"] for c in patch["status"]["conditions"]] == ["NetworkUnavailable"]


def test_annotations_mirror_the_bgp_spec() -> None:
    bgp = NodeBGPSpec.model_validate({"ipv4Address": "10.0.0.5/24", "asNumber": "1.10"})
    values = bgp_annotations(bgp)
    assert values[IPV4_ADDRESS] == "10.0.0.5/24"
    assert values[AS_NUMBER] == str((1 << 16) | 10)
    assert values[IPV6_ADDRESS] is None  # unset fields remove a stale annotation


def test_no_bgp_spec_removes_every_annotation() -> None:
    patch = annotation_patch(None)
    assert patch["metadata"]["annotations"]
    assert set(patch["metadata"]["annotations"].values()) == {None}

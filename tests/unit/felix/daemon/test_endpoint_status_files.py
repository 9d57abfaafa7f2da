"""Calico's endpoint status files: naming, content, and the directory reconcile (tmp dirs)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from pycalico.felix import messages as m
from pycalico.felix.status import (
    EndpointStatusFiles,
    desired_status_files,
    status_content,
    status_filename,
)

A = m.WorkloadEndpointID("k8s", "default/pod-a", "eth0")
B = m.WorkloadEndpointID("k8s", "kube-system/pod b", "eth0")


def update(endpoint: m.WorkloadEndpointID, ip: str, ip6: str = "") -> m.WorkloadEndpointUpdate:
    return m.WorkloadEndpointUpdate(
        endpoint, "cali1234", "ee:ee:ee:ee:ee:ee", (f"{ip}/32",), (f"{ip6}/128",) if ip6 else (),
        (), (),
    )  # fmt: skip


def test_filename_is_go_path_escape_of_each_part_joined_by_spaces() -> None:
    assert status_filename(A) == "k8s default%2Fpod-a eth0"
    assert status_filename(B) == "k8s kube-system%2Fpod%20b eth0"
    odd = m.WorkloadEndpointID("openstack", "a:b@c=d+e$f&g;h,i?j", "x~y_z.w")
    assert status_filename(odd) == "openstack a:b@c=d+e$f&g%3Bh%2Ci%3Fj x~y_z.w"


def test_content_is_compact_json_without_empty_fields() -> None:
    assert status_content(update(A, "10.65.0.1")) == (
        '{"ifaceName":"cali1234","mac":"ee:ee:ee:ee:ee:ee","ipv4Nets":["10.65.0.1/32"]}'
    )
    both = json.loads(status_content(update(A, "10.65.0.1", "fd00::1")))
    assert both["ipv6Nets"] == ["fd00::1/128"]


def test_only_endpoints_that_are_up_have_files() -> None:
    workloads = {A: update(A, "10.65.0.1"), B: update(B, "10.65.0.2")}
    files = desired_status_files({A: "up", B: "down"}, workloads)
    assert list(files) == ["k8s default%2Fpod-a eth0"]


def test_reconcile_writes_changes_and_removes_gone_endpoints(tmp_path: Path) -> None:
    writer = EndpointStatusFiles(str(tmp_path))
    directory = tmp_path / "endpoint-status"
    assert writer.reconcile({"one": "{}", "two": '{"mac":"x"}'})
    assert {p.name: p.read_text() for p in directory.iterdir()} == {
        "one": "{}",
        "two": '{"mac":"x"}',
    }
    assert oct(directory.stat().st_mode & 0o777) == "0o755"
    assert oct((directory / "one").stat().st_mode & 0o777) == "0o644"
    assert writer.reconcile({"two": '{"mac":"y"}'})
    assert {p.name: p.read_text() for p in directory.iterdir()} == {"two": '{"mac":"y"}'}


def test_first_reconcile_sweeps_leftovers_and_keeps_matching_files(tmp_path: Path) -> None:
    directory = tmp_path / "endpoint-status"
    directory.mkdir()
    (directory / "stale").write_text("{}")
    (directory / "keep").write_text("same")
    before = os.stat(directory / "keep").st_mtime_ns
    assert EndpointStatusFiles(str(tmp_path)).reconcile({"keep": "same"})
    assert [p.name for p in directory.iterdir()] == ["keep"]
    assert os.stat(directory / "keep").st_mtime_ns == before  # not rewritten


def test_an_error_is_reported_and_the_next_reconcile_resyncs(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    writer = EndpointStatusFiles(str(blocker))  # endpoint-status cannot be created under a file
    assert not writer.reconcile({"one": "{}"})
    blocker.unlink()
    blocker.mkdir()
    assert writer.reconcile({"one": "{}"})
    assert (blocker / "endpoint-status" / "one").read_text() == "{}"

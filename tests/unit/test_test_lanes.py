"""The lanes of ``tests/conftest.py`` that keep whole labs from running more than two at a time
under pytest-xdist: every lane entry names a file or directory that exists (a renamed file would
silently leave its lane), and every end-to-end test file has a lane (a new one would otherwise
run beside two labs)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import LAB_LANES, run_order, work_unit

REPO = Path(__file__).resolve().parents[2]


def test_every_lane_entry_exists() -> None:
    missing = [entry for entry in LAB_LANES if not (REPO / entry).exists()]
    assert not missing, f"LAB_LANES names what is not there: {missing}"


def test_every_end_to_end_file_runs_in_a_lane() -> None:
    files = sorted(path.relative_to(REPO).as_posix() for path in REPO.glob("tests/e2e/test_*.py"))
    assert files
    without = [path for path in files if work_unit(path) == path]
    assert not without, f"end-to-end files in no lab lane: {without}"


def test_a_directory_entry_covers_its_files_and_other_files_are_their_own_group() -> None:
    assert work_unit("tests/faults/test_process_faults.py") == LAB_LANES["tests/faults/"]
    assert work_unit("tests/unit/test_layering.py") == "tests/unit/test_layering.py"


def test_the_lanes_run_first_in_their_order_then_the_early_files_then_the_rest() -> None:
    paths = ["tests/unit/test_layering.py", "tests/integration/openstack/test_neutron_driver.py",
             "tests/faults/test_process_faults.py", "tests/e2e/test_lab.py"]  # fmt: skip
    assert sorted(paths, key=run_order) == [
        "tests/e2e/test_lab.py",
        "tests/faults/test_process_faults.py",
        "tests/integration/openstack/test_neutron_driver.py",
        "tests/unit/test_layering.py",
    ]

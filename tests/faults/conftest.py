"""The fault suite's lab and its table.

* ``faultlab`` (package: one lab for the suite): a 3-node calico-lab with a pod on each node (p1, p2, p3), all reaching
  each other; ``down`` afterwards, also when a test fails.
* ``record``: adds a row (fault, packets lost, seconds to recover, consistency) to the table
  printed at the end of the run, and written to ``$PYCALICO_FAULTS_TABLE`` when set.  The row
  travels as a user property of the test's report, so the table is whole also when the tests ran
  in pytest-xdist workers: ``tests/conftest.py`` (loaded by the controlling process) prints it.
* Tests marked ``faults_long`` run only with ``PYCALICO_FAULTS=long`` (``make faults``); the
  rest is the fast subset ``make test`` runs.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest

from pycalico.lab import matrix, pods
from pycalico.testing import faults
from tests.conftest import FAULT_ROW
from tests.e2e.conftest import LabRunner

LONG = os.environ.get("PYCALICO_FAULTS") == "long"
Record = Callable[[str, int, float, str], None]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if LONG:
        return
    deselected = [item for item in items if "faults_long" in item.keywords]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if "faults_long" not in item.keywords]


@pytest.fixture
def record(request: pytest.FixtureRequest) -> Record:
    def add(fault: str, lost: int, recovered: float, consistency: str) -> None:
        row = (fault, str(lost), f"{recovered:.1f}", consistency)
        request.node.user_properties.append((FAULT_ROW, row))

    return add


@pytest.fixture(scope="package")
def faultlab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRunner]:
    runner = LabRunner(tmp_path_factory.mktemp("faults"))
    try:
        runner.run("up", "--nodes", "3")
        specs = [pods.PodSpec(f"p{i}", f"node{i}", "default") for i in (1, 2, 3)]
        pods.add(runner.state_dir, specs)
        result = matrix.run(runner.state().pods, lambda *_: True, deadline=60.0)
        assert not result.mismatches, matrix.summary(result) + runner.logs()
        yield runner
    finally:
        runner.run("down", check=False)


@pytest.fixture
def lab(faultlab: LabRunner) -> LabRunner:
    """The module's lab, every node ready (a failed earlier drill may have left it recovering)."""
    state = faultlab.state()
    faults.wait_for("every node ready", lambda: faults.all_ready(state), 60.0, 0.25)
    return faultlab

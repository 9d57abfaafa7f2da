"""The calc-graph harness as a fixture (the class lives in pycalico.testing.felix_calc)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pycalico.testing.felix_calc import Harness


@pytest.fixture
def harness() -> Iterator[Harness]:
    yield Harness()

"""Hypothesis budgets for the fuzz tests: bounded in ``make test``, long in ``make fuzz``.

``PYCALICO_FUZZ=long`` (what ``make fuzz`` sets) raises every fuzz test's example budget a
hundredfold; the default keeps the whole directory within seconds.  Every case a fuzzer ever
found stays in its test as an ``@example``, so it is replayed in every run, whatever the budget.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

LONG = os.environ.get("PYCALICO_FUZZ") == "long"


def budget(examples: int) -> settings:
    """Settings for one fuzz test: ``examples`` per run, a hundred times more in long runs."""
    return settings(
        max_examples=examples * 100 if LONG else examples,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )

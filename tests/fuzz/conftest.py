"""The fuzz suite's budget and its report: examples per target, printed at the end of a run.

Each target runs `EXAMPLES` examples (2000 unless MEMWARDEN_FUZZ_EXAMPLES says otherwise),
derandomized so that a run of the suite is reproducible: a failure here is a real one, never
luck. MEMWARDEN_FUZZ_SEED=N explores other inputs (for a longer hunt by hand).
"""

from __future__ import annotations

import os
import pathlib
from collections import Counter

import pytest
from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("MEMWARDEN_FUZZ_EXAMPLES", "2000"))
_SEED = os.environ.get("MEMWARDEN_FUZZ_SEED")

#: Examples run per target in this session, for the summary.
COUNTS: Counter[str] = Counter()

fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=_SEED is None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    if COUNTS:
        terminalreporter.write_line(
            "fuzz examples: " + ", ".join(f"{name} {n}" for name, n in sorted(COUNTS.items())))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Thousands of cases per target: the full suite only (`scripts/test.sh --quick` skips
    them)."""
    here = pathlib.Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.slow)

"""`scripts/bench_reaction.py` runs: its quick mode prints the reaction table's rows.

No figure is judged here (the benchmark's figures depend on the host); this only keeps the
script in step with the supervisor it runs in its own process.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, own_v1_memory_cgroup


@pytest.mark.timeout(120)
@pytest.mark.skipif(os.geteuid() != 0 or own_v1_memory_cgroup() is None,
                    reason="the crossings run in generation cgroups: root and cgroup v1")
def test_the_reaction_benchmark_runs_its_quick_rows() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_reaction.py"),
                           "--quick"], cwd=ROOT, capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("  quiet")]
    # host, interval, notifications, crossings matched, median, p99, max, source...
    assert [(r[1], r[2]) for r in rows] == [("1ms", "on"), ("1ms", "off")]
    assert all(int(r[3]) >= 1 for r in rows), rows
    assert "tick" in rows[1][7:] and "threshold" not in rows[1][7:]  # the ticks alone
    assert "target (with notifications p99 <= 1 ms in every row):" in done.stdout

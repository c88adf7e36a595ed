"""A full disk under a running memwarden: snapshots are dropped and counted, the worker runs on."""

from __future__ import annotations

import pathlib

import pytest

from tests.conftest import ROOT, python
from tests.snapshots.conftest import fill

WORKER = """
import sys, time
for i in range(4):
    print("line", i, flush=True)
    time.sleep(1)
sys.exit(3)
"""


@pytest.mark.root
@pytest.mark.timeout(90)
@pytest.mark.slow
def test_worker_keeps_running_while_snapshots_hit_a_full_disk(
        small_tmpfs: pathlib.Path, memwarden) -> None:  # type: ignore[no-untyped-def]
    if not (ROOT / "supervisor" / "cli.py").exists():
        pytest.skip("supervisor/cli.py (memwarden run) is not in this checkout yet")
    snaps = small_tmpfs / "snaps"
    snaps.mkdir()
    fill(small_tmpfs, leave=0)
    m = memwarden("run", "--snapshots", str(snaps), "--", *python(WORKER))
    status = m.wait(60)
    assert status == 3, m.stderr()  # memwarden exits with the worker's status
    assert [line for line in m.stdout().splitlines() if line.startswith("line")] == [
        "line 0", "line 1", "line 2", "line 3"]
    err = m.stderr()
    assert "snapshots: cannot write" in err and "dropping records" in err
    assert "dropped" in err.split("dropping records", 1)[1]  # the count, at exit

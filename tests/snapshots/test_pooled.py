"""Generations replaced for pressure, as pooling counts them: from the spawn record's
`data.cause` (1.2), from the reason's words only in records without it."""

from __future__ import annotations

import pathlib

from snapshots.analysis import analyze
from snapshots.pooled import lifetimes
from snapshots.schema import Event
from tests.snapshots import fleet_files


def test_the_cause_decides_and_the_reason_only_without_it() -> None:
    starts = {1: 0.0, 2: 10.0, 3: 20.0, 4: 30.0}
    ends = {1: 12.0, 2: 22.0, 3: 32.0, 4: 40.0}
    spawns = [
        Event(t=10.0, type="spawn", generation=2, reason="generation 1 grew too fast",
              data={"cause": "pressure"}),
        Event(t=20.0, type="spawn", generation=3, reason="asked at high pressure",
              data={"cause": "request"}),
        Event(t=30.0, type="spawn", generation=4, reason="generation 3 at high pressure"),
    ]
    assert lifetimes(starts, ends, spawns) == {
        1: (10.0, True),  # the cause says pressure, whatever the words
        2: (12.0, False),  # asked for by hand: the words do not make it pressure
        3: (10.0, True),  # a 1.1 record: its reason names the pressure
        4: (10.0, False)}


def test_a_leak_pooled_from_causes_as_from_reasons(tmp_path: pathlib.Path) -> None:
    """The same leaking pod, its spawns saying why in words (1.1) or in `data.cause` (1.2):
    the same generations count as replaced for pressure."""
    for causes in (False, True):
        (tmp_path / str(causes)).mkdir()
        fleet_files.pod(tmp_path / str(causes), "indexer-0", "leak", 4, causes=causes)
    old, new = (analyze([str(tmp_path / str(causes))]).report.workers[0].leak
                for causes in (False, True))
    assert old is not None and new is not None
    assert old.replaced >= 3 and (new.verdict, new.replaced) == (old.verdict, old.replaced)

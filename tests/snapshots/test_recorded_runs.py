"""Runs recorded by the real supervisor around a real leaking worker, then analysed: replay
with the run's own configuration fires on the recorded ticks, and a run memwarden gave up on
says so."""

from __future__ import annotations

import contextlib
import pathlib
import signal
import sys

import msgspec
import pytest

from snapshots import text
from snapshots.analysis import analyze
from snapshots.schema import Event
from tests.conftest import ROOT, wait_until

LEAKY = str(ROOT / "scripts" / "leaky_worker.py")
CONFIRM, INTERVAL_S = 3, 0.001
pytestmark = pytest.mark.skipif(not (ROOT / "supervisor" / "cli.py").exists(),
                                reason="supervisor/cli.py (memwarden run) is not here")


def _events(snaps: pathlib.Path) -> list[Event]:
    """The events written so far (a line still being written is skipped)."""
    out = []
    for path in sorted(snaps.glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            if b'"kind":"event"' in line:
                with contextlib.suppress(msgspec.DecodeError):
                    out.append(msgspec.json.decode(line, type=Event))
    return out


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_replay_with_the_recorded_configuration_fires_on_the_recorded_ticks(
        tmp_path: pathlib.Path, memwarden) -> None:  # type: ignore[no-untyped-def]
    from supervisor.replay import render, replay
    from supervisor.settings import loading

    conf = tmp_path / "same.toml"
    conf.write_text(f'interval = "1ms"\nmedium = "40MB"\nhigh = "80MB"\ncritical = "400MB"\n'
                    f'cooldown = "1s"\nbaseline_generations = 100\n'
                    f'[pressure]\nconfirm = {CONFIRM}\n'
                    'growth_medium = "10GB/s"\ngrowth_high = "20GB/s"\n')
    snaps = tmp_path / "snaps"
    m = memwarden("run", "--config", str(conf), "--snapshots", str(snaps), "--",
                  sys.executable, LEAKY, "--rate", "25MB/s", "--max", "150")
    # Generations 1 and 2 have gone through MEDIUM and HIGH and were retired once their
    # replacements were ready; generation 3 is up.
    wait_until(lambda: sum(1 for e in _events(snaps) if e.type == "exit") >= 2, timeout=60,
               what="two generations replaced and exited")
    m.signal(signal.SIGTERM)
    m.wait(30)

    recorded = {(e.generation, e.level, e.previous): e for e in _events(snaps)
                if e.type == "level" and e.worker and e.generation in (1, 2)}
    assert {(g, lv) for g, lv, _ in recorded} >= {(1, "medium"), (1, "high"), (2, "medium"),
                                                  (2, "high")}, m.stderr()
    report = replay([str(snaps)], loading.load({}, environ={}, file=str(conf)), str(conf))
    (w,) = report.workers
    offsets = []
    for f in w.recorded:
        if f.generation not in (1, 2):
            continue
        match = [r for r in w.replayed if r.t == f.replayed_t and r.level == f.level]
        assert match, f"no replayed change for {f}"
        r = match[0]
        assert not r.approximate, f"{r} was not replayed on millisecond samples"
        assert r.value == f.value  # the same tick, the same reading
        event = recorded[(f.generation, f.level, f.previous)]
        offsets.append(r.t - event.data["confirmed_ns"] * 1e-9)
        assert f.delta_s is not None and abs(f.delta_s) < 0.25  # not seconds late
    # Against the recorded monotonic confirmation, every change fires at one clock offset,
    # to within a confirmation window: on the recorded ticks.
    assert len(offsets) >= 4
    assert max(offsets) - min(offsets) <= CONFIRM * INTERVAL_S, offsets
    assert "+-" not in render(report)


@pytest.mark.timeout(120)
def test_a_run_memwarden_gave_up_on_says_so(tmp_path: pathlib.Path, memwarden) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_path / "small.toml"
    conf.write_text('medium = "40MB"\nhigh = "80MB"\ncritical = "400MB"\ncooldown = "3s"\n'
                    "baseline_generations = 2\non_baseline_high = \"exit\"\n"
                    '[pressure]\ngrowth_medium = "10GB/s"\ngrowth_high = "20GB/s"\n')
    snaps = tmp_path / "snaps"
    # Every generation starts with 120 MB: above HIGH as soon as it runs.
    m = memwarden("run", "--config", str(conf), "--snapshots", str(snaps), "--",
                  sys.executable, LEAKY, "--start", "120")
    assert m.wait(90) == 3, m.stderr()
    a = analyze([str(snaps)])
    (w,) = a.report.workers
    assert w.ending is not None and w.ending.kind == "gave_up", w.ending
    assert w.ending.reason == "limits_too_small" and w.ending.exit_status == 3
    assert w.max_level == "high" and w.generations[-1].max_level == "high"
    out = text.render(a.report)
    assert "SUPERVISION ENDED" in out and "memwarden gave up" in out
    rec = a.report.recommendations[0].workers[0]
    assert rec.high.value > 120e6  # above what a generation holds from its start

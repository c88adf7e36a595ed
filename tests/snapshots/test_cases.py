"""The cases `memwarden analyze` got wrong, each as a property over many generated records.

Every test loops over a range of seeds (see `generators.py`) and reports every seed that
breaks the property, so a failure names the draws to replay.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import msgspec
import pytest

from snapshots import html, synthetic, text
from snapshots.analysis import Analysis, analyze
from snapshots.report import Report, Segment, Worker
from snapshots.schema import Record
from snapshots.shape import FLAT_R2, GROWTH_SHAPES
from tests.snapshots import generators

SEEDS = range(24)


def _analyse(tmp_path: pathlib.Path, records: list[Record], name: str = "r") -> Analysis:
    path = tmp_path / f"{name}.jsonl"
    synthetic.write(str(path), records)
    try:
        return analyze([str(path)])
    finally:
        path.unlink()


def _worker(tmp_path: pathlib.Path, records: list[Record]) -> Worker:
    (w,) = _analyse(tmp_path, records).report.workers
    return w


def _each(tmp_path: pathlib.Path, generator: Callable[[int], tuple[list[Record], Any]],
          seeds: Iterable[int] = SEEDS) -> Iterator[tuple[int, Any, Worker, Segment]]:
    """For each seed: the generator's facts, the analysed worker and its main segment."""
    for seed in seeds:
        records, info = generator(seed)
        w = _worker(tmp_path, records)
        assert w.segment is not None, seed
        yield seed, info, w, w.segment


def _check(failures: list[str]) -> None:
    assert not failures, f"{len(failures)} seed(s) broke the property:\n" + "\n".join(failures)


@pytest.mark.slow
def test_warm_up_with_collection_jitter_is_a_plateau_never_a_leak(tmp_path) -> None:
    failures = []
    for seed, _, w, seg in _each(tmp_path, generators.warmup_with_jitter):
        if seg.shape != "plateau" or w.verdict not in ("none", "suspected"):
            failures.append(f"seed {seed}: {seg.shape} ({seg.shape_detail}), "
                            f"{w.verdict}; {w.reasons}")
    _check(failures)


@pytest.mark.slow
def test_sawtooth_baseline_is_the_real_minima_whatever_the_climb_rate(tmp_path) -> None:
    failures = []
    for seed, _, w, seg in _each(tmp_path, generators.ramped_sawtooth):
        # the real minima are flat: their trend is a fraction of a MB per hour
        if (seg.shape != "sawtooth" or abs(seg.baseline.slope_mb_h) > 0.5
                or w.verdict not in ("none", "suspected")):
            failures.append(f"seed {seed}: {seg.shape}, baseline "
                            f"{seg.baseline.slope_mb_h:+.2f} MB/h, {w.verdict}")
    _check(failures)


def test_flaps_are_counted_within_a_generation_and_a_second_at_high_is_counted(
        tmp_path) -> None:
    failures = []
    for seed in SEEDS:
        records, info = generators.generations_at_high(seed)
        w = _worker(tmp_path, records)
        at_high = [g.level_seconds.get("high", 0.0) for g in w.generations]
        if w.flapping or w.flaps_per_hour or w.max_level != "high":
            failures.append(f"seed {seed}: flaps {w.flaps_per_hour:.0f}/h, {w.max_level}")
        if any(abs(s - x) > 0.01 for s, x in zip(at_high, info["at_high"], strict=True)):
            failures.append(f"seed {seed}: seconds at HIGH {at_high}, expected "
                            f"{info['at_high']}")
        if not all(g.max_level == "high" for g in w.generations):
            failures.append(f"seed {seed}: {[g.max_level for g in w.generations]}")
    _check(failures)


def test_a_flap_within_one_generation_is_still_one() -> None:
    from snapshots.lifecycle import flaps
    from snapshots.report import Transition

    changes = [Transition(t=0, level="medium", previous="low", generation=1),
               Transition(t=5, level="low", previous="medium", generation=1),
               Transition(t=6, level="high", previous="medium", generation=2),
               Transition(t=7, level="medium", previous="low", generation=3),
               Transition(t=100, level="medium", previous="low", generation=1)]
    assert flaps(changes) == 1


def test_giving_up_is_a_finding_in_every_format(tmp_path) -> None:
    for seed in range(6):
        records, _ = generators.gave_up(seed)
        a = _analyse(tmp_path, records)
        (w,) = a.report.workers
        assert w.ending is not None and w.ending.kind == "gave_up", seed
        assert w.ending.reason == "limits_too_small" and w.ending.exit_status == 3
        assert a.report.gave_up == ["host-a / w"]
        # the last generation reached HIGH after its last sample was written
        assert [g.max_level for g in w.generations] == ["high"] * 3
        assert w.max_level == "high"
        assert w.attribution.detail != "memory is not growing"
        assert w.targets is not None and w.targets.growth == "unknown"
        out = text.render(a.report)
        assert "SUPERVISION ENDED" in out and "gave up" in out and "exit status 3" in out
        assert "MB/h" not in out.split("gen  profile")[1].split("\n")[1]  # no trend claimed
        decoded = msgspec.json.decode(msgspec.json.encode(a.report), type=Report)
        assert decoded.workers[0].ending == w.ending and decoded.gave_up == ["host-a / w"]
        page = html.render(a)
        assert "SUPERVISION ENDED" in page and 'class="ended"' in page
        rec = a.report.recommendations[0].workers[0]
        assert rec.high.value > max(g.rss_max for g in w.generations)  # above start-up
        assert "gave up" in rec.high.reason


def test_replacement_before_is_the_crossing_from_the_millisecond_samples(tmp_path) -> None:
    failures = []
    for seed in SEEDS:
        records, info = generators.replacement_with_burst(seed)
        (r,) = _worker(tmp_path, records).replacements
        c = r.crossing
        if c is None or c.source != "burst" or r.before_from != "crossing":
            failures.append(f"seed {seed}: no crossing from the burst ({c})")
            continue
        # the first millisecond sample of the confirming run, not the last 1 s summary
        if r.rss_before != info["crossing"] or c.rss < info["high"]:
            failures.append(f"seed {seed}: before {r.rss_before}, crossing {info['crossing']}")
        if r.rss_peak_before != info["last_summary"] or r.rss_after is None:
            failures.append(f"seed {seed}: peak {r.rss_peak_before}, after {r.rss_after}")
    _check(failures)


def test_gaps_in_a_record_do_not_turn_a_linear_leak_into_steps(tmp_path) -> None:
    failures = []
    for seed, info, _, seg in _each(tmp_path, generators.gappy_leak):
        if seg.shape != "linear" or abs(seg.trend.slope_mb_h / info["rate_mb_h"] - 1) > 0.1:
            failures.append(f"seed {seed}: {seg.shape} ({seg.shape_detail}), "
                            f"{seg.trend.slope_mb_h:.1f} MB/h for {info['rate_mb_h']:.1f}")
    _check(failures)


@pytest.mark.parametrize("part", range(4))
@pytest.mark.slow
def test_a_statistically_flat_drift_is_not_steady_growth(tmp_path, part: int) -> None:
    failures = []
    for seed, _, w, seg in _each(tmp_path, generators.flat_drift,
                                 range(part * 40, part * 40 + 40)):
        significant = seg.trend.p < 0.01 and seg.trend.low_mb_h > 0
        if seg.shape in GROWTH_SHAPES and not significant:
            failures.append(f"seed {seed}: {seg.shape} without significant growth")
        if seg.shape == "linear" and seg.trend.r2 < FLAT_R2:
            failures.append(f"seed {seed}: linear, {seg.shape_detail}")
        if w.verdict in ("likely", "confirmed"):
            failures.append(f"seed {seed}: {w.verdict}: {w.reasons}")
    _check(failures)

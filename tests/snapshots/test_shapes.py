"""Generated series of known shapes: each classified right, leaks measured, healthy ones cleared."""

from __future__ import annotations

import pytest

from snapshots import synthetic
from snapshots.analysis import analyze
from snapshots.shape import classify
from snapshots.trend import fit
from snapshots.windows import Windows
from tests.snapshots.series_files import write_shape

EXPECTED = {
    "flat": "stable",
    "leak": "linear",
    "sawtooth": "sawtooth",
    "sawtooth_rising": "sawtooth_rising",
    "plateau": "plateau",
    "spikes": "spikes",
    "steps": "steps",
}
HEALTHY = ("flat", "sawtooth", "plateau", "spikes")


def _windows(values: list[float]) -> Windows:
    t = [1.7e9 + i for i in range(len(values))]
    return Windows(t, [v - 5e5 for v in values], values, [v + 5e5 for v in values])


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("shape", sorted(EXPECTED))
def test_shape_is_classified(shape: str, seed: int) -> None:
    got = classify(_windows(synthetic.series(shape, 7200, seed=seed)))
    assert got.name == EXPECTED[shape], got.detail


@pytest.mark.parametrize("shape", ["leak", "sawtooth_rising"])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_leak_slope_recovered_within_10_percent(shape: str, seed: int) -> None:
    rate = 50 * synthetic.MB  # per hour
    got = classify(_windows(synthetic.series(shape, 7200, seed=seed, leak_per_h=rate)))
    slope_per_h = got.relevant.slope * 3600
    assert slope_per_h == pytest.approx(rate, rel=0.10)
    assert got.relevant.lo * 3600 <= rate * 1.1 and got.relevant.hi * 3600 >= rate * 0.9


@pytest.mark.parametrize("shape", HEALTHY)
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_healthy_shapes_never_above_suspected(tmp_path, shape: str, seed: int) -> None:
    write_shape(tmp_path / "s.jsonl", shape, seed=seed)
    (worker,) = analyze([str(tmp_path)]).report.workers
    assert worker.verdict in ("none", "suspected"), worker.reasons


@pytest.mark.parametrize("shape", ["leak", "sawtooth_rising", "steps"])
def test_leaks_get_a_verdict_with_reasons(tmp_path, shape: str) -> None:
    write_shape(tmp_path / "s.jsonl", shape)
    (worker,) = analyze([str(tmp_path)]).report.workers
    assert worker.verdict in ("likely", "confirmed")
    assert any("MB/h" in r for r in worker.reasons)
    critical = next(p for p in worker.projections if p.target == "critical")
    assert critical.seconds is not None and critical.earliest <= critical.seconds
    assert critical.seconds <= critical.latest


def test_small_significant_drift_is_not_a_leak(tmp_path) -> None:
    # 0.5 MB/h under a 4 GB limit: statistically clear after 2 h, harmless for years.
    limit = 4_000_000_000
    records = [synthetic.header(limit=limit, thresholds={"critical": limit})]
    values = synthetic.series("leak", 7200, leak_per_h=0.5 * synthetic.MB, noise=0.02e6)
    records += synthetic.samples("w", values)
    synthetic.write(str(tmp_path / "d.jsonl"), records)
    (worker,) = analyze([str(tmp_path)]).report.workers
    assert worker.verdict == "suspected", worker.reasons
    assert any("too small to matter" in r for r in worker.reasons)


def test_trend_statistics_on_exact_line() -> None:
    xs = [float(i) for i in range(100)]
    f = fit(xs, [3.0 * x + 7.0 for x in xs])
    assert f.slope == pytest.approx(3.0) and f.ols_slope == pytest.approx(3.0)
    assert f.r2 == pytest.approx(1.0) and f.p < 1e-6
    assert f.lo <= 3.0 <= f.hi


def test_noise_alone_is_not_significant() -> None:
    values = synthetic.series("flat", 3000, seed=7)
    f = fit([float(i) for i in range(len(values))], values)
    assert f.p > 0.01 and f.lo < 0 < f.hi


def test_long_compressed_record_is_windowed_and_still_measured(tmp_path) -> None:
    import gzip

    # 4 h of 1 s samples in one gzip file: the span is not known before reading, so the
    # windows are folded as they grow; the result must stay bounded and accurate.
    plain = write_shape(tmp_path / "long.jsonl", "leak", seconds=4 * 3600)
    packed = tmp_path / "gz" / "long.jsonl.gz"
    packed.parent.mkdir()
    packed.write_bytes(gzip.compress(plain.read_bytes(), compresslevel=1))
    (w,) = analyze([str(packed)]).report.workers
    assert w.windows <= 4000 and w.window_s >= 2.0
    assert w.segment is not None and w.segment.shape == "linear"
    assert w.segment.trend.slope_mb_h == pytest.approx(50, rel=0.10)
    (p,) = analyze([str(plain)]).report.workers
    assert p.windows <= 2000 + 1 and p.window_s == pytest.approx(4 * 3600 / 2000, rel=0.01)

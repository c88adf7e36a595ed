"""The shape of a memory series, from its windows: what kind of curve it is, and its baseline.

Shapes: `stable`, `plateau` (warm-up, then flat), `linear` (steady growth), `steps` (growth in
a few jumps), `sawtooth` (climb and fall back to a flat baseline: trims or caches doing their
job), `sawtooth_rising` (the same with a rising baseline: trims do not give everything back),
`spikes` (short excursions over a flat level), and `short` (too few windows to say).

The rules are deliberately simple and each reports the numbers it used, so that a person can
check the reasoning in the report. Noise is estimated from the spread of window-to-window
differences (median absolute deviation), so the rules scale with the series, not with
constants in bytes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from snapshots.trend import Fit, fit, thin
from snapshots.windows import Windows, median, quantile

SHAPES = ("stable", "plateau", "linear", "steps", "sawtooth", "sawtooth_rising", "spikes",
          "short")
GROWTH_SHAPES = frozenset({"linear", "steps", "sawtooth_rising"})
#: Fewer windows than this and no shape is claimed.
MIN_WINDOWS = 20
_P = 0.05


@dataclass
class Shape:
    """A classification with the fits that support it.

    `trend` is the fit on window medians; `baseline` the fit on the baseline points
    (`baseline_t`, `baseline_v`: tooth troughs for a sawtooth, block minima otherwise);
    `relevant` is the fit a leak verdict should use for this shape (the baseline for a
    sawtooth, the part after warm-up for a plateau, the medians otherwise).
    """

    name: str
    trend: Fit
    baseline: Fit
    relevant: Fit
    baseline_t: list[float]
    baseline_v: list[float]
    detail: str
    change_t: float | None = None  # end of warm-up for a plateau
    teeth: int = 0
    jumps: int = 0
    spikes: int = 0


def _noise(values: list[float]) -> float:
    """Robust standard deviation of window-to-window differences."""
    if len(values) < 3:
        return 0.0
    diffs = [values[i + 1] - values[i] for i in range(len(values) - 1)]
    m = median(diffs)
    return 1.4826 * median([abs(d - m) for d in diffs])


def _block_minima(w: Windows, blocks: int) -> tuple[list[float], list[float]]:
    n = len(w)
    size = max(1, n // blocks)
    ts: list[float] = []
    vs: list[float] = []
    for start in range(0, n - size + 1, size):
        chunk = w.med[start:start + size]
        i = min(range(len(chunk)), key=chunk.__getitem__)
        ts.append(w.t[start + i])
        vs.append(chunk[i])
    return ts, vs


def classify(w: Windows) -> Shape:
    """Classify the windows' shape (see the module docstring for the names)."""
    n = len(w)
    trend = fit(w.t, w.med)
    if n < MIN_WINDOWS:
        return Shape("short", trend, trend, trend, list(w.t), list(w.lo),
                     f"{n} windows; at least {MIN_WINDOWS} are needed to tell a shape")
    med = w.med
    level = median(med)
    noise = _noise(med)
    floor = max(4.0 * noise, 0.005 * abs(level), 1.0)
    diffs = [med[i + 1] - med[i] for i in range(n - 1)]

    saw = _sawtooth(w, diffs, floor)
    if saw is not None:
        return _finish_saw(saw, trend)

    spikes = _spikes(w, level, noise, floor)
    if spikes is not None:
        return Shape("spikes", trend, trend, trend, *_block_minima(w, 32),
                     detail=spikes[0], spikes=spikes[1])

    bt, bv = _block_minima(w, 32)
    baseline = fit(bt, bv)
    rising = trend.p < _P and trend.lo > 0
    if rising:
        plateau = _plateau(w, trend)
        if plateau is not None:
            change_t, tail, detail = plateau
            return Shape("plateau", trend, baseline, tail, bt, bv, detail, change_t=change_t)
        ups = [d for d in diffs if d > floor]
        net = med[-1] - med[0]
        big = sum(ups)
        if 2 <= len(ups) <= max(2, n // 10) and net > 0 and big >= 0.6 * net:
            return Shape("steps", trend, baseline, trend, bt, bv,
                         f"{len(ups)} jumps carry {big / net:.0%} of the growth", jumps=len(ups))
        return Shape("linear", trend, baseline, trend, bt, bv,
                     f"steady growth, R² {trend.r2:.2f}")
    return Shape("stable", trend, baseline, trend, bt, bv,
                 "no significant trend in the window medians")


@dataclass
class _Saw:
    teeth: int
    bt: list[float]
    bv: list[float]


def _finish_saw(saw: _Saw, trend: Fit) -> Shape:
    baseline = fit(saw.bt, saw.bv)
    rising = baseline.p < _P and baseline.lo > 0 and len(saw.bt) >= 4
    name = "sawtooth_rising" if rising else "sawtooth"
    detail = (f"{saw.teeth} falls; the baseline after them "
              f"{'rises' if rising else 'stays level'}")
    return Shape(name, trend, baseline, baseline, saw.bt, saw.bv, detail, teeth=saw.teeth)


def _sawtooth(w: Windows, diffs: list[float], floor: float) -> _Saw | None:
    """Teeth are gradual climbs ended by a sharp fall; at least three of them."""
    med = w.med
    n = len(med)
    falls = [i for i, d in enumerate(diffs) if d < -floor]
    # Merge falls in consecutive windows (one trim may straddle a window boundary).
    merged: list[int] = []
    for i in falls:
        if merged and i - merged[-1] <= 2:
            merged[-1] = i
        else:
            merged.append(i)
    if len(merged) < 3:
        return None
    bt: list[float] = []
    bv: list[float] = []
    gradual = 0
    prev = 0
    for i in merged:
        climb = med[prev:i + 1]
        if len(climb) >= 4:
            rise = max(climb) - min(climb)
            biggest = max((climb[k + 1] - climb[k] for k in range(len(climb) - 1)), default=0.0)
            if rise > floor and biggest < 0.5 * rise:
                gradual += 1
        # the trough: lowest of the windows right after the fall
        after = range(i + 1, min(n, i + 4))
        if after:
            j = min(after, key=med.__getitem__)
            bt.append(w.t[j])
            bv.append(med[j])
        prev = i + 1
    if gradual < max(3, len(merged) // 2):
        return None
    return _Saw(len(merged), bt, bv)


def _spikes(w: Windows, level: float, noise: float, floor: float
            ) -> tuple[str, int] | None:
    """Short excursions (a few windows each, under 10 % of the time) over a flat level."""
    med, hi = w.med, w.hi
    n = len(med)
    spread = max(quantile(med, 0.75) - quantile(med, 0.25), noise, 0.005 * abs(level))
    bar = level + max(6.0 * spread, 2.0 * floor)
    hot = [i for i in range(n) if hi[i] > bar]
    if not hot or len(hot) > 0.1 * n:
        return None
    runs = 1 + sum(1 for a, b in itertools.pairwise(hot) if b - a > 1)
    if len(hot) / runs > 5:  # excursions that last are not spikes
        return None
    calm = [med[i] for i in range(n) if hi[i] <= bar]
    calm_t = [w.t[i] for i in range(n) if hi[i] <= bar]
    rest = fit(calm_t, calm)
    if rest.p < _P and rest.lo > 0:
        return None
    return f"{runs} short excursions above {bar / 1e6:.0f} MB over a flat level", runs


def _plateau(w: Windows, trend: Fit) -> tuple[float, Fit, str] | None:
    """Growth that stops: a head that rises, then a tail (≥ 40 % of the span) that does not."""
    t, med = thin(w.t, w.med, 600)
    n = len(t)
    sse = _split_errors(t, med)
    best: tuple[float, int] | None = None
    # Candidate change points between 5 % and 60 % of the span.
    for k in range(max(4, n // 20), int(n * 0.6) + 1):
        if best is None or sse[k] < best[0]:
            best = (sse[k], k)
    if best is None:
        return None
    k = best[1]
    tail = fit(t[k:], med[k:])
    head = fit(t[:k], med[:k])
    rise = head.at(t[k]) - head.at(t[0])
    tail_growth = tail.slope * (t[-1] - t[k])
    if head.slope <= 0 or rise <= 0 or abs(tail_growth) > 0.15 * rise:
        return None
    if tail.p < _P and tail.lo > 0 and tail.slope > 0.1 * head.slope:
        return None
    detail = (f"rose {rise / 1e6:.1f} MB over the first {t[k] - t[0]:.0f} s, then level "
              f"({tail.slope * 3600 / 1e6:+.2f} MB/h)")
    return t[k], tail, detail


def _split_errors(t: list[float], v: list[float]) -> list[float]:
    """sse[k]: squared residuals of a line fitted to [:k] plus one fitted to [k:].

    Prefix sums make every split O(1), so all candidates cost O(n) together.
    """
    n = len(t)
    t0 = t[0]
    xs = [x - t0 for x in t]  # centred for numerical stability
    cs = [[0.0] * (n + 1) for _ in range(5)]  # x, y, xx, xy, yy
    for i, (x, y) in enumerate(zip(xs, v, strict=True)):
        for c, term in zip(cs, (x, y, x * x, x * y, y * y), strict=True):
            c[i + 1] = c[i] + term

    def sse(a: int, b: int) -> float:
        m = b - a
        if m < 2:
            return 0.0
        sx, sy, sxx, sxy, syy = (c[b] - c[a] for c in cs)
        vxx = sxx - sx * sx / m
        vxy = sxy - sx * sy / m
        vyy = syy - sy * sy / m
        return max(0.0, vyy - (vxy * vxy / vxx if vxx > 0 else 0.0))

    return [sse(0, k) + sse(k, n) for k in range(n + 1)]


__all__ = ["GROWTH_SHAPES", "MIN_WINDOWS", "SHAPES", "Shape", "classify"]

"""The shape of a memory series, from its windows: what kind of curve it is, and its baseline.

Shapes: `stable`, `plateau` (warm-up, then flat), `linear` (steady growth), `steps` (growth in
a few jumps), `sawtooth` (climb and fall back to a flat baseline: trims or caches doing their
job), `sawtooth_rising` (the same with a rising baseline: trims do not give everything back),
`spikes` (short excursions over a flat level), and `short` (too few windows to say).

The rules are deliberately simple and each reports the numbers it used, so that a person can
check the reasoning in the report. Noise is estimated from the spread of window-to-window
differences (median absolute deviation), so the rules scale with the series, not with
constants in bytes; differences across a gap in the record count for nothing. Order matters:
a warm-up is recognised before teeth (collections saw on warm-ups too), teeth before
spikes, and a growth shape needs growth the verdict would call significant.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass

from snapshots.trend import P_SIGNIFICANT, Fit, fit, least_squares, thin
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


#: Below this R² a significant drift is called noise, not steady growth: the line explains
#: less than a fifth of the variance, i.e. it rises by less than about 1.7 noise deviations
#: over the whole record.
FLAT_R2 = 0.2
#: Windows further apart than this many times their usual spacing have a gap between them.
_GAP = 2.5


def _diffs(w: Windows) -> tuple[list[float], list[float]]:
    """Window-to-window differences of the medians, 0 across gaps; and the gap-free ones.

    A gap (nothing recorded for a while) is not a jump: the worker went on between the two
    windows, so a difference across it says nothing about steps, falls or noise.
    """
    t, med = w.t, w.med
    n = len(med)
    diffs = [med[i + 1] - med[i] for i in range(n - 1)]
    spacing = median([t[i + 1] - t[i] for i in range(n - 1)]) if n > 1 else 0.0
    gaps = [i for i in range(n - 1) if t[i + 1] - t[i] > _GAP * spacing]
    if not gaps:
        return diffs, diffs
    for i in gaps:
        diffs[i] = 0.0
    skip = set(gaps)
    return diffs, [d for i, d in enumerate(diffs) if i not in skip]


def _noise(diffs: list[float]) -> float:
    """Robust standard deviation of window-to-window differences."""
    if len(diffs) < 2:
        return 0.0
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
    diffs, clean = _diffs(w)
    noise = _noise(clean)
    floor = max(4.0 * noise, 0.005 * abs(level), 1.0)

    saw = _sawtooth(w, diffs, floor)
    # Growth that stops is a warm-up whatever rides on it: the plateau test comes before the
    # sawtooth's, or collections sawing a few MB turn a warm-up into a rising sawtooth. A
    # warm-up must rise by more than a tooth, or one climb would pass for one.
    plateau = _plateau(w.t, w.med, max(floor, saw.amplitude if saw else 0.0))
    if plateau is not None and _floor_rose(w, plateau):
        return _warm_up(w, plateau, saw, trend)
    if saw is not None:
        return _finish_saw(w, saw, trend, floor)

    spikes = _spikes(w, level, noise, floor)
    if spikes is not None:
        return Shape("spikes", trend, trend, trend, *_block_minima(w, 32),
                     detail=spikes[0], spikes=spikes[1])

    bt, bv = _block_minima(w, 32)
    baseline = fit(bt, bv)
    # A growth shape is claimed only for growth the verdict would call significant: a drift
    # short of that is statistically flat, whatever line fits it best.
    rising = trend.p < P_SIGNIFICANT and trend.lo > 0
    if rising:
        if trend.r2 < FLAT_R2:
            return Shape("stable", trend, baseline, trend, bt, bv,
                         f"a drift of {trend.slope * 3600 / 1e6:+.2f} MB/h within the noise "
                         f"(R² {trend.r2:.2f}): no steady growth")
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
    amplitude: float  # a tooth's usual height (median climb)


def _floor_rose(w: Windows, plateau: tuple[float, Fit, str, float]) -> bool:
    """Whether the lowest memory rose with the warm-up: after it, the windows' minima stay
    at least half the rise above where they started. (A sawtooth's first slow climb looks
    like a warm-up in the medians, but its falls go back to where it started.)"""
    change_t, _, _, rise = plateau
    k = bisect.bisect_left(w.t, change_t)
    head = w.lo[:max(1, min(k, len(w) // 20))]
    return k < len(w) and median(w.lo[k:]) - min(head) >= 0.5 * rise


def _warm_up(w: Windows, plateau: tuple[float, Fit, str, float], saw: _Saw | None,
             trend: Fit) -> Shape:
    """A plateau; with teeth on it, its baseline after warm-up is the teeth's troughs."""
    change_t, tail, detail, _ = plateau
    if saw is None:
        bt, bv = _block_minima(w, 32)
        return Shape("plateau", trend, fit(bt, bv), tail, bt, bv, detail, change_t=change_t)
    after = [i for i, x in enumerate(saw.bt) if x >= change_t]
    if len(after) >= 6:
        tail = fit([saw.bt[i] for i in after], [saw.bv[i] for i in after])
    return Shape("plateau", trend, fit(saw.bt, saw.bv), tail, saw.bt, saw.bv,
                 f"{detail}; {saw.teeth} falls on it (collections or trims)",
                 change_t=change_t, teeth=saw.teeth)


def _finish_saw(w: Windows, saw: _Saw, trend: Fit, floor: float) -> Shape:
    """A sawtooth's baseline is the real minimum after each fall. A rising baseline that
    levels off is a warm-up (a plateau the teeth ride on), else a rising sawtooth."""
    baseline = fit(saw.bt, saw.bv)
    # Rising: significant as the verdict counts it, and by more than the noise floor over
    # the record (the minima of hundreds of teeth make a tiny drift significant).
    span = saw.bt[-1] - saw.bt[0] if saw.bt else 0.0
    rising = (baseline.p < P_SIGNIFICANT and baseline.lo > 0 and len(saw.bt) >= 4
              and baseline.slope * span > floor)
    if rising and len(saw.bt) >= 16:
        plateau = _plateau(saw.bt, saw.bv, floor, min_points=8)
        if plateau is not None:
            return _warm_up(w, plateau, saw, trend)
    name = "sawtooth_rising" if rising else "sawtooth"
    detail = (f"{saw.teeth} falls; the lowest memory after them "
              f"{'rises' if rising else 'stays level'} "
              f"({baseline.slope * 3600 / 1e6:+.2f} MB/h)")
    return Shape(name, trend, baseline, baseline, saw.bt, saw.bv, detail, teeth=saw.teeth)


def _sawtooth(w: Windows, diffs: list[float], floor: float) -> _Saw | None:
    """Teeth are gradual climbs ended by a sharp fall; at least three of them.

    A tooth's baseline point is the lowest memory recorded around its fall (the windows'
    minima, not their medians: a window right after a fall also holds the start of the next
    climb, so its median rises with the climb rate while the real minimum does not).
    """
    med, lo = w.med, w.lo
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
    rises: list[float] = []
    gradual = 0
    prev = 0
    for i in merged:
        climb = med[prev:i + 1]
        if len(climb) >= 4:
            rise = max(climb) - min(climb)
            biggest = max((climb[k + 1] - climb[k] for k in range(len(climb) - 1)), default=0.0)
            if rise > floor and biggest < 0.5 * rise:
                gradual += 1
                rises.append(rise)
        # the trough: the lowest minimum of the fall's window and the three after it
        around = range(i, min(n, i + 4))
        j = min(around, key=lo.__getitem__)
        bt.append(w.t[j])
        bv.append(lo[j])
        prev = i + 1
    if gradual < max(3, len(merged) // 2):
        return None
    return _Saw(len(merged), bt, bv, median(rises))


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


def _plateau(ts: list[float], vs: list[float], floor: float, min_points: int = 4
             ) -> tuple[float, Fit, str, float] | None:
    """Growth that stops: a head that rises (significantly, and by more than the noise
    floor), then a tail (≥ 40 % of the span) that does not."""
    t, med = thin(ts, vs, 600)
    n = len(t)
    if n < 2 * min_points:
        return None
    sse = _split_errors(t, med)
    best: tuple[float, int] | None = None
    # Candidate change points between 5 % and 60 % of the span.
    for k in range(max(min_points, n // 20), int(n * 0.6) + 1):
        if best is None or sse[k] < best[0]:
            best = (sse[k], k)
    if best is None:
        return None
    k = best[1]
    # Least squares first (O(n)): most series are no plateau, and say so before the
    # O(n²) robust fits.
    head_ols = least_squares(t[:k], med[:k])[0]
    tail_ols = least_squares(t[k:], med[k:])[0]
    ols_rise = head_ols * (t[k] - t[0])
    if head_ols <= 0 or ols_rise <= floor or abs(tail_ols * (t[-1] - t[k])) > 0.3 * ols_rise:
        return None
    tail = fit(t[k:], med[k:])
    head = fit(t[:k], med[:k])
    rise = head.at(t[k]) - head.at(t[0])
    tail_growth = tail.slope * (t[-1] - t[k])
    if head.slope <= 0 or rise <= floor or abs(tail_growth) > 0.15 * rise:
        return None
    if not (head.p < _P and head.lo > 0):
        return None
    if tail.p < _P and tail.lo > 0 and tail.slope > 0.1 * head.slope:
        return None
    detail = (f"rose {rise / 1e6:.1f} MB over the first {t[k] - t[0]:.0f} s, then level "
              f"({tail.slope * 3600 / 1e6:+.2f} MB/h)")
    return t[k], tail, detail, rise


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


__all__ = ["FLAT_R2", "GROWTH_SHAPES", "MIN_WINDOWS", "SHAPES", "Shape", "classify"]

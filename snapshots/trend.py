"""Trend statistics on short series (a few hundred points), in pure Python.

Least squares (slope, R²), Theil-Sen with Sen's 95 % interval, and the Mann-Kendall trend test
with the Hamed-Rao correction for autocorrelation. Memory series are strongly autocorrelated
(a sample is the previous one plus a little), so the plain Mann-Kendall test calls almost any
drift significant; Hamed-Rao divides the evidence by the effective number of independent
points. The Yue-Wang pre-whitening alternative was rejected: it assumes an AR(1) shape that
sawtooth and stepwise series do not have.

Callers pass at most `MAX_POINTS` points (see `thin`); the pairwise steps are O(n²).
"""

from __future__ import annotations

import bisect
import itertools
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass

from snapshots.windows import Windows, median, quantile

#: Largest series the O(n²) estimators see; longer ones are thinned deterministically.
MAX_POINTS = 200
#: Growth is significant below this p-value (and with its 95 % interval above zero): the
#: verdict's test, and the test for calling a series' shape a growth shape.
P_SIGNIFICANT = 0.01
_Z95 = 1.959963984540054


@dataclass(frozen=True)
class Fit:
    """A trend in units per second; `lo`/`hi` bound the Theil-Sen slope at 95 %."""

    n: int
    ols_slope: float
    ols_intercept: float
    r2: float
    slope: float  # Theil-Sen
    intercept: float  # Theil-Sen, at t = 0
    lo: float
    hi: float
    z: float  # Mann-Kendall, corrected
    p: float
    n_eff: float  # effective sample size after the autocorrelation correction

    def at(self, t: float) -> float:
        """The Theil-Sen line's value at time `t`."""
        return self.intercept + self.slope * t


def thin(xs: Sequence[float], ys: Sequence[float], limit: int = MAX_POINTS
         ) -> tuple[list[float], list[float]]:
    """Return at most `limit` points, evenly spaced by index (always first and last)."""
    n = len(xs)
    if n <= limit:
        return list(xs), list(ys)
    step = (n - 1) / (limit - 1)
    idx = [round(i * step) for i in range(limit)]
    return [xs[i] for i in idx], [ys[i] for i in idx]


def least_squares(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, float]:
    """Return (slope, intercept, R²); a flat or single-point series gives slope 0, R² 0.

    Sums over values taken from the first point (times are ~1.7e9 s: their squares would
    cancel), with C-level passes (`map`) rather than a Python loop: it sees every window.
    """
    n = len(xs)
    if n < 2:
        return 0.0, (ys[0] if n else 0.0), 0.0
    x0, y0 = xs[0], ys[0]
    dx = list(map(operator.sub, xs, itertools.repeat(x0, n)))
    dy = list(map(operator.sub, ys, itertools.repeat(y0, n)))
    sx, sy = sum(dx), sum(dy)
    sxx = sum(map(operator.mul, dx, dx)) - sx * sx / n
    sxy = sum(map(operator.mul, dx, dy)) - sx * sy / n
    syy = sum(map(operator.mul, dy, dy)) - sy * sy / n
    if sxx <= 0:
        return 0.0, y0 + sy / n, 0.0
    slope = sxy / sxx
    r2 = min(1.0, (sxy * sxy) / (sxx * syy)) if syy > 0 else 0.0
    return slope, y0 + sy / n - slope * (x0 + sx / n), r2


def _normal_p(z: float) -> float:
    """Two-sided p-value of a standard normal statistic."""
    return math.erfc(abs(z) / math.sqrt(2.0))


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        mid = (i + j) / 2 + 1
        for k in range(i, j + 1):
            ranks[order[k]] = mid
        i = j + 1
    return ranks


def fit(xs: Sequence[float], ys: Sequence[float]) -> Fit:
    """Fit a trend to (xs, ys); xs strictly increasing seconds. Thins to MAX_POINTS first."""
    ols_slope, ols_intercept, r2 = least_squares(xs, ys)
    x, y = thin(xs, ys)
    n = len(x)
    if n < 4:
        return Fit(n, ols_slope, ols_intercept, r2, ols_slope, ols_intercept,
                   ols_slope, ols_slope, 0.0, 1.0, float(n))
    # All pairwise slopes in one comprehension (x is increasing, so a pair's slope has the
    # sign of its difference in y, and Mann-Kendall's S falls out of the sorted slopes).
    slopes = [(y[j] - yi) / (x[j] - xi)
              for i, (xi, yi) in enumerate(zip(x, y, strict=True))
              for j in range(i + 1, n) if x[j] > xi]
    slopes.sort()
    s = (len(slopes) - bisect.bisect_right(slopes, 0.0)) - bisect.bisect_left(slopes, 0.0)
    m = len(slopes)
    slope = _median_sorted(slopes)
    intercept = median([yy - slope * xx for xx, yy in zip(x, y, strict=True)])
    # Variance of S with the tie correction, then the Hamed-Rao factor from the ranks of
    # the detrended series (only significant lags count, as in the original method).
    ties: dict[float, int] = {}
    for v in y:
        ties[v] = ties.get(v, 0) + 1
    var_s = (n * (n - 1) * (2 * n + 5)
             - sum(t * (t - 1) * (2 * t + 5) for t in ties.values() if t > 1)) / 18.0
    ratio = _hamed_rao(x, y, slope)
    var_s *= ratio
    if var_s <= 0:
        z = 0.0
    elif s > 0:
        z = (s - 1) / math.sqrt(var_s)
    elif s < 0:
        z = (s + 1) / math.sqrt(var_s)
    else:
        z = 0.0
    c = _Z95 * math.sqrt(max(var_s, 0.0))
    lo_i = max(0, min(m - 1, math.floor((m - c) / 2.0)))
    hi_i = max(0, min(m - 1, math.ceil((m + c) / 2.0)))
    return Fit(n, ols_slope, ols_intercept, r2, slope, intercept, slopes[lo_i], slopes[hi_i],
               z, _normal_p(z), n / ratio)


def _hamed_rao(x: Sequence[float], y: Sequence[float], slope: float) -> float:
    """Return n/n* (≥ 1 when points are positively autocorrelated)."""
    n = len(y)
    ranks = _ranks([yy - slope * xx for xx, yy in zip(x, y, strict=True)])
    mean = sum(ranks) / n
    dev = [r - mean for r in ranks]
    denom = sum(d * d for d in dev)
    if denom == 0:
        return 1.0
    bound = _Z95 / math.sqrt(n)
    total = 0.0
    for k in range(1, n - 2):
        rk = sum(map(operator.mul, dev[: n - k], dev[k:])) / denom
        if abs(rk) > bound:
            total += (n - k) * (n - k - 1) * (n - k - 2) * rk
    ratio = 1.0 + 2.0 / (n * (n - 1) * (n - 2)) * total
    # The estimate can go below 1 (or negative) on short, oscillating series; never let
    # it claim more independent points than there are.
    return max(ratio, 1.0)


def _median_sorted(v: Sequence[float]) -> float:
    n = len(v)
    if n == 0:
        return 0.0
    mid = n // 2
    return float(v[mid]) if n % 2 else (v[mid - 1] + v[mid]) / 2.0


def peak(w: Windows, f: Fit, at: float | None = None) -> float:
    """Where the peaks are at time `at` (default: the end): the trend line there plus the
    95th percentile of the peaks' excess over the line."""
    if not len(w):
        return 0.0
    ts, his = thin(w.t, w.hi, 1000)
    excess = quantile([h - f.at(x) for x, h in zip(ts, his, strict=True)], 0.95)
    return f.at(w.t[-1] if at is None else at) + max(0.0, excess)


__all__ = ["MAX_POINTS", "P_SIGNIFICANT", "Fit", "fit", "least_squares", "peak", "thin"]

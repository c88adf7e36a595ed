"""Robust growth rate of a memory series: Tukey's resistant line, and sustained growth.

Why Tukey rather than least squares: a garbage-collection drop or a one-off spike would
swing a least-squares slope; medians of the outer thirds ignore them. Why not Theil-Sen:
it needs all n(n-1)/2 pairwise slopes (1770 for 60 points, about a millisecond in Python
per worker per evaluation), where the resistant line needs three sorts of a third each.
"""

from __future__ import annotations


def resistant_slope(ts_ns: list[int], values: list[int]) -> float | None:
    """Return the slope in value units per second; None with fewer than 3 points or no time span.

    `ts_ns` must be sorted (monotonic ns). The line passes through the medians of the
    first and last thirds of the points (by time).
    """
    n = len(ts_ns)
    if n < 3 or n != len(values):
        return None
    third = n // 3
    # The times are sorted already, so their medians are the middle elements.
    span = _middle(ts_ns, n - third, n) - _middle(ts_ns, 0, third)
    if span <= 0:
        return None
    left = sorted(values[:third])
    right = sorted(values[n - third :])
    return (_middle(right, 0, third) - _middle(left, 0, third)) * 1e9 / span


def sustained_slope(ts_ns: list[int], values: list[int], parts: int = 3) -> float | None:
    """Return the slowest of the resistant slopes of `parts` consecutive parts of the series.

    Growth that is sustained shows in every part of the window; a start-up ramp that ended
    or a one-off step (a jump, then a plateau) shows in one part only, and the parts
    without it bring the figure down to about zero. Why the minimum rather than a test on
    the residuals of one line: it needs no noise model and reads as what it is ("every
    third of the window grew at least this fast"). None when a part has fewer than 3 points.
    """
    n = len(ts_ns)
    if n != len(values) or n < 3 * parts:
        return None
    slowest: float | None = None
    for i in range(parts):
        lo, hi = i * n // parts, (i + 1) * n // parts
        slope = resistant_slope(ts_ns[lo:hi], values[lo:hi])
        if slope is None:
            return None
        slowest = slope if slowest is None else min(slowest, slope)
    return slowest


def _middle(xs: list[int], lo: int, hi: int) -> float:
    """Median of the sorted slice xs[lo:hi] (non-empty)."""
    mid = (lo + hi) // 2
    return float(xs[mid]) if (hi - lo) % 2 else (xs[mid - 1] + xs[mid]) / 2


__all__ = ["resistant_slope", "sustained_slope"]

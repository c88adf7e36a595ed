"""The flight recorder's compact form: a start time, per-sample steps and RSS deltas.

Deltas rather than absolute values because consecutive RSS readings differ by a few pages at
most, so most deltas print as `0` and a 3000-sample burst stays a few kilobytes of JSON.
"""

from __future__ import annotations

from collections.abc import Sequence

from snapshots.schema import Burst


def encode_burst(
    worker: str,
    generation: int,
    pid: int,
    cause: str,
    t_wall0: float,
    t_ns: Sequence[int],
    rss: Sequence[int],
    interval_us: int,
) -> Burst:
    """Return a Burst for the samples (`t_ns` monotonic nanoseconds, `rss` bytes).

    `t_wall0` is the wall time of the first sample. Steps are rounded from the cumulative
    offset, not step by step, so rounding never accumulates over a long window.
    Raises ValueError when the two sequences differ in length or are empty.
    """
    n = len(t_ns)
    if n != len(rss) or n == 0:
        raise ValueError(
            f"a burst needs as many times as values, at least one (got {n}, {len(rss)})"
        )
    t0 = t_ns[0]
    dt_us: list[int] = []
    rss_delta: list[int] = []
    prev_us = 0
    prev_rss = rss[0]
    for i in range(1, n):
        us = (t_ns[i] - t0 + 500) // 1000
        dt_us.append(us - prev_us)
        prev_us = us
        value = rss[i]
        rss_delta.append(value - prev_rss)
        prev_rss = value
    return Burst(
        t=t_wall0, worker=worker, generation=generation, pid=pid, cause=cause,
        interval_us=interval_us, rss0=rss[0], dt_us=dt_us, rss_delta=rss_delta,
    )


def decode_burst(b: Burst) -> tuple[list[float], list[int]]:
    """Return the burst's wall times (Unix seconds) and RSS values (bytes).

    Raises ValueError when the burst's two delta lists differ in length (a damaged record).
    """
    if len(b.dt_us) != len(b.rss_delta):
        raise ValueError(
            f"burst of {b.worker!r}: {len(b.dt_us)} steps but {len(b.rss_delta)} deltas"
        )
    times = [b.t]
    values = [b.rss0]
    us = 0
    value = b.rss0
    for dt, dv in zip(b.dt_us, b.rss_delta, strict=True):
        us += dt
        value += dv
        times.append(b.t + us * 1e-6)
        values.append(value)
    return times, values


__all__ = ["decode_burst", "encode_burst"]

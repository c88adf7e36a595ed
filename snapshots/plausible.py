"""What a record can hold: times within the years a record can be from, memory within what
a machine can have. A leaf module: it imports nothing of the project.

A damaged or forged line can decode cleanly and still say that a sample was taken in the
year 30 000 or that a worker held 10^30 bytes. Such figures are dropped and counted where
they are read, never folded into windows, charted or recommended from: a time beyond the
range breaks date formatting (`time.gmtime`) and squeezes a record's windows into one, a
size beyond it swamps every statistic.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Times from the epoch to 2106-02-07 (2^32 s): beyond it, no supervisor wrote the record.
MAX_T = float(2**32)
#: 1 PiB: more memory than any machine holds.
MAX_BYTES = float(2**50)


def time_ok(t: float) -> bool:
    """Whether `t` (Unix seconds) is a time a record can be from."""
    return 0.0 <= t < MAX_T


def columns_ok(ts: Sequence[float], lows: Sequence[float], means: Sequence[float],
               highs: Sequence[float]) -> bool:
    """Whether every sample of the columns is plausible (a few C-level passes)."""
    return (min(ts) >= 0.0 and max(ts) < MAX_T and min(lows) >= 0.0
            and max(highs) <= MAX_BYTES and max(means) <= MAX_BYTES and max(lows) <= MAX_BYTES)


def keep(ts: Sequence[float], lows: Sequence[float], means: Sequence[float],
         highs: Sequence[float]) -> list[int]:
    """The positions of the plausible samples (the slow path, once a check failed)."""
    return [i for i, (t, lo, mean, hi) in enumerate(zip(ts, lows, means, highs, strict=True))
            if 0.0 <= t < MAX_T and 0.0 <= lo <= MAX_BYTES and mean <= MAX_BYTES
            and hi <= MAX_BYTES]


__all__ = ["MAX_BYTES", "MAX_T", "columns_ok", "keep", "time_ok"]

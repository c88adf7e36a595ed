"""Snapshot series of known shapes, for tests, benchmarks and demonstrations of `analyze`.

Every generator is deterministic for a given seed, so a test that fails can be replayed.
Values are bytes per one-second sample period.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence

import msgspec

from snapshots.schema import Header, Record, Sample

MB = 1_000_000
SHAPES = ("flat", "leak", "sawtooth", "sawtooth_rising", "plateau", "spikes", "steps")


def series(shape: str, seconds: int = 7200, *, seed: int = 1, base: float = 150 * MB,
           noise: float = 1 * MB, leak_per_h: float = 50 * MB) -> list[float]:
    """Return `seconds` RSS values shaped like `shape` (one of SHAPES).

    `leak_per_h` is the growth of `leak`, `steps` and the baseline of `sawtooth_rising`.
    Raises ValueError for an unknown shape.
    """
    rng = random.Random(seed)
    per_s = leak_per_h / 3600.0
    out: list[float] = []
    middle = range(seconds // 10, seconds - seconds // 10)
    steps_at = sorted(rng.sample(middle, min(5, len(middle))))
    spikes_at = set(rng.sample(range(seconds), min(12, seconds // 20)))
    for i in range(seconds):
        v = base
        if shape == "flat":
            pass
        elif shape == "leak":
            v += per_s * i
        elif shape == "sawtooth":
            v += 40 * MB * ((i % 300) / 300.0)
        elif shape == "sawtooth_rising":
            v += 40 * MB * ((i % 300) / 300.0) + per_s * i
        elif shape == "plateau":
            v += 100 * MB * (1.0 - math.exp(-i / 300.0))
        elif shape == "spikes":
            if i in spikes_at or (i - 1) in spikes_at:
                v += 150 * MB
        elif shape == "steps":
            v += (leak_per_h * seconds / 3600.0 / 5) * sum(1 for s in steps_at if i >= s)
        else:
            raise ValueError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")
        out.append(v + rng.gauss(0.0, noise))
    return out


def samples(worker: str, values: Iterable[float], *, t0: float = 1.7e9, generation: int = 1,
            pid: int = 1000, period_s: float = 1.0, level: str = "low",
            stats: dict[str, float] | None = None, spread: float = 0.5 * MB) -> list[Sample]:
    """One Sample per value, `period_s` apart, with min/max `spread` around the mean."""
    out = []
    for i, v in enumerate(values):
        rss = int(v)
        out.append(Sample(t=t0 + i * period_s, worker=worker, generation=generation, pid=pid,
                          rss=rss, rss_min=int(v - spread), rss_max=int(v + spread),
                          rss_mean=float(rss), ticks=1000, level=level,  # type: ignore[arg-type]
                          stats=dict(stats or {})))
    return out


def summarise(worker: str, times: Sequence[float], values: Sequence[float], *,
              period_s: float = 1.0, generation: int = 1, pid: int = 1000,
              level: str = "low", slope: float = 0.0) -> list[Sample]:
    """Period summaries of a finely sampled series, as the recorder writes them.

    `times` (Unix seconds, increasing) and `values` (bytes) are the ticks; each Sample covers
    the ticks of one period and is stamped with the period's end, with the last, lowest,
    highest and mean value of the period. Periods without ticks give no Sample (a gap).
    """
    out: list[Sample] = []
    if not times:
        return out
    origin = times[0]
    i, n = 0, len(times)
    while i < n:
        k = int((times[i] - origin) // period_s)
        end = origin + (k + 1) * period_s
        j = i
        while j < n and times[j] < end:
            j += 1
        part = values[i:j]
        out.append(Sample(t=end, worker=worker, generation=generation, pid=pid,
                          rss=int(part[-1]), rss_min=int(min(part)), rss_max=int(max(part)),
                          rss_mean=sum(part) / len(part), ticks=len(part), slope=slope,
                          level=level))  # type: ignore[arg-type]
        i = j
    return out


def header(host: str = "host-a", *, t0: float = 1.7e9, limit: int | None = None,
           thresholds: dict[str, int] | None = None, **fields: object) -> Header:
    """A header as the supervisor writes it (format version of this release)."""
    return Header(t=t0, host=host, started=t0, supervisor_pid=1, limit=limit,
                  thresholds=thresholds or {"medium": 50 * MB, "high": 200 * MB,
                                            "critical": 500 * MB},
                  **fields)  # type: ignore[arg-type]


def write(path: str, records: Iterable[Record]) -> int:
    """Write `records` as JSONL to `path` (no rotation); return the bytes written."""
    enc = msgspec.json.Encoder()
    buf = bytearray()
    for r in records:
        enc.encode_into(r, buf, -1)
        buf.extend(b"\n")
    with open(path, "wb") as f:
        f.write(buf)
    return len(buf)


__all__ = ["MB", "SHAPES", "header", "samples", "series", "summarise", "write"]

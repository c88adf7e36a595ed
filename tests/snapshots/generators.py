"""Records of the cases `memwarden analyze` used to get wrong, generated from a seed.

Each generator draws its parameters from `random.Random(seed)`, simulates memory at a fine
step where the case depends on what happens inside a sample period, and returns the records
(header first) as the supervisor would have written them. Tests check a property over many
seeds, so no single lucky draw can pass them.
"""

from __future__ import annotations

import math
import random

from snapshots import synthetic
from snapshots.burst import encode_burst
from snapshots.schema import Event, Record, Sample

MB = synthetic.MB
T0 = 1.7e9


def _fine(seconds: float, step: float) -> list[float]:
    return [T0 + i * step for i in range(int(seconds / step))]


def warmup_with_jitter(seed: int, seconds: int = 5400) -> tuple[list[Record], dict[str, float]]:
    """A worker that grows for its first minutes, then levels off, while its memory saws up
    and down by a few MB (ordinary collections); a limit not far above its working set."""
    rng = random.Random(seed)
    base = rng.uniform(60, 200) * MB
    rise = rng.uniform(60, 160) * MB
    tau = rng.uniform(120, 450)
    amp = rng.uniform(2, 6) * MB
    times = _fine(seconds, 0.1)
    values = []
    tooth_start, tooth_len, tooth_amp = 0.0, rng.uniform(15, 60), amp
    for t in times:
        x = t - T0
        if x - tooth_start >= tooth_len:
            tooth_start, tooth_len = x, rng.uniform(15, 60)
            tooth_amp = amp * rng.uniform(0.6, 1.4)
        v = (base + rise * (1 - math.exp(-x / tau))
             + tooth_amp * (x - tooth_start) / tooth_len + rng.gauss(0, 0.1 * MB))
        values.append(v)
    limit = int((base + rise + amp) * 1.4)
    records: list[Record] = [synthetic.header(limit=limit, thresholds={"critical": limit})]
    records += synthetic.summarise("w", times, values)
    return records, {"limit": limit, "base": base, "rise": rise}


def ramped_sawtooth(seed: int, seconds: int = 7200) -> tuple[list[Record], dict[str, float]]:
    """A sawtooth whose climbs get faster (traffic ramping up) while the real minima after
    each fall stay flat; a limit small enough that a rising baseline would matter."""
    rng = random.Random(seed)
    base = rng.uniform(80, 150) * MB
    amp = rng.uniform(30, 50) * MB
    slow, fast = rng.uniform(0.08, 0.15) * MB, rng.uniform(1.5, 3.0) * MB  # climb, bytes/s
    times = _fine(seconds, 0.1)
    values = []
    start_v = base + rng.gauss(0, 0.2 * MB)
    level = start_v
    for t in times:
        x = t - T0
        rate = slow + (fast - slow) * x / seconds
        level += rate * 0.1
        if level - start_v >= amp:
            start_v = base + rng.gauss(0, 0.2 * MB)
            level = start_v
        values.append(level + rng.gauss(0, 0.05 * MB))
    limit = int((base + amp) * 1.25)
    records: list[Record] = [synthetic.header(limit=limit, thresholds={"critical": limit})]
    records += synthetic.summarise("w", times, values)
    return records, {"limit": limit, "base": base}


def generations_at_high(seed: int, count: int = 8) -> tuple[list[Record], dict[str, list[float]]]:
    """Generations replaced at HIGH, each after about a second there, the next starting low
    and reaching MEDIUM within the flap window: nothing flaps within a generation."""
    rng = random.Random(seed)
    records: list[Record] = [synthetic.header()]
    at_high = []
    t = T0
    for g in range(1, count + 1):
        life = rng.uniform(30, 50)
        medium_at = t + rng.uniform(3, 10)
        high_at = t + life - rng.uniform(0.8, 1.2)
        end = t + life
        at_high.append(end - high_at)
        records.append(Event(t=t, type="start" if g == 1 else "spawn", worker="w",
                             generation=g, reason="start" if g == 1 else "high pressure",
                             profile="normal" if g == 1 else "high"))
        records.append(Event(t=t + 1, type="ready", worker="w", generation=g))
        records.append(Event(t=medium_at, type="level", worker="w", generation=g,
                             level="medium", previous="low", metric="rss", value=60e6,
                             threshold=50e6))
        records.append(Event(t=high_at, type="level", worker="w", generation=g, level="high",
                             previous="medium", metric="rss", value=201e6, threshold=200e6))
        records.append(Event(t=end, type="exit", worker="w", generation=g, expected=True,
                             returncode=0))
        k = 1
        while t + k <= end:
            now = t + k
            level = "high" if now >= high_at else "medium" if now >= medium_at else "low"
            records += synthetic.samples("w", [40e6 + 160e6 * k / life], t0=now, generation=g,
                                         level=level)
            k += 1
        t = high_at + rng.uniform(0.05, 0.3)  # the replacement starts at HIGH
    records.sort(key=lambda r: r.t)
    return records, {"at_high": at_high}


def gave_up(seed: int) -> tuple[list[Record], dict[str, float]]:
    """Generations that start above HIGH: each reaches it within the cooldown of becoming
    ready, and after three memwarden gives up (exit status 3). The last one reaches HIGH
    after its last sample was written."""
    rng = random.Random(seed)
    high = 200 * MB
    records: list[Record] = [synthetic.header(thresholds={"medium": 50 * MB, "high": high,
                                                          "critical": 500 * MB})]
    t = T0
    rate = rng.uniform(100, 300) * MB  # bytes/s at start-up
    for g in (1, 2, 3):
        records.append(Event(t=t, type="start" if g == 1 else "spawn", worker="w",
                             generation=g, profile="normal" if g == 1 else "high",
                             reason="start" if g == 1 else "high pressure"))
        ready = t + 1.0
        records.append(Event(t=ready, type="ready", worker="w", generation=g))
        reach = high / rate
        last_sample = t + (2 if g < 3 else 1)
        for k in range(1, int(last_sample - t) + 1):
            v = min(rate * k, 300 * MB)
            records += synthetic.samples("w", [v], t0=t + k, generation=g,
                                         level="high" if t + k >= t + reach + 0.003
                                         and g < 3 else "low")
        high_at = max(t + reach, last_sample + 0.2) if g == 3 else t + reach
        records.append(Event(t=high_at, type="level", worker="w", generation=g, level="high",
                             previous="low", metric="rss", value=high + 1e5, threshold=high))
        records.append(Event(t=high_at, type="baseline_high", worker="w", generation=g))
        t = high_at + 0.01
    records.append(Event(t=t, type="limits_too_small", worker="w", generation=3,
                         message="the limits are too small for worker 'w'",
                         data={"generations": []}))
    records.append(Event(t=t, type="limits_too_small", worker="w", exit_status=3,
                         message="the limits are too small for worker 'w'"))
    records.append(Event(t=t + 0.5, type="shutdown", message="shutting down (finishing)"))
    records.sort(key=lambda r: r.t)
    return records, {"high": high}


def replacement_with_burst(seed: int) -> tuple[list[Record], dict[str, float]]:
    """A fast climb through HIGH recorded at 1 ms in a burst around the level change, a
    replacement spawned on it, and the old generation's last 1 s summary well above the
    crossing (it climbed on while the replacement started)."""
    rng = random.Random(seed)
    high = rng.uniform(150, 300) * MB
    rate = rng.uniform(20, 120) * MB  # bytes/s
    start = rng.uniform(30, 60) * MB
    confirm = 3
    # generation 1: 1 ms ticks from T0 until 1.5 s after the crossing
    cross_s = (high - start) / rate
    ticks = [T0 + i * 0.001 for i in range(int((cross_s + 1.5) / 0.001))]
    values = [start + rate * (x - T0) + rng.gauss(0, 0.02 * MB) for x in ticks]
    first = next(i for i, v in enumerate(values) if v >= high
                 and all(w >= high for w in values[i:i + confirm]))
    confirmed = first + confirm - 1
    t_event = ticks[confirmed] + rng.uniform(0.0002, 0.002)
    records: list[Record] = [synthetic.header(thresholds={"medium": 50 * MB, "high": int(high),
                                                          "critical": 900 * MB})]
    records.append(Event(t=T0, type="start", worker="w", generation=1, profile="normal"))
    records.append(Event(t=T0 + 0.5, type="ready", worker="w", generation=1))
    records += synthetic.summarise("w", ticks, values)
    records.append(Event(t=t_event, type="level", worker="w", generation=1, level="high",
                         previous="medium", metric="rss", value=values[confirmed],
                         threshold=high))
    spawn_t = t_event + 0.001
    records.append(Event(t=spawn_t, type="spawn", worker="w", generation=2, profile="high",
                         reason="high pressure"))
    # generation 2 starts at 30 MB and is ready a second later
    new = [spawn_t + 0.001 * i for i in range(3000)]
    records += synthetic.summarise("w", new, [30 * MB + 1e4 * i for i in range(3000)],
                                   generation=2)
    records.append(Event(t=spawn_t + 1.0, type="ready", worker="w", generation=2))
    records.sort(key=lambda r: r.t)
    # The burst is written a second after the change, with the ring from 2 s before it.
    lo = max(0, confirmed - 2000)
    burst = encode_burst("w", 1, 1000, "level", ticks[lo],
                         [round((x - T0) * 1e9) for x in ticks[lo:]],
                         [int(v) for v in values[lo:]], 1000)
    at = next(i for i, r in enumerate(records) if r.t > t_event + 1.0)
    records.insert(at, burst)
    return records, {"crossing": int(values[first]), "high": high,
                     "last_summary": max(s.rss_max for s in records
                                         if isinstance(s, Sample) and s.generation == 1)}


def gappy_leak(seed: int, seconds: int = 4 * 3600) -> tuple[list[Record], dict[str, float]]:
    """A steady leak recorded in stretches of minutes with longer gaps between them (the
    supervisor was down, the worker kept leaking): most of the growth falls in the gaps."""
    rng = random.Random(seed)
    rate = rng.uniform(20, 120) * MB / 3600
    values = synthetic.series("flat", seconds, seed=seed, base=rng.uniform(80, 200) * MB)
    keep: list[int] = []
    at = 0
    while at < seconds:
        stretch = rng.randint(300, 900)
        keep.extend(range(at, min(at + stretch, seconds)))
        at += stretch + rng.randint(600, 1800)
    records: list[Record] = [synthetic.header()]
    records += [s for i in keep
                for s in synthetic.samples("w", [values[i] + rate * i], t0=T0 + i)]
    return records, {"rate_mb_h": rate * 3600 / MB}


def flat_drift(seed: int, seconds: int = 7200) -> tuple[list[Record], dict[str, float]]:
    """A flat worker whose memory wanders (slowly mean-reverting noise, as caches and
    allocators move), with no steady growth."""
    rng = random.Random(seed)
    base = rng.uniform(80, 300) * MB
    keep = rng.uniform(0.95, 0.995)  # autocorrelation per second
    sd = rng.uniform(0.05, 0.5) * MB
    x = 0.0
    values = []
    for _ in range(seconds):
        x = keep * x + rng.gauss(0, sd)
        values.append(base + x + rng.gauss(0, 0.3 * sd))
    records: list[Record] = [synthetic.header()]
    records += synthetic.samples("w", values)
    return records, {"base": base}


def leak_to_a_far_limit(seed: int, seconds: int = 900) -> tuple[list[Record], dict[str, float]]:
    """A fast leak (about a MB per second) with counters, under a limit far above it: the
    chart's trend line, extended towards the limit, leaves the plot."""
    rng = random.Random(seed)
    rate = rng.uniform(0.6, 2.0) * MB
    values = [100 * MB + rate * i + rng.gauss(0, 0.5 * MB) for i in range(seconds)]
    records: list[Record] = [synthetic.header(limit=8_000_000_000)]
    for i, v in enumerate(values):
        records += synthetic.samples("w", [v], t0=T0 + i, stats={"objects": 2000 + 30 * i})
    return records, {"rate": rate}


__all__ = ["MB", "T0", "flat_drift", "gappy_leak", "gave_up", "generations_at_high",
           "leak_to_a_far_limit", "ramped_sawtooth", "replacement_with_burst", "warmup_with_jitter"]

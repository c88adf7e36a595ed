"""A leak memwarden keeps replacing: generations that each grow at one rate until replaced.

Under a HIGH threshold a leaking worker is replaced long before any one generation is long
enough for the trend tests of `verdict.judge` (20 windows, ten minutes for more than a
suspicion): each generation is short, and on its own says little. Together they say a lot:
the same growth, at the same rate, in generation after generation, each ended by a
replacement. This module pools that evidence.

A generation counts as growing when, after its start-up (to its `ready` event and two sample
periods more, where loading a program reads as growth), the Theil-Sen trend of its window
medians has a 95 % interval above zero, its line explains at least half the variance, and it
still rises in its second half (a warm-up that levels off is not a leak). The pooled rate is
the median of the growing generations' rates; generations more than twice as fast or half as
slow as it are left out as inconsistent. Two consistent generations make a leak `likely`;
three or more, each replaced by memwarden for pressure, `confirmed`. The growth must also
matter, by the same effect-size gate as a single generation's (`verdict.Gate`).
"""

from __future__ import annotations

from dataclasses import dataclass

from snapshots.report import PooledLeak, Verdict
from snapshots.schema import Event, SpawnCause
from snapshots.text import duration
from snapshots.trend import fit
from snapshots.verdict import LIKELY_R2, Gate
from snapshots.windows import Windows, median

#: Fewest windows after start-up for a generation's rate to count.
MIN_POINTS = 6
#: A generation's start-up lasts until its `ready` event (else its first sample) and this
#: many sample periods more: what it allocates to start is not growth, nor its working set.
STARTUP_PERIODS = 2


def startup_end(ready_t: float, period_s: float) -> float:
    """When a generation's start-up ends (the one definition used for rates and peaks)."""
    return ready_t + STARTUP_PERIODS * period_s
#: A generation's rate within this factor of the pooled rate is consistent with it.
CONSISTENT = 2.0


@dataclass(frozen=True)
class GenerationRate:
    """The growth of one generation after its start-up (bytes/s) and how it ended."""

    generation: int
    slope: float
    low: float
    high: float
    growing: bool
    lifetime_s: float
    replaced: bool


def rate(generation: int, w: Windows, after: float, lifetime_s: float, replaced: bool
         ) -> GenerationRate | None:
    """The rate of one generation's windows `w` from `after` (its start-up's end); None when
    fewer than MIN_POINTS windows remain."""
    i = next((k for k, t in enumerate(w.t) if t >= after), len(w))
    ts, vs = w.t[i:], w.med[i:]
    if len(ts) < MIN_POINTS:
        return None
    f = fit(ts, vs)
    half = len(ts) // 2
    tail = fit(ts[half:], vs[half:])
    growing = f.lo > 0 and f.r2 >= LIKELY_R2 and tail.slope >= f.slope / CONSISTENT
    return GenerationRate(generation, f.slope, f.lo, f.hi, growing, lifetime_s, replaced)


def lifetimes(starts: dict[int, float], ends: dict[int, float],
              spawns: list[Event]) -> dict[int, tuple[float, bool]]:
    """Per generation, how long it lasted and whether memwarden replaced it for pressure.

    A generation is replaced for pressure when the next one was spawned for it (a level
    change, the container's pressure: `spawn` events' `data.cause`); it lasted from its start
    to that spawn.
    """
    order = sorted(starts)
    spawned = {e.generation: e for e in spawns}
    out = {}
    for k, g in enumerate(order):
        nxt = spawned.get(order[k + 1]) if k + 1 < len(order) else None
        if nxt is not None and for_pressure(nxt):
            out[g] = (nxt.t - starts[g], True)
        else:
            out[g] = (ends[g] - starts[g], False)
    return out


def for_pressure(spawn: Event) -> bool:
    """Whether `spawn` (a `start` or `spawn` event) started a replacement for pressure: its
    `data.cause` from 1.2; before, its reason names the pressure."""
    cause = spawn.data.get("cause")
    if cause is not None:
        return bool(cause == SpawnCause.PRESSURE)
    return spawn.reason is not None and "pressure" in spawn.reason


def pool(rates: list[GenerationRate], reference: int | None, gate: Gate
         ) -> PooledLeak | None:
    """The leak the generations show together, or None when fewer than two grow alike."""
    growing = [r for r in rates if r.growing]
    if len(growing) < 2:
        return None
    centre = median([r.slope for r in growing])
    alike = [r for r in growing if centre / CONSISTENT <= r.slope <= centre * CONSISTENT]
    if len(alike) < 2:
        return None
    slope = median([r.slope for r in alike])
    if reference:
        matters = slope * 3600.0 / reference >= gate.share_per_h \
            or reference / slope <= gate.horizon_s
    else:
        matters = True  # each generation grew steadily until it ended: no natural size
    replaced = [r for r in alike if r.replaced]
    verdict: Verdict = "suspected"
    if matters:
        verdict = "confirmed" if len(replaced) >= 3 and len(replaced) == len(alike) \
            else "likely"
    spans = [r.lifetime_s for r in replaced]
    return PooledLeak(
        verdict=verdict, rate_mb_s=slope / 1e6,
        low_mb_s=min(r.slope for r in alike) / 1e6, high_mb_s=max(r.slope for r in alike) / 1e6,
        generations=[r.generation for r in alike], replaced=len(replaced),
        lifetime_min_s=min(spans) if spans else None,
        lifetime_max_s=max(spans) if spans else None,
        summary=summary(slope, len(alike), spans),
        left_out=[r.generation for r in growing if r not in alike])


def summary(slope: float, generations: int, spans: list[float]) -> str:
    """The sentence every format prints: `leak: 5.3 MB/s in each of 6 generations, each
    replaced after 8-12 s`."""
    text = f"leak: {slope / 1e6:.1f} MB/s in each of {generations} generations"
    if spans:
        low, high = duration(min(spans)), duration(max(spans))
        after = low if low == high else f"{low.split()[0]}-{high}" \
            if low.split()[1:] == high.split()[1:] else f"{low} to {high}"
        who = "each" if len(spans) == generations else f"{len(spans)} of them"
        text += f", {who} replaced after {after}"
    return text


__all__ = ["CONSISTENT", "MIN_POINTS", "STARTUP_PERIODS", "GenerationRate", "for_pressure",
           "lifetimes", "pool", "rate", "startup_end", "summary"]

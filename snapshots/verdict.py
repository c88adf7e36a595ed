"""From a shape and its fits to a leak verdict with reasons, an attribution and projections.

The verdict has two gates. Statistics: the relevant trend must be significant after the
autocorrelation correction and its 95 % interval must exclude zero. Effect size: the growth
must matter, i.e. reach the reference size (the limit, else the CRITICAL threshold) within
`horizon_s`, or exceed `share_per_h` of it per hour; without any reference, 10 % of the
current size per hour. A drift that passes the first gate but not the second is at most
"suspected": significant is not the same as harmful.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from snapshots import text
from snapshots.report import Attribution, Projection, Targets, Trend, Verdict
from snapshots.shape import GROWTH_SHAPES, Shape
from snapshots.trend import P_SIGNIFICANT, Fit
from snapshots.windows import GROWTH_TARGETS

MBH = 3600.0 / 1e6  # bytes/s -> MB/h
_P_STRONG = 1e-3
#: Least R² of a linear trend for more than a suspicion.
LIKELY_R2 = 0.5
#: The original automaton design's target for Python objects per MB of memory: fewer means
#: each object holds over 100 kB on average, or memory is held outside Python objects.
OBJECTS_PER_MB_TARGET = 10.0


@dataclass(frozen=True)
class Gate:
    """Effect-size settings (see the module docstring)."""

    horizon_s: float = 24 * 3600.0
    share_per_h: float = 0.01
    min_span_s: float = 600.0  # shorter than this and nothing is more than suspected


def trend_out(f: Fit) -> Trend:
    """The report form of a fit."""
    return Trend(slope_mb_h=f.slope * MBH, low_mb_h=f.lo * MBH, high_mb_h=f.hi * MBH,
                 ols_mb_h=f.ols_slope * MBH, r2=f.r2, z=f.z, p=f.p, points=f.n,
                 effective_points=f.n_eff)


def judge(shape: Shape, span_s: float, current: float, reference: int | None,
          gate: Gate) -> tuple[Verdict, list[str]]:
    """Return the verdict for one segment and the reasons, in the order they were weighed."""
    f = shape.relevant
    reasons = [f"shape: {shape.name} ({shape.detail})"]
    if shape.name == "short":
        return "none", reasons
    which = {"sawtooth": "on the baseline", "sawtooth_rising": "on the baseline",
             "plateau": "after warm-up"}.get(shape.name, "on the medians")
    reasons.append(f"trend {which}: {f.slope * MBH:+.2f} MB/h "
                   f"(95 % {f.lo * MBH:+.2f} to {f.hi * MBH:+.2f}), p={f.p:.2g} "
                   f"over {f.n_eff:.0f} effective points")
    significant = f.p < P_SIGNIFICANT and f.lo > 0
    if not significant:
        reasons.append("no significant growth")
        return "none", reasons
    if reference:
        headroom = reference - current
        reach = headroom / f.slope if f.slope > 0 else math.inf
        share = f.slope * 3600.0 / reference
        matters = reach <= gate.horizon_s or share >= gate.share_per_h
        reasons.append(f"at this rate {text.size(reference)} is reached in "
                       f"{text.duration(max(reach, 0))}; growth is {share:.2%} of it per hour")
    else:
        share = f.slope * 3600.0 / max(current, 1.0)
        matters = share >= 0.10
        reasons.append(f"no limit known; growth is {share:.1%} of the current size per hour")
    if not matters:
        reasons.append("the drift is significant but too small to matter within "
                       f"{text.duration(gate.horizon_s)}")
        return "suspected", reasons
    if shape.name not in GROWTH_SHAPES:
        reasons.append(f"a {shape.name} shape is not a leak pattern; growth is only suspected")
        return "suspected", reasons
    if span_s < gate.min_span_s:
        reasons.append(f"the generation lasted {text.duration(span_s)}; at least "
                       f"{text.duration(gate.min_span_s)} of one generation are needed for "
                       "more than a suspicion")
        return "suspected", reasons
    if shape.name == "linear" and f.r2 < LIKELY_R2:
        # Memory that wanders slowly (caches, allocators) passes trend tests on a short
        # record, with a line that explains little of it: real growth soon explains most.
        reasons.append(f"the line explains {f.r2:.0%} of the variance (less than "
                       f"{LIKELY_R2:.0%}): growth is only suspected until more is recorded")
        return "suspected", reasons
    if f.p < _P_STRONG and (f.r2 >= 0.8 or shape.name != "linear") and f.n_eff >= 30 \
            and span_s >= 3600:
        reasons.append("strong, sustained growth for over an hour")
        return "confirmed", reasons
    return "likely", reasons


def attribute(rss_fit: Fit, growing: bool, objects: Fit | None, objects_level: float | None,
              rss_level: float, trims: int, trims_dropped: bool, steady: bool = False
              ) -> Attribution:
    """Name where growth comes from, using the worker's object counters when it sends them.

    `steady`: memory grows at one rate (a linear shape, or a leak pooled over generations).
    Fragmentation holds on to what trims free; it does not grow at a steady rate, so steady
    growth beside bounded object counts is memory held outside the counted objects."""
    per_mb = (objects_level / (rss_level / 1e6)) if objects_level and rss_level > 0 else None
    if not growing:
        return Attribution(kind="none", detail="memory is not growing", objects_per_mb=per_mb)
    if objects is None or objects_level is None:
        return Attribution(kind="unknown", detail="the worker sends no object counters; "
                           "use the workers library (or send `stats`) to tell Python objects "
                           "from native memory")
    objects_growing = objects.p < P_SIGNIFICANT and objects.lo > 0 and \
        objects.slope * 3600.0 > 0.02 * max(objects_level, 1.0)
    if objects_growing:
        per_object = rss_fit.slope / objects.slope if objects.slope > 0 else None
        return Attribution(kind="python_objects",
                           detail=f"objects grow with memory ({objects.slope * 3600:+.0f}/h); "
                           "look for a store or cache without a bound",
                           objects_per_mb=per_mb, bytes_per_object=per_object)
    if trims and trims_dropped and not steady:
        return Attribution(kind="fragmentation",
                           detail="object counts stay bounded and trims drop objects, yet "
                           "memory does not come back: allocator fragmentation or retention",
                           objects_per_mb=per_mb)
    return Attribution(kind="native",
                       detail="memory grows while the object counts the worker reports do "
                       "not: it is held outside them (a module-level cache, a C extension, a "
                       "subprocess) or retained by the allocator",
                       objects_per_mb=per_mb)


def growth_rating(bytes_per_s: float) -> str:
    """`healthy` under 1 MB/s, `elevated` from 1 MB/s, `warning` over 5, `critical` over 10."""
    healthy, warning, critical = GROWTH_TARGETS
    if bytes_per_s < healthy:
        return "healthy"
    if bytes_per_s <= warning:
        return "elevated"
    return "warning" if bytes_per_s <= critical else "critical"


def targets(sustained: float | None, peak: float | None, seconds_over: list[float],
            objects_per_mb: float | None) -> Targets:
    """Judge growth (bytes/s: the sustained trend, None when not judged; the highest
    measured live) and objects per MB against the original automaton design's targets."""
    return Targets(
        growth_mb_s=sustained / 1e6 if sustained is not None else None,
        growth=growth_rating(sustained) if sustained is not None else "unknown",
        growth_peak_mb_s=peak / 1e6 if peak is not None else None,
        growth_peak=growth_rating(peak) if peak is not None else None,
        seconds_over=seconds_over, objects_per_mb=objects_per_mb,
        objects=(None if objects_per_mb is None else
                 "met" if objects_per_mb > OBJECTS_PER_MB_TARGET else "below"))


def project(rate: float | None, low: float, high: float, at_end: float, end_t: float,
            generation: int, rate_from: str, targets: dict[str, int]) -> list[Projection]:
    """Time to each target from the record's end (see "Time to a threshold" in
    docs/analyze.md): from `at_end`, the memory of `generation` (the one still running at
    `end_t`), at `rate` bytes/s with the range from `high` (earliest) to `low` (latest).
    `rate` None or not above zero: never reached at this rate (`seconds` None)."""
    out = []
    for name, size in targets.items():
        gap = size - at_end

        def at(r: float | None, gap: float = gap) -> float | None:
            return gap / r if r is not None and r > 0 else None

        reached = gap <= 0
        out.append(Projection(
            target=name, bytes=size, seconds=0.0 if reached else at(rate),
            earliest=0.0 if reached else at(high if rate else None),
            latest=0.0 if reached else at(low if rate else None), reached=reached,
            from_t=end_t, from_bytes=int(at_end), generation=generation,
            rate_from=rate_from if rate else ""))
    return out


__all__ = ["LIKELY_R2", "MBH", "OBJECTS_PER_MB_TARGET", "Gate", "attribute",
           "growth_rating", "judge", "project", "targets", "trend_out"]

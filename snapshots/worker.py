"""One worker of one source, judged: its generations, verdict, figures and lifecycle.

Every generation is analysed on its own (a replacement resets memory, so a trend across
generations would measure the replacements, not the worker); the leak its generations show
together is pooled (`pooled.py`). The worker's verdict is the worst of its generations,
raised to "confirmed" when growth recurs in two or more, and by the pooled evidence. Its main
generation (the last one long enough to judge) gives the shape and the chart's trend; time to
a threshold comes from the generation running at the record's end. Levels, flaps and
replacements are per generation (`lifecycle.py`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from snapshots import lifecycle, pooled, recommend
from snapshots.plausible import MAX_BYTES
from snapshots.report import (
    VERDICTS,
    Attribution,
    Ending,
    Generation,
    LevelTime,
    PooledLeak,
    Projection,
    Segment,
    Targets,
    Verdict,
    Worker,
)
from snapshots.schema import Event
from snapshots.series import LEVELS, WorkerData
from snapshots.shape import MIN_WINDOWS, Shape, classify
from snapshots.trend import fit, peak
from snapshots.verdict import Gate, attribute, judge, project, targets, trend_out
from snapshots.windows import GenerationData, Windows, median


@dataclass(frozen=True)
class Options:
    """How to analyse: window length, effect-size gate, cap on windows per generation, and
    the safety margin of the recommendation."""

    window_s: float = 1.0
    gate: Gate = field(default_factory=Gate)
    max_windows: int = 2000
    margin: float = recommend.MARGIN
    jobs: int | None = None  # processes for several sources; None: every core allowed


@dataclass
class GenerationResult:
    generation: int
    windows: Windows
    shape: Shape
    verdict: Verdict
    reasons: list[str]
    start: float
    end: float
    data: GenerationData
    line: lifecycle.Timeline | None = None


@dataclass
class WorkerResult:
    """The report entry plus what a chart needs (windows, shape fits, level runs, events)."""

    out: Worker
    data: WorkerData
    generations: list[GenerationResult]
    main: GenerationResult | None
    level_runs: list[tuple[float, float, str]]



def _analyse_generation(gd: GenerationData, reference: int | None,
                        options: Options) -> GenerationResult:
    w = gd.finish()
    shape = classify(w)
    span = gd.last_t - gd.first_t if gd.samples else 0.0
    verdict, reasons = judge(shape, span, peak(w, shape.relevant), reference, options.gate)
    return GenerationResult(gd.generation, w, shape, verdict, reasons, gd.first_t, gd.last_t,
                            gd)


def analyze_worker(data: WorkerData, thresholds: dict[str, int], limit: int | None,
                   period_s: float, options: Options,
                   source_events: list[Event] | None = None, measure: str = "rss"
                   ) -> WorkerResult:
    """Analyse one worker's folded data (see the module docstring)."""
    reference = limit or thresholds.get("critical")
    gens = [_analyse_generation(gd, reference, options)
            for _, gd in sorted(data.gens.items())]
    judged = [g for g in gens if len(g.windows) >= MIN_WINDOWS]
    main = judged[-1] if judged else (max(gens, key=lambda g: len(g.windows)) if gens else None)

    by_gen: dict[int, list[Event]] = {}
    for e in data.events:
        by_gen.setdefault(e.generation, []).append(e)
    for g in gens:
        g.line = lifecycle.timeline(g.data, by_gen.get(g.generation, []), period_s)
    lines = {g.generation: g.line for g in gens if g.line is not None}
    level_runs = sorted((run for line in lines.values() for run in line.runs),
                        key=lambda r: r[0])
    seconds = dict.fromkeys(LEVELS, 0.0)
    for line in lines.values():
        for k, v in line.seconds.items():
            seconds[k] = seconds.get(k, 0.0) + v
    total = sum(seconds.values()) or 1.0
    changes = lifecycle.transitions(data, lines)
    flaps = lifecycle.flaps(changes)
    start = min((g.start for g in gens), default=data.events[0].t if data.events else 0.0)
    end = max((g.end for g in gens), default=data.events[-1].t if data.events else 0.0)
    span = end - start
    flaps_h = flaps / (span / 3600.0) if span > 0 else 0.0
    max_level = max((LEVELS.index(line.max_level) for line in lines.values()), default=0)
    trims = lifecycle.trims(data)
    ready = {e.generation: e.t for e in data.events if e.type == "ready"}
    # At ready: what memwarden measured when the generation became ready (the `ready`
    # event's figure, the one its log prints), else its first sample period from then.
    measured = {e.generation: e.rss for e in data.events
                if e.type == "ready" and e.rss is not None and 0 <= e.rss <= MAX_BYTES}
    at_ready = {g.generation: measured.get(g.generation)
                if g.generation in measured
                else lifecycle.after(g.data, ready.get(g.generation, g.start)) for g in gens}
    replaced = lifecycle.replacements(data, [g.data for g in gens], at_ready)
    leak, rates = _pooled(data, gens, ready, reference, options)
    verdict, reasons = _verdict(data, gens, main, leak)
    ending = lifecycle.ending(data, source_events or [])
    targets_map = {k: v for k, v in (("high", thresholds.get("high")),
                                     ("critical", thresholds.get("critical")),
                                     ("limit", limit)) if v}
    out = Worker(
        source=data.source, worker=data.worker, start=start, end=end, samples=data.samples,
        windows=sum(len(g.windows) for g in gens),
        window_s=main.data.width if main else options.window_s,
        limit=limit, thresholds=thresholds, verdict=verdict, reasons=reasons,
        main_generation=main.generation if main else 0,
        segment=_segment(main) if main else None,
        attribution=_attribution(data, main, gens, leak, trims.count,
                                 trims.dropped_share_mean is not None
                                 and trims.dropped_share_mean > 0),
        projections=_projections(gens, leak, ending, end, targets_map),
        levels=[LevelTime(level=k, seconds=v, share=v / total) for k, v in seconds.items()],
        max_level=LEVELS[max_level], transitions=len(changes),
        transition_list=changes[:200], flaps_per_hour=flaps_h,
        flapping=flaps >= 3 and flaps_h >= 6.0,
        replacements=replaced, trims=trims,
        gc=lifecycle.gc(data, [g.generation for g in gens], span),
        generations=[_generation_out(data, g, by_gen.get(g.generation, []),
                                     at_ready[g.generation], rates.get(g.generation),
                                     leak is not None and g.generation in leak.generations)
                     for g in gens],
        events=dict(Counter(e.type for e in data.events)), bursts=data.bursts,
        ending=ending, leak=leak, measure=measure)
    out.targets = _targets(out, main, gens, leak)
    return WorkerResult(out, data, gens, main, level_runs)


def _pooled(data: WorkerData, gens: list[GenerationResult], ready: dict[int, float],
            reference: int | None, options: Options
            ) -> tuple[PooledLeak | None, dict[int, pooled.GenerationRate]]:
    """The leak every generation shows together (`pooled.py`), and each generation's rate
    after start-up (absent when too short, and for a single generation: there is nothing to
    pool, and its own trend is in the table)."""
    if len(gens) < 2:
        return None, {}
    lasted = pooled.lifetimes({g.generation: g.start for g in gens},
                              {g.generation: g.end for g in gens},
                              [e for e in data.events if e.type in ("spawn", "start")])
    rates = {g.generation: r for g in gens
             if (r := pooled.rate(g.generation, g.windows, pooled.startup_end(
                 ready.get(g.generation, g.start), data.period_s), *lasted[g.generation]))
             is not None}
    return pooled.pool(list(rates.values()), reference, options.gate), rates


def _verdict(data: WorkerData, gens: list[GenerationResult], main: GenerationResult | None,
             leak: PooledLeak | None) -> tuple[Verdict, list[str]]:
    if main is None:
        kinds = sorted({e.type for e in data.events})
        return "none", [f"no samples; events only ({', '.join(kinds) or 'none'})"]
    verdict = main.verdict
    reasons = list(main.reasons)
    if leak is not None:
        reasons.insert(0, f"{leak.summary} (rates {leak.low_mb_s:.2f} to "
                       f"{leak.high_mb_s:.2f} MB/s after start-up; generations "
                       + ", ".join(map(str, leak.generations)) + f"): {leak.verdict}")
        if VERDICTS.index(leak.verdict) > VERDICTS.index(verdict):
            verdict = leak.verdict
    elif main.shape.name == "short":
        longest = max(len(g.windows) for g in gens)
        reasons.append(f"no generation was recorded long enough to judge a trend (the longest "
                       f"has {longest} windows of {main.data.width:g} s)")
    for g in gens:
        if g is not main and VERDICTS.index(g.verdict) > VERDICTS.index(verdict):
            verdict = g.verdict
            reasons.append(f"generation {g.generation}: {g.verdict} ({g.shape.name})")
    growing = [g.generation for g in gens if g.verdict in ("likely", "confirmed")]
    if len(growing) >= 2:
        verdict = "confirmed"
        reasons.append("growth recurs after replacement in generations "
                       + ", ".join(map(str, growing)))
    return verdict, reasons


def _segment(g: GenerationResult) -> Segment:
    s = g.shape
    return Segment(shape=s.name, shape_detail=s.detail, trend=trend_out(s.trend),
                   baseline=trend_out(s.baseline), relevant=trend_out(s.relevant),
                   verdict=g.verdict, reasons=g.reasons)


def _attribution(data: WorkerData, main: GenerationResult | None,
                 gens: list[GenerationResult], leak: PooledLeak | None, trims: int,
                 dropped: bool) -> Attribution:
    """Where growth comes from, judged on the main generation; for a pooled leak whose main
    generation shows no growth of its own, on the longest generation of the leak."""
    judged = main is not None and main.shape.name != "short"
    growing = judged and main is not None and main.verdict != "none" \
        and main.shape.relevant.slope > 0
    if leak is not None and not growing:
        main = max((g for g in gens if g.generation in leak.generations),
                   key=lambda g: len(g.windows))
        rss_fit, growing = fit(main.windows.t, main.windows.med), True
    elif main is None or not judged:
        return Attribution(kind="unknown", detail="no generation was recorded long enough "
                           f"({MIN_WINDOWS} windows) to tell whether memory grows")
    else:
        rss_fit = main.shape.relevant
    objects_fit = None
    objects_level = None
    if data.has_counters:
        ts, vs, _ = data.counter_series("objects", main.generation)
        if len(vs) >= 4:
            objects_fit = fit(ts, vs)
            objects_level = median(vs)
    rss_level = median(main.windows.med) if len(main.windows) else 0.0
    steady = leak is not None or main.shape.name == "linear"
    return attribute(rss_fit, growing, objects_fit, objects_level, rss_level, trims, dropped,
                     steady)


def _targets(w: Worker, main: GenerationResult | None, gens: list[GenerationResult],
             leak: PooledLeak | None) -> Targets:
    sustained = None
    if leak is not None:
        sustained = leak.rate_mb_s * 1e6
    elif main is not None and main.shape.name != "short":
        sustained = max(0.0, main.shape.relevant.slope)
    peaks = [g.data.growth_max for g in gens if g.data.growth_max > 0]
    period = gens[0].data.period_s if gens else 1.0
    over = [sum(g.data.growth_over[i] for g in gens) * period for i in range(3)]
    return targets(sustained, max(peaks) if peaks else None, over,
                   w.attribution.objects_per_mb)


def _projections(gens: list[GenerationResult], leak: PooledLeak | None, ending: Ending | None,
                 end: float, targets: dict[str, int]) -> list[Projection]:
    """Time to each threshold from the record's end, for the newest generation running there
    (none when supervision ended: no generation is left to reach anything). Its rate is its
    own trend when it was judged, else the pooled leak's; not at this rate when its verdict
    is `none` (no significant growth) or the rate is not above zero."""
    if not gens or not targets or (ending is not None and ending.kind != "stopped"):
        return []
    # The newest generation sampled in the record's last two periods: during a replacement
    # the one being retired may have the very last sample, but it is on its way out.
    live = max((g for g in gens if end - g.end <= 2 * g.data.period_s),
               key=lambda g: g.generation)
    at_end = max((hi for _, _, hi in live.data.tail[-1:]), default=0.0)
    rate: float | None = None
    low = high = 0.0
    source = ""
    f = live.shape.relevant
    if live.shape.name != "short" and live.verdict != "none" and f.slope > 0:
        rate, low, high, source = f.slope, f.lo, f.hi, "trend"
    elif leak is not None:
        rate, low, high = leak.rate_mb_s * 1e6, leak.low_mb_s * 1e6, leak.high_mb_s * 1e6
        source = "pooled"
    return project(rate, low, high, at_end, end, live.generation, source, targets)


def _generation_out(data: WorkerData, g: GenerationResult, events: list[Event],
                    at_ready: int | None, rate: pooled.GenerationRate | None, in_leak: bool
                    ) -> Generation:
    """The table row of one generation; `events` are the generation's own."""
    gd = g.data
    head = [v for _, v in gd.head[:5]] or [0.0]
    tail = [v for _, v, _ in gd.tail[-5:]] or [0.0]
    # "spawn" starts a replacement; "start" a first generation or a crash restart.
    spawn = next((e for e in events if e.type in ("spawn", "start")), None)
    line = g.line
    found = lifecycle.finding(events)
    return Generation(
        generation=g.generation, profile=spawn.profile if spawn else None, start=g.start,
        end=g.end, uptime_s=g.end - g.start, samples=gd.samples, rss_start=int(median(head)),
        rss_end=int(median(tail)), rss_max=int(max(g.windows.hi, default=0.0)),
        slope_mb_h=g.shape.relevant.slope * 3600 / 1e6, shape=g.shape.name,
        verdict=g.verdict, max_level=line.max_level if line else "low",
        trims=sum(1 for e in events if e.type == "trimmed"),
        objects_per_mb=lifecycle.objects_per_mb(data, g.generation),
        level_seconds={k: v for k, v in line.seconds.items() if v} if line else {},
        growth_peak_mb_s=gd.growth_max / 1e6 if gd.growth_max > 0 else None,
        finding=found[1] if found else None, finding_t=found[0] if found else None,
        at_ready=at_ready, growth_mb_s=rate.slope / 1e6 if rate else None, in_leak=in_leak)



__all__ = ["GenerationResult", "Options", "WorkerResult", "analyze_worker"]

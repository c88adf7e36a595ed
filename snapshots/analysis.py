"""`memwarden analyze`: read snapshots, fold them into per-worker windows, judge each worker.

Per worker, every generation is analysed on its own (a replacement resets memory, so a trend
across generations would measure the replacements, not the worker). The worker's verdict is
the worst of its generations, raised to "confirmed" when growth recurs in two or more
generations. Its main generation (the last one long enough to judge) gives the shape, the
projections and the chart's trend.
"""

from __future__ import annotations

import bisect
import itertools
import math
import operator
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from snapshots import reader
from snapshots.report import (
    VERDICTS,
    Attribution,
    Gc,
    Generation,
    LevelTime,
    ReadSummary,
    Replacement,
    Report,
    Segment,
    SourceSummary,
    Transition,
    Trims,
    Verdict,
    Worker,
)
from snapshots.schema import Event
from snapshots.series import ANALYSIS_TYPES, LEVELS, Collector, Frame, WorkerData
from snapshots.shape import MIN_WINDOWS, Shape, classify
from snapshots.trend import Fit, fit, thin
from snapshots.verdict import Gate, attribute, judge, project, trend_out
from snapshots.windows import GenerationData, Windows, median, quantile

#: A level change undone within this time counts as a flap.
FLAP_WINDOW_S = 60.0


@dataclass(frozen=True)
class Options:
    """How to analyse: window length, effect-size gate, cap on windows per generation."""

    window_s: float = 1.0
    gate: Gate = field(default_factory=Gate)
    max_windows: int = 2000


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


@dataclass
class WorkerResult:
    """The report entry plus what a chart needs (windows, shape fits, level runs, events)."""

    out: Worker
    data: WorkerData
    generations: list[GenerationResult]
    main: GenerationResult | None
    level_runs: list[tuple[float, float, str]]


@dataclass
class Analysis:
    report: Report
    workers: list[WorkerResult]


def analyze(paths: Iterable[str], options: Options | None = None) -> Analysis:
    """Read and analyse the snapshots `paths` name.

    Raises reader.SnapshotError (nothing readable) and reader.UnsupportedVersion.
    """
    options = options or Options()
    stats = reader.ReadStats()
    collector = Collector()
    srcs = reader.sources(list(paths))
    summaries: list[SourceSummary] = []
    headers = {}
    for src in srcs:
        label = src.label
        collector.frames[label] = _frame(src, options)
        for sf in src.files:
            for chunk in reader.iter_chunks(sf, stats, types=ANALYSIS_TYPES):
                for h in collector.add(label, chunk):
                    reader.check_version(h.version, sf.path)
        h = src.header
        headers[label] = h
        summaries.append(SourceSummary(
            label=label, host=src.key[0], pod=src.key[2] or None, container=src.key[3] or None,
            files=len(src.files), limit=h.limit if h else None, version=h.version if h else None,
            events=dict(Counter(e.type for e in collector.source_events.get(label, [])))))
    collector.finish()
    results = []
    for (label, _), data in sorted(collector.workers.items()):
        h = headers.get(label)
        thresholds = dict(h.thresholds) if h else {}
        limit = data.limit or (h.limit if h else None)
        period = h.sample_period_s if h else 1.0
        results.append(analyze_worker(data, thresholds, limit, period, options))
    worst = max((VERDICTS.index(r.out.verdict) for r in results), default=0)
    max_level = max((LEVELS.index(r.out.max_level) for r in results), default=0)
    report = Report(
        generated=time.time(), verdict=VERDICTS[worst], max_level=LEVELS[max_level],
        read=ReadSummary(files=stats.files, bytes=stats.bytes, records=stats.records,
                         corrupt=stats.corrupt, truncated=stats.truncated,
                         unknown=stats.unknown, dropped_by_writer=collector.dropped,
                         problems=stats.problems[:50]),
        sources=summaries, workers=[r.out for r in results])
    return Analysis(report, results)


def _frame(src: reader.Source, options: Options) -> Frame:
    """Window width for a source: `window_s`, widened to keep at most `max_windows` per
    generation over the source's span (from its first header to its last record)."""
    h = src.header
    period = h.sample_period_s if h else 1.0
    first = reader.first_time(src.files[0])
    last = reader.last_time(src.files[-1])
    if last is None:
        stamps = [f.header.t for f in src.files if f.header]
        # compressed: estimate the last file's length from the previous one's
        last = stamps[-1] + (stamps[-1] - stamps[-2]) if len(stamps) >= 2 else None
    width = options.window_s
    if first is not None and last is not None and last > first:
        width = max(width, (last - first) / options.max_windows)
    return Frame(origin=first or 0.0, width=width, period_s=period,
                 max_windows=options.max_windows)


def _analyse_generation(gd: GenerationData, reference: int | None,
                        options: Options) -> GenerationResult:
    w = gd.finish()
    shape = classify(w)
    span = gd.last_t - gd.first_t if gd.samples else 0.0
    verdict, reasons = judge(shape, span, _peak(w, shape.relevant), reference, options.gate)
    return GenerationResult(gd.generation, w, shape, verdict, reasons, gd.first_t, gd.last_t,
                            gd)


def _peak(w: Windows, f: Fit) -> float:
    """Where the peaks will be at the end: the line at the end plus the peaks' usual excess."""
    if not len(w):
        return 0.0
    ts, his = thin(w.t, w.hi, 1000)
    excess = quantile([h - f.at(x) for x, h in zip(ts, his, strict=True)], 0.95)
    return f.at(w.t[-1]) + max(0.0, excess)


def analyze_worker(data: WorkerData, thresholds: dict[str, int], limit: int | None,
                   period_s: float, options: Options) -> WorkerResult:
    """Analyse one worker's folded data (see the module docstring)."""
    n = data.samples
    reference = limit or thresholds.get("critical")
    gens = [_analyse_generation(gd, reference, options)
            for _, gd in sorted(data.gens.items())]
    judged = [g for g in gens if len(g.windows) >= MIN_WINDOWS]
    main = judged[-1] if judged else (max(gens, key=lambda g: len(g.windows)) if gens else None)

    verdict: Verdict = "none"
    reasons: list[str] = []
    if main is not None:
        verdict = main.verdict
        reasons = list(main.reasons)
        for g in gens:
            if g is not main and VERDICTS.index(g.verdict) > VERDICTS.index(verdict):
                verdict = g.verdict
                reasons.append(f"generation {g.generation}: {g.verdict} ({g.shape.name})")
        growing = [g.generation for g in gens if g.verdict in ("likely", "confirmed")]
        if len(growing) >= 2:
            verdict = "confirmed"
            reasons.append("growth recurs after replacement in generations "
                           + ", ".join(map(str, growing)))
    else:
        kinds = sorted({e.type for e in data.events})
        reasons = [f"no samples; events only ({', '.join(kinds) or 'none'})"]

    events = data.events
    trims = [e for e in events if e.type == "trimmed"]
    trims_out = _trims(data, trims)
    attribution = _attribution(data, main, trims_out)
    targets = {k: v for k, v in (("high", thresholds.get("high")),
                                 ("critical", thresholds.get("critical")),
                                 ("limit", limit)) if v}
    projections = (project(main.shape.relevant, _peak(main.windows, main.shape.relevant),
                           targets) if main is not None and main.shape.name != "short" else [])
    level_runs = data.level_runs()
    total = sum(data.seconds.values()) or 1.0
    levels = [LevelTime(level=k, seconds=v, share=v / total) for k, v in data.seconds.items()]
    transitions = _transitions(data, level_runs)
    flaps = sum(1 for a, b in itertools.pairwise(transitions)
                if b.level == a.previous and b.t - a.t <= FLAP_WINDOW_S)
    start = min((g.start for g in gens), default=data.events[0].t if data.events else 0.0)
    end = max((g.end for g in gens), default=data.events[-1].t if data.events else 0.0)
    span = end - start
    flaps_h = flaps / (span / 3600.0) if span > 0 else 0.0
    seen = set().union(*(g.data.levels for g in gens))
    max_level = max((LEVELS.index(x) for x in seen if x in LEVELS), default=0)
    out = Worker(
        source=data.source, worker=data.worker, start=start, end=end, samples=n,
        windows=sum(len(g.windows) for g in gens),
        window_s=main.data.width if main else options.window_s,
        limit=limit, thresholds=thresholds, verdict=verdict, reasons=reasons,
        main_generation=main.generation if main else 0,
        segment=_segment(main) if main else None,
        attribution=attribution, projections=projections, levels=levels,
        max_level=LEVELS[max_level], transitions=len(transitions),
        transition_list=transitions[:200], flaps_per_hour=flaps_h,
        flapping=flaps >= 3 and flaps_h >= 6.0,
        replacements=_replacements(data, gens), trims=trims_out,
        gc=_gc(data, [g.generation for g in gens], span),
        generations=[_generation_out(data, g, trims) for g in gens],
        events=dict(Counter(e.type for e in events)), bursts=data.bursts)
    return WorkerResult(out, data, gens, main, level_runs)


def _segment(g: GenerationResult) -> Segment:
    s = g.shape
    return Segment(shape=s.name, shape_detail=s.detail, trend=trend_out(s.trend),
                   baseline=trend_out(s.baseline), relevant=trend_out(s.relevant),
                   verdict=g.verdict, reasons=g.reasons)


def _attribution(data: WorkerData, main: GenerationResult | None, trims: Trims
                 ) -> Attribution:
    growing = main is not None and main.verdict != "none" and main.shape.relevant.slope > 0
    rss_fit = main.shape.relevant if main else fit([], [])
    objects_fit = None
    objects_level = None
    if data.has_counters and main is not None:
        ts, vs, _ = data.counter_series("objects", main.generation)
        if len(vs) >= 4:
            objects_fit = fit(ts, vs)
            objects_level = median(vs)
    rss_level = median(main.windows.med) if main and len(main.windows) else 0.0
    dropped = trims.dropped_share_mean is not None and trims.dropped_share_mean > 0
    return attribute(rss_fit, growing, objects_fit, objects_level, rss_level, trims.count,
                     dropped)


def _transitions(data: WorkerData, runs: list[tuple[float, float, str]]
                 ) -> list[Transition]:
    """Level changes: the recorded `level` events, else the changes between level runs."""
    recorded = [e for e in data.events if e.type == "level" and e.level]
    if recorded:
        return [Transition(t=e.t, level=e.level or "", previous=e.previous or "low",
                           metric=e.metric, value=e.value, threshold=e.threshold)
                for e in recorded]
    return [Transition(t=b[0], level=b[2], previous=a[2])
            for a, b in itertools.pairwise(runs) if a[2] != b[2] and b[0] <= a[1]]


def _replacements(data: WorkerData, gens: list[GenerationResult]) -> list[Replacement]:
    spawns = {e.generation: e for e in data.events if e.type == "spawn"}
    ready = {e.generation: e for e in data.events if e.type == "ready"}
    out = []
    for k in range(1, len(gens)):
        old, new = gens[k - 1], gens[k]
        spawn = spawns.get(new.generation)
        t0 = spawn.t if spawn else new.start
        before = _before(old, t0)
        r = ready.get(new.generation)
        start = r.t if r else new.start
        after_values = [v for t, v in new.data.head if t >= start] or [
            v for _, v in new.data.head]
        after = int(median(after_values)) if after_values else None
        nxt = gens[k + 1] if k + 1 < len(gens) else None
        nxt_spawn = spawns.get(nxt.generation) if nxt else None
        held_until = nxt_spawn.t if nxt_spawn else (nxt.start if nxt else new.end)
        out.append(Replacement(
            generation=new.generation, t=t0, reason=spawn.reason if spawn else None,
            profile=spawn.profile if spawn else None, rss_before=before, rss_after=after,
            freed=(before - after) if before is not None and after is not None else None,
            ready_after_s=(r.t - t0) if r else None, held_s=held_until - start,
            until="replaced" if nxt else "end of record"))
    return out


def _before(g: GenerationResult, t0: float) -> int | None:
    """The old generation's peak just before `t0`: its last samples, else its last window."""
    peaks = [mx for t, _, mx in g.data.tail if t <= t0]
    if peaks:
        return int(max(peaks))
    w = g.windows
    i = bisect.bisect_right(w.t, t0) - 1
    return int(w.hi[i]) if i >= 0 else (int(w.hi[0]) if len(w) else None)


def _trims(data: WorkerData, trims: list[Event]) -> Trims:
    if not trims:
        return Trims()
    freed = [max(0, (e.rss or 0) - (e.rss_after or 0)) for e in trims]
    freed_share = [f / e.rss for f, e in zip(freed, trims, strict=True) if e.rss]
    dropped_share = []
    objects_series = data.counter_series("objects")
    for e in trims:
        if e.dropped is None:
            continue
        ts, vs, _ = objects_series
        i = bisect.bisect_right(ts, e.t) - 1
        objects = vs[i] if i >= 0 else math.nan
        if not math.isnan(objects) and objects > 0:
            dropped_share.append(min(1.0, e.dropped / objects))
    ms = [e.ms for e in trims if e.ms is not None]
    return Trims(count=len(trims), freed_total=sum(freed), freed_mean=sum(freed) / len(freed),
                 freed_share_mean=sum(freed_share) / len(freed_share) if freed_share else None,
                 dropped_share_mean=(sum(dropped_share) / len(dropped_share)
                                     if dropped_share else None),
                 ms_mean=sum(ms) / len(ms) if ms else None)


def _increase(values: list[float]) -> float | None:
    """Total increase of a cumulative counter, counting a reset (a new process) as a restart."""
    v = [x for x in values if x == x]  # NaN is the only value unequal to itself
    if not v:
        return None
    if all(map(operator.le, v[:-1], v[1:])):  # the usual case: no reset
        return v[-1] - v[0]
    total = 0.0
    for prev, cur in itertools.pairwise(v):
        total += cur - prev if cur >= prev else cur
    return total


def _gc(data: WorkerData, generations: Iterable[int], span: float) -> Gc:
    if not data.has_counters:
        return Gc()
    pause: float | None = None
    count: float | None = None
    for g in generations:  # counters restart with each process: add them up per generation
        p = _increase(data.counter_series("gc_pause_ms", g)[1])
        c = _increase(data.counter_series("gc_collections", g)[1])
        pause = p if pause is None else pause + (p or 0.0)
        count = c if count is None else count + (c or 0.0)
    return Gc(collections=count, pause_ms_total=pause,
              pause_ms_per_hour=(pause / (span / 3600.0)) if pause is not None and span else None,
              pause_ms_mean=(pause / count) if pause is not None and count else None)


def _generation_out(data: WorkerData, g: GenerationResult, trims: list[Event]) -> Generation:
    gd = g.data
    head = [v for _, v in gd.head[:5]] or [0.0]
    tail = [v for _, v, _ in gd.tail[-5:]] or [0.0]
    # "spawn" starts a replacement; "start" a first generation or a crash restart.
    spawn = next((e for e in data.events
                  if e.type in ("spawn", "start") and e.generation == g.generation), None)
    lv = max((LEVELS.index(x) for x in gd.levels if x in LEVELS), default=0)
    _, vs, rs = data.counter_series("objects", g.generation)
    objects = [o / (r / 1e6) for o, r in zip(vs, rs, strict=True) if r > 0]
    return Generation(
        generation=g.generation, profile=spawn.profile if spawn else None, start=g.start,
        end=g.end, uptime_s=g.end - g.start, samples=gd.samples, rss_start=int(median(head)),
        rss_end=int(median(tail)), rss_max=int(max(g.windows.hi, default=0.0)),
        slope_mb_h=g.shape.relevant.slope * 3600 / 1e6, shape=g.shape.name,
        verdict=g.verdict, max_level=LEVELS[lv],
        trims=sum(1 for e in trims if e.generation == g.generation),
        objects_per_mb=median(objects) if objects else None)


__all__ = ["Analysis", "GenerationResult", "Options", "WorkerResult", "analyze",
           "analyze_worker"]

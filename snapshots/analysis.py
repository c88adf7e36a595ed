"""`memwarden analyze`: read the sources, analyse each (in parallel), assemble the report.

Each source (a host, pod or container) is read, folded into per-worker windows
(`series.py`), its workers judged (`worker.py`) and its settings recommended
(`recommend.py`) on its own, in a process of its own when there are several; the report
then gathers them, with the workloads of a fleet (`fleet.py`).
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

from snapshots import fleet, reader, recommend
from snapshots.observed import observed
from snapshots.plausible import time_ok
from snapshots.pulled import pulled
from snapshots.report import (
    VERDICTS,
    ReadSummary,
    Recommendation,
    Report,
    SourceSummary,
)
from snapshots.schema import Header
from snapshots.series import ANALYSIS_TYPES, LEVELS, Collector, Frame
from snapshots.worker import GenerationResult, Options, WorkerResult, analyze_worker

#: Growth is judged live over `pressure.growth_window` (5 s by default): a generation's first
#: window of growth is its start-up, not growth to judge against the targets.
_GROWTH_WINDOW_S = 5.0


@dataclass
class Analysis:
    """The report, and each worker's result for what only the HTML charts need."""

    report: Report
    workers: list[WorkerResult]


@dataclass
class _Part:
    """One source analysed, in a process of its own when there are several."""

    summary: SourceSummary
    header: Header | None
    results: list[WorkerResult]
    observed: list[recommend.Observed]
    advice: Recommendation | None
    stats: reader.ReadStats
    dropped: int
    implausible: int
    beyond_workers: int


def analyze(paths: Iterable[str], options: Options | None = None) -> Analysis:
    """Read and analyse the snapshots `paths` name: each source (a host, pod or container)
    on its own, in parallel across cores when there are several (`_parts`).

    Raises reader.SnapshotError (nothing readable) and reader.UnsupportedVersion.
    """
    options = options or Options()
    parts = _parts(reader.sources(list(paths)), options)
    stats = reader.ReadStats()
    for p in parts:
        for name in ("files", "bytes", "records", "corrupt", "truncated", "unknown"):
            setattr(stats, name, getattr(stats, name) + getattr(p.stats, name))
        stats.problems.extend(p.stats.problems)
    results = [r for p in parts for r in p.results]
    worst = max((VERDICTS.index(r.out.verdict) for r in results), default=0)
    max_level = max((LEVELS.index(r.out.max_level) for r in results), default=0)
    report = Report(
        generated=time.time(), verdict=VERDICTS[worst], max_level=LEVELS[max_level],
        read=ReadSummary(files=stats.files, bytes=stats.bytes, records=stats.records,
                         corrupt=stats.corrupt, truncated=stats.truncated,
                         unknown=stats.unknown, dropped_by_writer=sum(p.dropped for p in parts),
                         problems=stats.problems[:50],
                         implausible=sum(p.implausible for p in parts),
                         beyond_workers=sum(p.beyond_workers for p in parts)),
        sources=[p.summary for p in parts], workers=[r.out for r in results],
        gave_up=[f"{r.out.source} / {r.out.worker}" for r in results
                 if r.out.ending is not None and r.out.ending.kind == "gave_up"],
        recommendations=[p.advice for p in parts if p.advice is not None])
    if len(parts) > 1:
        report.workloads = fleet.workloads(
            [(p.summary, p.header, r.out, o) for p in parts
             for r, o in zip([r for r in p.results if r.out.samples], p.observed,
                             strict=True)], options.margin)
    return Analysis(report, results)


#: Below this many bytes in all, sources are read in this process: starting processes
#: costs more than it saves.
_PARALLEL_BYTES = 4 * 2**20


def _parts(srcs: list[reader.Source], options: Options) -> list[_Part]:
    """Analyse every source across `options.jobs` processes (default: the cores this
    process may run on, for sets of `_PARALLEL_BYTES` or more); in source order.

    The processes, this one among them, pull the sources from one queue, the biggest first
    (`pulled.py`): a process slowed by other work on the machine takes fewer, instead of
    holding up the others at the end. An error raised analysing a source is raised once all
    are done, the first in source order.
    """
    sizes = [sum(_size(f.path) for f in src.files) for src in srcs]
    jobs = min(options.jobs or len(os.sched_getaffinity(0)), len(srcs))
    if jobs <= 1 or (options.jobs is None and sum(sizes) < _PARALLEL_BYTES):
        return [_source(src, options) for src in srcs]
    parts = pulled(partial(_source, options=options), srcs, sizes, jobs)
    for p in parts:
        if isinstance(p, Exception):
            raise p
    return parts  # type: ignore[return-value]


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _source(src: reader.Source, options: Options) -> _Part:
    """Read and analyse one source: its workers, and the settings recommended for it."""
    stats = reader.ReadStats()
    collector = Collector()
    label = src.label
    collector.frames[label] = _frame(src, options)
    for sf in src.files:
        for chunk in reader.iter_chunks(sf, stats, types=ANALYSIS_TYPES):
            for h in collector.add(label, chunk):
                reader.check_version(h.version, sf.path)
    h = src.header
    summary = SourceSummary(
        label=label, host=src.key[0], pod=src.key[2] or None, container=src.key[3] or None,
        files=len(src.files), limit=h.limit if h else None, version=h.version if h else None,
        events=dict(Counter(e.type for e in collector.source_events.get(label, []))),
        namespace=src.key[1] or None)
    collector.finish()
    results = []
    for (_, _), data in sorted(collector.workers.items()):
        limit = data.limit or (h.limit if h else None)
        results.append(analyze_worker(data, dict(h.thresholds) if h else {}, limit,
                                      h.sample_period_s if h else 1.0, options,
                                      collector.source_events.get(label, []),
                                      h.measure if h else "rss"))
    mine = [r for r in results if r.out.samples]
    seen = [observed(r) for r in mine]
    advice = recommend.recommend(label, seen, h.config if h else {}, h.limit if h else None,
                                 options.margin) if mine else None
    return _Part(summary, h, results, seen, advice, stats, collector.dropped,
                 collector.implausible + sum(d.implausible for d in collector.workers.values()),
                 collector.beyond_workers)


def _frame(src: reader.Source, options: Options) -> Frame:
    """Window width for a source: `window_s`, widened to keep at most `max_windows` per
    generation over the source's span (from its first header to its last record)."""
    h = src.header
    period = h.sample_period_s if h else 1.0
    first = reader.first_time(src.files[0])
    last = reader.last_time(src.files[-1])
    # An implausible time (dropped when read) must not size the windows either.
    first = first if first is not None and time_ok(first) else None
    last = last if last is not None and time_ok(last) else None
    if last is None:
        stamps = [f.header.t for f in src.files if f.header]
        # compressed: estimate the last file's length from the previous one's
        last = stamps[-1] + (stamps[-1] - stamps[-2]) if len(stamps) >= 2 else None
    width = options.window_s
    if first is not None and last is not None and last > first:
        width = max(width, (last - first) / options.max_windows)
    pressure = h.config.get("pressure") if h else None
    window = pressure.get("growth_window") if isinstance(pressure, dict) else None
    growth_window = float(window) if isinstance(window, int | float) else _GROWTH_WINDOW_S
    return Frame(origin=first or 0.0, width=width, period_s=period,
                 max_windows=options.max_windows, warmup_s=growth_window + period,
                 span_s=last - first if first is not None and last is not None else 0.0)



__all__ = ["Analysis", "GenerationResult", "Options", "WorkerResult", "analyze",
           "analyze_worker"]

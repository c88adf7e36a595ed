"""The terminal report: one block per worker, a per-generation table, the read summary."""

from __future__ import annotations

import time

from snapshots.report import (
    Ending,
    Generation,
    Projection,
    Recommendation,
    Replacement,
    Report,
    Targets,
    Worker,
    Workload,
)
from snapshots.series import MAX_WORKERS


def size(n: float | None) -> str:
    """Bytes as MB (10^6), the unit of every figure in reports."""
    if n is None:
        return "-"
    return f"{n / 1e6:.1f} MB"


def duration(s: float | None) -> str:
    """Seconds for people: 45 s, 12 min, 3.5 h, 2.1 days; `never` for None."""
    if s is None:
        return "never"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 3 * 86400:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} days"


def stamp(t: float) -> str:
    """A UTC date and time; a time no calendar function takes is printed as a number."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + "Z"
    except (OverflowError, OSError, ValueError):
        return f"t={t:.6g}"


def projection(p: Projection) -> str:
    """A time to a threshold, as every format prints it (see docs/analyze.md)."""
    where = f"generation {p.generation} at {size(p.from_bytes)} at the end of the record"
    if p.reached:
        return f"already reached ({where})"
    if p.seconds is None:
        return f"not at this rate ({where})"
    rate = "its trend" if p.rate_from == "trend" else "the leak's rate, pooled"
    return (f"in {duration(p.seconds)} (range {duration(p.earliest)} to "
            f"{duration(p.latest)}), from {where}, at {rate}")


def figures(w: Worker) -> list[tuple[str, str]]:
    """The figures of one worker that text and HTML both print, each from the one
    definition in docs/analyze.md; the formats' agreement is tested on these."""
    out = [("recorded", f"{stamp(w.start)} to {stamp(w.end)} ({duration(w.end - w.start)})")]
    if w.leak is not None:
        out.append(("leak", w.leak.summary))
    out.extend((f"time to {p.target} {size(p.bytes)}", projection(p)) for p in w.projections)
    out.extend((f"generation {g.generation} at ready", size(g.at_ready))
               for g in w.generations if g.at_ready is not None)
    return out


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def ending_line(e: Ending) -> str:
    """How supervision ended, for people."""
    status = f"; exit status {e.exit_status}" if e.exit_status is not None else ""
    if e.kind == "gave_up":
        why = {"limits_too_small": "the limits are too small for this worker",
               "restart_budget": "the restart budget is spent"}.get(e.reason, e.reason)
        head = f"SUPERVISION ENDED at {stamp(e.t)}: memwarden gave up ({why}){status}"
    elif e.kind == "exited":
        head = (f"supervision ended at {stamp(e.t)}: the worker exited by itself and was not "
                f"restarted{status}")
    else:
        head = f"supervision ended at {stamp(e.t)}: memwarden was stopped"
    return head + (f". {e.message}" if e.message and e.kind == "gave_up" else "")


def targets_line(t: Targets) -> str:
    """Growth and objects per MB against the original automaton design's targets."""
    parts = [f"growth {t.growth_mb_s:+.3f} MB/s sustained: {t.growth}"
             if t.growth_mb_s is not None else "sustained growth not judged (no generation "
             "was long enough)"]
    if t.growth_peak_mb_s is not None:
        over = t.seconds_over[0] if t.seconds_over else 0.0
        parts.append(f"peak {t.growth_peak_mb_s:.1f} MB/s: {t.growth_peak}"
                     + (f" ({duration(over)} over 1 MB/s)" if over else ""))
    line = ("  against the design's targets (healthy < 1 MB/s, warning > 5, critical > 10): "
            + "; ".join(parts))
    if t.objects_per_mb is not None:
        line += (f"; {t.objects_per_mb:.0f} objects/MB: "
                 + ("meets the target (> 10)" if t.objects == "met" else
                    "below the target (> 10): large objects, or memory outside Python objects"))
    return line


def _replacement(r: Replacement) -> str:
    c = r.crossing
    if c is not None:
        where = "ms samples" if c.source == "burst" else "level event"
        before = (f"crossed {c.level.upper()} ({size(c.threshold)}) at {size(c.rss)} "
                  f"[{where}]")
    else:
        before = f"{size(r.rss_before)} at the spawn"
    peak = f", peak {size(r.rss_peak_before)}" if r.rss_peak_before is not None else ""
    ready = f", ready in {r.ready_after_s:.1f} s" if r.ready_after_s is not None else ""
    return (f"  replacement -> generation {r.generation} ({r.reason or 'no reason'}, "
            f"profile {r.profile or '-'}): {before}{peak} -> {size(r.rss_after)} at ready"
            f"{ready}, held {duration(r.held_s)} until {r.until}")


def worker_lines(w: Worker) -> list[str]:
    """The block of one worker."""
    facts = figures(w)
    lines = [f"{w.source} / {w.worker}: leak verdict {w.verdict.upper()}",
             f"  {facts[0][1]}, {w.samples} samples, {len(w.generations)} generation(s), "
             f"max level {w.max_level}; memory is {measure(w.measure)}"]
    lines.extend(f"  {value}" if name == "leak" else f"  {name}: {value}"
                 for name, value in facts[1:] if not name.startswith("generation "))
    if w.ending is not None:
        lines.append("  " + ending_line(w.ending))
    if w.segment:
        s = w.segment
        lines.append(f"  shape (generation {w.main_generation}): {s.shape}: {s.shape_detail}")
        if s.shape != "short":
            lines.append(f"  growth: medians {s.trend.slope_mb_h:+.2f} MB/h "
                         f"[{s.trend.low_mb_h:+.2f}, {s.trend.high_mb_h:+.2f}] "
                         f"R² {s.trend.r2:.2f}; baseline {s.baseline.slope_mb_h:+.2f} MB/h "
                         f"[{s.baseline.low_mb_h:+.2f}, {s.baseline.high_mb_h:+.2f}]")
    if w.targets is not None:
        lines.append(targets_line(w.targets))
    lines.append("  why:")
    lines.extend(f"    - {r}" for r in w.reasons)
    a = w.attribution
    extra = f", {a.objects_per_mb:.0f} objects/MB" if a.objects_per_mb else ""
    lines.append(f"  attribution: {a.kind}: {a.detail}{extra}")
    lines.append("  time in level: " + ", ".join(
        f"{x.level} {duration(x.seconds)} ({x.share:.0%})" for x in w.levels if x.seconds))
    lines.append(f"  transitions: {w.transitions}, flaps {w.flaps_per_hour:.1f}/h within a "
                 "generation"
                 + (" (FLAPPING: widen the margin or lengthen the dwell)" if w.flapping else ""))
    if w.trims.count:
        t = w.trims
        share = f", {t.freed_share_mean:.0%} of RSS" if t.freed_share_mean is not None else ""
        drop = (f" for {t.dropped_share_mean:.0%} of objects dropped"
                if t.dropped_share_mean is not None else "")
        lines.append(f"  trims: {t.count}, freed {size(t.freed_mean)} each on average"
                     f"{share}{drop}")
    if w.gc.pause_ms_total is not None:
        g = w.gc
        mean = f", {g.pause_ms_mean:.2f} ms per collection" if g.pause_ms_mean else ""
        lines.append(f"  gc pauses: {g.pause_ms_total:.0f} ms total{mean}")
    lines.extend(_replacement(r) for r in w.replacements)
    if w.generations:
        lines.extend("  " + x for x in _table([GENERATION_COLUMNS, *map(generation_row,
                                                                        w.generations)]))
    for g in w.generations:
        if g.finding:
            when = f" ({stamp(g.finding_t)})" if g.finding_t is not None else ""
            lines.append(f"  finding, generation {g.generation}{when}: {g.finding}")
    return lines


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else duration(s)


#: The per-generation table; memory columns are the compared figure (`measure`).
GENERATION_COLUMNS = ["gen", "profile", "uptime", "at ready", "memory start", "memory end",
                      "memory max", "MB/h", "MB/s after start-up", "peak MB/s", "shape",
                      "verdict", "in leak", "level", "at high", "trims", "obj/MB"]


def generation_row(g: Generation) -> list[str]:
    """One row of the per-generation table, the same in text and HTML."""
    high = g.level_seconds.get("high", 0.0) + g.level_seconds.get("critical", 0.0)
    return [str(g.generation), g.profile or "-", duration(g.uptime_s), size(g.at_ready),
            size(g.rss_start), size(g.rss_end), size(g.rss_max),
            f"{g.slope_mb_h:+.2f}" if g.shape != "short" else "-",
            f"{g.growth_mb_s:+.2f}" if g.growth_mb_s is not None else "-",
            f"{g.growth_peak_mb_s:.1f}" if g.growth_peak_mb_s is not None else "-",
            g.shape, g.verdict, "yes" if g.in_leak else "-", g.max_level,
            _seconds(high) if high else "-", str(g.trims),
            f"{g.objects_per_mb:.0f}" if g.objects_per_mb else "-"]


def measure(name: str) -> str:
    """What the recorded memory figure is, named as the chart's axis and the text say it."""
    return {"cgroup": "the cgroup working set (the figure thresholds compare)",
            "pss": "the tree's PSS-corrected RSS (the figure thresholds compare)"
            }.get(name, "the tree's RSS (the figure thresholds compare)")


def recommendation_lines(r: Recommendation) -> list[str]:
    """The recommendation for one source, with the paste-ready snippets."""
    lines = [f"recommended settings for {r.source} (margin {r.margin:.0%}):",
             f"  container memory limit {r.limit.text}: {r.limit.reason}",
             f"  memory request {r.request.text}: {r.request.reason}"]
    for a in r.workers:
        lines.append(f"  {a.worker}: highest at ready {size(a.startup)}, 90th "
                     f"percentile {size(a.typical)}, peak {size(a.peak)}")
        lines.append(f"    high {a.high.text}: {a.high.reason}")
        lines.append(f"    critical {a.critical.text}: {a.critical.reason}")
    lines.append(f"  cooldown {r.cooldown.text}: {r.cooldown.reason}")
    lines.extend(f"  note: {n}" for n in r.notes)
    for title, body in (("memwarden.toml", r.toml), ("Kubernetes container", r.kubernetes),
                        ("compose service", r.compose)):
        lines.append(f"  --- {title} ---")
        lines.extend("  " + x if x else "" for x in body.rstrip("\n").split("\n"))
    return lines


def workload_lines(w: Workload) -> list[str]:
    """One workload of a fleet: its verdict over the replicas and its one recommendation."""
    r = w.recommendation
    a = r.workers[0]
    return [f"  {w.workload}: {w.summary}",
            f"    high {a.high.text}: {a.high.reason}",
            f"    critical {a.critical.text}; container memory limit {r.limit.text}, request "
            f"{r.request.text}; cooldown {r.cooldown.text}"]


def render(report: Report) -> str:
    """The whole terminal report."""
    r = report.read
    lines = [f"memwarden analyze: {len(report.workers)} worker(s) from "
             f"{len(report.sources)} source(s); overall verdict {report.verdict.upper()}, "
             f"max level {report.max_level}",
             f"read {r.files} file(s), {r.bytes / 1e6:.1f} MB, {r.records} records"
             + (f"; skipped {r.corrupt} corrupt line(s)" if r.corrupt else "")
             + (f"; {r.truncated} truncated" if r.truncated else "")
             + (f"; {r.unknown} of unknown kind" if r.unknown else "")
             + (f"; dropped {r.implausible} with a time or size no record can hold"
                if r.implausible else "")
             + (f"; dropped {r.beyond_workers} of workers beyond the first {MAX_WORKERS} of a "
                "source"
                if r.beyond_workers else "")
             + (f"; the writer dropped {r.dropped_by_writer} record(s)"
                if r.dropped_by_writer else "")]
    if report.gave_up:
        lines.append("SUPERVISION ENDED: memwarden gave up on " + ", ".join(report.gave_up))
    for src in report.sources:
        if src.events:
            lines.append(f"{src.label}: supervisor events: " + ", ".join(
                f"{k} {v}" for k, v in sorted(src.events.items())))
    if report.workloads:
        lines.append(f"workloads ({len(report.workloads)}, from {len(report.sources)} "
                     "sources grouped by pod owner, else by worker name and command):")
        for wl in report.workloads:
            lines.extend(workload_lines(wl))
    lines.append("")
    for w in report.workers:
        lines.extend(worker_lines(w))
        lines.append("")
    for rec in report.recommendations:
        lines.extend(recommendation_lines(rec))
        lines.append("")
    return "\n".join(lines)


__all__ = ["GENERATION_COLUMNS", "duration", "ending_line", "figures", "generation_row",
           "measure", "projection", "recommendation_lines", "render", "size", "stamp",
           "targets_line", "worker_lines", "workload_lines"]

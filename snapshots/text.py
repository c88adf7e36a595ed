"""The terminal report: one block per worker, a per-generation table, the read summary."""

from __future__ import annotations

import time

from snapshots.report import Projection, Report, Worker


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
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + "Z"


def _projection(p: Projection) -> str:
    if p.reached:
        return f"{p.target} {size(p.bytes)}: already reached"
    if p.seconds is None:
        return f"{p.target} {size(p.bytes)}: not at this rate"
    return (f"{p.target} {size(p.bytes)}: in {duration(p.seconds)} "
            f"(range {duration(p.earliest)} to {duration(p.latest)})")


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def worker_lines(w: Worker) -> list[str]:
    """The block of one worker."""
    lines = [f"{w.source} / {w.worker}: leak verdict {w.verdict.upper()}",
             f"  {stamp(w.start)} to {stamp(w.end)} ({duration(w.end - w.start)}), "
             f"{w.samples} samples, {len(w.generations)} generation(s), "
             f"max level {w.max_level}"]
    if w.segment:
        s = w.segment
        lines.append(f"  shape (generation {w.main_generation}): {s.shape}: {s.shape_detail}")
        lines.append(f"  growth: medians {s.trend.slope_mb_h:+.2f} MB/h "
                     f"[{s.trend.low_mb_h:+.2f}, {s.trend.high_mb_h:+.2f}] R² {s.trend.r2:.2f}; "
                     f"baseline {s.baseline.slope_mb_h:+.2f} MB/h "
                     f"[{s.baseline.low_mb_h:+.2f}, {s.baseline.high_mb_h:+.2f}]")
    lines.append("  why:")
    lines.extend(f"    - {r}" for r in w.reasons)
    a = w.attribution
    extra = f", {a.objects_per_mb:.0f} objects/MB" if a.objects_per_mb else ""
    lines.append(f"  attribution: {a.kind}: {a.detail}{extra}")
    if w.projections:
        lines.append("  time to: " + "; ".join(_projection(p) for p in w.projections))
    lines.append("  time in level: " + ", ".join(
        f"{x.level} {duration(x.seconds)} ({x.share:.0%})" for x in w.levels if x.seconds))
    lines.append(f"  transitions: {w.transitions}, flaps {w.flaps_per_hour:.1f}/h"
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
    for r in w.replacements:
        lines.append(f"  replacement -> generation {r.generation} ({r.reason or 'no reason'}, "
                     f"profile {r.profile or '-'}): {size(r.rss_before)} -> {size(r.rss_after)}"
                     f", held {duration(r.held_s)} until {r.until}")
    if len(w.generations) > 1 or w.generations:
        rows = [["gen", "profile", "uptime", "rss start", "rss end", "rss max", "MB/h", "shape",
                 "verdict", "level", "trims", "obj/MB"]]
        for g in w.generations:
            rows.append([str(g.generation), g.profile or "-", duration(g.uptime_s),
                         size(g.rss_start), size(g.rss_end), size(g.rss_max),
                         f"{g.slope_mb_h:+.2f}", g.shape, g.verdict, g.max_level,
                         str(g.trims), f"{g.objects_per_mb:.0f}" if g.objects_per_mb else "-"])
        lines.extend("  " + x for x in _table(rows))
    return lines


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
             + (f"; the writer dropped {r.dropped_by_writer} record(s)"
                if r.dropped_by_writer else "")]
    for src in report.sources:
        if src.events:
            lines.append(f"{src.label}: supervisor events: " + ", ".join(
                f"{k} {v}" for k, v in sorted(src.events.items())))
    lines.append("")
    for w in report.workers:
        lines.extend(worker_lines(w))
        lines.append("")
    return "\n".join(lines)


__all__ = ["duration", "render", "size", "stamp", "worker_lines"]

"""The HTML report: one self-contained file, inline SVG charts, no scripts, no network.

No JavaScript at all: the charts are static SVG with `<title>` tooltips, so the report opens
anywhere (air-gapped machines, mail attachments, strict content security policies).
Values are mapped to the plot linearly and never clamped: what leaves the plot is clipped
by it, so a line drawn keeps the slope it states.
"""

from __future__ import annotations

import html
import math
import zlib

from snapshots.analysis import Analysis
from snapshots.report import Recommendation, Replacement, Report
from snapshots.series import MAX_WORKERS
from snapshots.text import (
    GENERATION_COLUMNS,
    duration,
    ending_line,
    figures,
    generation_row,
    measure,
    size,
    stamp,
    targets_line,
)
from snapshots.trend import thin
from snapshots.worker import WorkerResult

W, H, STRIP = 960, 300, 14
PAD_L, PAD_R, PAD_T, PAD_B = 64, 16, 14, 26
LEVEL_COLOURS = {"low": "#3a9d5d", "medium": "#e0c341", "high": "#ee8a2c", "critical": "#d43d3d"}
VERDICT_COLOURS = {"none": "#3a9d5d", "suspected": "#e0c341", "likely": "#ee8a2c",
                   "confirmed": "#d43d3d"}
GEN_COLOURS = ("#2f6db5", "#7b4fb0", "#138a8a", "#a3592a", "#5a6b1f")
TREND_COLOUR = "#c2185b"  # used by nothing else, so the trend can be told apart
CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}td,th{padding:2px 8px;border-bottom:1px solid #ddd;
text-align:left;font-variant-numeric:tabular-nums}
.v{display:inline-block;padding:1px 8px;border-radius:8px;color:#fff;font-weight:600}
.panel{border:1px solid #ccc;border-radius:6px;padding:12px;margin:16px 0}
ul{margin:4px 0}svg text{font:11px system-ui,sans-serif;fill:#444}
.ended{background:#d43d3d;color:#fff;padding:6px 10px;border-radius:6px;font-weight:600}
pre{background:#f6f6f6;padding:8px;border-radius:4px;overflow-x:auto}
.legend{list-style:none;padding:0;columns:2;font-size:12px}.legend svg{vertical-align:middle}
"""


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


class _Scale:
    """Linear maps from (time, bytes) to the plot; a span of zero (records sharing one time
    stamp, one memory figure) is widened, never divided by."""

    def __init__(self, t0: float, t1: float, v0: float, v1: float) -> None:
        self.t0, self.t1 = t0, max(t1, t0 + max(abs(t0) * 1e-12, 1e-6))
        self.v0, self.v1 = v0, max(v1, v0 + max(abs(v0) * 1e-9, 1.0))

    def x(self, t: float) -> float:
        return PAD_L + (t - self.t0) / (self.t1 - self.t0) * (W - PAD_L - PAD_R)

    def y(self, v: float) -> float:
        return PAD_T + (1 - (v - self.v0) / (self.v1 - self.v0)) * (H - PAD_T - PAD_B)


_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
               43200, 86400)


_RANK = {name: i for i, name in enumerate(LEVEL_COLOURS)}


def _nice_step(span: float, target: int = 6) -> float:
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)


def _range(r: WorkerResult) -> tuple[float, float]:
    """The memory axis: from the data (the lowest and highest memory of every generation),
    with a twentieth of room on each side; thresholds do not stretch it."""
    los = [min(g.windows.lo) for g in r.generations if len(g.windows)]
    his = [max(g.windows.hi) for g in r.generations if len(g.windows)]
    if not los:
        return 0.0, 1e6
    lo, hi = min(los), max(his)
    pad = (hi - lo) / 20 or max(hi * 0.05, 1e6)
    return max(0.0, lo - pad), hi + pad


def targets_of(r: WorkerResult) -> list[tuple[str, int]]:
    """The lines memory is compared with: HIGH, CRITICAL and the limit, where known."""
    w = r.out
    return [(k, v) for k, v in (("high", w.thresholds.get("high")),
                                ("critical", w.thresholds.get("critical")),
                                ("limit", w.limit)) if v]


def chart(r: WorkerResult) -> str:
    """The SVG panel of one worker: the x-axis is the record, the y-axis the data's range."""
    w = r.out
    parts: list[str] = []  # data, clipped to the plot area
    axes: list[str] = []  # grid, labels, level strip: outside the clip
    main = r.main
    targets = targets_of(r)
    trend = main.shape.relevant if main is not None and main.shape.name != "short" else None
    s = _Scale(w.start, w.end, *_range(r))

    # axes
    step = _nice_step((s.v1 - s.v0) / 1e6) * 1e6
    v = math.ceil(s.v0 / step) * step
    while v <= s.v1:
        y = s.y(v)
        axes.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" '
                    f'stroke="#eee"/><text x="{PAD_L - 6}" y="{y + 4:.1f}" '
                    f'text-anchor="end">{v / 1e6:g} MB</text>')
        v += step
    axes.append(f'<text class="axis" transform="rotate(-90)" x="{-(H - PAD_B + PAD_T) / 2:.0f}" '
                f'y="12" text-anchor="middle">memory: {_e(measure(w.measure))}</text>')
    span = s.t1 - s.t0
    tstep = next((x for x in _TIME_STEPS if span / x <= 8), _nice_step(span / 86400) * 86400)
    tick = math.ceil(s.t0 / tstep) * tstep
    while tick <= s.t1:
        x = s.x(tick)
        axes.append(f'<text x="{x:.1f}" y="{H + STRIP + 14}" text-anchor="middle">'
                     f"{stamp(tick)[11:16] if tstep >= 60 else stamp(tick)[11:19]}</text>")
        tick += tstep
    # thresholds: drawn when in the data's range; the legend names the others
    for name, value in targets:
        if s.v0 <= value <= s.v1:
            y = s.y(value)
            parts.append(f'<line class="threshold" x1="{PAD_L}" x2="{W - PAD_R}" '
                         f'y1="{y:.1f}" y2="{y:.1f}" '
                         f'stroke="{LEVEL_COLOURS.get(name, "#d43d3d")}" stroke-dasharray="6 4">'
                         f'<title>{_e(name)} {_e(size(value))}</title></line>'
                         f'<text x="{W - PAD_R - 4}" y="{y - 3:.1f}" text-anchor="end">'
                         f'{_e(name)} {_e(size(value))}</text>')
    # per generation: min/max band and median line
    for k, g in enumerate(r.generations):
        win = g.windows
        if not len(win):
            continue
        colour = GEN_COLOURS[k % len(GEN_COLOURS)]
        ts, los = thin(win.t, win.lo, 700)
        _, his = thin(win.t, win.hi, 700)
        _, meds = thin(win.t, win.med, 700)
        upper = " ".join(f"{s.x(t):.1f},{s.y(v):.1f}" for t, v in zip(ts, his, strict=True))
        lower = " ".join(f"{s.x(t):.1f},{s.y(v):.1f}"
                         for t, v in zip(reversed(ts), reversed(los), strict=True))
        parts.append(f'<polygon points="{upper} {lower}" fill="{colour}" fill-opacity="0.18" '
                     f'stroke="none"><title>generation {g.generation}: min/max</title></polygon>')
        line = " ".join(f"{s.x(t):.1f},{s.y(v):.1f}" for t, v in zip(ts, meds, strict=True))
        parts.append(f'<polyline points="{line}" fill="none" stroke="{colour}" '
                     f'stroke-width="1.4"><title>generation {g.generation}: median</title>'
                     f'</polyline>')
        if k:
            x = s.x(g.start)
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{PAD_T}" y2="{H - PAD_B}" '
                         f'stroke="#555" stroke-dasharray="3 3"/><text x="{x + 3:.1f}" '
                         f'y="{PAD_T + 10}">gen {g.generation}</text>')
    # baseline points, trend and its range extended towards the limit
    if main is not None:
        bt, bv = thin(main.shape.baseline_t, main.shape.baseline_v, 300)
        parts.extend(f'<circle cx="{s.x(t):.1f}" cy="{s.y(v):.1f}" r="2.2" fill="#111">'
                     f'<title>baseline {_e(size(v))}</title></circle>'
                     for t, v in zip(bt, bv, strict=True))
    if trend is not None and main is not None:
        # Only over the span the line was fitted to: extended, it would claim data that is
        # not there (the projections say where it leads).
        x0 = main.shape.change_t if main.shape.change_t is not None else main.start
        x1 = main.end
        parts.append(f'<line class="trend" x1="{s.x(x0):.2f}" y1="{s.y(trend.at(x0)):.2f}" '
                     f'x2="{s.x(x1):.2f}" y2="{s.y(trend.at(x1)):.2f}" '
                     f'stroke="{TREND_COLOUR}" stroke-width="2" stroke-dasharray="10 3">'
                     f'<title>{_e(trend_label(trend.slope))}</title></line>')
    # level strip: higher levels drawn last, so that a second at HIGH shows over the overlap
    # with the next generation's first seconds
    for a, b, level in sorted(r.level_runs, key=lambda run: _RANK.get(run[2], 0)):
        xa, xb = s.x(a), s.x(b)
        axes.append(f'<rect x="{xa:.1f}" y="{H}" width="{max(xb - xa, 0.5):.1f}" '
                     f'height="{STRIP}" fill="{LEVEL_COLOURS.get(level, "#999")}">'
                     f'<title>{_e(level)}</title></rect>')
    # event markers, above the plot
    markers = []
    for ev in r.data.events[:500]:
        if ev.type in ("stats",):
            continue
        x = s.x(ev.t)
        label = f"{ev.type} gen {ev.generation} {ev.message or ev.reason or ''}".strip()
        markers.append(f'<path d="M{x:.1f},{PAD_T} l-4,-8 h8 z" fill="#333">'
                       f'<title>{_e(stamp(ev.t))} {_e(label)}</title></path>')
    # Data is clipped to the plot area (a trend extended towards a far limit leaves it), the
    # markers to the band above it.
    clip = f"clip-{zlib.crc32(f'{w.source}/{w.worker}'.encode()):08x}"
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="100%" '
            f'style="max-width:{W}px;height:auto" viewBox="0 -8 {W} {H + STRIP + 28}" '
            f'role="img" aria-label="memory of {_e(w.worker)}"><defs>'
            f'<clipPath id="{clip}"><rect x="{PAD_L}" y="{PAD_T - 4}" '
            f'width="{W - PAD_L - PAD_R}" height="{H - PAD_B - PAD_T + 4}"/></clipPath>'
            f'<clipPath id="{clip}-m"><rect x="{PAD_L - 4}" y="-8" '
            f'width="{W - PAD_L - PAD_R + 8}" height="{PAD_T + 8}"/></clipPath></defs>'
            f'<rect x="0" y="-8" width="{W}" height="{H + STRIP + 28}" fill="#fff"/>'
            + "".join(axes) + f'<g clip-path="url(#{clip})">' + "".join(parts) + "</g>"
            + f'<g clip-path="url(#{clip}-m)">' + "".join(markers) + "</g></svg>")


def trend_label(slope: float) -> str:
    """How a trend line states its slope (bytes/s), in the chart and beside it."""
    return f"trend {slope * 3600 / 1e6:+.2f} MB/h ({slope / 1e6:+.4f} MB/s)"


def _rows(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def panel(r: WorkerResult) -> str:
    """One worker: verdict, how supervision ended, reasons, chart, tables."""
    w = r.out
    colour = VERDICT_COLOURS[w.verdict]
    seg = w.segment
    items = "".join(f"<li>{_e(x)}</li>" for x in w.reasons)
    ended = (f'<p class="ended">{_e(ending_line(w.ending))}</p>'
             if w.ending is not None and w.ending.kind == "gave_up" else
             f"<p>{_e(ending_line(w.ending))}</p>" if w.ending is not None else "")
    facts = [[name, value] for name, value in figures(w)]
    facts.append(["attribution", f"{w.attribution.kind}: {w.attribution.detail}"])
    if seg:
        facts.append(["shape", f"{seg.shape}: {seg.shape_detail}"])
        if seg.shape != "short":
            facts.append(["growth (medians)", f"{seg.trend.slope_mb_h:+.2f} MB/h "
                          f"[{seg.trend.low_mb_h:+.2f}, {seg.trend.high_mb_h:+.2f}]"])
            facts.append(["growth (baseline)", f"{seg.baseline.slope_mb_h:+.2f} MB/h "
                          f"[{seg.baseline.low_mb_h:+.2f}, {seg.baseline.high_mb_h:+.2f}]"])
    if r.main is not None and r.main.shape.name != "short":
        facts.append(["trend line (chart)", trend_label(r.main.shape.relevant.slope)])
    if w.targets is not None:
        facts.append(["design targets", targets_line(w.targets).strip()
                      .removeprefix("against the design's targets ")])
    facts.append(["time in level", ", ".join(f"{x.level} {duration(x.seconds)}"
                                             for x in w.levels if x.seconds)])
    facts.append(["transitions", f"{w.transitions} ({w.flaps_per_hour:.1f} flaps/h within a "
                  "generation)" + (": FLAPPING" if w.flapping else "")])
    if w.trims.count:
        facts.append(["trims", f"{w.trims.count}, {size(w.trims.freed_mean)} freed on average"])
    gens = _rows(GENERATION_COLUMNS, [generation_row(g) for g in w.generations])
    findings = "".join(f"<p><b>finding, generation {g.generation}</b>"
                       f"{' (' + _e(stamp(g.finding_t)) + ')' if g.finding_t else ''}: "
                       f"{_e(g.finding)}</p>" for g in w.generations if g.finding)
    reps = _rows(["generation", "reason", "crossing", "peak before", "at ready",
                  "ready in", "held"],
                 [[str(x.generation), x.reason or "-", _crossing(x), size(x.rss_peak_before),
                   size(x.rss_after),
                   f"{x.ready_after_s:.1f} s" if x.ready_after_s is not None else "-",
                   duration(x.held_s)] for x in w.replacements]) if w.replacements else ""
    return (f'<div class="panel"><h2>{_e(w.source)} / {_e(w.worker)} '
            f'<span class="v" style="background:{colour}">{_e(w.verdict)}</span></h2>'
            f"{ended}<div>{w.samples} samples</div>"
            f"{chart(r)}{legend(r)}<ul>{items}</ul>{_rows(['', ''], facts)}{gens}{findings}"
            f"{reps}</div>")


def _swatch(shape: str) -> str:
    return f'<svg width="26" height="12" viewBox="0 0 26 12" aria-hidden="true">{shape}</svg>'


def legend(r: WorkerResult) -> str:
    """What every mark of the chart is; thresholds outside the data's range are named here
    with their value, since they are not drawn."""
    w = r.out
    lo, hi = _range(r)
    items = []
    for k, g in enumerate(r.generations[:len(GEN_COLOURS)]):
        c = GEN_COLOURS[k % len(GEN_COLOURS)]
        items.append((_swatch(f'<rect x="0" y="1" width="26" height="10" fill="{c}" '
                              f'fill-opacity="0.18"/><line x1="0" x2="26" y1="6" y2="6" '
                              f'stroke="{c}" stroke-width="1.4"/>'),
                      f"generation {g.generation}: lowest to highest memory per window "
                      "(band), median (line)"))
    if len(r.generations) > len(GEN_COLOURS):
        items.append(("", f"further generations repeat these {len(GEN_COLOURS)} colours"))
    items.append((_swatch('<circle cx="13" cy="6" r="2.2" fill="#111"/>'), "baseline points"))
    if r.main is not None and r.main.shape.name != "short":
        items.append((_swatch(f'<line x1="0" x2="26" y1="6" y2="6" stroke="{TREND_COLOUR}" '
                              'stroke-width="2" stroke-dasharray="10 3"/>'),
                      f"{trend_label(r.main.shape.relevant.slope)}, over the span it was "
                      f"fitted to (generation {r.main.generation})"))
    for name, value in targets_of(r):
        where = ("" if lo <= value <= hi else
                 " (above the chart: not drawn)" if value > hi else " (below the chart)")
        items.append((_swatch(f'<line x1="0" x2="26" y1="6" y2="6" stroke='
                              f'"{LEVEL_COLOURS.get(name, "#d43d3d")}" '
                              'stroke-dasharray="6 4"/>'),
                      f"{name} {size(value)}{where}"))
    items.append((_swatch('<line x1="13" x2="13" y1="0" y2="12" stroke="#555" '
                          'stroke-dasharray="3 3"/>'), "a new generation starts"))
    items.append((_swatch('<path d="M13,10 l-4,-8 h8 z" fill="#333"/>'),
                  "an event (hover for details)"))
    items.extend((_swatch(f'<rect x="0" y="1" width="26" height="10" fill="{c}"/>'),
                  f"level strip: {name}") for name, c in LEVEL_COLOURS.items())
    body = "".join(f"<li>{mark} {_e(text)}</li>" for mark, text in items)
    return (f'<ul class="legend"><li><b>memory: {_e(measure(w.measure))}</b></li>{body}</ul>')


def _crossing(x: Replacement) -> str:
    c = x.crossing
    if c is None:
        return f"{size(x.rss_before)} at the spawn"
    where = "ms samples" if c.source == "burst" else "level event"
    return f"{c.level} {size(c.threshold)} crossed at {size(c.rss)} ({where})"


def recommendation(rec: Recommendation) -> str:
    """The recommended settings of one source, with the paste-ready snippets."""
    rows = [["container memory limit", rec.limit.text, rec.limit.reason],
            ["memory request", rec.request.text, rec.request.reason]]
    for a in rec.workers:
        rows.append([f"{a.worker}: high", a.high.text, a.high.reason])
        rows.append([f"{a.worker}: critical", a.critical.text, a.critical.reason])
    rows.append(["cooldown", rec.cooldown.text, rec.cooldown.reason])
    notes = "".join(f"<li>{_e(n)}</li>" for n in rec.notes)
    snippets = "".join(f"<h3>{_e(title)}</h3><pre>{_e(body)}</pre>" for title, body in (
        ("memwarden.toml", rec.toml), ("Kubernetes container resources", rec.kubernetes),
        ("compose service", rec.compose)))
    return (f'<div class="panel"><h2>Recommended settings for {_e(rec.source)}</h2>'
            f"{_rows(['setting', 'value', 'why'], rows)}<ul>{notes}</ul>{snippets}</div>")


def workloads(rep: Report) -> str:
    """The fleet: one row per workload, its verdict over the replicas and one recommendation."""
    if not rep.workloads:
        return ""
    rows = [[w.workload, str(w.replicas), w.verdict,
             "-" if w.rate_median_mb_s is None else
             f"{w.rate_low_mb_s:.1f} to {w.rate_high_mb_s:.1f} (median {w.rate_median_mb_s:.1f})",
             size(w.healthy_peak), w.recommendation.workers[0].high.text,
             w.recommendation.workers[0].critical.text, w.recommendation.limit.text,
             w.recommendation.request.text, w.summary] for w in rep.workloads]
    return ('<div class="panel workloads"><h2>Workloads</h2>'
            + _rows(["workload", "replicas", "verdict", "leak MB/s", "healthy peak (p90)",
                     "high", "critical", "limit", "request", "summary"], rows) + "</div>")


def render(analysis: Analysis) -> str:
    """The whole report as one HTML document."""
    rep = analysis.report
    rd = rep.read
    summary = (f"{rd.files} file(s), {rd.bytes / 1e6:.1f} MB, {rd.records} records; "
               f"{rd.corrupt} corrupt, {rd.truncated} truncated, "
               f"{rd.dropped_by_writer} dropped by the writer, {rd.implausible} with a time or "
               f"size no record can hold, {rd.beyond_workers} of workers beyond the first "
               f"{MAX_WORKERS} of a source")
    body = workloads(rep)
    body += "".join(panel(r) for r in analysis.workers) or "<p>No workers recorded.</p>"
    body += "".join(recommendation(rec) for rec in rep.recommendations)
    if rep.gave_up:
        body = (f'<p class="ended">SUPERVISION ENDED: memwarden gave up on '
                f"{_e(', '.join(rep.gave_up))}</p>" + body)
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'; img-src data:\">"
            "<title>memwarden analysis</title>"
            f"<style>{CSS}</style></head><body><h1>memwarden analysis: "
            f'<span class="v" style="background:{VERDICT_COLOURS[rep.verdict]}">'
            f"{_e(rep.verdict)}</span></h1><p>{_e(summary)}</p>{body}</body></html>\n")


__all__ = ["TREND_COLOUR", "chart", "legend", "panel", "recommendation", "render",
           "targets_of", "trend_label", "workloads"]

"""The HTML report: one self-contained file, inline SVG charts, no scripts, no network.

No JavaScript at all: the charts are static SVG with `<title>` tooltips, so the report opens
anywhere (air-gapped machines, mail attachments, strict content security policies).
"""

from __future__ import annotations

import html
import math
import zlib

from snapshots.analysis import Analysis, WorkerResult
from snapshots.text import duration, size, stamp
from snapshots.trend import thin

W, H, STRIP = 960, 300, 14
PAD_L, PAD_R, PAD_T, PAD_B = 64, 16, 14, 26
LEVEL_COLOURS = {"low": "#3a9d5d", "medium": "#e0c341", "high": "#ee8a2c", "critical": "#d43d3d"}
VERDICT_COLOURS = {"none": "#3a9d5d", "suspected": "#e0c341", "likely": "#ee8a2c",
                   "confirmed": "#d43d3d"}
GEN_COLOURS = ("#2f6db5", "#7b4fb0", "#138a8a", "#a3592a", "#5a6b1f")
CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;background:#fff}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0}td,th{padding:2px 8px;border-bottom:1px solid #ddd;
text-align:left;font-variant-numeric:tabular-nums}
.v{display:inline-block;padding:1px 8px;border-radius:8px;color:#fff;font-weight:600}
.panel{border:1px solid #ccc;border-radius:6px;padding:12px;margin:16px 0}
ul{margin:4px 0}svg text{font:11px system-ui,sans-serif;fill:#444}
"""


def _e(x: object) -> str:
    return html.escape(str(x), quote=True)


class _Scale:
    def __init__(self, t0: float, t1: float, v1: float) -> None:
        self.t0, self.t1 = t0, max(t1, t0 + 1e-9)
        self.v1 = max(v1, 1.0)

    def x(self, t: float) -> float:
        return PAD_L + (t - self.t0) / (self.t1 - self.t0) * (W - PAD_L - PAD_R)

    def y(self, v: float) -> float:
        return PAD_T + (1 - min(max(v / self.v1, 0.0), 1.05)) * (H - PAD_T - PAD_B)


_TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
               43200, 86400)


def _nice_step(span: float, target: int = 6) -> float:
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    return next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)


def chart(r: WorkerResult) -> str:
    """The SVG panel of one worker."""
    w = r.out
    parts: list[str] = []  # data, clipped to the plot area
    axes: list[str] = []  # grid, labels, level strip: outside the clip
    main = r.main
    t_end = w.end
    t_max = t_end
    v_max = max((max(g.windows.hi) for g in r.generations if len(g.windows)), default=1.0)
    targets = [(k, v) for k, v in (("high", w.thresholds.get("high")),
                                   ("critical", w.thresholds.get("critical")),
                                   ("limit", w.limit)) if v]
    trend = main.shape.relevant if main is not None and main.shape.name != "short" else None
    reach = None
    if trend is not None and trend.slope > 0 and targets and w.verdict != "none":
        goal = targets[-1][1]
        reach = t_end + max(0.0, (goal - trend.at(t_end)) / trend.slope)
        t_max = min(max(t_end, reach), t_end + 0.5 * max(t_end - w.start, 60.0))
    for _, v in targets:
        if v <= 1.5 * v_max:
            v_max = max(v_max, v)
    s = _Scale(w.start, t_max, v_max * 1.05)

    # axes
    step = _nice_step(s.v1 / 1e6) * 1e6
    v = 0.0
    while v <= s.v1:
        y = s.y(v)
        axes.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" '
                    f'stroke="#eee"/><text x="{PAD_L - 6}" y="{y + 4:.1f}" '
                    f'text-anchor="end">{v / 1e6:g} MB</text>')
        v += step
    span = s.t1 - s.t0
    tstep = next((x for x in _TIME_STEPS if span / x <= 8), _nice_step(span / 86400) * 86400)
    tick = math.ceil(s.t0 / tstep) * tstep
    while tick <= s.t1:
        x = s.x(tick)
        axes.append(f'<text x="{x:.1f}" y="{H + STRIP + 14}" text-anchor="middle">'
                     f"{stamp(tick)[11:16] if tstep >= 60 else stamp(tick)[11:19]}</text>")
        tick += tstep
    # thresholds
    for name, value in targets:
        if value <= s.v1:
            y = s.y(value)
            parts.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y:.1f}" y2="{y:.1f}" '
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
        x0, x1 = main.start, t_max
        y_end = trend.at(t_end)
        wedge = (f"{s.x(t_end):.1f},{s.y(y_end):.1f} "
                 f"{s.x(x1):.1f},{s.y(y_end + trend.hi * (x1 - t_end)):.1f} "
                 f"{s.x(x1):.1f},{s.y(y_end + trend.lo * (x1 - t_end)):.1f}")
        parts.append(f'<polygon points="{wedge}" fill="#111" fill-opacity="0.08">'
                     f'<title>95 % range of the trend</title></polygon>')
        parts.append(f'<line x1="{s.x(x0):.1f}" y1="{s.y(trend.at(x0)):.1f}" '
                     f'x2="{s.x(x1):.1f}" y2="{s.y(trend.at(x1)):.1f}" stroke="#111" '
                     f'stroke-width="1.2" stroke-dasharray="8 3"><title>trend '
                     f'{trend.slope * 3600 / 1e6:+.2f} MB/h</title></line>')
    # level strip
    for a, b, level in r.level_runs:
        xa, xb = s.x(a), s.x(b)
        axes.append(f'<rect x="{xa:.1f}" y="{H}" width="{max(xb - xa, 0.5):.1f}" '
                     f'height="{STRIP}" fill="{LEVEL_COLOURS.get(level, "#999")}">'
                     f'<title>{_e(level)}</title></rect>')
    # event markers
    for ev in r.data.events[:500]:
        if ev.type in ("stats",):
            continue
        x = s.x(ev.t)
        label = f"{ev.type} gen {ev.generation} {ev.message or ev.reason or ''}".strip()
        parts.append(f'<path d="M{x:.1f},{PAD_T} l-4,-8 h8 z" fill="#333">'
                     f'<title>{_e(stamp(ev.t))} {_e(label)}</title></path>')
    # Data is clipped to the plot area (a trend extended towards a far limit leaves it).
    clip = f"clip-{zlib.crc32(f'{w.source}/{w.worker}'.encode()):08x}"
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="100%" '
            f'style="max-width:{W}px;height:auto" viewBox="0 -8 {W} {H + STRIP + 28}" '
            f'role="img" aria-label="RSS of {_e(w.worker)}"><defs><clipPath id="{clip}">'
            f'<rect x="{PAD_L}" y="-8" width="{W - PAD_L - PAD_R}" height="{H + 8}"/>'
            f'</clipPath></defs><rect x="0" y="-8" width="{W}" height="{H + STRIP + 28}" '
            f'fill="#fff"/>' + "".join(axes) + f'<g clip-path="url(#{clip})">'
            + "".join(parts) + "</g></svg>")


def _rows(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def panel(r: WorkerResult) -> str:
    """One worker: verdict, reasons, chart, tables."""
    w = r.out
    colour = VERDICT_COLOURS[w.verdict]
    seg = w.segment
    items = "".join(f"<li>{_e(x)}</li>" for x in w.reasons)
    facts = [["attribution", f"{w.attribution.kind}: {w.attribution.detail}"]]
    if seg:
        facts.append(["shape", f"{seg.shape}: {seg.shape_detail}"])
        facts.append(["growth (medians)", f"{seg.trend.slope_mb_h:+.2f} MB/h "
                      f"[{seg.trend.low_mb_h:+.2f}, {seg.trend.high_mb_h:+.2f}]"])
        facts.append(["growth (baseline)", f"{seg.baseline.slope_mb_h:+.2f} MB/h "
                      f"[{seg.baseline.low_mb_h:+.2f}, {seg.baseline.high_mb_h:+.2f}]"])
    for p in w.projections:
        when = ("already reached" if p.reached else
                f"{duration(p.seconds)} ({duration(p.earliest)} to {duration(p.latest)})")
        facts.append([f"time to {p.target} ({size(p.bytes)})", when])
    facts.append(["time in level", ", ".join(f"{x.level} {duration(x.seconds)}"
                                             for x in w.levels if x.seconds)])
    facts.append(["transitions", f"{w.transitions} ({w.flaps_per_hour:.1f} flaps/h)"])
    if w.trims.count:
        facts.append(["trims", f"{w.trims.count}, {size(w.trims.freed_mean)} freed on average"])
    gens = _rows(["gen", "profile", "uptime", "rss start", "rss end", "rss max", "MB/h", "shape",
                  "verdict", "max level", "trims"],
                 [[str(g.generation), g.profile or "-", duration(g.uptime_s), size(g.rss_start),
                   size(g.rss_end), size(g.rss_max), f"{g.slope_mb_h:+.2f}", g.shape, g.verdict,
                   g.max_level, str(g.trims)] for g in w.generations])
    reps = _rows(["generation", "reason", "before", "after", "held"],
                 [[str(x.generation), x.reason or "-", size(x.rss_before), size(x.rss_after),
                   duration(x.held_s)] for x in w.replacements]) if w.replacements else ""
    return (f'<div class="panel"><h2>{_e(w.source)} / {_e(w.worker)} '
            f'<span class="v" style="background:{colour}">{_e(w.verdict)}</span></h2>'
            f"<div>{_e(stamp(w.start))} to {_e(stamp(w.end))}, {w.samples} samples</div>"
            f"{chart(r)}<ul>{items}</ul>{_rows(['', ''], facts)}{gens}{reps}</div>")


def render(analysis: Analysis) -> str:
    """The whole report as one HTML document."""
    rep = analysis.report
    rd = rep.read
    summary = (f"{rd.files} file(s), {rd.bytes / 1e6:.1f} MB, {rd.records} records; "
               f"{rd.corrupt} corrupt, {rd.truncated} truncated, "
               f"{rd.dropped_by_writer} dropped by the writer")
    body = "".join(panel(r) for r in analysis.workers) or "<p>No workers recorded.</p>"
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
            "style-src 'unsafe-inline'; img-src data:\">"
            "<title>memwarden analysis</title>"
            f"<style>{CSS}</style></head><body><h1>memwarden analysis: "
            f'<span class="v" style="background:{VERDICT_COLOURS[rep.verdict]}">'
            f"{_e(rep.verdict)}</span></h1><p>{_e(summary)}</p>{body}</body></html>\n")


__all__ = ["chart", "panel", "render"]

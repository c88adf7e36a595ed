"""`memwarden analyze --replay --config FILE PATH...`: recorded memory through new thresholds.

Each worker generation's record is fed, in time order, to a fresh `pressure.WorkerClassifier`
built from the given configuration (resolved against the recorded limit). The level changes
it reports are printed next to the `level` events the supervisor recorded, so a new set of
thresholds can be tried on yesterday's data before it is deployed.

Where the flight recorder kept the ring's millisecond samples (bursts: 2 s before and 1 s
after every recorded level change, spawn and exit), those samples are fed one by one, as the
sampler fed them live: the confirmation count is counted in ticks and a replay with the
recorded configuration fires on the tick that fired live. Elsewhere only the period summaries
exist (1 s by default) and replay is approximate, and says so for each change it reports:
a period whose highest memory reaches a line counts as `confirm` ticks at that line, from
the time the line was crossed on the straight way from the previous period's last value to
the period's highest (a crossing shorter than the confirmation inside a period is therefore
counted as confirmed); falls are timed from the periods' first and last values; growth is
the slope recorded with each period.
"""

from __future__ import annotations

import argparse
import bisect
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import msgspec

from snapshots import memory, reader
from snapshots.cli import write_output
from snapshots.schema import Event, Header, Record
from snapshots.series import BurstView
from supervisor.core.identity import GenerationId
from supervisor.core.pressure import Change, Thresholds, WorkerClassifier, quantity
from supervisor.settings import config as config_mod
from supervisor.settings import loading
from supervisor.settings.specs import specs, thresholds

EXIT_OK, EXIT_USAGE = 0, 2


class _SampleView(Record, tag="sample", gc=False):
    """The sample fields replay needs."""

    worker: str
    generation: int
    rss: int = 0
    rss_max: int = 0
    memory: int | None = None  # format 1.1: the figure thresholds compare
    slope: float = 0.0
    limit: int | None = None


_TYPES = Header | _SampleView | Event | BurstView


class Fired(msgspec.Struct, kw_only=True):
    """One level change, replayed or recorded.

    Replayed: `approximate` when it came from period summaries (no millisecond samples
    there). Recorded: `confirmed_t` is the wall time of the tick that confirmed it (from the
    event's monotonic `confirmed_ns`), when recorded; `replayed_t`/`delta_s` the replayed
    change of the same generation and levels nearest to it, and how much later it fired.
    """

    t: float
    generation: int
    level: str
    previous: str
    metric: str | None = None
    value: float | None = None
    threshold: float | None = None
    approximate: bool = False
    confirmed_t: float | None = None
    replayed_t: float | None = None
    delta_s: float | None = None


class WorkerReplay(msgspec.Struct, kw_only=True):
    source: str
    worker: str
    samples: int
    start: float  # time of the first sample or change; the text form counts from it
    limit: int | None
    replayed: list[Fired]
    recorded: list[Fired]
    ticks: int = 0  # millisecond samples replayed from bursts
    exact_s: float = 0.0  # seconds of record replayed tick by tick


class ReplayReport(msgspec.Struct, kw_only=True):
    schema: str = "memwarden.replay/1"
    config: str
    note: str
    workers: list[WorkerReplay]


NOTE = ("replayed tick by tick on the flight recorder's millisecond samples where the record "
        "has them (around each recorded level change, spawn and exit); elsewhere on the "
        "period summaries, approximately (marked ~): a period reaching a line counts as "
        "confirmed where the line was crossed, falls are timed from the periods' first and "
        "last values, growth is the recorded slope")


@dataclass
class _Generation:
    samples: list[_SampleView]
    bursts: list[BurstView]


def replay(paths: Sequence[str], cfg: config_mod.Config, config_path: str = "") -> ReplayReport:
    """Replay the snapshots `paths` name under `cfg`.

    Raises reader.SnapshotError, reader.UnsupportedVersion.
    """
    stats = reader.ReadStats()
    gens: dict[tuple[str, str], dict[int, _Generation]] = {}
    recorded: dict[tuple[str, str], list[tuple[Fired, int | None]]] = {}
    headers: dict[str, Header | None] = {}
    for src in reader.sources(list(paths)):
        label = src.label
        headers[label] = src.header
        for sf in src.files:
            for chunk in reader.iter_chunks(sf, stats, types=_TYPES):
                for r in chunk:
                    cls = r.__class__
                    if cls is _SampleView or cls is BurstView:
                        g = gens.setdefault((label, r.worker), {}).setdefault(  # type: ignore[attr-defined]
                            r.generation, _Generation([], []))  # type: ignore[attr-defined]
                        if cls is _SampleView:
                            g.samples.append(r)  # type: ignore[arg-type]
                        else:
                            b: BurstView = r  # type: ignore[assignment]
                            g.bursts.append(BurstView(
                                t=b.t, worker=b.worker, generation=b.generation, pid=b.pid,
                                cause=b.cause, interval_us=b.interval_us, rss0=b.rss0,
                                dt_us=b.dt_us.copy(), rss_delta=b.rss_delta.copy()))
                    elif cls is Event and r.type == "level" and r.level and r.worker:  # type: ignore[attr-defined]
                        e: Event = r  # type: ignore[assignment]
                        ns = e.data.get("confirmed_ns") if isinstance(e.data, dict) else None
                        recorded.setdefault((label, e.worker), []).append((Fired(
                            t=e.t, generation=e.generation, level=e.level or "",
                            previous=e.previous or "", metric=e.metric, value=e.value,
                            threshold=e.threshold), ns if isinstance(ns, int) else None))
                    elif cls is Header:
                        reader.check_version(r.version, sf.path)  # type: ignore[attr-defined]
    out = []
    for key in sorted(set(gens) | set(recorded)):
        header = headers.get(key[0])
        per_gen = gens.get(key, {})
        samples = [s for g in per_gen.values() for s in g.samples]
        limit = next((s.limit for s in sorted(samples, key=lambda s: -s.t) if s.limit), None) \
            or (header.limit if header else None)
        # The worker's own lines where the configuration gives it some, else the top level.
        own = {s.name: s.thresholds for s in specs(cfg, limit)}
        th = own.get(key[1]) or thresholds(cfg, limit)
        period = header.sample_period_s if header else 1.0
        interval = header.interval_s if header else 0.001
        fired: list[Fired] = []
        ticks = 0
        exact = 0.0
        for number, g in sorted(per_gen.items()):
            result = _replay_generation(str(GenerationId(key[1], number)), number, g, th,
                                        period, interval)
            fired += result[0]
            ticks += result[1]
            exact += result[2]
        fired.sort(key=lambda f: f.t)
        rec = _confirmed(recorded.get(key, []))
        _match(rec, fired)
        first = [f.t for f in rec] + [s.t - period for s in samples]
        out.append(WorkerReplay(source=key[0], worker=key[1], samples=len(samples),
                                start=min(first, default=0.0), limit=limit, replayed=fired,
                                recorded=rec, ticks=ticks, exact_s=exact))
    return ReplayReport(config=config_path, note=NOTE, workers=out)


def _replay_generation(key: str, number: int, g: _Generation, th: Thresholds, period: float,
                       interval: float) -> tuple[list[Fired], int, float]:
    """Feed one generation's record to a fresh classifier; return its changes, the number of
    millisecond samples fed and the seconds they covered."""
    c = WorkerClassifier(key, th)
    lines = sorted(x for x in th.rss if x is not None)
    step = (g.bursts[0].interval_us * 1e-6 if g.bursts and g.bursts[0].interval_us
            else interval)
    times, values, spans = _ticks(g.bursts)
    samples = sorted(g.samples, key=lambda s: s.t)
    fired: list[Fired] = []
    prev: float | None = None
    prev_t = float("-inf")
    feed: list[tuple[float, int, float, bool]] = []  # (t, 0 rss / 1 growth, value, exact)
    for i, t in enumerate(times):
        feed.append((t, 0, values[i], True))
    for s in samples:
        start = s.t - period
        if not _covered(spans, start, s.t):
            top = memory.highest(s)
            first = prev if prev is not None else top
            if start - prev_t > 0.5 * step:  # the previous period's last value stands here
                feed.append((start, 0, first, False))
            run = (th.confirm - 1) * step  # a confirming run, first tick to last
            until = start
            if top >= first and any(first >= line for line in lines):
                # Already over a line: confirmed unless held (a gap, a generation's start).
                feed.extend((start + k * step, 0, first, False) for k in range(th.confirm))
                until = start + run
            for line in lines:
                if top >= line > first:  # crossed on the way up within the period
                    at = start + (line - first) / (top - first) * period
                    at = max(min(at, s.t - run), until + step if until > start else start)
                    feed.extend((at + k * step, 0, line, False) for k in range(th.confirm))
                    until = at + run
            if until < s.t:
                feed.append((s.t, 0, memory.last(s) or top, False))
        prev = memory.last(s) or memory.highest(s)
        prev_t = s.t
        feed.append((s.t, 1, s.slope, False))
    feed.sort(key=lambda x: (x[0], x[1]))
    for t, kind, value, exact in feed:
        t_ns = round(t * 1e9)
        change: Change | None = (c.observe_rss(t_ns, int(value)) if kind == 0
                                 else c.observe_growth(t_ns, value))
        if change is not None:
            fired.append(Fired(t=t, generation=number, level=change.level.label,
                               previous=change.previous.label, metric=change.metric,
                               value=change.value, threshold=change.threshold,
                               approximate=not exact or kind == 1))
    return fired, len(times), sum(b - a for a, b in spans)


def _ticks(bursts: list[BurstView]) -> tuple[list[float], list[int], list[tuple[float, float]]]:
    """Every millisecond sample of the bursts, in time order without repeats, and the spans
    (merged) they cover."""
    pairs: dict[float, int] = {}
    spans: list[tuple[float, float]] = []
    for b in bursts:
        ts, vs = b.samples()
        if not ts:
            continue
        pairs.update(zip(ts, vs, strict=True))
        spans.append((ts[0], ts[-1]))
    spans.sort()
    merged: list[tuple[float, float]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    times = sorted(pairs)
    return times, [pairs[t] for t in times], merged


def _covered(spans: list[tuple[float, float]], a: float, b: float) -> bool:
    """Whether [a, b] meets a span of millisecond samples."""
    i = bisect.bisect_right(spans, (b, float("inf"))) - 1
    return i >= 0 and spans[i][1] >= a


def _confirmed(recorded: list[tuple[Fired, int | None]]) -> list[Fired]:
    """The recorded changes in time order, each placed at its confirming tick when known.

    An event is written a moment after the tick that confirmed it (the event loop's delay);
    its `confirmed_ns` is monotonic. The offset from monotonic to wall time is the event's
    time minus `confirmed_ns`, plus that delay: the smallest such difference among events of
    the same clock (within a second of each other) is the best estimate of the offset.
    """
    diffs = [f.t - ns * 1e-9 for f, ns in recorded if ns is not None]
    out = []
    for f, ns in recorded:
        if ns is not None:
            d = f.t - ns * 1e-9
            offset = min(x for x in diffs if abs(x - d) < 1.0)
            f.confirmed_t = ns * 1e-9 + offset
        out.append(f)
    out.sort(key=lambda f: f.t)
    return out


def _match(recorded: list[Fired], replayed: list[Fired]) -> None:
    """Pair each recorded change with the nearest replayed change of the same generation and
    levels, and say how much later (negative: sooner) it fired."""
    for f in recorded:
        same = [r for r in replayed if r.generation == f.generation and r.level == f.level
                and r.previous == f.previous]
        if not same:
            continue
        at = f.confirmed_t if f.confirmed_t is not None else f.t
        best = min(same, key=lambda r: abs(r.t - at))
        f.replayed_t = best.t
        f.delta_s = best.t - at


def _when(t: float, t0: float, approximate: bool = False) -> str:
    return f"{'~' if approximate else ''}{t - t0:+.3f}s"


def _line(f: Fired | None, t0: float) -> str:
    if f is None:
        return ""
    cause = (f" {f.metric} {quantity(f.metric, f.value)}/{quantity(f.metric, f.threshold)}"
             if f.metric and f.value is not None and f.threshold is not None else "")
    when = f.confirmed_t if f.confirmed_t is not None else f.t
    return f"{_when(when, t0, f.approximate)} g{f.generation} {f.previous}->{f.level}{cause}"


def _rows(w: WorkerReplay) -> Iterator[tuple[Fired | None, Fired | None]]:
    """Replayed and recorded changes side by side, a matched pair on one row."""
    paired = {id(r): f for f in w.recorded for r in w.replayed
              if f.replayed_t is not None and r.t == f.replayed_t and r.level == f.level
              and r.generation == f.generation}
    shown: set[int] = set()
    for r in w.replayed:
        f = paired.get(id(r))
        if f is not None and id(f) not in shown:
            shown.add(id(f))
            yield r, f
        else:
            yield r, None
    for f in w.recorded:
        if id(f) not in shown:
            yield None, f


def render(report: ReplayReport) -> str:
    """The text form: per worker, replayed and recorded changes side by side."""
    lines = [f"memwarden analyze --replay --config {report.config}", f"({report.note})", ""]
    for w in report.workers:
        t0 = w.start
        lines.append(f"{w.source} / {w.worker}: {w.samples} samples from "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(t0))}Z, "
                     f"{w.exact_s:.1f} s of them replayed tick by tick ({w.ticks} ticks); "
                     f"{len(w.replayed)} change(s) under the new config, "
                     f"{len(w.recorded)} recorded")
        rows = list(_rows(w))
        width = max([len(_line(a, t0)) for a, _ in rows] + [24])
        lines.append(f"  {'under the new config'.ljust(width)}  | recorded")
        for a, b in sorted(rows, key=lambda ab: (ab[0] or ab[1]).t):  # type: ignore[union-attr]
            delta = (f"  ({b.delta_s * 1e3:+.1f} ms)" if b is not None and a is not None
                     and b.delta_s is not None else "")
            lines.append(f"  {_line(a, t0).ljust(width)}  | {_line(b, t0)}{delta}")
        for level in ("medium", "high", "critical"):
            new = next((f for f in w.replayed if f.level == level), None)
            old = next((f for f in w.recorded if f.level == level), None)
            if new is not None or old is not None:
                old_t = None if old is None else (
                    old.confirmed_t if old.confirmed_t is not None else old.t)
                lines.append(
                    f"  first {level}: new "
                    f"{_when(new.t, t0, new.approximate) if new else 'never'}, recorded "
                    f"{_when(old_t, t0) if old_t is not None else 'never'}")
        lines.append("")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Entry from the command line: needs `args.config` and `args.paths`; returns the status."""
    if not getattr(args, "config", None):
        print("memwarden analyze --replay: --config FILE is required (the thresholds to try)",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        cfg = loading.load({}, environ={}, file=args.config)
        report = replay(args.paths, cfg, args.config)
    except config_mod.ConfigError as e:
        print(f"memwarden analyze --replay: {e}", file=sys.stderr)
        return EXIT_USAGE
    except reader.SnapshotError as e:
        print(f"memwarden analyze --replay: {e}", file=sys.stderr)
        return EXIT_USAGE
    if getattr(args, "format", "text") == "json":
        data = msgspec.json.format(msgspec.json.encode(report), indent=2) + b"\n"
    else:
        data = (render(report) + "\n").encode()
    if not write_output(data, getattr(args, "output", None), "memwarden analyze --replay"):
        return EXIT_USAGE
    return EXIT_OK


__all__ = ["Fired", "ReplayReport", "WorkerReplay", "render", "replay", "run"]

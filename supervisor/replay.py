"""`memwarden analyze --replay --config FILE PATH...`: recorded samples through new thresholds.

Each worker generation's recorded samples are fed, in time order, to a fresh
`pressure.WorkerClassifier` built from the given configuration (resolved against the
recorded limit): `rss_max` of each sample as its RSS, `slope` as its growth. The level changes
it reports are printed next to the `level` events the supervisor recorded, so a new set of
thresholds can be tried on yesterday's data before it is deployed.

Samples are period summaries (1 s by default), not ticks: the confirmation count is counted in
samples, so `confirm = 3` means three periods here where it means three ticks live. Using the
period's maximum RSS keeps a crossing inside a period visible; a spike shorter than the
confirmation is still filtered only as far as the summaries allow. This is said in the output.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import msgspec

from snapshots import reader
from snapshots.cli import write_output
from snapshots.schema import Event, Header, Record
from supervisor import config as config_mod
from supervisor.pressure import Thresholds, WorkerClassifier

EXIT_OK, EXIT_USAGE = 0, 2


class _SampleView(Record, tag="sample", gc=False):
    """The sample fields replay needs."""

    worker: str
    generation: int
    rss_max: int
    slope: float = 0.0
    limit: int | None = None


_TYPES = Header | _SampleView | Event | reader.BurstHead


class Fired(msgspec.Struct, kw_only=True):
    """One level change, replayed or recorded."""

    t: float
    generation: int
    level: str
    previous: str
    metric: str | None = None
    value: float | None = None
    threshold: float | None = None


class WorkerReplay(msgspec.Struct, kw_only=True):
    source: str
    worker: str
    samples: int
    start: float  # time of the first sample; the text form counts from it
    limit: int | None
    replayed: list[Fired]
    recorded: list[Fired]


class ReplayReport(msgspec.Struct, kw_only=True):
    schema: str = "memwarden.replay/1"
    config: str
    note: str
    workers: list[WorkerReplay]


NOTE = ("replayed on recorded sample summaries: the confirmation count is counted in sample "
        "periods (not ticks), RSS is each period's maximum, growth the recorded slope")


def replay(paths: Sequence[str], cfg: config_mod.Config, config_path: str = "") -> ReplayReport:
    """Replay the snapshots `paths` name under `cfg`.

    Raises reader.SnapshotError, reader.UnsupportedVersion.
    """
    stats = reader.ReadStats()
    series: dict[tuple[str, str], list[_SampleView]] = {}
    recorded: dict[tuple[str, str], list[Fired]] = {}
    limits: dict[str, int | None] = {}
    for src in reader.sources(list(paths)):
        label = src.label
        header = src.header
        limits[label] = header.limit if header else None
        for sf in src.files:
            for chunk in reader.iter_chunks(sf, stats, types=_TYPES):
                for r in chunk:
                    if r.__class__ is _SampleView:
                        series.setdefault((label, r.worker), []).append(r)  # type: ignore[attr-defined]
                    elif r.__class__ is Event and r.type == "level" and r.level:  # type: ignore[attr-defined]
                        e: Event = r  # type: ignore[assignment]
                        recorded.setdefault((label, e.worker), []).append(Fired(
                            t=e.t, generation=e.generation, level=e.level or "",
                            previous=e.previous or "", metric=e.metric, value=e.value,
                            threshold=e.threshold))
                    elif r.__class__ is Header:
                        reader.check_version(r.version, sf.path)  # type: ignore[attr-defined]
    out = []
    for key in sorted(set(series) | set(recorded)):
        samples = sorted(series.get(key, []), key=lambda s: s.t)
        limit = next((s.limit for s in reversed(samples) if s.limit), None) or limits.get(key[0])
        th = Thresholds.from_config(cfg, limit)
        classifiers: dict[int, WorkerClassifier] = {}
        fired: list[Fired] = []
        for s in samples:
            c = classifiers.get(s.generation)
            if c is None:
                c = classifiers[s.generation] = WorkerClassifier(f"{key[1]}:{s.generation}", th)
            t_ns = int(s.t * 1e9)
            for change in (c.observe_rss(t_ns, s.rss_max), c.observe_growth(t_ns, s.slope)):
                if change is not None:
                    fired.append(Fired(t=s.t, generation=s.generation, level=change.level.label,
                                       previous=change.previous.label, metric=change.metric,
                                       value=change.value, threshold=change.threshold))
        start = samples[0].t if samples else min((f.t for f in recorded.get(key, [])),
                                                 default=0.0)
        out.append(WorkerReplay(source=key[0], worker=key[1], samples=len(samples), start=start,
                                limit=limit,
                                replayed=fired, recorded=sorted(recorded.get(key, []),
                                                                key=lambda f: f.t)))
    return ReplayReport(config=config_path, note=NOTE, workers=out)


def _when(t: float, t0: float) -> str:
    return f"+{t - t0:.1f}s"


def _line(f: Fired | None, t0: float) -> str:
    if f is None:
        return ""
    unit = "MB/s" if f.metric == "growth" else "MB"
    cause = f" {f.metric} {f.value / 1e6:.1f}/{f.threshold / 1e6:.1f} {unit}" if (
        f.metric and f.value is not None and f.threshold is not None) else ""
    return f"{_when(f.t, t0)} g{f.generation} {f.previous}->{f.level}{cause}"


def render(report: ReplayReport) -> str:
    """The text form: per worker, replayed and recorded changes side by side."""
    lines = [f"memwarden analyze --replay --config {report.config}", f"({report.note})", ""]
    for w in report.workers:
        t0 = w.start
        lines.append(f"{w.source} / {w.worker}: {w.samples} samples from "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(t0))}Z; "
                     f"{len(w.replayed)} change(s) under the new config, "
                     f"{len(w.recorded)} recorded")
        width = max([len(_line(f, t0)) for f in w.replayed] + [24])
        lines.append(f"  {'under the new config'.ljust(width)}  | recorded")
        for i in range(max(len(w.replayed), len(w.recorded))):
            a = _line(w.replayed[i], t0) if i < len(w.replayed) else ""
            b = _line(w.recorded[i], t0) if i < len(w.recorded) else ""
            lines.append(f"  {a.ljust(width)}  | {b}")
        for level in ("medium", "high", "critical"):
            new = next((f.t for f in w.replayed if f.level == level), None)
            old = next((f.t for f in w.recorded if f.level == level), None)
            if new is not None or old is not None:
                lines.append(f"  first {level}: new {_when(new, t0) if new else 'never'}, "
                             f"recorded {_when(old, t0) if old else 'never'}")
        lines.append("")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Entry from the command line: needs `args.config` and `args.paths`; returns the status."""
    if not getattr(args, "config", None):
        print("memwarden analyze --replay: --config FILE is required (the thresholds to try)",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        cfg = config_mod.load({}, environ={}, file=args.config)
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

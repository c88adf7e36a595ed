"""Per-worker data folded from snapshot records as they are read: windows, levels, counters.

The analysis never keeps records nor per-sample columns: each chunk the reader decodes is
grouped by worker and folded into that worker's generation windows (`windows.py`), their level
runs and time in each level, and an evenly spaced subset of its counters. Of the bursts (the
flight recorder), only those around a change to HIGH or CRITICAL are kept, undecoded: they
hold the crossing that started a replacement. Memory is O(windows + level changes + 1024
counter readings + those bursts) per worker, however long the record.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from snapshots import fold, memory, plausible
from snapshots.burst import decode_burst
from snapshots.plausible import time_ok
from snapshots.schema import Burst, Event, Header, Record
from snapshots.windows import LEVELS, GenerationData

#: Most worker-counter readings kept per worker (see WorkerData): far more than the fits on
#: them see (200 points), enough for the cumulative gc counters' increases.
MAX_COUNTERS = 1024
#: Workers analysed per source (far more than one supervisor runs): the records of any
#: further name are dropped and counted, so that a damaged or forged set of many names
#: cannot make the analysis' memory and time grow without bound.
MAX_WORKERS = 256
#: Bursts kept per generation (those around a change to HIGH or CRITICAL).
MAX_BURSTS = 8
#: A burst spans at most this long (2 s before its cause and 1 s after, and some slack).
_BURST_SPAN_S = 3.5

_T = operator.attrgetter("t")
_GEN = operator.attrgetter("generation")


class Counters(msgspec.Struct, gc=False):
    """The worker counters the analysis uses; other keys of `Sample.stats` are ignored."""

    objects: float | None = None
    history: float | None = None
    blocks: float | None = None
    gc_collections: float | None = None
    gc_pause_ms: float | None = None


class SampleView(Record, tag="sample", gc=False):
    """The fields of `Sample` the analysis reads (decoding fewer fields is faster)."""

    worker: str
    generation: int
    rss_min: int
    rss_max: int
    rss_mean: float
    rss: int = 0
    memory: int | None = None  # format 1.1: the figure thresholds compare (`snapshots.memory`)
    level: str = "low"
    slope: float = 0.0
    limit: int | None = None
    # Left as raw JSON: only the few samples whose counters are kept get them decoded
    # (see WorkerData.keep_counters); measured 20 % faster decoding than a Counters field.
    stats: msgspec.Raw = msgspec.Raw()
    dropped: int = 0


class BurstView(Record, tag="burst", gc=False):
    """A burst with its samples left as raw JSON: decoded only for the few bursts kept."""

    worker: str
    generation: int
    pid: int = 0
    cause: str = ""
    interval_us: int = 0
    rss0: int = 0
    dt_us: msgspec.Raw = msgspec.Raw()
    rss_delta: msgspec.Raw = msgspec.Raw()

    def samples(self) -> tuple[list[float], list[int]]:
        """Wall times (Unix seconds) and RSS values (bytes); empty when damaged."""
        try:
            return decode_burst(Burst(
                t=self.t, worker=self.worker, generation=self.generation, pid=self.pid,
                cause=self.cause, interval_us=self.interval_us, rss0=self.rss0,
                dt_us=_INTS.decode(self.dt_us) if self.dt_us else [],
                rss_delta=_INTS.decode(self.rss_delta) if self.rss_delta else []))
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
            return [], []


#: What the analysis decodes: headers and events in full, samples and bursts in part.
ANALYSIS_TYPES = Header | SampleView | Event | BurstView

_INTS = msgspec.json.Decoder(list[int])

_COUNTERS = msgspec.json.Decoder(Counters)


_COUNTER_LIST = msgspec.json.Decoder(list[Counters | None])


def _decode_all(kept: list[Counters | msgspec.Raw | None]) -> list[Counters | None]:
    """Decode the kept raw counters in one call (as one JSON array); one by one only when
    some are damaged, so that a bad reading is dropped alone."""
    raws = [c if isinstance(c, msgspec.Raw) else b"null" for c in kept]
    try:
        decoded = _COUNTER_LIST.decode(b"[" + b",".join(raws) + b"]")
    except (msgspec.DecodeError, msgspec.ValidationError):
        decoded = [_counters(c) if isinstance(c, msgspec.Raw) else None for c in kept]
    return [c if isinstance(c, Counters) else d for c, d in zip(kept, decoded, strict=True)]


def _counters(raw: msgspec.Raw | None) -> Counters | None:
    """Decode a sample's `stats`; None when absent or not an object of numbers."""
    if not raw:
        return None
    try:
        return _COUNTERS.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None


@dataclass
class WorkerData:
    """Everything recorded about one worker of one source, folded as it was read.

    Windows are `width` seconds from `origin` (see `windows.py`); levels are timed per
    generation there. Worker counters are kept for an evenly spaced subset of the samples
    (every `counter_stride`-th, at most `MAX_COUNTERS`; the stride doubles as the record grows).
    """

    source: str
    worker: str
    origin: float
    width: float
    period_s: float = 1.0
    max_windows: int = 2000
    warmup_s: float = 6.0
    gens: dict[int, GenerationData] = field(default_factory=dict)
    samples: int = 0
    counters: list[Counters | msgspec.Raw | None] = field(default_factory=list)
    counter_t: list[float] = field(default_factory=list)
    counter_rss: list[float] = field(default_factory=list)
    counter_gen: list[int] = field(default_factory=list)
    counter_stride: int = 1
    limit: int | None = None
    events: list[Event] = field(default_factory=list)
    bursts: int = 0
    kept_bursts: dict[int, list[BurstView]] = field(default_factory=dict)
    implausible: int = 0  # samples dropped: a time or size no record can hold
    _seen: int = 0
    _raw: bool = False
    _series: dict[tuple[str, int | None], tuple[list[float], list[float], list[float]]] = \
        field(default_factory=dict)

    def add(self, group: list[SampleView], generation: int | None) -> None:
        """Fold one chunk's samples of this worker (in file order; all of `generation`, or
        of several when it is None) in; implausible ones (`plausible.py`) are dropped and
        counted."""
        if generation is not None:
            dropped = self._generation(generation).add(group)
        else:  # a replacement overlaps its predecessor: split by generation
            dropped = 0
            for g in sorted(set(map(_GEN, group))):
                dropped += self._generation(g).add([s for s in group if s.generation == g])
        if dropped:  # rare: the counters of the dropped samples are not kept either
            self.implausible += dropped
            kept = plausible.keep(list(map(_T, group)), *memory.columns(group))
            group = [group[i] for i in kept]
        self.samples += len(group)
        self.keep_counters(group)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (sent back by a process that analysed a source) without the counter
        series cached: rebuilt on use, they would be a third of what is sent."""
        state = self.__dict__.copy()
        state["_series"] = {}
        return state

    def _generation(self, g: int) -> GenerationData:
        gd = self.gens.get(g)
        if gd is None:
            gd = self.gens[g] = GenerationData(g, self.width, self.origin, self.max_windows,
                                               self.period_s, self.warmup_s)
        return gd

    def burst(self, b: BurstView) -> None:
        """Count a burst; keep it (its raw samples copied) when it covers the generation's
        latest change to HIGH or CRITICAL: it holds the crossing a replacement started from.
        (A level burst is written a second after its change, an exit burst at the exit, so
        either may be the one that covers it.)"""
        self.bursts += 1
        for e in reversed(self.events[-32:]):  # the event is written before its burst
            if e.type == "level" and e.generation == b.generation:
                if e.level in ("high", "critical") and b.t <= e.t <= b.t + _BURST_SPAN_S:
                    kept = self.kept_bursts.setdefault(b.generation, [])
                    kept.append(BurstView(
                        t=b.t, worker=b.worker, generation=b.generation, pid=b.pid,
                        cause=b.cause, interval_us=b.interval_us, rss0=b.rss0,
                        dt_us=b.dt_us.copy(), rss_delta=b.rss_delta.copy()))
                    del kept[:-MAX_BURSTS]
                return

    @property
    def has_counters(self) -> bool:
        return any(c is not None for c in self.counters)

    def keep_counters(self, group: Sequence[SampleView]) -> None:
        """Keep the counters of the samples of `group` that fall on the stride."""
        stride = self.counter_stride
        kept = group[(-self._seen) % stride::stride]
        self._seen += len(group)
        # Kept raw (copied off the file's buffer) and decoded on first use: most readings
        # kept early are dropped again as the stride grows.
        self.counters.extend([s.stats.copy() if s.stats else None for s in kept])
        self.counter_t.extend([s.t for s in kept])
        self.counter_rss.extend([s.rss_mean for s in kept])
        self.counter_gen.extend([s.generation for s in kept])
        self._raw = True
        while len(self.counters) > MAX_COUNTERS:
            # Kept positions are multiples of the stride, so every other one is a multiple
            # of the doubled stride: the subset stays evenly spaced.
            self.counter_stride *= 2
            for name in ("counters", "counter_t", "counter_rss", "counter_gen"):
                setattr(self, name, getattr(self, name)[::2])

    def counter_series(self, name: str, generation: int | None = None
                       ) -> tuple[list[float], list[float], list[float]]:
        """Times, values and RSS of the counter `name` where present (of one generation)."""
        if self._raw:
            self.counters = _decode_all(self.counters)
            self._raw = False
            if any(a > b for a, b in itertools.pairwise(self.counter_t)):
                order = sorted(range(len(self.counter_t)), key=self.counter_t.__getitem__)
                for col in ("counters", "counter_t", "counter_rss", "counter_gen"):
                    values = getattr(self, col)
                    setattr(self, col, [values[i] for i in order])
        key = (name, generation)
        cached = self._series.get(key)
        if cached is None:
            ts: list[float] = []
            vs: list[float] = []
            rs: list[float] = []
            for t, c, r, g in zip(self.counter_t, self.counters, self.counter_rss,
                                  self.counter_gen, strict=True):
                if c is None or (generation is not None and g != generation):
                    continue
                v = getattr(c, name)
                if v is not None:
                    ts.append(t)
                    vs.append(float(v))
                    rs.append(r)
            cached = self._series[key] = (ts, vs, rs)
        return cached


@dataclass
class Frame:
    """How one source's samples are windowed: from `origin`, `width` seconds each."""

    origin: float
    width: float
    period_s: float = 1.0
    max_windows: int = 2000
    warmup_s: float = 6.0
    span_s: float = 0.0  # from the first record to the last, when known


class Collector:
    """Fold decoded records into `WorkerData`, one per (source, worker)."""

    def __init__(self) -> None:
        self.workers: dict[tuple[str, str], WorkerData] = {}
        self.source_events: dict[str, list[Event]] = {}
        self.frames: dict[str, Frame] = {}
        self.dropped = 0
        self.implausible = 0  # events and bursts of a time no record can have
        self.beyond_workers = 0  # records of workers beyond MAX_WORKERS in their source
        self._count: dict[str, int] = {}

    def _worker(self, source: str, name: str) -> WorkerData | None:
        """The worker's data; None (its records to be dropped and counted) for a worker
        beyond the first MAX_WORKERS of its source."""
        w = self.workers.get((source, name))
        if w is None:
            if self._count.get(source, 0) >= MAX_WORKERS:
                return None
            self._count[source] = self._count.get(source, 0) + 1
            f = self.frames.get(source) or Frame(0.0, 1.0)
            w = self.workers[(source, name)] = WorkerData(
                source, name, f.origin, f.width, f.period_s, f.max_windows, f.warmup_s)
            # Counters kept at the stride the record's length calls for from the start:
            # copying most readings only to drop them as the stride doubles is wasted work.
            w.counter_stride = max(1, int(f.span_s / f.period_s / MAX_COUNTERS))
        return w

    def add(self, source: str, records: Sequence[Record]) -> list[Header]:
        """Fold `records` of `source` in; return the headers met (for version checks).

        Samples are grouped per worker and folded a generation at a time (`fold.py`): the
        only per-sample work, each record read once where `_fold` is built.
        """
        headers: list[Header] = []
        others, groups = fold.split(records, SampleView)
        for r in others:  # few: events, bursts, headers
            cls = r.__class__
            if cls is Header:
                headers.append(r)
                continue
            if not time_ok(r.t):
                self.implausible += 1
                continue
            if cls is Event:
                e: Event = r
                if e.type == "dropped" and e.dropped:
                    self.dropped += e.dropped
                if not e.worker:
                    self.source_events.setdefault(source, []).append(e)
                elif (w := self._worker(source, e.worker)) is not None:
                    w.events.append(e)
                else:
                    self.beyond_workers += 1
            elif cls is BurstView:
                if (w := self._worker(source, r.worker)) is not None:
                    w.burst(r)
                else:
                    self.beyond_workers += 1
        # Workers in name order while they are few (as a pod runs them), else in order of
        # appearance: the order in which workers beyond MAX_WORKERS are refused.
        for name in sorted(groups) if len(groups) <= fold.FEW else groups:
            group = groups[name]
            w = self._worker(source, name)
            if w is None:
                self.beyond_workers += len(group.samples)
                continue
            w.add(group.samples, group.generation)
            if group.limit is not None:
                w.limit = group.limit
            self.dropped += group.dropped
        return headers

    def finish(self) -> None:
        """Order every worker's events (generations are closed by the analysis)."""
        for w in self.workers.values():
            w.events.sort(key=lambda e: e.t)


__all__ = [
    "ANALYSIS_TYPES",
    "LEVELS",
    "BurstView",
    "Collector",
    "Counters",
    "Frame",
    "SampleView",
    "WorkerData",
]

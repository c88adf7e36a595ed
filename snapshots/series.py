"""Per-worker data folded from snapshot records as they are read: windows, levels, counters.

The analysis never keeps records nor per-sample columns: each chunk the reader decodes is
grouped by worker and folded into that worker's generation windows (`windows.py`), its level
runs and time in each level, and an evenly spaced subset of its counters. Memory is
O(windows + level changes + 4096 counter readings) per worker, however long the record.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field

import msgspec

from snapshots.reader import BurstHead
from snapshots.schema import Event, Header, Record
from snapshots.windows import GenerationData

LEVELS = ("low", "medium", "high", "critical")
#: Most worker-counter readings kept per worker (see WorkerData).
MAX_COUNTERS = 4096

_T = operator.attrgetter("t")
_GEN = operator.attrgetter("generation")
_LEVEL = operator.attrgetter("level")
_LIMIT = operator.attrgetter("limit")
_DROPPED = operator.attrgetter("dropped")


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
    level: str = "low"
    limit: int | None = None
    # Left as raw JSON: only the few samples whose counters are kept get them decoded
    # (see WorkerData.keep_counters); measured 20 % faster decoding than a Counters field.
    stats: msgspec.Raw = msgspec.Raw()
    dropped: int = 0


#: What the analysis decodes: headers and events in full, samples and bursts in part.
ANALYSIS_TYPES = Header | SampleView | Event | BurstHead

_COUNTERS = msgspec.json.Decoder(Counters)


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

    Windows are `width` seconds from `origin` (see `windows.py`). A sample stands for the
    time to the next one, at most two sample periods: a longer gap means nothing was
    recorded (the supervisor was down), and nothing is claimed for it. Worker counters are
    kept for an evenly spaced subset of the samples (every `counter_stride`-th, at most
    `MAX_COUNTERS`; the stride doubles as the record grows).
    """

    source: str
    worker: str
    origin: float
    width: float
    period_s: float = 1.0
    max_windows: int = 2000
    gens: dict[int, GenerationData] = field(default_factory=dict)
    samples: int = 0
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LEVELS, 0.0))
    runs: list[list] = field(default_factory=list)  # [start, last sample t, level]
    counters: list[Counters | msgspec.Raw | None] = field(default_factory=list)
    counter_t: list[float] = field(default_factory=list)
    counter_rss: list[float] = field(default_factory=list)
    counter_gen: list[int] = field(default_factory=list)
    counter_stride: int = 1
    limit: int | None = None
    events: list[Event] = field(default_factory=list)
    bursts: int = 0
    _last_t: float | None = None
    _last_level: str = "low"
    _seen: int = 0
    _raw: bool = False
    _series: dict[tuple[str, int | None], tuple[list[float], list[float], list[float]]] = \
        field(default_factory=dict)

    def add(self, group: list[SampleView]) -> None:
        """Fold one chunk's samples of this worker (in file order) in."""
        ts = list(map(_T, group))
        self.samples += len(group)
        gens = set(map(_GEN, group))
        if len(gens) == 1:
            self._generation(group[0].generation).add(ts, group)
        else:  # a replacement overlaps its predecessor: split by generation
            for g in sorted(gens):
                part = [s for s in group if s.generation == g]
                self._generation(g).add(list(map(_T, part)), part)
        self._levels(ts, list(map(_LEVEL, group)))
        self.keep_counters(group)

    def _generation(self, g: int) -> GenerationData:
        gd = self.gens.get(g)
        if gd is None:
            gd = self.gens[g] = GenerationData(g, self.width, self.origin, self.max_windows)
        return gd

    def _levels(self, ts: list[float], lv: list[str]) -> None:
        cap = 2 * self.period_s
        seconds, runs = self.seconds, self.runs
        n = len(ts)
        if self._last_t is not None:  # the previous chunk's last sample, up to this one
            gap = ts[0] - self._last_t
            seconds[self._last_level] += min(max(gap, 0.0), cap)
            if gap > cap or lv[0] != self._last_level:
                runs.append([ts[0], ts[0], lv[0]])
        else:
            runs.append([ts[0], ts[0], lv[0]])
        if n > 1 and max(map(operator.sub, ts[1:], ts[:-1])) > cap:
            for i in range(1, n):  # rare: gaps to cap inside the chunk
                gap = ts[i] - ts[i - 1]
                seconds[lv[i - 1]] = seconds.get(lv[i - 1], 0.0) + min(max(gap, 0.0), cap)
                runs[-1][1] = ts[i - 1]
                if gap > cap or lv[i] != lv[i - 1]:
                    runs.append([ts[i], ts[i], lv[i]])
            runs[-1][1] = ts[-1]
        else:
            # No gap to cap: a run's time is from its first sample to the next run's first.
            edges = [0, *_changes(lv), n]
            for a, b in itertools.pairwise(edges):
                end = ts[b] if b < n else ts[-1]
                seconds[lv[a]] = seconds.get(lv[a], 0.0) + (end - ts[a])
                if a:
                    runs.append([ts[a], ts[a], lv[a]])
                runs[-1][1] = ts[b - 1]
        self._last_t, self._last_level = ts[-1], lv[-1]

    def finish(self) -> None:
        """Account for the last sample's period."""
        if self._last_t is not None:
            self.seconds[self._last_level] += self.period_s
            self._last_t = None

    def level_runs(self) -> list[tuple[float, float, str]]:
        """(start, end, level) runs; a run ends where the next begins, or a period later."""
        cap = 2 * self.period_s
        out = []
        for i, (start, last, level) in enumerate(self.runs):
            nxt = self.runs[i + 1][0] if i + 1 < len(self.runs) else None
            end = nxt if nxt is not None and 0 <= nxt - last <= cap else last + self.period_s
            out.append((start, end, level))
        return out

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
            self.counters = [_counters(c) if isinstance(c, msgspec.Raw) else c
                             for c in self.counters]
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


def _changes(values: Sequence[str]) -> list[int]:
    """Indices where the value differs from the one before."""
    if len(set(values)) <= 1:
        return []
    return [i for i in range(1, len(values)) if values[i] != values[i - 1]]


@dataclass
class Frame:
    """How one source's samples are windowed: from `origin`, `width` seconds each."""

    origin: float
    width: float
    period_s: float = 1.0
    max_windows: int = 2000


class Collector:
    """Fold decoded records into `WorkerData`, one per (source, worker)."""

    def __init__(self) -> None:
        self.workers: dict[tuple[str, str], WorkerData] = {}
        self.source_events: dict[str, list[Event]] = {}
        self.frames: dict[str, Frame] = {}
        self.dropped = 0

    def _worker(self, source: str, name: str) -> WorkerData:
        w = self.workers.get((source, name))
        if w is None:
            f = self.frames.get(source) or Frame(0.0, 1.0)
            w = self.workers[(source, name)] = WorkerData(
                source, name, f.origin, f.width, f.period_s, f.max_windows)
        return w

    def add(self, source: str, records: Sequence[Record]) -> list[Header]:
        """Fold `records` of `source` in; return the headers met (for version checks).

        Samples are grouped per worker and each group is folded with a few C-level passes
        (comprehensions, `map`, slices) rather than Python work per sample.
        """
        headers: list[Header] = []
        groups: dict[str, list[SampleView]] = {}
        for r in records:
            cls = r.__class__
            if cls is SampleView:
                group = groups.get(r.worker)  # type: ignore[attr-defined]
                if group is None:
                    group = groups[r.worker] = []  # type: ignore[attr-defined]
                group.append(r)  # type: ignore[arg-type]
            elif cls is Event:
                e: Event = r  # type: ignore[assignment]
                if e.type == "dropped" and e.dropped:
                    self.dropped += e.dropped
                if e.worker:
                    self._worker(source, e.worker).events.append(e)
                else:
                    self.source_events.setdefault(source, []).append(e)
            elif cls is BurstHead:
                self._worker(source, r.worker).bursts += 1  # type: ignore[attr-defined]
            elif cls is Header:
                headers.append(r)  # type: ignore[arg-type]
        for name, group in groups.items():
            w = self._worker(source, name)
            w.add(group)
            limit = next(filter(None, map(_LIMIT, reversed(group))), None)
            if limit is not None:
                w.limit = limit
            self.dropped += sum(map(_DROPPED, group))
        return headers

    def finish(self) -> None:
        """Close every worker's open windows and level run."""
        for w in self.workers.values():
            w.finish()
            for gd in w.gens.values():
                gd.finish()
            w.events.sort(key=lambda e: e.t)


__all__ = [
    "ANALYSIS_TYPES",
    "LEVELS",
    "Collector",
    "Counters",
    "Frame",
    "SampleView",
    "WorkerData",
]

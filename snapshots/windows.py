"""Fixed-width windows (min, median, max) assembled while samples stream in.

A generation's samples are folded into windows as each chunk of records is read, so the
analysis never keeps per-sample columns: memory and the statistics downstream are O(windows).
The width is chosen before reading from the span of the record (at most `max_windows` per
generation); when the span was not known (compressed files), windows are folded in pairs as
they exceed twice that, and a folded window's median is then the mean of the two medians.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from snapshots import fold, memory, plausible

HEAD = 10  # first and last samples of a generation kept as they are
LEVELS = ("low", "medium", "high", "critical")
#: Growth the original automaton design calls healthy, a warning and critical (bytes/s).
GROWTH_TARGETS = (1e6, 5e6, 10e6)

_T = operator.attrgetter("t")
_SLOPE = operator.attrgetter("slope")


@dataclass
class Windows:
    """A series resampled to fixed windows: start time, min, median and max of each."""

    t: list[float]
    lo: list[float]
    med: list[float]
    hi: list[float]

    def __len__(self) -> int:
        return len(self.t)


@dataclass
class GenerationData:
    """One generation of one worker: its windows and a few facts kept along the way.

    A sample stands for the time to the generation's next sample, at most two sample periods
    (`period_s`): a longer gap means nothing was recorded (the supervisor was down), nothing
    is claimed for it and the gap is kept in `gaps`. Levels are timed per generation, so a
    replacement that overlaps its predecessor does not interleave the two generations' levels.
    Growth (the supervisor's robust slope) is judged after the first `warmup_s` seconds,
    where a generation's start-up allocation would read as growth.
    """

    generation: int
    width: float  # window width in seconds
    origin: float  # windows start at origin + k * width
    max_windows: int = 2000
    period_s: float = 1.0
    warmup_s: float = 6.0
    samples: int = 0
    first_t: float = float("inf")
    last_t: float = float("-inf")
    head: list[tuple[float, float]] = field(default_factory=list)  # (t, mean)
    tail: list[tuple[float, float, float]] = field(default_factory=list)  # (t, mean, max)
    levels: set[str] = field(default_factory=set)
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(LEVELS, 0.0))
    runs: list[list] = field(default_factory=list)  # [start, last sample t, level]
    gaps: list[tuple[float, float]] = field(default_factory=list)
    growth_max: float = 0.0  # bytes/s, after warm-up
    growth_over: list[int] = field(default_factory=lambda: [0, 0, 0])  # samples over targets
    k: list[int] = field(default_factory=list)
    t: list[float] = field(default_factory=list)
    lo: list[float] = field(default_factory=list)
    med: list[float] = field(default_factory=list)
    hi: list[float] = field(default_factory=list)
    _pk: int | None = None  # the window still open (more samples may fall into it)
    _pt: float = 0.0
    _plo: float = 0.0
    _phi: float = 0.0
    _pmids: list[float] = field(default_factory=list)
    _last_t: float | None = None
    _last_level: str = "low"

    def add(self, group: Sequence[Any]) -> int:
        """Fold samples (`group`, records of one type in file order) into the windows;
        return how many were dropped as implausible (`plausible.py`)."""
        if not group:
            return 0
        found = self._scan(group)
        dropped = 0
        if found is None:  # rare: some sample is implausible; fold the others
            kept = plausible.keep(list(map(_T, group)), *memory.columns(group))
            dropped = len(group) - len(kept)
            if not kept:
                return dropped
            group = [group[i] for i in kept]
            found = self._scan(group)
            assert found is not None  # what `keep` keeps is plausible
        ts = found.ts
        self.samples += len(ts)
        self.first_t = min(self.first_t, ts[0])
        self.last_t = max(self.last_t, ts[-1])
        if len(self.head) < HEAD:
            self.head.extend(found.head[:HEAD - len(self.head)])
        self.tail = (self.tail + found.tail)[-HEAD:]
        self.levels |= found.kinds
        self._levels(ts, found.levels, len(found.kinds) > 1, found.gapped)
        if found.top is not None:
            self._growth(ts, group, found.top)
        for k, t, lo, hi, mids in found.windows:
            if k == self._pk:
                self._plo = min(self._plo, lo)
                self._phi = max(self._phi, hi)
                self._pmids.extend(mids)
            else:
                self._close()
                self._pk, self._pt, self._plo, self._phi, self._pmids = k, t, lo, hi, mids
        while len(self.t) > 2 * self.max_windows:
            self._fold()
        return dropped

    def _scan(self, group: Sequence[Any]) -> fold.Scan | None:
        # Growth counts from `warmup_s` after the generation's first sample, this one's
        # included.
        since = min(self.first_t, group[0].t) + self.warmup_s
        return fold.scan(group, self.origin, self.width, since, 2 * self.period_s, HEAD)

    def _growth(self, ts: Sequence[float], group: Sequence[Any], top: float) -> None:
        """Fold in the highest slope after warm-up, `top` (of the samples from
        `first_t + warmup_s` on)."""
        if top > self.growth_max:
            self.growth_max = top
        if top > GROWTH_TARGETS[0]:  # rare: count the samples over each target
            start = bisect.bisect_left(ts, self.first_t + self.warmup_s)
            slopes = list(map(_SLOPE, group[start:]))
            for i, line in enumerate(GROWTH_TARGETS):
                self.growth_over[i] += sum(map(line.__lt__, slopes))

    def _levels(self, ts: Sequence[float], lv: list[str], changing: bool, gapped: bool
                ) -> None:
        cap = 2 * self.period_s
        seconds, runs = self.seconds, self.runs
        n = len(ts)
        if self._last_t is not None:  # the previous chunk's last sample, up to this one
            gap = ts[0] - self._last_t
            seconds[self._last_level] += min(max(gap, 0.0), cap)
            if gap > cap:
                self.gaps.append((self._last_t, ts[0]))
            if gap > cap or lv[0] != self._last_level:
                runs.append([ts[0], ts[0], lv[0]])
        else:
            runs.append([ts[0], ts[0], lv[0]])
        if gapped:
            for i in range(1, n):  # rare: gaps to cap inside the chunk
                gap = ts[i] - ts[i - 1]
                seconds[lv[i - 1]] = seconds.get(lv[i - 1], 0.0) + min(max(gap, 0.0), cap)
                runs[-1][1] = ts[i - 1]
                if gap > cap:
                    self.gaps.append((ts[i - 1], ts[i]))
                if gap > cap or lv[i] != lv[i - 1]:
                    runs.append([ts[i], ts[i], lv[i]])
            runs[-1][1] = ts[-1]
        else:
            # No gap to cap: a run's time is from its first sample to the next run's first.
            edges = [0, *(_changes(lv) if changing else ()), n]
            for a, b in itertools.pairwise(edges):
                end = ts[b] if b < n else ts[-1]
                seconds[lv[a]] = seconds.get(lv[a], 0.0) + (end - ts[a])
                if a:
                    runs.append([ts[a], ts[a], lv[a]])
                runs[-1][1] = ts[b - 1]
        self._last_t, self._last_level = ts[-1], lv[-1]

    def level_runs(self) -> list[tuple[float, float, str]]:
        """(start, end, level) from the samples; a run ends where the next begins, or a
        period after its last sample."""
        cap = 2 * self.period_s
        out = []
        for i, (start, last, level) in enumerate(self.runs):
            nxt = self.runs[i + 1][0] if i + 1 < len(self.runs) else None
            end = nxt if nxt is not None and 0 <= nxt - last <= cap else last + self.period_s
            out.append((start, end, level))
        return out

    def _close(self) -> None:
        if self._pk is None:
            return
        mids = sorted(self._pmids)
        m = len(mids)
        self.k.append(self._pk)
        self.t.append(self._pt)
        self.lo.append(float(self._plo))
        self.med.append(mids[m // 2] if m % 2 else (mids[m // 2 - 1] + mids[m // 2]) / 2.0)
        self.hi.append(float(self._phi))
        self._pk = None

    def _fold(self) -> None:
        """Double the width: merge the windows that now share an index."""
        self.width *= 2
        ks: list[int] = []
        ts: list[float] = []
        los: list[float] = []
        meds: list[list[float]] = []
        his: list[float] = []
        for k, t, lo, med, hi in zip(self.k, self.t, self.lo, self.med, self.hi, strict=True):
            k //= 2
            if ks and ks[-1] == k:
                los[-1] = min(los[-1], lo)
                his[-1] = max(his[-1], hi)
                meds[-1].append(med)
            else:
                ks.append(k)
                ts.append(t)
                los.append(lo)
                meds.append([med])
                his.append(hi)
        self.k, self.t, self.lo, self.hi = ks, ts, los, his
        self.med = [sum(m) / len(m) for m in meds]
        if self._pk is not None:
            self._pk //= 2
            if self.k and self.k[-1] == self._pk:  # the open window joins the last one
                self._close_into_last()

    def _close_into_last(self) -> None:
        mids = sorted(self._pmids)
        m = len(mids)
        med = mids[m // 2] if m % 2 else (mids[m // 2 - 1] + mids[m // 2]) / 2.0
        self.lo[-1] = min(self.lo[-1], float(self._plo))
        self.hi[-1] = max(self.hi[-1], float(self._phi))
        self.med[-1] = (self.med[-1] + med) / 2.0
        self._pk = None

    def finish(self) -> Windows:
        """Close the open window and the last level run; return the windows, in time order."""
        self._close()
        if self._last_t is not None:  # the last sample stands for one period
            self.seconds[self._last_level] += self.period_s
            self._last_t = None
        if any(a > b for a, b in zip(self.k, self.k[1:], strict=False)):
            order = sorted(range(len(self.k)), key=lambda i: (self.k[i], self.t[i]))
            for name in ("k", "t", "lo", "med", "hi"):
                col = getattr(self, name)
                setattr(self, name, [col[i] for i in order])
        return Windows(self.t, self.lo, self.med, self.hi)


def _changes(values: Sequence[str]) -> list[int]:
    """Indices where the value differs from the one before."""
    return [i for i in range(1, len(values)) if values[i] != values[i - 1]]


def median(values: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    v = sorted(values)
    n = len(v)
    mid = n // 2
    return float(v[mid]) if n % 2 else (v[mid - 1] + v[mid]) / 2.0


def quantile(values: Sequence[float], q: float) -> float:
    """The `q` quantile (nearest rank) of a non-empty sequence."""
    v = sorted(values)
    return float(v[min(len(v) - 1, max(0, round(q * (len(v) - 1))))])


__all__ = ["GROWTH_TARGETS", "HEAD", "LEVELS", "GenerationData", "Windows", "median",
           "quantile"]

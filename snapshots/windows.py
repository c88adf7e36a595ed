"""Fixed-width windows (min, median, max) assembled while samples stream in.

A generation's samples are folded into windows as each chunk of records is read, so the
analysis never keeps per-sample columns: memory and the statistics downstream are O(windows).
The width is chosen before reading from the span of the record (at most `max_windows` per
generation); when the span was not known (compressed files), windows are folded in pairs as
they exceed twice that, and a folded window's median is then the mean of the two medians.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field

HEAD = 10  # first and last samples of a generation kept as they are

_MIN = operator.attrgetter("rss_min")
_MAX = operator.attrgetter("rss_max")
_MEAN = operator.attrgetter("rss_mean")
_LEVEL = operator.attrgetter("level")


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
    """One generation of one worker: its windows and a few facts kept along the way."""

    generation: int
    width: float  # window width in seconds
    origin: float  # windows start at origin + k * width
    max_windows: int = 2000
    samples: int = 0
    first_t: float = float("inf")
    last_t: float = float("-inf")
    head: list[tuple[float, float]] = field(default_factory=list)  # (t, rss_mean)
    tail: list[tuple[float, float, float]] = field(default_factory=list)  # (t, mean, max)
    levels: set[str] = field(default_factory=set)
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

    def add(self, ts: Sequence[float], group: Sequence[object]) -> None:
        """Fold samples (`group`, with their times `ts`, in time order) into the windows."""
        n = len(ts)
        if not n:
            return
        self.samples += n
        self.first_t = min(self.first_t, ts[0])
        self.last_t = max(self.last_t, ts[-1])
        if len(self.head) < HEAD:
            self.head.extend((s.t, s.rss_mean) for s in group[:HEAD - len(self.head)])  # type: ignore[attr-defined]
        self.tail = (self.tail + [(s.t, s.rss_mean, s.rss_max)  # type: ignore[attr-defined]
                                  for s in group[-HEAD:]])[-HEAD:]
        self.levels.update(map(_LEVEL, group))
        width, origin = self.width, self.origin
        a = 0
        while a < n:
            k = int((ts[a] - origin) // width)
            # max(): times out of order (clock steps) must still make progress
            b = max(bisect.bisect_left(ts, origin + (k + 1) * width, a + 1), a + 1)
            part = group[a:b]
            lo = min(map(_MIN, part))
            hi = max(map(_MAX, part))
            if k == self._pk:
                self._plo = min(self._plo, lo)
                self._phi = max(self._phi, hi)
                self._pmids.extend(map(_MEAN, part))
            else:
                self._close()
                self._pk, self._pt, self._plo, self._phi = k, ts[a], lo, hi
                self._pmids = list(map(_MEAN, part))
            a = b
        while len(self.t) > 2 * self.max_windows:
            self._fold()

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
        """Close the open window and return the windows, in time order."""
        self._close()
        if any(a > b for a, b in zip(self.k, self.k[1:], strict=False)):
            order = sorted(range(len(self.k)), key=lambda i: (self.k[i], self.t[i]))
            for name in ("k", "t", "lo", "med", "hi"):
                col = getattr(self, name)
                setattr(self, name, [col[i] for i in order])
        return Windows(self.t, self.lo, self.med, self.hi)


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


__all__ = ["HEAD", "GenerationData", "Windows", "median", "quantile"]

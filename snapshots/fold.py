"""The per-sample work of the analysis, in one place: group a chunk's samples by worker, and
scan one generation's samples of a chunk into what `windows.GenerationData` keeps.

Everything else the analysis does is per window, per level change or per worker; these two
functions are the only ones that touch every sample, so they decide how fast a snapshot set
is read. Each has two implementations with identical results (tests/snapshots/test_fold.py
compares them): the compiled `_fold` (`snapshots/_fold.c`, built by `pip install` where a
compiler exists) reads each sample's fields once, straight from the record, and the
pure-Python one below (used without the build, and by the compiled one for inputs it does
not take, such as records of another type) makes a C-level pass (`map`, slices, `min`)
per field. The pure-Python one is the reference: it defines what both return.
"""

from __future__ import annotations

import bisect
import itertools
import operator
from collections.abc import Sequence
from typing import Any, NamedTuple

from snapshots import memory, plausible

try:
    from snapshots import _fold
except ImportError:  # built without a compiler: the pure-Python passes below
    _fold = None  # type: ignore[assignment]
if _fold is not None and (_fold.MAX_T, _fold.MAX_BYTES) != (plausible.MAX_T,
                                                            plausible.MAX_BYTES):
    _fold = None  # a stale build would judge plausibility by other limits

#: Whether the compiled scan is in use.
BUILT = _fold is not None

_T = operator.attrgetter("t")
_LEVEL = operator.attrgetter("level")
_SLOPE = operator.attrgetter("slope")
_WORKER = operator.attrgetter("worker")
_GEN = operator.attrgetter("generation")
_LIMIT = operator.attrgetter("limit")
_DROPPED = operator.attrgetter("dropped")
#: Up to this many workers in a chunk, samples are grouped with a pass per worker.
FEW = 16

#: One window's share of a chunk: (index, time of its first sample, lowest and highest
#: memory, the mean memory of each of its samples in order).
Window = tuple[int, float, float, float, list[float]]


class Scan(NamedTuple):
    """One generation's samples of one chunk (in file order), all plausible."""

    ts: list[float]
    levels: list[str]
    kinds: set[str]  # the distinct levels
    windows: list[Window]  # in file order; a window may continue the previous chunk's
    head: list[tuple[float, float]]  # the first `head` samples: (t, mean memory)
    tail: list[tuple[float, float, float]]  # the last `head`: (t, mean, highest memory)
    top: float | None  # the highest slope from the first sample at or after `since`
    gapped: bool  # some sample more than `cap` seconds after the one before


class Group(NamedTuple):
    """One worker's samples of one chunk, in file order, and what the collector needs of
    them as a whole."""

    samples: list[Any]
    generation: int | None  # the generation of all of them; None when they are of several
    limit: int | None  # the last non-zero `limit` recorded
    dropped: int  # the sum of their `dropped`


def split(records: Sequence[Any], sample: type) -> tuple[list[Any], dict[str, Group]]:
    """The records that are not of type `sample` (in order), and the samples grouped by
    worker (in order of the worker's first sample)."""
    if _fold is not None:
        found = _fold.split(records, sample)
        if found is not NotImplemented:
            others, groups = found
            return others, {name: Group(*g) for name, g in groups.items()}
    return _split(records, sample)


def _split(records: Sequence[Any], sample: type) -> tuple[list[Any], dict[str, Group]]:
    is_sample = sample.__instancecheck__
    others = list(itertools.filterfalse(is_sample, records))
    samples = list(filter(is_sample, records))
    names = list(map(_WORKER, samples))
    distinct = dict.fromkeys(names)
    groups: dict[str, list[Any]] = {}
    if len(distinct) == 1:
        groups[names[0]] = samples
    elif len(distinct) <= FEW:
        # One C-level pass per worker beats a Python loop over the samples while
        # workers are few (a pod runs one or a handful).
        for name in distinct:
            groups[name] = list(itertools.compress(samples, map(name.__eq__, names)))
    else:
        for r, name in zip(samples, names, strict=True):
            group = groups.get(name)
            if group is None:
                group = groups[name] = []
            group.append(r)
    out = {}
    for name, group in groups.items():
        gens = set(map(_GEN, group))
        out[name] = Group(group, group[0].generation if len(gens) == 1 else None,
                          next(filter(None, map(_LIMIT, reversed(group))), None),
                          sum(map(_DROPPED, group)))
    return others, out


def scan(group: Sequence[Any], origin: float, width: float, since: float, cap: float,
         head: int) -> Scan | None:
    """Scan samples of one generation (`group`, records of one type, in file order): their
    memory (`memory.columns`) in windows `width` seconds wide from `origin`, the highest
    slope from `since` on, whether some gap exceeds `cap`, the first and last `head`
    samples. None when some sample is implausible (`plausible.columns_ok`): the caller
    drops those and scans the rest."""
    if _fold is not None:
        found = _fold.scan(group, origin, width, since, cap, head)
        if found is not NotImplemented:
            return None if found is None else Scan._make(found)
    return _scan(group, origin, width, since, cap, head)


def _scan(group: Sequence[Any], origin: float, width: float, since: float, cap: float,
          head: int) -> Scan | None:
    ts = list(map(_T, group))
    lows, means, highs = memory.columns(group)
    if not plausible.columns_ok(ts, lows, means, highs):
        return None
    n = len(ts)
    windows: list[Window] = []
    a = 0
    while a < n:
        k = int((ts[a] - origin) // width)
        # max(): times out of order (clock steps) must still make progress
        b = max(bisect.bisect_left(ts, origin + (k + 1) * width, a + 1), a + 1)
        windows.append((k, ts[a], float(min(lows[a:b])), float(max(highs[a:b])), means[a:b]))
        a = b
    levels = list(map(_LEVEL, group))
    start = bisect.bisect_left(ts, since)
    top = max(map(_SLOPE, group[start:])) if start < n else None
    gapped = n > 1 and max(map(operator.sub, ts[1:], ts[:-1])) > cap
    return Scan(ts, levels, set(levels), windows,
                list(zip(ts[:head], means[:head], strict=True)),
                list(zip(ts[-head:], means[-head:], highs[-head:], strict=True)), top, gapped)


__all__ = ["BUILT", "FEW", "Group", "Scan", "Window", "scan", "split"]

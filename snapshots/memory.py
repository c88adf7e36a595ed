"""Which recorded figure is a worker's memory: the one place that decides it.

A `sample` record of format 1.0 carries the plain tree RSS (`rss`, `rss_min`, `rss_mean`,
`rss_max`). A later minor version adds `memory`: the figure the thresholds compare (the
cgroup working set, or the tree's RSS corrected for shared pages), at the end of the period
like `rss`. Where a record has it, the period's RSS figures are scaled by `memory / rss`
(the share of the RSS that is really the worker's), so the lowest, mean and highest values
of the period follow the figure memwarden acted on; `rss` stays the plain tree RSS.
Every reader of sample memory (windows, head and tail, replay) goes through here.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

_MIN = operator.attrgetter("rss_min")
_MEAN = operator.attrgetter("rss_mean")
_MAX = operator.attrgetter("rss_max")
_MEMORY = operator.attrgetter("memory")
_RSS = operator.attrgetter("rss")


def _ratio(s: object) -> float:
    memory = getattr(s, "memory", None)
    rss = getattr(s, "rss", 0)
    return memory / rss if memory is not None and rss else 1.0


def columns(group: Sequence[object]) -> tuple[list[float], list[float], list[float]]:
    """The lowest, mean and highest memory (bytes) of each sample of `group` (records of
    one type), as three lists in its order.

    They run over every sample the analysis reads: C-level attribute getters take the RSS
    figures, and the ratio is applied only where some record has `memory`.
    """
    lows, means, highs = list(map(_MIN, group)), list(map(_MEAN, group)), list(map(_MAX, group))
    if not group or "memory" not in getattr(group[0], "__struct_fields__", ()):
        return lows, means, highs
    recorded = list(map(_MEMORY, group))
    rss = list(map(_RSS, group))
    if None not in recorded and 0 not in rss:  # as a 1.1 writer records them: at C speed
        ratios = list(map(operator.truediv, recorded, rss))
    elif recorded.count(None) == len(recorded):
        return lows, means, highs
    else:  # some records without the figure (or no RSS)
        ratios = [m / r if m is not None and r else 1.0
                  for m, r in zip(recorded, rss, strict=True)]
    mul = operator.mul
    return (list(map(mul, lows, ratios)), list(map(mul, means, ratios)),
            list(map(mul, highs, ratios)))


def highest(s: object) -> float:
    """The highest memory of one sample's period (bytes)."""
    return _MAX(s) * _ratio(s)


def last(s: object) -> float:
    """The memory at the end of one sample's period (bytes): `memory` where recorded."""
    memory = getattr(s, "memory", None)
    return float(memory) if memory is not None else float(getattr(s, "rss", 0))


__all__ = ["columns", "highest", "last"]

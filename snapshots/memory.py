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
from collections.abc import Callable, Sequence
from typing import Any

_MIN = operator.attrgetter("rss_min")
_MEAN = operator.attrgetter("rss_mean")
_MAX = operator.attrgetter("rss_max")


def _ratio(s: object) -> float:
    memory = getattr(s, "memory", None)
    rss = getattr(s, "rss", 0)
    return memory / rss if memory is not None and rss else 1.0


def getters(group: Sequence[object]) -> tuple[Callable[[Any], float], Callable[[Any], float],
                                           Callable[[Any], float]]:
    """Functions giving a sample's lowest, mean and highest memory (bytes), for the samples
    of `group` (records of one type).

    For records whose type has no `memory` field these are C-level attribute getters of the
    RSS figures: they run on every sample the analysis reads.
    """
    if not group or "memory" not in getattr(group[0], "__struct_fields__", ()):
        return _MIN, _MEAN, _MAX
    return ((lambda s: _MIN(s) * _ratio(s)), (lambda s: _MEAN(s) * _ratio(s)),
            (lambda s: _MAX(s) * _ratio(s)))


def highest(s: object) -> float:
    """The highest memory of one sample's period (bytes)."""
    return _MAX(s) * _ratio(s)


def last(s: object) -> float:
    """The memory at the end of one sample's period (bytes): `memory` where recorded."""
    memory = getattr(s, "memory", None)
    return float(memory) if memory is not None else float(getattr(s, "rss", 0))


__all__ = ["getters", "highest", "last"]

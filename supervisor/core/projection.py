"""Growth judged by the time it leaves: when, at the sustained rate, a worker reaches CRITICAL.

A leaf of the decision core (plain values in, seconds out; no I/O, no clock). A rate alone
cannot tell a leak from a start-up, a burst of requests or a browser opening tabs: 26 MB/s
is a threat 2 s below the CRITICAL line and a worker doing its job 4 GB below it. What
matters is whether a replacement can still be made in time, so the growth input of the
classifier takes the projected seconds to CRITICAL (or to the limit, whichever comes first)
and holds:

* HIGH when that is shorter than what a replacement needs to be safe: `safe_s`, the
  measured spawn-to-ready of the worker's generations (before any, `--ready-after`) times
  `SAFE_FACTOR` plus `SAFE_MARGIN_S`;
* MEDIUM when it is shorter than `horizon_s`, the longer horizon (`horizon`);
* nothing otherwise.

The `--growth-medium`/`--growth-high` rates are floors: a rate below a level's floor never
projects into that level, however close the line. And a burst is not a leak: a projection
into HIGH counts only once it has held for a whole growth window (`Projector`); growth that
stops or falls back before then raises MEDIUM at most.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from supervisor.core.units import format_duration, format_size

_INF = math.inf

#: A replacement is safe when the line is further away than this many of its start-ups plus
#: `SAFE_MARGIN_S`: the start-up may be slower on a busy host, and the old generation must
#: still be retired (its grace) after the new one is ready.
SAFE_FACTOR = 2.0
SAFE_MARGIN_S = 5.0
#: The MEDIUM horizon is this many safe times, and at least `HORIZON_MIN_S`: far enough ahead
#: to warn a cooperative worker, near enough that a warning means something.
HORIZON_FACTOR = 6.0
HORIZON_MIN_S = 120.0


def safe_seconds(startup_s: float) -> float:
    """Seconds a replacement needs to be safe, for a worker that starts in `startup_s`."""
    return SAFE_FACTOR * max(startup_s, 0.0) + SAFE_MARGIN_S


def horizon(safe_s: float) -> float:
    """The MEDIUM horizon for a given safe time."""
    return max(HORIZON_FACTOR * safe_s, HORIZON_MIN_S)


@dataclass(frozen=True, slots=True)
class Projection:
    """Where growth leads: at `rate` bytes/s from `memory`, `line` (named `target`) is
    reached in `seconds` (inf when not growing or no line is known)."""

    rate: float
    memory: float
    target: str  # "CRITICAL" or "the limit"
    line: float
    seconds: float

    def describe(self) -> str:
        """"at 26.1 MB/s CRITICAL 4.0 GB in 2 min 10 s", as the log and records say it."""
        if not math.isfinite(self.seconds):
            return f"at {format_size(self.rate)}/s no line in reach"
        return (f"at {format_size(self.rate)}/s {self.target} {format_size(self.line)} in "
                f"{format_duration(self.seconds)}")


def project(memory: float, rate: float, critical: float | None,
            limit: float | None) -> Projection:
    """The projection of `memory` growing at `rate` to the nearer of `critical` and `limit`
    (None: that line is unknown). A line already reached is 0 s away."""
    lines = [(line, name) for line, name in ((critical, "CRITICAL"), (limit, "the limit"))
             if line is not None]
    if not lines:
        return Projection(rate, memory, "CRITICAL", _INF, _INF)
    line, name = min(lines)
    if memory >= line:
        return Projection(rate, memory, name, line, 0.0)
    seconds = (line - memory) / rate if rate > 0 else _INF
    return Projection(rate, memory, name, line, seconds)


class Projector:
    """Projections of one generation, held to the floors and the burst rule.

    Stateful but clock-free: the caller passes monotonic ns. `judge` returns the seconds the
    classifier's growth input compares against its lines (`horizon_s` for MEDIUM,
    `safe_s` for HIGH): the projection's seconds, raised just above `safe_s` while the rate is
    below the HIGH floor or the HIGH projection has not yet held for `hold_ns`, and to
    infinity while the rate is below the MEDIUM floor.
    """

    __slots__ = ("floors", "high_since_ns", "hold_ns", "horizon_s", "safe_s")

    def __init__(self, floors: tuple[float | None, float | None], safe_s: float,
                 hold_ns: int) -> None:
        self.floors = floors
        self.safe_s = safe_s
        self.horizon_s = horizon(safe_s)
        self.hold_ns = hold_ns
        self.high_since_ns: int | None = None  # when the projection last went into HIGH

    def judge(self, t_ns: int, p: Projection) -> float:
        """The seconds to feed the growth input for projection `p` observed at `t_ns`."""
        medium_floor, high_floor = self.floors
        seconds = p.seconds
        if medium_floor is not None and p.rate < medium_floor:
            seconds = _INF
        elif high_floor is not None and p.rate < high_floor:
            seconds = max(seconds, self._short_of_high())
        if seconds >= self.safe_s:
            self.high_since_ns = None
            return seconds
        if self.high_since_ns is None:
            self.high_since_ns = t_ns
        if t_ns - self.high_since_ns < self.hold_ns:
            return self._short_of_high()  # MEDIUM until the growth was not given back
        return seconds

    def _short_of_high(self) -> float:
        # The HIGH line is reached at or below `safe_s`: just above it is MEDIUM at most.
        return math.nextafter(self.safe_s, _INF)


__all__ = ["HORIZON_FACTOR", "HORIZON_MIN_S", "SAFE_FACTOR", "SAFE_MARGIN_S", "Projection",
           "Projector", "horizon", "project", "safe_seconds"]

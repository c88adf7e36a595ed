"""The pressure classifier: plain values in, level changes out. No I/O, no clocks.

Each input (a worker's RSS, where its growth leads, the container's headroom, ...) is an `_Input`
with its own hysteresis; a classifier's level is the highest level any of its inputs holds.
Going up to level L needs `confirm` consecutive samples at or above L's line (a one-sample
spike is not pressure); leaving level L needs every sample below L's line lowered by
`margin` for L's dwell time (1 s / 5 s / 30 s from CRITICAL / HIGH / MEDIUM by default).
Only changes of level leave a classifier, each as a `Change` naming its cause.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from supervisor.core.projection import Projection, Projector, project, safe_seconds
from supervisor.core.units import format_duration, format_size
from workers.protocol import Level

_INF = math.inf

#: Cgroup PSI "some avg10" (percent of time some task stalled on memory) that raises the
#: container to MEDIUM / HIGH. Not configurable yet: without swap PSI moves late (measured
#: here ~2 ms before an OOM kill), so it is a secondary input and these lines are coarse.
PSI_MEDIUM = 10.0
PSI_HIGH = 40.0
#: Host-wide PSI "some avg10" that may lift an already-pressured container by one level.
PSI_HOST = 10.0
#: The share of a worker's cgroup usage that must be its own held memory (not cache) for a
#: reclaim-pressure notification to count (`WorkerClassifier.observe_pressure`).
HELD_MIN = 0.5


@dataclass(frozen=True, slots=True)
class Change:
    """A level change and the input that caused it."""

    key: str  # the worker key given to the sampler ("" for the container)
    level: Level
    previous: Level
    metric: str  # "memory", "projection", "headroom", "exhaustion", "kernel", "psi", ...
    value: float  # the input's value on the confirming sample
    threshold: float  # the line crossed (for a fall: the line lowered by the margin)
    t_ns: int  # monotonic ns of the sample that confirmed the change
    first_ns: int  # monotonic ns of the first sample of the confirming run
    #: What the value stands for, when a figure alone does not say it: for "projection",
    #: where the growth leads ("at 26.1 MB/s CRITICAL 4.0 GB in 2 min 10 s").
    detail: str = ""
    #: What woke the reading that confirmed it: "tick", or the kernel notification
    #: ("threshold", "oom", "pressure"; `supervisor.linux.notify`).
    source: str = "tick"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Every classifier line resolved to bytes, bytes/s, fractions, seconds and ns.

    `rss` holds the lines for (MEDIUM, HIGH, CRITICAL); None disables a line (a percentage
    threshold without a known limit). `growth` holds the rate floors (bytes/s) below which
    growth projects into no MEDIUM and no HIGH (`projection.Projector`). Headroom lines are
    fractions of the limit left; exhaustion lines are seconds until the limit at the
    current growth. `limit` is the container's limit in bytes (None: none known), the other
    line a projection may reach first; `startup_s` what a generation is taken to need from
    spawn to ready before one has been measured (`--ready-after`).
    """

    rss: tuple[float | None, float | None, float | None]
    growth: tuple[float | None, float | None, float | None]
    growth_window_ns: int
    headroom: tuple[float | None, float | None, float | None]
    exhaustion_s: tuple[float | None, float | None, float | None]
    confirm: int
    margin: float
    dwell_ns: tuple[int, int, int]  # leaving MEDIUM, HIGH, CRITICAL
    limit: float | None = None
    startup_s: float = 1.0


def quantity(metric: str, value: float) -> str:
    """A metric's value as people read it: sizes, rates, shares, seconds, counts."""
    if metric == "growth":
        return f"{format_size(value)}/s"
    if metric in ("memory", "rss", "working_set"):
        return format_size(value)
    if metric == "headroom":
        return f"{value:.1%} of the limit"
    if metric in ("exhaustion", "projection"):
        return format_duration(value) if math.isfinite(value) else "never"
    return f"{value:.4g}"


def explain(change: Change) -> str:
    """`metric value against threshold`, the reason a level changed, for messages."""
    if change.detail:
        return (f"{change.metric} {change.detail} against threshold "
                f"{quantity(change.metric, change.threshold)}")
    return (f"{change.metric} {quantity(change.metric, change.value)} against threshold "
            f"{quantity(change.metric, change.threshold)}")


class _Input:
    """Hysteresis for one metric. Values are stored signed so that larger is always worse."""

    __slots__ = (
        "below", "cause_first", "cause_threshold", "confirm", "down", "dwell", "first",
        "hi", "level", "lo", "metric", "note", "runs", "sign", "up", "value",
    )

    def __init__(
        self,
        metric: str,
        lines: tuple[float | None, float | None, float | None],
        *,
        confirm: int,
        margin: float,
        dwell_ns: tuple[int, int, int],
        lower_is_worse: bool = False,
    ) -> None:
        self.metric = metric
        self.sign = -1.0 if lower_is_worse else 1.0
        # up[L]: reach L at or above; down[L]: leaving L counts below. Index 0 is LOW.
        up = [-_INF]
        down = [-_INF]
        dwell = [0]
        for line, wait in zip(lines, dwell_ns, strict=True):
            dwell.append(0 if line is None else wait)
            if line is None:
                up.append(_INF)
                down.append(_INF)  # a level this input cannot hold is passed through at once
            elif lower_is_worse:
                up.append(-line)
                down.append(-line * (1.0 + margin))
            else:
                up.append(line)
                down.append(line * (1.0 - margin))
        self.up = tuple(up)
        self.down = tuple(down)
        self.confirm = confirm
        self.dwell = tuple(dwell)
        self.level = Level.LOW
        self.runs = [0, 0, 0, 0]
        self.first = [0, 0, 0, 0]
        self.below = [-1, -1, -1, -1]
        self.value = 0.0
        self.note = ""  # what the value stands for (Change.detail)
        self.cause_threshold = 0.0
        self.cause_first = 0
        self._set_band()

    def _set_band(self) -> None:
        # The band [lo, hi) where a sample changes nothing: below every higher line and not
        # below any held level's lowered line, with no run or dwell pending. Outside it, or
        # while something is pending, every sample takes the slow path.
        cur = self.level
        if any(self.runs[cur + 1 :]) or any(b >= 0 for b in self.below[1 : cur + 1]):
            self.lo, self.hi = _INF, -_INF
            return
        self.lo = max(self.down[: cur + 1])
        self.hi = min(self.up[cur + 1 :], default=_INF)

    @property
    def rising(self) -> bool:
        """Whether a run towards a higher level is under way, not yet confirmed."""
        return any(self.runs[self.level + 1 :])

    def feed(self, t_ns: int, raw: float) -> bool:
        """Take one sample; return True when this input's level changed."""
        v = raw * self.sign
        self.value = v
        if self.lo <= v < self.hi:
            return False
        up, down, runs, below = self.up, self.down, self.runs, self.below
        cur = self.level
        for lv in (1, 2, 3):
            if lv > cur:  # a level not held: count the run towards it
                below[lv] = -1
                if v >= up[lv]:
                    runs[lv] += 1
                    if runs[lv] == 1:
                        self.first[lv] = t_ns
                else:
                    runs[lv] = 0
            else:  # a level held: time how long the value stays below its lowered line
                runs[lv] = 0
                if v < down[lv]:
                    if below[lv] < 0:
                        below[lv] = t_ns
                else:
                    below[lv] = -1
        new = cur
        for lv in (3, 2, 1):
            if lv <= cur:
                break
            if runs[lv] >= self.confirm:
                new = lv
                self.cause_threshold = up[lv] * self.sign
                self.cause_first = self.first[lv]
                break
        if new == cur:
            while new > 0 and below[new] >= 0 and t_ns - below[new] >= self.dwell[new]:
                if down[new] != _INF:  # a level this input cannot hold explains nothing
                    self.cause_threshold = down[new] * self.sign
                    self.cause_first = below[new]
                below[new] = -1
                new -= 1
        changed = new != cur
        if changed:
            self.level = Level(new)
            for lv in range(1, new + 1):
                runs[lv] = 0
        self._set_band()
        return changed


class _Classifier:
    """The level as the maximum over inputs, and the Change that reports a move."""

    key: str
    level: Level

    def _combined(self) -> Level:
        raise NotImplementedError

    def _after(self, inp: _Input, t_ns: int) -> Change | None:
        """Report a move of the combined level caused by `inp` (which just changed)."""
        new = self._combined()
        if new == self.level:
            return None
        previous, self.level = self.level, new
        return Change(
            key=self.key,
            level=new,
            previous=previous,
            metric=inp.metric,
            value=inp.value * inp.sign,
            threshold=inp.cause_threshold,
            t_ns=t_ns,
            first_ns=inp.cause_first,
            detail=inp.note,
        )


    def _settle(self, moved: list[_Input], t_ns: int) -> Change | None:
        # Several inputs may move on one observation; report one change of the combined
        # level, caused by the input that now holds the highest level.
        if not moved:
            return None
        return self._after(max(moved, key=lambda i: i.level), t_ns)


class WorkerClassifier(_Classifier):
    """One worker's level from its tree's RSS (every tick) and where its growth leads (every
    discovery, `projection`): growth raises a level by the time it leaves before CRITICAL
    or the limit, never by its rate alone."""

    def __init__(self, key: str, th: Thresholds) -> None:
        self.key = key
        self.level = Level.LOW
        self._th = th
        self._common = {"confirm": th.confirm, "margin": th.margin, "dwell_ns": th.dwell_ns}
        # Public for the sampler's hot path: while `rss_band.lo <= rss < rss_band.hi`,
        # `observe_rss` would return None at once, so a caller may test that itself; the
        # same holds for `growth_band` (in projected seconds) and `observe_projection`.
        self.rss_band = _Input("memory", th.rss, **self._common)
        # Kernel notifications on its own cgroup: each is already the kernel's judgement,
        # so one sample confirms it. Reclaim pressure (the cgroup's "medium" level) means
        # MEDIUM; an OOM kill under way, CRITICAL.
        events = {"confirm": 1, "margin": 0.0, "dwell_ns": th.dwell_ns}
        self._pressure = _Input("pressure", (1.0, None, None), **events)
        self._oom = _Input("oom", (None, None, 1.0), **events)
        self.set_startup(th.startup_s)

    def set_startup(self, startup_s: float) -> None:
        """Take what a replacement of this worker needs from spawn to ready (seconds, as
        measured on its generations): the lines of the projection follow from it. Call it
        before growth is first observed; it starts the growth input afresh."""
        floors = (self._th.growth[0], self._th.growth[1])
        self.projector = Projector(floors, safe_seconds(startup_s), self._th.growth_window_ns)
        self.growth_band = _Input(
            "projection", (self.projector.horizon_s, self.projector.safe_s, None),
            lower_is_worse=True, **self._common)

    def _combined(self) -> Level:
        return max(self.rss_band.level, self.growth_band.level, self._pressure.level,
                   self._oom.level)

    def observe_rss(self, t_ns: int, rss: int) -> Change | None:
        """Take the tree's RSS in bytes; return a Change when the worker's level moves."""
        r = self.rss_band
        if r.lo <= rss < r.hi:  # the common path: two comparisons
            return None
        return self._after(r, t_ns) if r.feed(t_ns, rss) else None

    def project(self, t_ns: int, bytes_per_s: float, memory: float) -> tuple[float, Projection]:
        """Where growth at `bytes_per_s` from `memory` leads, and the seconds the growth input
        is to compare (`Projector.judge`). Keeps the burst rule's state: one caller only."""
        p = project(memory, bytes_per_s, self._th.rss[2], self._th.limit)
        return self.projector.judge(t_ns, p), p

    def observe_projection(self, t_ns: int, seconds: float, p: Projection) -> Change | None:
        """Take the seconds `project` returned; return a Change when the level moves."""
        g = self.growth_band
        g.note = p.describe()
        return self._after(g, t_ns) if g.feed(t_ns, seconds) else None

    def observe_growth(self, t_ns: int, bytes_per_s: float,
                       memory: float | None = None) -> Change | None:
        """Take the sustained growth (bytes/s, over a full growth window) of a worker holding
        `memory` bytes (None: the last figure the memory input saw)."""
        held = self.rss_band.value if memory is None else memory
        seconds, p = self.project(t_ns, bytes_per_s, held)
        return self.observe_projection(t_ns, seconds, p)

    @property
    def kernel_held(self) -> bool:
        """Whether a kernel notification holds a level above LOW."""
        return self._pressure.level > Level.LOW or self._oom.level > Level.LOW

    def observe_pressure(self, t_ns: int, events: int, held: float = 1.0) -> Change | None:
        """Take how many reclaim-pressure notifications its cgroup gave since the last call
        (0 while calm: the level falls after MEDIUM's dwell of calm calls) and the share of
        its usage that is its figure (`held`: working set / usage).

        Notifications count only while at least HELD_MIN of its usage is held: a worker
        streaming files under a limit makes the kernel reclaim its page cache all the time,
        and is healthy (its usage is mostly inactive cache).
        """
        p = self._pressure
        return self._after(p, t_ns) if p.feed(t_ns, events if held >= HELD_MIN else 0) else None

    def observe_oom(self, t_ns: int, kills: int) -> Change | None:
        """Take how many OOM notifications its cgroup gave since the last call."""
        o = self._oom
        return self._after(o, t_ns) if o.feed(t_ns, kills) else None


class ContainerClassifier(_Classifier):
    """The container's level from its headroom, time to exhaustion and kernel signals."""

    def __init__(self, th: Thresholds, limit: int) -> None:
        """Raise ValueError when `limit` is not a positive byte count."""
        if limit <= 0:
            raise ValueError(f"container limit must be positive, got {limit}")
        self.key = ""
        self.level = Level.LOW
        self.limit = limit
        common = {"confirm": th.confirm, "margin": th.margin, "dwell_ns": th.dwell_ns}
        self._headroom = _Input("headroom", th.headroom, lower_is_worse=True, **common)
        self._exhaustion = _Input("exhaustion", th.exhaustion_s, lower_is_worse=True, **common)
        # A moving counter is already a confirmed kernel event: no run of samples needed.
        events = {"confirm": 1, "margin": 0.0, "dwell_ns": th.dwell_ns}
        self._oom = _Input("kernel", (None, None, 1.0), **events)
        self._reclaim = _Input("reclaim", (None, 1.0, None), **events)
        self._psi = _Input("psi", (PSI_MEDIUM, PSI_HIGH, None), **common)
        self._host = _Input("host_psi", (PSI_HOST, None, None), **common)
        self._counts: dict[str, int] | None = None
        # Usage below this cannot be near any headroom line, and usage >= working set, so a
        # caller may skip reading memory.stat for the working set below it.
        lines = [h for h in th.headroom if h is not None]
        self.stat_gate = int(limit * (1.0 - max(lines, default=0.0) * (1.0 + th.margin)))

    def _own(self) -> int:
        return max(
            self._headroom.level,
            self._exhaustion.level,
            self._oom.level,
            self._reclaim.level,
            self._psi.level,
        )

    def _combined(self) -> Level:
        own = self._own()
        if own >= Level.MEDIUM and self._host.level >= Level.MEDIUM:
            return Level(min(own + 1, Level.CRITICAL))
        return Level(own)

    def observe(self, t_ns: int, working_set: int, bytes_per_s: float) -> Change | None:
        """Take the working set (bytes) and its growth (bytes/s, 0 when unknown)."""
        left = self.limit - working_set
        fraction = left / self.limit
        seconds = max(left, 0) / bytes_per_s if bytes_per_s > 0 else _INF
        moved = []
        if self._headroom.feed(t_ns, fraction):
            moved.append(self._headroom)
        if self._exhaustion.feed(t_ns, seconds):
            moved.append(self._exhaustion)
        return self._settle(moved, t_ns)

    def observe_kernel(
        self,
        t_ns: int,
        events: dict[str, int],
        psi_some_avg10: float | None,
        host_psi: float | None,
    ) -> Change | None:
        """Take memory.events counters, the cgroup's PSI and the host's PSI (None: unknown).

        The first call only records the counters. oom/oom_kill moving means CRITICAL;
        max/high moving (the limit was hit and reclaim forced) means HIGH only while the
        headroom already shows pressure, because page cache filling up to the limit makes
        these counters move for a healthy worker that streams files.
        """
        previous, self._counts = self._counts, dict(events)
        moved = []
        if previous is not None:

            def delta(*names: str) -> int:
                return sum(max(events.get(n, 0) - previous.get(n, 0), 0) for n in names)

            if self._oom.feed(t_ns, delta("oom", "oom_kill")):
                moved.append(self._oom)
            hits = delta("max", "high") if self._headroom.level >= Level.MEDIUM else 0
            if self._reclaim.feed(t_ns, hits):
                moved.append(self._reclaim)
        if psi_some_avg10 is not None and self._psi.feed(t_ns, psi_some_avg10):
            moved.append(self._psi)
        if host_psi is not None and self._host.feed(t_ns, host_psi):
            moved.append(self._host)
        return self._settle(moved, t_ns)


__all__ = ["HELD_MIN", "PSI_HIGH", "PSI_HOST", "PSI_MEDIUM", "Change", "ContainerClassifier",
           "Thresholds", "WorkerClassifier"]

"""What happened to a worker's generations: levels and their changes, replacements and what
they bought, trims, gc pauses, and how supervision ended.

Everything here is per generation first. Generations overlap (a replacement starts before its
predecessor is retired), so a worker-wide sequence of levels would interleave two processes:
a flap is a change undone within one generation, and a generation's time in each level runs
from its own start to its own end.
"""

from __future__ import annotations

import bisect
import itertools
import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass

from snapshots.report import Crossing, Ending, Gc, Replacement, Transition, Trims
from snapshots.schema import Event
from snapshots.series import BurstView, WorkerData
from snapshots.windows import LEVELS, GenerationData, median

#: A level change undone within this time (in the same generation) counts as a flap.
FLAP_WINDOW_S = 60.0
#: Level changes that start a replacement.
_REPLACING = ("high", "critical")
#: Metrics whose value is the memory the burst records (the others have no crossing in it).
_MEMORY_METRICS = ("rss", "memory", "working_set")


@dataclass
class Timeline:
    """One generation's levels: (start, end, level) runs, seconds per level, the highest."""

    runs: list[tuple[float, float, str]]
    seconds: dict[str, float]
    max_level: str


def timeline(gd: GenerationData, events: list[Event], period_s: float) -> Timeline:
    """Levels of one generation from its `level` events (exact times) where it has any,
    else from its samples' levels (a sample stands for up to two periods).

    `events` are the generation's events in time order. The timeline runs from the
    generation's start (its `start`/`spawn` event, else its first sample) to a period after
    its last sample, or to its exit when that came sooner; gaps in the record count for
    nothing, as with samples.
    """
    changes = [e for e in events if e.type == "level" and e.level]
    seen = set(gd.levels) | {e.level for e in changes if e.level}
    top = LEVELS[max((LEVELS.index(x) for x in seen if x in LEVELS), default=0)]
    if not changes or not gd.samples:
        return Timeline(gd.level_runs(), dict(gd.seconds), top)
    first, last = gd.first_t, gd.last_t
    start = next((e.t for e in events if e.type in ("start", "spawn")
                  and first - 2 * period_s <= e.t <= first), first)
    end = last + period_s
    exit_t = next((e.t for e in events if e.type == "exit" and e.t >= last), None)
    if exit_t is not None:
        end = min(end, exit_t)
    runs: list[tuple[float, float, str]] = []
    level, at = changes[0].previous or "low", start
    for e in changes:
        t = min(max(e.t, start), end)
        if t > at:
            runs.append((at, t, level))
        level, at = e.level or level, max(at, t)
    if end > at:
        runs.append((at, end, level))
    runs = _minus_gaps(runs, [(a + 2 * period_s, b) for a, b in gd.gaps if b > a + 2 * period_s])
    seconds = dict.fromkeys(LEVELS, 0.0)
    for a, b, lv in runs:
        seconds[lv] = seconds.get(lv, 0.0) + (b - a)
    return Timeline(runs, seconds, top)


def _minus_gaps(runs: list[tuple[float, float, str]], gaps: list[tuple[float, float]]
                ) -> list[tuple[float, float, str]]:
    if not gaps:
        return runs
    out = []
    for a, b, lv in runs:
        pieces = [(a, b)]
        for g0, g1 in gaps:
            pieces = [p for x, y in pieces
                      for p in ((x, min(y, g0)), (max(x, g1), y)) if p[1] > p[0]]
        out.extend((x, y, lv) for x, y in pieces)
    return out


def transitions(data: WorkerData, lines: dict[int, Timeline]) -> list[Transition]:
    """Level changes: the recorded `level` events, else the changes between the level runs
    of each generation (from its samples). In time order."""
    recorded = [e for e in data.events if e.type == "level" and e.level]
    if recorded:
        return [Transition(t=e.t, level=e.level or "", previous=e.previous or "low",
                           metric=e.metric, value=e.value, threshold=e.threshold,
                           generation=e.generation) for e in recorded]
    out = [Transition(t=b[0], level=b[2], previous=a[2], generation=g)
           for g, line in lines.items()
           for a, b in itertools.pairwise(line.runs) if a[2] != b[2] and b[0] <= a[1]]
    out.sort(key=lambda x: x.t)
    return out


def flaps(changes: list[Transition]) -> int:
    """Changes undone within FLAP_WINDOW_S by the next change of the same generation."""
    count = 0
    by_gen: dict[int, list[Transition]] = {}
    for c in changes:
        by_gen.setdefault(c.generation, []).append(c)
    for seq in by_gen.values():
        count += sum(1 for a, b in itertools.pairwise(seq)
                     if b.level == a.previous and b.previous == a.level
                     and b.t - a.t <= FLAP_WINDOW_S)
    return count


def replacements(data: WorkerData, gens: list[GenerationData],
                 at_ready: dict[int, int | None]) -> list[Replacement]:
    """Each generation after the first, and what it bought: memory at the crossing that
    started it (from the flight recorder's millisecond samples when recorded) against the
    new generation's memory once ready (`at_ready`, per generation: see `after`)."""
    spawns = {e.generation: e for e in data.events if e.type in ("spawn", "start")}
    ready = {e.generation: e for e in data.events if e.type == "ready"}
    raised: dict[int, list[Event]] = {}  # changes to HIGH or CRITICAL, per generation
    for e in data.events:
        if e.type == "level" and e.level in _REPLACING:
            raised.setdefault(e.generation, []).append(e)
    out = []
    for k in range(1, len(gens)):
        old, new = gens[k - 1], gens[k]
        spawn = spawns.get(new.generation)
        t0 = spawn.t if spawn else new.first_t
        # the old generation's last change to HIGH or CRITICAL at or before the spawn
        trigger = next((e for e in reversed(raised.get(old.generation, []))
                        if e.t <= t0 + 0.01), None)
        crossing = _crossing(trigger, data.kept_bursts.get(old.generation, [])) \
            if trigger else None
        before = int(crossing.rss) if crossing else _at(old, t0)
        r = ready.get(new.generation)
        start = r.t if r else new.first_t
        after_ready = at_ready.get(new.generation)
        nxt = gens[k + 1] if k + 1 < len(gens) else None
        nxt_spawn = spawns.get(nxt.generation) if nxt else None
        held_until = nxt_spawn.t if nxt_spawn else (nxt.first_t if nxt else new.last_t)
        out.append(Replacement(
            generation=new.generation, t=t0, reason=spawn.reason if spawn else None,
            profile=spawn.profile if spawn else None, rss_before=before, rss_after=after_ready,
            freed=(before - after_ready) if before is not None and after_ready is not None
            else None,
            ready_after_s=(r.t - t0) if r else None, held_s=held_until - start,
            until="replaced" if nxt else "end of record", crossing=crossing,
            rss_peak_before=int(max(old.hi)) if old.hi else None,
            before_from="crossing" if crossing else "samples"))
    return out


def _crossing(e: Event, bursts: list[BurstView]) -> Crossing | None:
    """Where memory crossed the line of change `e`: the first millisecond sample of the run
    that confirmed it, from a burst around it; else the value the event carries."""
    memory_metric = e.metric in _MEMORY_METRICS and e.threshold is not None
    for b in reversed(bursts):
        times, values = b.samples()
        if not times or not times[0] <= e.t <= times[-1] + 1.0 or not memory_metric:
            continue
        line = e.threshold or 0.0
        # The confirming sample is the last at or above the line up to the event (which is
        # emitted a little after it); the crossing is the first sample of that run.
        j = bisect.bisect_right(times, e.t) - 1
        while j >= 0 and values[j] < line:
            j -= 1
        if j < 0:
            continue
        i = j
        while i > 0 and values[i - 1] >= line:
            i -= 1
        return Crossing(t=times[i], rss=values[i], threshold=line, metric=e.metric or "",
                        level=e.level or "", confirmed_t=times[j], confirmed_rss=values[j],
                        source="burst")
    if e.value is None or not memory_metric:
        return None
    return Crossing(t=e.t, rss=int(e.value), threshold=e.threshold or 0.0,
                    metric=e.metric or "", level=e.level or "", confirmed_t=e.t,
                    confirmed_rss=int(e.value), source="event")


def _at(g: GenerationData, t0: float) -> int | None:
    """The generation's memory over the sample period that holds `t0` (its mean)."""
    later = [mean for t, mean, _ in g.tail if t >= t0]
    if later:
        return int(later[0])
    if g.tail:
        return int(g.tail[-1][1])
    i = bisect.bisect_right(g.t, t0) - 1
    return int(g.med[i]) if i >= 0 else None


def after(g: GenerationData, start: float) -> int | None:
    """A generation's memory over its first sample period from `start`, its `ready` event
    (else its first sample): "at ready" (docs/analyze.md) where the event has no figure."""
    values = [v for t, v in g.head if t >= start] or [v for _, v in g.head]
    return int(values[0]) if values else None


def ending(data: WorkerData, source_events: Iterable[Event]) -> Ending | None:
    """How supervision of the worker ended, when the record says: memwarden gave up
    (`limits_too_small`, or the restart budget spent: `give_up`), the worker exited by
    itself and was not restarted, or memwarden was stopped (`shutdown`)."""
    events = data.events
    gave_up = [e for e in events if e.type in ("limits_too_small", "give_up")]
    if gave_up:
        last = gave_up[-1]
        status = next((e.exit_status for e in reversed(gave_up) if e.exit_status is not None),
                      None)
        too_small = any(e.type == "limits_too_small" for e in gave_up)
        generation = max((e.generation for e in gave_up), default=0) or max(
            (e.generation for e in events), default=0)
        return Ending(kind="gave_up",
                      reason="limits_too_small" if too_small else "restart_budget",
                      t=last.t, generation=generation, exit_status=status,
                      message=next((e.message for e in reversed(gave_up) if e.message), ""))
    exits = [e for e in events if e.type == "exit"]
    if exits and not exits[-1].expected:
        last = exits[-1]
        later = [e for e in events if e.t > last.t and e.type in ("start", "spawn", "restart")]
        if not later:
            return Ending(kind="exited", reason="exit", t=last.t, generation=last.generation,
                          exit_status=last.exit_status, message=last.message)
    stops = [e for e in source_events if e.type == "shutdown"]
    if stops and not any(e.t > stops[-1].t and e.type in ("start", "spawn") for e in events):
        return Ending(kind="stopped", reason="shutdown", t=stops[-1].t, generation=0,
                      exit_status=None, message=stops[-1].message)
    return None


def trims(data: WorkerData) -> Trims:
    """Trim effectiveness from `trimmed` events: memory freed against objects dropped."""
    found = [e for e in data.events if e.type == "trimmed"]
    if not found:
        return Trims()
    freed = [max(0, (e.rss or 0) - (e.rss_after or 0)) for e in found]
    freed_share = [f / e.rss for f, e in zip(freed, found, strict=True) if e.rss]
    dropped_share = []
    ts, vs, _ = data.counter_series("objects")
    for e in found:
        if e.dropped is None:
            continue
        i = bisect.bisect_right(ts, e.t) - 1
        objects = vs[i] if i >= 0 else math.nan
        if not math.isnan(objects) and objects > 0:
            dropped_share.append(min(1.0, e.dropped / objects))
    ms = [e.ms for e in found if e.ms is not None]
    return Trims(count=len(found), freed_total=sum(freed), freed_mean=sum(freed) / len(freed),
                 freed_share_mean=sum(freed_share) / len(freed_share) if freed_share else None,
                 dropped_share_mean=(sum(dropped_share) / len(dropped_share)
                                     if dropped_share else None),
                 ms_mean=sum(ms) / len(ms) if ms else None)


def _increase(values: list[float]) -> float | None:
    """Total increase of a cumulative counter, counting a reset (a new process) as a restart."""
    v = [x for x in values if x == x]  # NaN is the only value unequal to itself
    if not v:
        return None
    if all(map(operator.le, v[:-1], v[1:])):  # the usual case: no reset
        return v[-1] - v[0]
    total = 0.0
    for prev, cur in itertools.pairwise(v):
        total += cur - prev if cur >= prev else cur
    return total


def gc(data: WorkerData, generations: Iterable[int], span: float) -> Gc:
    """Garbage-collection pauses from the cumulative counters, added up per generation."""
    if not data.has_counters:
        return Gc()
    pause: float | None = None
    count: float | None = None
    for g in generations:  # counters restart with each process
        p = _increase(data.counter_series("gc_pause_ms", g)[1])
        c = _increase(data.counter_series("gc_collections", g)[1])
        pause = p if pause is None else pause + (p or 0.0)
        count = c if count is None else count + (c or 0.0)
    return Gc(collections=count, pause_ms_total=pause,
              pause_ms_per_hour=(pause / (span / 3600.0)) if pause is not None and span else None,
              pause_ms_mean=(pause / count) if pause is not None and count else None)


def finding(events: list[Event]) -> tuple[float, str] | None:
    """The latest `finding` paragraph of a generation's leak reports (`events`: the
    generation's own, in time order), with its time."""
    for e in reversed(events):
        if e.type == "report":
            text = e.data.get("finding") if isinstance(e.data, dict) else None
            if isinstance(text, str) and text.strip():
                return e.t, text.strip()
    return None


def objects_per_mb(data: WorkerData, generation: int) -> float | None:
    """Median Python objects per MB of the generation's memory (from its counters)."""
    _, vs, rs = data.counter_series("objects", generation)
    per = [o / (r / 1e6) for o, r in zip(vs, rs, strict=True) if r > 0]
    return median(per) if per else None


__all__ = ["FLAP_WINDOW_S", "Timeline", "after", "ending", "finding", "flaps", "gc",
           "objects_per_mb", "replacements", "timeline", "transitions", "trims"]

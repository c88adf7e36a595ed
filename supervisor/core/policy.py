"""What to do about pressure: notify, replace (make before break or break before make), hold.

Pure decision code on top of `lifecycle.Lifecycle`, which owns every worker's generations,
restarts and memwarden's end: plain values in, `actions.Action`s out, no I/O and no clock,
so the tests are tables. The rules (docs/design.md, "Decisions"):

* A generation's level is acted on once it is ready; a level reached while starting is
  judged at ready. A fresh generation already at HIGH when it becomes ready has its
  baseline above HIGH: a warning per generation, and with `on_baseline_high = "exit"` the
  end of memwarden (status 3) after `baseline_generations` such generations in a row.
* MEDIUM: tell the worker, and remind it at most once per reminder period while MEDIUM
  holds. Every change is passed on, the way back to LOW included.
* A rise to HIGH: spawn generation N+1 with the "high" profile; retire N once N+1 is ready.
  A rise to CRITICAL: the same with the "critical" profile and the short grace; when the
  headroom under the limit is smaller than a new generation's expected footprint, retire N
  first and spawn N+1 once N has exited (break before make). Falls are not crossings: they
  are passed on, never acted on; a level that holds is acted on again once nothing holds
  the replacement back any more.
* Cooldown: after a replacement is spawned nothing else is started for the worker while it
  is pending, and not before the cooldown has passed since it became ready. A generation
  that reaches HIGH within twice its cooldown (or within QUICK_S) of becoming ready
  doubles the cooldown of its successor (up to `cooldown_max_s`); one that holds out
  longer brings it back to `cooldown_s`. CRITICAL waits at most `cooldown_s`, and not at
  all while the container's headroom is at stake. memwarden never gives up on a worker
  because it leaks.
* The container's pressure picks one victim on a rise (the fastest grower, then the
  largest); its falls go to that victim only, while it still serves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from snapshots.schema import EventType, SpawnCause
from supervisor.core.actions import Action, Finish, Notify, Record, Retire, Spawn, describe, who
from supervisor.core.lifecycle import (
    READY,
    STARTING,
    Generation,
    Lifecycle,
    Plan,
    PolicySettings,
    Refused,
    WorkerSettings,
    WorkerState,
)
from supervisor.core.pressure import Change, explain, quantity
from supervisor.core.units import format_duration, format_size
from workers.protocol import Level

#: Profiles from laxest to tightest; a generation's profile never moves left.
PROFILES = ("normal", "high", "critical")
_RANK = {name: i for i, name in enumerate(PROFILES)}
_PROFILE_FOR = {Level.HIGH: "high", Level.CRITICAL: "critical"}

#: Exit status of memwarden when fresh generations keep starting above HIGH and
#: `on_baseline_high` is "exit": the limits are too small for the worker.
EXIT_LIMITS_TOO_SMALL = 3
#: A generation that reaches HIGH within twice its cooldown, or within this many seconds,
#: of becoming ready never got going: the cooldown of its successor doubles. Ten seconds
#: is longer than a healthy start-up settles and shorter than any leak worth a gentle
#: make-before-break.
QUICK_S = 10.0
#: What a cooldown of 0 grows from when its generations keep reaching HIGH at once.
MIN_GROWN_S = 0.5


class Policy(Lifecycle):
    """Decisions about pressure for every worker, on top of their lifecycle. Methods return
    the actions to carry out, in order."""

    def __init__(self, settings: PolicySettings, workers: Sequence[WorkerSettings]) -> None:
        super().__init__(settings, workers)
        self._victim: tuple[str, int] | None = None  # last container-pressure victim

    def level(self, now: float, worker: str, generation: int, change: Change, *,
              headroom: int | None, container: Level = Level.LOW,
              footprint: int | None = None) -> list[Action]:
        """Act on a change of `generation`'s own level.

        `headroom` is the bytes left under the container limit (None without a limit),
        `container` the container's own level (the headroom is at stake from HIGH),
        `footprint` the expected size of a new generation (None: the memory this generation
        had when it became ready). A starting generation's level is kept and judged once it
        is ready; a retiring generation's level is ignored.
        """
        w = self._worker(worker)
        g = w.get(generation)
        if g is None or not g.live or w.ending:
            return []
        g.level, g.change = change.level, change
        if generation != w.current or g.state is STARTING:
            return []
        return self._emit(self._on_change(now, w, g, change, headroom, footprint,
                                          at_stake=headroom is not None
                                          and container >= Level.HIGH))

    def container_level(self, now: float, change: Change,
                        candidates: Sequence[tuple[str, int, float, int]], *,
                        headroom: int | None) -> list[Action]:
        """Act on a change of the whole container's level.

        `candidates` are (worker, generation, growth in bytes/s, memory). A rise picks one
        victim among the ready current generations: the fastest recent grower, then the
        largest; the change is then handled as that worker's own. A fall is not a crossing:
        it goes to the previous victim only, the one that was told to shed memory, and only
        while that generation still serves.
        """
        valid = [c for c in candidates
                 if c[0] in self._workers and self._ready_current(c[0], c[1])]
        if change.level > change.previous:
            if not valid:
                return []
            best = max(valid, key=lambda c: (c[2], c[3]))
            w, g = self._workers[best[0]], self._workers[best[0]].generations[best[1]]
            self._victim = (w.name, g.number)
            w.container = change
            why = (f"container at {change.level.label} pressure ({explain(change)}): "
                   f"{who(w.name, g.number)} chosen among {len(valid)} worker(s) as the "
                   f"fastest grower ({format_size(best[2])}/s), then the largest "
                   f"({format_size(best[3])})")
            data = {"candidates": [{"worker": c[0], "generation": c[1], "growth": c[2],
                                    "rss": c[3]} for c in valid]}
            acts: list[Action] = [Record(w.name, g.number, EventType.VICTIM, why, data)]
            if change.level >= Level.HIGH:
                acts.append(Notify(w.name, g.number, change.level, change))
                w.last_notify = now
                acts += self._pressing(now, w, g, change, headroom, None, at_stake=True)
            else:
                acts.append(Notify(w.name, g.number, change.level, change))
                w.last_notify = now
            return self._emit(acts)
        victim, self._victim = self._victim, (self._victim if change.level > Level.LOW
                                              else None)
        if victim is None or not self._ready_current(*victim):
            self._victim = None
            return []
        w = self._workers[victim[0]]
        w.container = change if change.level > Level.LOW else None
        if max(change.level, w.generations[victim[1]].level) < Level.HIGH:
            w.holding = False  # the pressure eased: a later rise is a new episode
        return self._emit([Notify(w.name, victim[1], change.level, change)])

    def replace(self, now: float, worker: str, reason: str) -> list[Action]:
        """A replacement asked for by a person: make before break with the current profile.

        Ignores the cooldown (a person asked); raises Refused naming why when the worker has
        no ready generation to replace or a replacement is already under way.
        """
        w = self._worker(worker)
        g = w.get(w.current)
        if w.ending:
            raise Refused(f"worker {worker!r} is stopping ({w.ending})")
        if w.pending is not None:
            raise Refused(f"already replacing worker {worker!r}: generation {w.pending} is "
                          "starting")
        if w.plan is not None:
            raise Refused(f"already replacing worker {worker!r}: its next generation starts "
                          + ("once the present one has stopped" if w.plan.due is None
                             else f"in {format_duration(max(w.plan.due - now, 0))}"))
        if g is None or g.state is not READY:
            raise Refused(f"worker {worker!r} has no ready generation to replace yet")
        return self._emit(self._spawn(now, w, Plan(g.profile, Level.LOW, reason,
                                                     SpawnCause.REQUEST)))

    def tick(self, now: float, *, headroom: int | None = None,
             container: Level = Level.LOW) -> list[Action]:
        """Run the timers: restarts and retries that are due, ready timeouts, the end of a
        cooldown while HIGH holds, MEDIUM reminders."""
        acts: list[Action] = []
        for w in self._workers.values():
            if not w.done:
                acts += self._tick_worker(now, w, headroom,
                                          headroom is not None and container >= Level.HIGH)
        return acts

    def _judge_at_ready(self, now: float, w: WorkerState, g: Generation) -> list[Action]:
        """The baseline check, then what the level reached while starting asks for."""
        acts = self._baseline(now, w, g)
        if w.ending or g.level is Level.LOW or g.change is None:
            return acts
        # Becoming ready at HIGH is a crossing, whichever way the level last moved.
        return acts + self._on_change(now, w, g, g.change, None, None, at_stake=False,
                                      crossing=True)

    def _on_change(self, now: float, w: WorkerState, g: Generation, change: Change,
                   headroom: int | None, footprint: int | None, *,
                   at_stake: bool, crossing: bool = False) -> list[Action]:
        acts: list[Action] = [Notify(w.name, g.number, change.level, change)]
        w.last_notify = now
        if change.level >= Level.HIGH and (crossing or change.level > change.previous):
            acts += self._pressing(now, w, g, change, headroom, footprint, at_stake=at_stake)
        elif change.level < Level.HIGH:
            w.holding = False  # the pressure eased: a later rise is a new episode
        return acts

    def _pressing(self, now: float, w: WorkerState, g: Generation, change: Change,
                  headroom: int | None, footprint: int | None, *,
                  at_stake: bool) -> list[Action]:
        """The current generation is at HIGH or above: replace it, or say why not yet."""
        critical = change.level is Level.CRITICAL
        cause = f"{who(w.name, g.number)} at {change.level.label} pressure ({explain(change)})"
        expected = footprint if footprint is not None else g.memory_at_ready
        pending = w.get(w.pending)
        if pending is not None and critical and at_stake:
            # The container is about to run out and the replacement is still starting:
            # stop the old generation now; the starting one takes over when it is ready.
            return self._break_first(now, w, g, change, cause, headroom, expected, None)
        held = self._held(now, w, critical=critical, at_stake=at_stake)
        if held is not None:
            if w.holding:
                return []
            w.holding = True
            reason, data = held
            return [Record(w.name, g.number, EventType.COOLDOWN,
                           f"{cause}: replacement held back: {reason}",
                           {**data, **_change_data(change)})]
        profile = _escalate(g.profile, _PROFILE_FOR[change.level])
        acts = self._backoff(now, w, g, change)
        if critical and headroom is not None and expected is not None and headroom < expected:
            plan = Plan(profile, change.level, f"{cause}; break before make",
                        SpawnCause.PRESSURE)
            return acts + self._break_first(now, w, g, change, cause, headroom, expected, plan)
        plan = Plan(profile, change.level, f"{cause}; make before break: generation "
                     f"{g.number} is retired once its replacement is ready",
                     SpawnCause.PRESSURE)
        return acts + self._spawn(now, w, plan)

    def _held(self, now: float, w: WorkerState, *, critical: bool,
              at_stake: bool) -> tuple[str, dict[str, Any]] | None:
        if w.pending is not None:
            return (f"replacement generation {w.pending} has not reported ready yet",
                    {"pending": w.pending})
        if w.plan is not None:
            return (f"generation {w.current} is being stopped before its replacement starts",
                    {"stopping": w.current})
        if critical and at_stake:
            return None  # the container's headroom is at stake: no cooldown holds CRITICAL
        wait = min(w.cooldown_s, self.settings.cooldown_s) if critical else w.cooldown_s
        left = w.cooldown_from + wait - now
        if left > 0:
            return (f"cooldown, {format_duration(left)} left of {format_duration(wait)}",
                    {"remaining_s": left, "cooldown_s": wait})
        return None

    def _backoff(self, now: float, w: WorkerState, g: Generation, change: Change) -> list[Action]:
        """Grow the cooldown after a generation that reached HIGH fast; relax it after one
        that held out. Returns a record when the cooldown changes."""
        if g.ready_at is None:
            return []
        life = now - g.ready_at
        before = w.cooldown_s
        within = max(2 * before, QUICK_S)
        quick = life < within
        after = min(max(before, MIN_GROWN_S) * 2, self.settings.cooldown_max_s) if quick \
            else self.settings.cooldown_s
        after = max(after, self.settings.cooldown_s)
        w.cooldown_s = after
        if after == before:
            return []
        if quick:
            why = (f"{who(w.name, g.number)} reached {change.level.label} pressure "
                   f"{format_duration(life)} after it became ready (within "
                   f"{format_duration(within)}): the cooldown of its successor grows from "
                   f"{format_duration(before)} to {format_duration(after)}")
        else:
            why = (f"{who(w.name, g.number)} held out {format_duration(life)} before "
                   f"{change.level.label} pressure: the cooldown is back to "
                   f"{format_duration(after)}")
        return [Record(w.name, g.number, EventType.BACKOFF, why,
                       {"cooldown_s": after, "previous_s": before, "life_s": life})]

    def _break_first(self, now: float, w: WorkerState, g: Generation, change: Change, cause: str,
                     headroom: int | None, expected: int | None,
                     plan: Plan | None) -> list[Action]:
        """Retire the current generation before its replacement starts (or is ready)."""
        grace = self.settings.critical_grace_s
        if plan is None:
            why = (f"{cause}: the container's headroom is at stake while replacement "
                   f"generation {w.pending} is starting; stopping generation {g.number} now")
        else:
            why = (f"{cause}: headroom {format_size(headroom or 0)} is less than the "
                   f"{format_size(expected or 0)} a new generation is expected to need; "
                   f"stopping generation {g.number} before starting its replacement with "
                   f"profile {plan.profile}")
        note = Record(w.name, g.number, EventType.BREAK_BEFORE_MAKE, why,
                      {"headroom": headroom, "footprint": expected,
                       "profile": plan.profile if plan else None, **_change_data(change)})
        w.cooldown_from = now
        w.holding = False
        if self.settings.dry_run:
            # Nothing will exit, so nothing may wait for that exit.
            spawn = [] if plan is None else [Spawn(w.name, w.last_number + 1, plan.profile,
                                                   f"{plan.reason}, once generation "
                                                   f"{g.number} has exited", plan.cause)]
            return [note, Retire(w.name, g.number, grace, why), *spawn]
        w.plan = plan
        return [note, self._retire(w, g, critical=True, reason=why)]

    def _baseline(self, now: float, w: WorkerState, g: Generation) -> list[Action]:
        """A generation already at HIGH when it becomes ready has its baseline above HIGH."""
        if g.level < Level.HIGH or g.change is None:
            w.baseline.clear()
            return []
        change = g.change
        seen = {"generation": g.number, "rss_at_ready": g.memory_at_ready,
                **_change_data(change)}
        w.baseline.append(seen)
        n, limit = len(w.baseline), self.settings.baseline_generations
        held = "" if g.memory_at_ready is None else f" with {format_size(g.memory_at_ready)}"
        exiting = self.settings.on_baseline_high == "exit"
        then = (f"{n} of {limit} in a row before memwarden exits (--on-baseline-high exit)"
                if exiting else f"{n} in a row; memwarden goes on replacing it "
                "(--on-baseline-high continue)")
        acts: list[Action] = [Record(
            w.name, g.number, EventType.BASELINE_HIGH,
            f"{who(w.name, g.number)} became ready at {change.level.label} pressure{held} "
            f"({explain(change)}): its baseline is above HIGH; {then}", seen)]
        if not exiting or n < limit:
            return acts
        figures = "; ".join(
            f"generation {b['generation']}: "
            f"{format_size(b['rss_at_ready']) if b['rss_at_ready'] is not None else '?'} "
            f"at ready, {b['metric']} {quantity(b['metric'], b['value'])} against "
            f"{quantity(b['metric'], b['threshold'])}"
            for b in w.baseline)
        message = (f"the limits are too small for worker {w.name!r}: {n} generations in a "
                   f"row were at high pressure when they became ready ({figures}). Raise the "
                   "thresholds (--high, --critical) or the memory limit, or lower the "
                   "worker's baseline memory.")
        acts.append(Record(w.name, g.number, EventType.LIMITS_TOO_SMALL, message,
                           {"generations": list(w.baseline),
                            "exit_status": EXIT_LIMITS_TOO_SMALL}))
        if self.settings.dry_run:
            return [*acts, Finish(EXIT_LIMITS_TOO_SMALL, message)]
        return acts + self.stop(now, message, status=EXIT_LIMITS_TOO_SMALL)

    def _tick_worker(self, now: float, w: WorkerState, headroom: int | None,
                     at_stake: bool) -> list[Action]:
        acts = self._tick_lifecycle(now, w)
        g = w.get(w.current)
        if g is None or g.state is not READY or w.ending or acts:
            return acts
        level, change = g.level, g.change
        if w.container is not None and w.container.level > level:
            level, change = w.container.level, w.container
        if change is None:
            return acts
        if level >= Level.HIGH:
            critical = level is Level.CRITICAL
            if self._held(now, w, critical=critical, at_stake=at_stake) is None:
                # The hold ended and the level still asks for a replacement: act again.
                acts += self._emit(self._pressing(now, w, g, change, headroom, None,
                                                  at_stake=at_stake or w.container is change))
        elif level is Level.MEDIUM and (
                w.last_notify is None or now - w.last_notify >= self.settings.renotify_s):
            acts += self._emit([Notify(w.name, g.number, level, change)])
            w.last_notify = now
        return acts

    def quiet(self) -> bool:
        """True while no timer can fire: every worker has ended, or has one ready generation
        at LOW and nothing starting, stopping, planned or held (`tick` then does nothing)."""
        for w in self._workers.values():
            if w.done:
                continue
            g = w.get(w.current)
            if (g is None or g.state is not READY or w.pending is not None or w.plan is not None
                    or w.ending or len(w.generations) > 1 or g.level > Level.LOW
                    or w.container is not None):
                return False
        return True

    def _after_ready(self, now: float, w: WorkerState, g: Generation) -> list[Action]:
        return self._emit(self._judge_at_ready(now, w, g))

    def _emit(self, acts: list[Action]) -> list[Action]:
        """Pressure's actions as they are, or in dry-run mode as records of what would be."""
        if not self.settings.dry_run:
            return acts
        return [describe(a) for a in acts]


def _escalate(current: str, wanted: str) -> str:
    return current if _RANK[current] >= _RANK[wanted] else wanted


def _change_data(change: Change) -> dict[str, Any]:
    return {"level": change.level.label, "previous": change.previous.label,
            "metric": change.metric, "value": change.value, "threshold": change.threshold}


__all__ = [
    "EXIT_LIMITS_TOO_SMALL",
    "PROFILES",
    "Generation",
    "Policy",
    "PolicySettings",
    "Refused",
    "WorkerSettings",
]

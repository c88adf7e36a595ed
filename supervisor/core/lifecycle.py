"""The lifecycle of every worker: its generations, their states, restarts and the end.

Pure: plain values in, `actions.Action`s out, no I/O and no clock (every call takes `now`,
monotonic seconds). This is the one owner of every worker's lifecycle: which generations
exist, their states (STARTING, READY, RETIRING, EXITED), profiles, ready times, the grace
each retirement gets, restarts and memwarden's exit status. `policy.Policy` adds the
decisions about pressure on top; the main loop owns only OS handles, carries out the
actions and reports back what the world did.

* One reaped exit is one decision. The current generation exiting by itself (a crash, an
  OOM kill, a normal end) is decided by `--restart` and the restart budget; a pending
  replacement then takes over as the restart rather than starting another. A replacement
  that dies or never says ready before it takes over is a failed start, counted against
  the same budget. A worker whose budget is spent, or that will not restart, ends;
  memwarden exits once every worker has ended, with the first non-zero status among them.
  A stop asked of memwarden (TERM, INT, `memwarden stop`) changes nothing in that: as
  tini and dumb-init do, a worker that dies of the signal passed on to it ends with 128+N
  (143, 130), and only one that exits 0 (it caught the signal and finished) is a clean
  stop. Rewriting that to 0 would let an evicted batch Job count as succeeded and a CI
  step killed by its timeout pass; where a death by TERM is fine, the service manager
  says so (systemd's `SuccessExitStatus=143`).
* A first generation, or a restart, that never says ready is supervised as ready after
  the ready timeout: nothing else of the worker is alive to keep.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from snapshots.schema import EventType, SpawnCause
from supervisor.core.actions import Action, Exit, Finish, Record, Retire, Spawn, who
from supervisor.core.pressure import Change
from supervisor.core.restarts import Restart, RestartTracker
from supervisor.core.states import GenerationState, transition
from supervisor.core.units import format_duration, format_size
from workers.protocol import Level

#: The shortest MEDIUM reminder period when it follows a cooldown of 0: one a second.
MIN_RENOTIFY_S = 1.0

STARTING, READY, RETIRING, EXITED = (GenerationState.STARTING, GenerationState.READY,
                                     GenerationState.RETIRING, GenerationState.EXITED)


class Refused(Exception):
    """A request made by a person (`memwarden replace`) that the policy will not carry out."""


@dataclass(frozen=True)
class PolicySettings:
    """The policy's knobs for every worker, in seconds. Raises ValueError naming a field out
    of range."""

    cooldown_s: float = 5.0
    cooldown_max_s: float = 300.0
    critical_grace_s: float = 2.0
    ready_timeout_s: float = 30.0
    on_baseline_high: Literal["continue", "exit"] = "continue"
    baseline_generations: int = 3
    restart_budget: int = 5
    restart_window_s: float = 60.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    dry_run: bool = False
    #: Reminder period while MEDIUM holds; None means the cooldown (at least a second).
    medium_renotify_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("cooldown_s", "critical_grace_s", "backoff_initial_s", "backoff_max_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be a duration >= 0, got {getattr(self, name)!r}")
        for name in ("ready_timeout_s", "restart_window_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not self.cooldown_max_s >= self.cooldown_s:
            raise ValueError(f"cooldown_max_s ({self.cooldown_max_s!r}) must be at least "
                             f"cooldown_s ({self.cooldown_s!r})")
        if self.baseline_generations < 1 or self.restart_budget < 1:
            raise ValueError("baseline_generations and restart_budget must be >= 1")
        if self.medium_renotify_s is not None and not self.medium_renotify_s > 0:
            # Zero would remind the worker on every check, twenty times a second.
            raise ValueError(f"medium_renotify_s must be > 0, got {self.medium_renotify_s!r}")

    @property
    def renotify_s(self) -> float:
        """The MEDIUM reminder period, resolved."""
        if self.medium_renotify_s is not None:
            return self.medium_renotify_s
        return max(self.cooldown_s, MIN_RENOTIFY_S)


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What differs between workers: the name, the grace of a retirement, `--restart`."""

    name: str
    grace_s: float = 10.0
    restart: Restart = "never"


@dataclass(slots=True)
class Generation:
    """One generation as the policy knows it. Read it; only the policy writes it."""

    worker: str
    number: int
    profile: str
    started: float
    replacement: bool  # spawned to replace a predecessor under pressure
    trigger: Level = Level.LOW  # the level that asked for it; sets its predecessor's grace
    state: GenerationState = STARTING
    ready_at: float | None = None
    memory_at_ready: int | None = None
    level: Level = Level.LOW  # its own level (worker classifier)
    change: Change | None = None
    grace_s: float | None = None  # the grace of its retirement, once RETIRING
    status: int | None = None  # shell-style exit status, once EXITED

    @property
    def live(self) -> bool:
        return self.state is STARTING or self.state is READY

    def move(self, target: GenerationState) -> None:
        self.state = transition(self.state, target, who(self.worker, self.number))


@dataclass(frozen=True, slots=True)
class Plan:
    """A start that waits: for `due` (a restart's backoff, the cooldown after a failed start),
    or, when `due` is None, for the current generation's exit (break before make)."""

    profile: str
    trigger: Level
    reason: str
    cause: SpawnCause
    due: float | None = None


@dataclass(slots=True)
class WorkerState:
    settings: WorkerSettings
    restarts: RestartTracker
    cooldown_s: float  # the cooldown in force for HIGH; grows for fast-rising generations
    generations: dict[int, Generation] = field(default_factory=dict)  # none EXITED
    current: int | None = None  # the generation serving, or starting to serve
    pending: int | None = None  # a replacement starting beside the current generation
    last_number: int = 0
    plan: Plan | None = None
    cooldown_from: float = -math.inf  # when the cooldown in force began
    last_notify: float | None = None
    holding: bool = False  # a "cooldown" record was returned for the present hold
    container: Change | None = None  # the container's pressure, while this worker is its victim
    baseline: list[dict[str, Any]] = field(default_factory=list)  # baseline-above-HIGH run
    ending: str | None = None  # why the worker is ending (no restart, budget, stop)
    done: bool = False
    status: int = 0  # the status of its last current generation
    verdict: int | None = None  # the status it ends with when memwarden gave up on it

    @property
    def name(self) -> str:
        return self.settings.name

    def get(self, number: int | None) -> Generation | None:
        return None if number is None else self.generations.get(number)


class Lifecycle:
    """Every worker's generations from start to exit, restarts and memwarden's end.

    Unknown workers raise KeyError (a wiring mistake). Reports about a generation no longer
    tracked, or in a state where they mean nothing, are ignored: a late `ready` can race
    with the reaper, and that is not an error.
    """

    def __init__(self, settings: PolicySettings, workers: Sequence[WorkerSettings]) -> None:
        self.settings = settings
        self._workers: dict[str, WorkerState] = {}
        for w in workers:
            if w.name in self._workers:
                raise ValueError(f"two workers named {w.name!r}")
            self._workers[w.name] = WorkerState(
                w, RestartTracker(w.restart, budget=settings.restart_budget,
                                  window_s=settings.restart_window_s,
                                  initial_s=settings.backoff_initial_s,
                                  max_s=settings.backoff_max_s),
                cooldown_s=settings.cooldown_s)
        self._forced_status: int | None = None
        self._finished = False

    # ----------------------------------------------------------------- the world reports

    def start(self, now: float) -> list[Action]:
        """Start the first generation of every worker."""
        acts: list[Action] = []
        for w in self._workers.values():
            acts += self._spawn(now, w, Plan("normal", Level.LOW, "start", SpawnCause.START))
        return acts

    def spawn_failed(self, now: float, worker: str, generation: int, *, status: int,
                     message: str) -> list[Action]:
        """`generation` could not be started at all (status 127: not found, 126: not runnable).

        A replacement that cannot start is a failed start; a first start or a restart that
        cannot start ends the worker with that status (retrying would not help).
        """
        w = self._worker(worker)
        g = w.get(generation)
        if g is None:
            return []
        self._exit(w, g, status)
        if generation == w.pending:
            w.pending = None
            return self._failed_start(now, w, g, f"could not be started ({message})", status)
        w.current = None
        w.status = status
        return [Record(w.name, g.number, EventType.SPAWN_FAILED, message,
                       {"exit_status": status}),
                *self._end(now, w, f"{message}; nothing of worker {w.name!r} is running")]

    def ready(self, now: float, worker: str, generation: int, memory: int | None, *,
              how: str = "said ready") -> list[Action]:
        """A generation became ready (`how`, for people) holding `memory` bytes (None: unknown).

        Returns [] when it was not starting (already ready, retiring or gone); otherwise a
        `ready` record first, then: the retirement of the predecessor it replaces, and what
        its level asks for (a level reached while starting is judged now).
        """
        w = self._worker(worker)
        g = w.get(generation)
        if g is None or g.state is not STARTING:
            return []
        g.move(READY)
        g.ready_at, g.memory_at_ready = now, memory
        held = "" if memory is None else f" with {format_size(memory)}"
        acts: list[Action] = [Record(w.name, g.number, EventType.READY,
                                     f"ready ({how}) after {format_duration(now - g.started)}"
                                     f"{held}", {"rss": memory})]
        if generation == w.pending:
            old = w.get(w.current)
            w.pending, w.current = None, generation
            if old is not None and old.live:
                critical = g.trigger is Level.CRITICAL
                acts.append(self._retire(
                    w, old, critical=critical, reason=(
                        f"{who(w.name, g.number)} is ready{held} (profile {g.profile}); "
                        f"retiring generation {old.number} (make before break)")))
        elif generation != w.current:
            return acts
        w.last_notify, w.holding, w.container = None, False, None
        if g.replacement:
            # The cooldown starts again here: the fresh generation gets one whole cooldown
            # to show its baseline before anything replaces it.
            w.cooldown_from = now
        return acts + self._after_ready(now, w, g)

    def exited(self, now: float, worker: str, generation: int, exit: Exit) -> list[Action]:
        """A generation was reaped: one exit, one decision (see the module docstring)."""
        w = self._worker(worker)
        g = w.get(generation)
        if g is None:
            return []
        was = g.state
        self._exit(w, g, exit.status)
        acts: list[Action] = []
        if was is STARTING and g.replacement:
            # A replacement that died before it could take over, beside its predecessor or
            # after it (break before make): a failed start.
            if generation == w.pending:
                w.pending = None
            else:
                w.current = None
            acts += self._failed_start(
                now, w, g, f"exited before it was ready ({exit.description})", exit.status)
        elif generation == w.pending:
            w.pending = None  # stopped with its worker
        elif generation == w.current and w.ending:
            # Stopped for good: its status is the worker's as it ended, a death by the
            # signal memwarden passed on included (tini's rule, see the module docstring).
            w.current = None
            w.status = exit.status
        elif generation == w.current:
            w.current = None
            w.status = exit.status
            if was is RETIRING and exit.by_us:
                if w.plan is not None and w.plan.due is None:  # break before make
                    acts += self._spawn(now, w, w.plan, after=g.number)
            else:
                acts += self._crashed(now, w, g, exit)
        return acts + self._check_done(now, w)

    def stop(self, now: float, reason: str, *, status: int | None = None) -> list[Action]:
        """Stop every worker: retire each live generation; `Finish` once all have exited.

        The exit status is `status` when given, else the first non-zero status among the
        workers' last current generations.
        """
        if status is not None and self._forced_status is None:
            self._forced_status = status
        acts: list[Action] = []
        for w in self._workers.values():
            if not w.done:
                acts += self._end(now, w, reason)
        return acts

    # ----------------------------------------------------------------------- queries

    def generations(self) -> list[Generation]:
        """Every generation not yet exited, worker by worker, oldest first (read only)."""
        return [g for w in self._workers.values()
                for _, g in sorted(w.generations.items())]

    def generation(self, worker: str, number: int) -> Generation | None:
        """The generation's record, None once it has exited (read only)."""
        return self._worker(worker).get(number)

    def role(self, worker: str, number: int) -> str | None:
        """"current", "pending" or "retiring"; None for a generation not tracked."""
        w = self._worker(worker)
        g = w.get(number)
        if g is None:
            return None
        if g.state is RETIRING:
            return "retiring"
        return "pending" if number == w.pending else "current"

    def state_of(self, worker: str, number: int) -> GenerationState | None:
        """The state of a tracked generation, None once it has exited."""
        g = self._worker(worker).get(number)
        return None if g is None else g.state

    def profile_of(self, worker: str, number: int) -> str:
        """The profile `number` runs with; raises KeyError for a generation not tracked."""
        g = self._worker(worker).get(number)
        if g is None:
            raise KeyError(f"generation {number} of {worker!r} is not tracked by the policy")
        return g.profile

    def started(self, worker: str) -> int:
        """How many generations of `worker` were started (or attempted) so far."""
        return self._worker(worker).last_number

    def cooldown(self, worker: str) -> float:
        """The cooldown now in force for `worker`'s next replacement under HIGH, in seconds."""
        return self._worker(worker).cooldown_s

    def pending(self, worker: str) -> int | None:
        """The replacement generation that is starting, if any."""
        return self._worker(worker).pending

    def ending(self, worker: str) -> str | None:
        """Why `worker` is ending (it will not start again), None while it goes on."""
        return self._worker(worker).ending

    def workers(self) -> list[str]:
        """Every worker's name, in configuration order."""
        return list(self._workers)

    # --------------------------------------------------------------------- lifecycle

    def _worker(self, name: str) -> WorkerState:
        try:
            return self._workers[name]
        except KeyError:
            known = ", ".join(repr(n) for n in self._workers) or "none"
            raise KeyError(f"unknown worker {name!r}; known workers: {known}") from None

    def _ready_current(self, worker: str, number: int) -> bool:
        w = self._workers[worker]
        g = w.get(number)
        return number == w.current and g is not None and g.state is READY and not w.ending

    @staticmethod
    def _exit(w: WorkerState, g: Generation, status: int) -> None:
        g.move(EXITED)
        g.status = status
        del w.generations[g.number]

    def _spawn(self, now: float, w: WorkerState, plan: Plan,
               after: int | None = None) -> list[Action]:
        """Start the worker's next generation: beside the current one when it is live (a
        replacement, pending until ready), else as the current one."""
        number = w.last_number + 1
        reason = plan.reason if after is None else f"{plan.reason}; generation {after} has exited"
        w.plan = None
        w.holding = False
        spawn = Spawn(w.name, number, plan.profile, reason, plan.cause)
        current = w.get(w.current)
        beside = current is not None and current.live
        if beside and self.settings.dry_run:
            # Never wait for a replacement that will not come: only the cooldown advances.
            w.cooldown_from = now
            return [spawn]
        w.last_number = number
        w.generations[number] = Generation(w.name, number, plan.profile, now,
                                           replacement=plan.cause.replaces,
                                           trigger=plan.trigger)
        if beside:
            w.pending = number
        else:
            w.current = number
        if plan.cause.replaces:  # a first start or a restart holds nothing back
            w.cooldown_from = now
        return [spawn]

    def _retire(self, w: WorkerState, g: Generation, *, critical: bool, reason: str) -> Retire:
        grace = self.settings.critical_grace_s if critical else w.settings.grace_s
        g.move(RETIRING)
        g.grace_s = grace
        return Retire(w.name, g.number, grace, reason)

    def _failed_start(self, now: float, w: WorkerState, g: Generation, why: str,
                      status: int | None) -> list[Action]:
        decision = w.restarts.on_failed_start(now)
        message = (f"replacement {who(w.name, g.number)} (profile {g.profile}) {why}: a "
                   f"failed start ({decision.attempt} of {w.restarts.budget} starts within "
                   f"{w.restarts.window_s:g}s)")
        acts: list[Action] = [Record(w.name, g.number, EventType.SPAWN_FAILED, message,
                                     {"profile": g.profile, "started_s_ago": now - g.started,
                                      "attempt": decision.attempt})]
        if not decision.restart:
            return acts + self._give_up(now, w, g.number, f"{decision.why}; the last "
                                        f"failure: {who(w.name, g.number)} {why}", status)
        w.cooldown_from = now
        w.holding = False
        if w.get(w.current) is None and w.plan is None:
            # Nothing of the worker is alive: try again once the cooldown has passed.
            w.plan = Plan(g.profile, g.trigger, f"{w.name!r} has no live generation after the "
                           f"failed start of generation {g.number}; starting another",
                           SpawnCause.RESTART, due=now + self.settings.cooldown_s)
        return acts

    def _crashed(self, now: float, w: WorkerState, g: Generation, exit: Exit) -> list[Action]:
        """The current generation exited by itself: restart, hand over, or end the worker."""
        decision = w.restarts.on_exit(now, ok=exit.ok)
        what = f"{who(w.name, g.number)} {exit.description}"
        if not decision.restart:
            if decision.spent:
                return self._give_up(now, w, g.number, f"{what}; {decision.why}", exit.status)
            return self._end(now, w, f"{what}; not restarted: {decision.why}")
        budget = f"restart {decision.attempt} of {w.restarts.budget} within " \
                 f"{w.restarts.window_s:g}s"
        if w.pending is not None:
            # The replacement already starting becomes the restart: no second start.
            return [Record(w.name, w.pending, EventType.RESTART,
                           f"{what}; replacement generation {w.pending} (starting) takes "
                           f"over ({budget})", {"attempt": decision.attempt, "delay_s": 0.0})]
        w.plan = Plan(g.profile, Level.LOW, f"restart after {what}", SpawnCause.RESTART,
                       due=now + decision.delay_s)
        return [Record(w.name, w.last_number + 1, EventType.RESTART,
                       f"{what}; restarting in {format_duration(decision.delay_s)} ({budget})",
                       {"attempt": decision.attempt, "delay_s": decision.delay_s})]

    def _give_up(self, now: float, w: WorkerState, number: int, why: str,
                 status: int | None) -> list[Action]:
        # Giving up is a failure even when the last start that failed left no status.
        w.verdict = status or 1
        message = f"giving up on worker {w.name!r}: {why}; exit status {w.verdict}"
        return [Record(w.name, number, EventType.GIVE_UP, message,
                       {"exit_status": w.verdict}),
                *self._end(now, w, message)]

    def _end(self, now: float, w: WorkerState, why: str) -> list[Action]:
        """The worker will not start again: retire whatever of it is live."""
        if w.ending is None:
            w.ending = why
        w.plan = None
        acts: list[Action] = []
        for g in list(w.generations.values()):
            if g.live:
                acts.append(self._retire(w, g, critical=False,
                                         reason=f"stopping worker {w.name!r}: {why}"))
        return acts + self._check_done(now, w)

    def _check_done(self, now: float, w: WorkerState) -> list[Action]:
        if w.done or w.ending is None or w.generations or w.plan is not None:
            return []
        w.done = True
        if self._finished or not all(x.done for x in self._workers.values()):
            return []
        self._finished = True
        statuses = [(x.name, x.status if x.verdict is None else x.verdict)
                    for x in self._workers.values()]
        failed = next(((n, s) for n, s in statuses if s != 0), None)
        status = self._forced_status if self._forced_status is not None else (
            failed[1] if failed else 0)
        if failed is None:
            detail = "every worker ended with status 0"
        else:
            ended = self._workers[failed[0]].ending
            detail = f"worker {failed[0]!r} ended with status {failed[1]} ({ended})"
        return [Finish(status, f"exiting with status {status}: {detail}")]

    def _after_ready(self, now: float, w: WorkerState, g: Generation) -> list[Action]:
        """What becoming ready asks for beyond the lifecycle; `Policy` judges the level."""
        return []

    def _tick_lifecycle(self, now: float, w: WorkerState) -> list[Action]:
        """The lifecycle's timers for one worker: ready timeouts and starts that are due."""
        acts: list[Action] = []
        timeout = self.settings.ready_timeout_s
        pending = w.get(w.pending)
        if pending is not None and pending.state is STARTING and now - pending.started >= timeout:
            acts.append(self._retire(w, pending, critical=False, reason=(
                f"replacement {who(w.name, pending.number)} did not report ready within "
                f"{format_duration(timeout)}")))
            w.pending = None  # abandoned: it no longer holds a replacement back
            acts += self._failed_start(now, w, pending, f"did not report ready within "
                                       f"{format_duration(timeout)}", None)
        g = w.get(w.current)
        if g is None:
            plan = w.plan
            if (plan is not None and plan.due is not None and now >= plan.due
                    and w.pending is None and not w.ending):
                acts += self._spawn(now, w, plan)
        elif g.state is STARTING and now - g.started >= timeout:
            # A current generation that never said ready is supervised as ready: nothing
            # else of the worker is alive to keep, and its pressure must not go unheard.
            acts += self.ready(now, w.name, g.number, None, how=(
                f"did not report ready within {format_duration(timeout)}: supervised as "
                "ready"))
        return acts


__all__ = ["Generation", "Lifecycle", "Plan", "PolicySettings", "Refused", "WorkerSettings",
           "WorkerState"]

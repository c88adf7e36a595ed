"""What to do about pressure: notify, replace (make before break or break before make), hold.

Pure decision code. Plain values go in, `Action`s come out; there is no I/O and no clock
(every call takes `now`, monotonic seconds), so the tests are tables. The main loop carries
out the actions (send on the channel, spawn, TERM/KILL, write events) and reports back what
the world did: `ready()` when a generation is ready, `exited()` when one has been reaped, and
`tick()` regularly for the timers (ready timeout, cooldown expiry, MEDIUM reminders).

A *slot* is one supervised worker identity ("worker", "web-2"). It has a current generation
and at most one pending replacement. The rules (docs/design.md):

* MEDIUM: tell the worker, and remind it at most once per `medium_renotify_s` while MEDIUM
  holds. Every change of level is passed on, including the way back to LOW, so that the
  worker can relax its limits again.
* HIGH: spawn generation N+1 with the "high" profile; retire N only once N+1 is ready.
* CRITICAL: the same with the "critical" profile and the short grace; when the headroom under
  the limit is smaller than a new generation's expected footprint, retire N first and spawn
  N+1 once N has exited (break before make), rather than push the container into the OOM
  killer.
* Profiles only escalate: a replacement never runs with a laxer profile than its predecessor.
* After a replacement spawns, nothing else is started for the slot while it is pending, and
  not before `cooldown_s` has passed; when the replacement becomes ready the cooldown starts
  again, so that the fresh generation gets one whole cooldown to show its baseline.
* A replacement that is already at HIGH or above within its first cooldown after ready has a
  baseline above HIGH; after `baseline_generations` of those in a row the policy gives up
  (exit status 3): the limits are too small for this worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from snapshots.schema import EventType
from supervisor.config import Config
from supervisor.pressure import Change, explain, quantity
from supervisor.states import GenerationState, transition
from supervisor.units import format_duration, format_size
from workers.protocol import Level

#: Profiles from laxest to tightest; a generation's profile never moves left.
PROFILES = ("normal", "high", "critical")
_RANK = {name: i for i, name in enumerate(PROFILES)}
_PROFILE_FOR = {Level.HIGH: "high", Level.CRITICAL: "critical"}

#: Event type of the records that dry-run mode returns instead of actions.
DRY_RUN = "dry_run"
#: Exit status of memwarden when the limits are too small for a worker.
EXIT_LIMITS_TOO_SMALL = 3

_LIVE = (GenerationState.STARTING, GenerationState.READY)


@dataclass(frozen=True, slots=True)
class Notify:
    """Send `pressure` at `level` on the generation's channel (and the optional medium signal)."""

    slot: str
    generation: int
    level: Level
    change: Change | None


@dataclass(frozen=True, slots=True)
class Spawn:
    """Start `generation` of `slot` with `profile` ("normal", "high" or "critical")."""

    slot: str
    generation: int
    profile: str
    reason: str


@dataclass(frozen=True, slots=True)
class Retire:
    """Stop `generation`: TERM its process group, KILL after `grace_s`.

    `critical` marks the short grace of CRITICAL pressure; otherwise a worker's own
    configured grace may replace `grace_s`.
    """

    slot: str
    generation: int
    grace_s: float
    reason: str
    critical: bool = False


@dataclass(frozen=True, slots=True)
class Record:
    """An event to log and write; `type` is a snapshots.schema.EventType value or "dry_run"."""

    slot: str
    generation: int
    type: str
    message: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class GiveUp:
    """memwarden must stop everything and exit with `exit_status`; `message` says why."""

    slot: str
    message: str
    exit_status: int


Action = Notify | Spawn | Retire | Record | GiveUp


@dataclass(frozen=True)
class PolicySettings:
    """The policy's knobs, in seconds. Raises ValueError naming a field that is out of range."""

    cooldown_s: float = 5.0
    grace_s: float = 10.0
    critical_grace_s: float = 2.0
    ready_timeout_s: float = 30.0
    baseline_generations: int = 3
    dry_run: bool = False
    #: Reminder period while MEDIUM holds; None means the cooldown.
    medium_renotify_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("cooldown_s", "grace_s", "critical_grace_s"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be a duration >= 0, got {getattr(self, name)!r}")
        if not self.ready_timeout_s > 0:
            raise ValueError(f"ready_timeout_s must be > 0, got {self.ready_timeout_s!r}")
        if self.baseline_generations < 1:
            raise ValueError(
                f"baseline_generations must be >= 1, got {self.baseline_generations!r}"
            )
        if self.medium_renotify_s is None:
            object.__setattr__(self, "medium_renotify_s", self.cooldown_s)
        elif not self.medium_renotify_s > 0:
            # Zero would remind the worker on every tick, a thousand times a second.
            raise ValueError(f"medium_renotify_s must be > 0, got {self.medium_renotify_s!r}")

    @classmethod
    def from_config(cls, cfg: Config) -> PolicySettings:
        """Take the policy's settings from a validated Config."""
        return cls(
            cooldown_s=float(cfg.cooldown),
            grace_s=float(cfg.grace),
            critical_grace_s=float(cfg.critical_grace),
            ready_timeout_s=float(cfg.ready_timeout),
            baseline_generations=cfg.baseline_generations,
            dry_run=cfg.dry_run,
        )

    @property
    def renotify_s(self) -> float:
        """The MEDIUM reminder period, resolved."""
        return self.cooldown_s if self.medium_renotify_s is None else self.medium_renotify_s


@dataclass(slots=True)
class _Generation:
    number: int
    profile: str
    started: float
    replacement: bool  # spawned by this policy to replace a predecessor
    trigger: Level = Level.LOW  # the level that asked for it; sets its predecessor's grace
    state: GenerationState = GenerationState.STARTING
    ready_at: float | None = None
    rss_at_ready: int | None = None
    level: Level = Level.LOW
    change: Change | None = None
    baseline_high: bool = False


@dataclass(frozen=True, slots=True)
class _Plan:
    """A spawn that waits for the slot's current generation to exit."""

    profile: str
    trigger: Level
    reason: str


@dataclass(slots=True)
class _Slot:
    name: str
    current: int
    last_number: int
    generations: dict[int, _Generation] = field(default_factory=dict)
    pending: int | None = None
    plan: _Plan | None = None
    cooldown_until: float = -math.inf
    last_notify: float | None = None
    holding: bool = False  # a "cooldown" record was returned for the present hold
    baseline: list[dict[str, Any]] = field(default_factory=list)  # baseline-high run
    gave_up: bool = False


class Policy:
    """Decisions for every slot. Methods return the actions to carry out, in order.

    Unknown slots raise KeyError (a wiring mistake). Reports about a generation the policy no
    longer tracks, or that has already exited, are ignored: a late `ready` or level change can
    race with the reaper, and that is not an error.
    """

    def __init__(self, settings: PolicySettings) -> None:
        self.settings = settings
        self._slots: dict[str, _Slot] = {}
        self._victim: tuple[str, int] | None = None  # last container-pressure victim

    # ----------------------------------------------------------------- the world reports

    def add_slot(self, slot: str, generation: int, now: float, profile: str = "normal") -> None:
        """Track a generation the main loop started by itself (the first one, or a restart).

        A restart of a known slot is accepted only when its current generation has exited
        and no replacement is pending; `generation` must be new. Raises ValueError otherwise.
        """
        if profile not in _RANK:
            raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
        gen = _Generation(generation, profile, now, replacement=False)
        s = self._slots.get(slot)
        if s is None:
            self._slots[slot] = _Slot(slot, generation, generation, {generation: gen})
            return
        if generation <= s.last_number:
            raise ValueError(
                f"generation {generation} of {slot!r} is not new (last was {s.last_number})"
            )
        live = [g.number for g in s.generations.values() if g.state in _LIVE]
        if live or s.pending is not None:
            raise ValueError(
                f"{slot!r} still has live generation(s) {live}; a restart starts only after "
                "its current generation has exited"
            )
        s.generations = {generation: gen}
        s.current = s.last_number = generation
        s.plan, s.last_notify, s.holding = None, None, False

    def level(
        self,
        now: float,
        slot: str,
        generation: int,
        change: Change,
        *,
        headroom: int | None,
        footprint: int | None,
    ) -> list[Action]:
        """Act on a change of `generation`'s own level.

        `headroom` is the bytes left under the container limit (None without a limit);
        `footprint` the expected size of a new generation (None: the RSS this generation had
        when it became ready). A pending replacement's level is kept and acted on once it
        becomes the current generation; a retiring generation's level is ignored.
        """
        return self._emit(self._on_level(now, self._slot(slot), generation, change,
                                         headroom, footprint))

    def container_level(
        self,
        now: float,
        change: Change,
        candidates: list[tuple[str, int, float, int]],
        *,
        headroom: int | None,
    ) -> list[Action]:
        """Act on a change of the whole container's level by picking one victim.

        `candidates` are (slot, generation, growth in bytes/s, rss). The victim is the fastest
        recent grower, then the largest; the change is then handled as that slot's own level.
        A fall of the container's level goes to the previous victim, which is the one that
        was told to shed memory. Candidates that are not a current generation are skipped.
        """
        valid = [
            c for c in candidates
            if c[0] in self._slots and self._slots[c[0]].current == c[1]
        ]
        if change.level > Level.LOW:
            if not valid:
                return []
            best = max(valid, key=lambda c: (c[2], c[3]))
            pick = (best[0], best[1])
            why = (
                f"container at {change.level.label} pressure ({explain(change)}): "
                f"generation {best[1]} of {best[0]!r} chosen among {len(valid)} worker(s) as "
                f"the fastest grower ({format_size(best[2])}/s), then the largest "
                f"({format_size(best[3])})"
            )
        else:
            victim = self._victim
            # A victim since replaced has a fresh generation that was never told to shed.
            if victim is None or self._slots[victim[0]].current != victim[1]:
                self._victim = None
                return []
            pick = victim
            why = (
                f"container back to {change.level.label} ({explain(change)}): telling "
                f"generation {pick[1]} of {pick[0]!r}, the last worker chosen to shed memory"
            )
        self._victim = pick if change.level > Level.LOW else None
        data = {"candidates": [
            {"slot": c[0], "generation": c[1], "growth": c[2], "rss": c[3]} for c in valid
        ]}
        record = Record(pick[0], pick[1], "victim", why, data)
        acts = self._on_level(
            now, self._slot(pick[0]), pick[1], change, headroom, None
        )
        return self._emit([record, *acts])

    def ready(self, now: float, slot: str, generation: int, rss: int) -> list[Action]:
        """A generation became ready with `rss` bytes; a ready replacement retires its predecessor.

        The RSS is remembered as the expected footprint of the next generation.
        """
        s = self._slot(slot)
        g = s.generations.get(generation)
        if g is None or g.state is not GenerationState.STARTING:
            return []
        g.state = transition(g.state, GenerationState.READY, _who(s.name, g.number))
        g.ready_at, g.rss_at_ready = now, rss
        if generation != s.pending:
            return []
        old = s.generations[s.current]
        s.pending, s.current = None, generation
        s.last_notify, s.holding = None, False
        # The cooldown starts again here: the fresh generation gets one whole cooldown to show
        # its baseline before anything replaces it (and that window is where a baseline above
        # HIGH is recognised).
        s.cooldown_until = max(s.cooldown_until, now + self.settings.cooldown_s)
        acts: list[Action] = []
        if old.state in _LIVE:
            old.state = transition(old.state, GenerationState.RETIRING, _who(s.name, old.number))
            critical = g.trigger is Level.CRITICAL
            grace = self.settings.critical_grace_s if critical else self.settings.grace_s
            acts.append(Retire(
                s.name, old.number, grace,
                f"{_who(s.name, g.number)} is ready with {format_size(rss)} "
                f"(profile {g.profile}); retiring generation {old.number} "
                f"(make before break, grace {format_duration(grace)})",
                critical=critical,
            ))
        else:
            del s.generations[old.number]
        if g.level > Level.LOW and g.change is not None:
            # Its level changes were kept while it was starting; it has not been told yet.
            acts.append(Notify(s.name, g.number, g.level, g.change))
            s.last_notify = now
            if g.level >= Level.HIGH:
                acts += self._pressing(now, s, g, g.change, None, None)
        return self._emit(acts)

    def exited(self, now: float, slot: str, generation: int, *, expected: bool) -> list[Action]:
        """A generation was reaped; `expected` is True when the exit follows a Retire.

        Crash restarts of the current generation are not decided here: its unexpected exit
        only updates the state. The exit of a pending replacement before it was ready is a
        failed start. When the current generation was stopped first (break before make), its
        exit spawns the replacement.
        """
        s = self._slot(slot)
        g = s.generations.get(generation)
        if g is None or g.state is GenerationState.EXITED:
            return []
        g.state = transition(g.state, GenerationState.EXITED, _who(s.name, g.number))
        if generation == s.pending:
            del s.generations[generation]
            how = "was stopped" if expected else "exited by itself"
            return self._emit(self._failed_start(now, s, g, f"{how} before it was ready"))
        if generation != s.current:
            del s.generations[generation]  # a retired predecessor, or an abandoned start
            return []
        if s.plan is not None and s.pending is None:
            # Nothing of this slot is alive now: spawn at once, whatever the cooldown.
            return self._emit(self._spawn(now, s, s.plan, after_exit=g.number))
        return []  # an unexpected exit of the current generation: restarts are decided elsewhere

    def replace(self, now: float, slot: str, reason: str) -> list[Action]:
        """A replacement asked for by hand: make before break with the current profile.

        Ignores the cooldown (a person asked) but never starts a second pending replacement.
        """
        s = self._slot(slot)
        g = s.generations.get(s.current)
        if s.gave_up or g is None or g.state not in _LIVE:
            return [Record(slot, s.current, "replace", f"{slot!r} has no live generation "
                           "to replace", {})]
        if s.pending is not None or s.plan is not None:
            return [Record(slot, s.current, "replace", f"a replacement of {slot!r} is "
                           "already under way", {})]
        return self._emit(self._spawn(now, s, _Plan(g.profile, Level.LOW, reason)))

    def tick(self, now: float, *, headroom: int | None = None) -> list[Action]:
        """Run the timers: ready timeouts, cooldown expiry while HIGH holds, MEDIUM reminders.

        `headroom` (bytes under the container limit, None when unknown) lets a CRITICAL slot
        whose cooldown ends choose break before make, as `level()` would.
        """
        acts: list[Action] = []
        for s in self._slots.values():
            if not s.gave_up:
                acts += self._tick_slot(now, s, headroom)
        return self._emit(acts)

    # ----------------------------------------------------------------------- queries

    def profile_of(self, slot: str, generation: int) -> str:
        """The profile `generation` runs with; raises KeyError for a generation not tracked."""
        g = self._slot(slot).generations.get(generation)
        if g is None:
            raise KeyError(f"generation {generation} of {slot!r} is not tracked by the policy")
        return g.profile

    def next_profile(self, slot: str) -> str:
        """The profile a restart of `slot` should use: escalations are kept across restarts."""
        s = self._slot(slot)
        return s.generations[s.current].profile

    def will_start(self, slot: str) -> bool:
        """True when the policy itself starts `slot`'s next generation (a replacement is
        starting, or planned after a failed start): crash restarts must then stay out."""
        s = self._slot(slot)
        return s.pending is not None or s.plan is not None

    def pending(self, slot: str) -> int | None:
        """The replacement generation that is starting, if any (do not restart the slot then)."""
        return self._slot(slot).pending

    def state_of(self, slot: str, generation: int) -> GenerationState | None:
        """The state of a tracked generation, None once it is no longer tracked."""
        g = self._slot(slot).generations.get(generation)
        return None if g is None else g.state

    # ---------------------------------------------------------------------- decisions

    def _slot(self, name: str) -> _Slot:
        try:
            return self._slots[name]
        except KeyError:
            known = ", ".join(repr(n) for n in self._slots) or "none"
            raise KeyError(f"unknown slot {name!r}; known slots: {known}") from None

    def _on_level(
        self, now: float, s: _Slot, generation: int, change: Change,
        headroom: int | None, footprint: int | None,
    ) -> list[Action]:
        g = s.generations.get(generation)
        if g is None or g.state not in _LIVE or s.gave_up:
            return []
        g.level, g.change = change.level, change
        if generation != s.current:
            return []  # a starting replacement: acted on once it is current (see ready())
        acts: list[Action] = [Notify(s.name, g.number, change.level, change)]
        s.last_notify = now
        if change.level >= Level.HIGH:
            acts += self._pressing(now, s, g, change, headroom, footprint)
        else:
            s.holding = False  # the pressure eased: a later rise is a new episode
        return acts

    def _pressing(
        self, now: float, s: _Slot, g: _Generation, change: Change,
        headroom: int | None, footprint: int | None,
    ) -> list[Action]:
        """The current generation is at HIGH or above: replace it, or say why not yet."""
        acts = self._baseline(now, s, g, change)
        if s.gave_up:
            return acts
        held = self._held(now, s)
        if held is not None:
            if not s.holding:
                s.holding = True
                reason, data = held
                acts.append(Record(
                    s.name, g.number, EventType.COOLDOWN,
                    f"{_who(s.name, g.number)} at {change.level.label} pressure "
                    f"({explain(change)}): replacement held back: {reason}",
                    {**data, **_change_data(change)},
                ))
            return acts
        profile = _escalate(g.profile, _PROFILE_FOR[change.level])
        expected = footprint if footprint is not None else g.rss_at_ready
        if g.replacement and not g.baseline_high:
            s.baseline.clear()  # this generation held below HIGH for its first cooldown
        cause = f"{_who(s.name, g.number)} at {change.level.label} pressure ({explain(change)})"
        if (change.level is Level.CRITICAL and headroom is not None and expected is not None
                and headroom < expected):
            return acts + self._break_first(now, s, g, change, profile, headroom, expected, cause)
        plan = _Plan(profile, change.level, f"{cause}; make before break: generation "
                     f"{g.number} is retired once its replacement is ready")
        return acts + self._spawn(now, s, plan)

    def _held(self, now: float, s: _Slot) -> tuple[str, dict[str, Any]] | None:
        if s.pending is not None:
            return (f"replacement generation {s.pending} has not reported ready yet",
                    {"pending": s.pending})
        if s.plan is not None:
            return (f"generation {s.current} is being stopped before its replacement starts",
                    {"stopping": s.current})
        if now < s.cooldown_until:
            left = s.cooldown_until - now
            return (f"cooldown, {format_duration(left)} left of "
                    f"{format_duration(self.settings.cooldown_s)}",
                    {"remaining_s": left, "cooldown_s": self.settings.cooldown_s})
        return None

    def _break_first(
        self, now: float, s: _Slot, g: _Generation, change: Change, profile: str,
        headroom: int, expected: int, cause: str,
    ) -> list[Action]:
        grace = self.settings.critical_grace_s
        plan = _Plan(profile, change.level, f"{cause}; break before make")
        note = Record(
            s.name, g.number, EventType.BREAK_BEFORE_MAKE,
            f"{cause}: headroom {format_size(headroom)} is less than the "
            f"{format_size(expected)} a new generation is expected to need; stopping "
            f"generation {g.number} before starting its replacement with profile {profile}",
            {"headroom": headroom, "footprint": expected, "profile": profile,
             **_change_data(change)},
        )
        retire = Retire(s.name, g.number, grace, f"{plan.reason}: stopped to make room for "
                        f"its replacement (grace {format_duration(grace)})", critical=True)
        s.cooldown_until = now + self.settings.cooldown_s
        s.holding = False
        if self.settings.dry_run:
            # Nothing will exit, so nothing may wait for that exit.
            return [note, retire, Spawn(s.name, s.last_number + 1, profile,
                                        f"{plan.reason}, once generation {g.number} has exited")]
        g.state = transition(g.state, GenerationState.RETIRING, _who(s.name, g.number))
        s.plan = plan
        return [note, retire]

    def _spawn(
        self, now: float, s: _Slot, plan: _Plan, after_exit: int | None = None
    ) -> list[Action]:
        number = s.last_number + 1
        reason = plan.reason if after_exit is None else (
            f"{plan.reason}; generation {after_exit} has exited")
        s.cooldown_until = now + self.settings.cooldown_s
        s.holding = False
        s.plan = None
        spawn = Spawn(s.name, number, plan.profile, reason)
        if self.settings.dry_run:
            # Never wait for a replacement that will not come: only the cooldown advances.
            return [spawn]
        s.last_number = number
        s.generations[number] = _Generation(
            number, plan.profile, now, replacement=True, trigger=plan.trigger
        )
        s.pending = number
        return [spawn]

    def _failed_start(self, now: float, s: _Slot, g: _Generation, why: str) -> list[Action]:
        s.pending = None
        s.cooldown_until = now + self.settings.cooldown_s
        s.holding = False
        acts: list[Action] = [Record(
            s.name, g.number, EventType.SPAWN_FAILED,
            f"replacement {_who(s.name, g.number)} (profile {g.profile}) {why}: a failed "
            f"start; the next attempt waits for the cooldown "
            f"({format_duration(self.settings.cooldown_s)})",
            {"profile": g.profile, "started_s_ago": now - g.started},
        )]
        current = s.generations.get(s.current)
        if current is None or current.state is GenerationState.EXITED:
            # Nothing of the slot is alive: try again after the cooldown (see _tick_slot).
            s.plan = _Plan(g.profile, g.trigger, f"{s.name!r} has no live generation after "
                           f"the failed start of generation {g.number}; starting another")
        return acts

    def _baseline(
        self, now: float, s: _Slot, g: _Generation, change: Change
    ) -> list[Action]:
        """Recognise a replacement that is at HIGH within its first cooldown after ready."""
        if (not g.replacement or g.baseline_high or g.ready_at is None
                or now - g.ready_at > self.settings.cooldown_s):
            return []
        g.baseline_high = True
        seen = {"generation": g.number, "rss_at_ready": g.rss_at_ready, **_change_data(change)}
        s.baseline.append(seen)
        n, limit = len(s.baseline), self.settings.baseline_generations
        rss = format_size(g.rss_at_ready or 0)
        acts: list[Action] = [Record(
            s.name, g.number, EventType.BASELINE_HIGH,
            f"{_who(s.name, g.number)} reached {change.level.label} pressure "
            f"{format_duration(now - g.ready_at)} after it became ready with {rss} "
            f"({explain(change)}): its baseline is above HIGH ({n} of {limit} in a row)",
            seen,
        )]
        if n < limit:
            return acts
        s.gave_up = True
        figures = "; ".join(
            f"generation {b['generation']}: {format_size(b['rss_at_ready'] or 0)} at ready, "
            f"{b['metric']} {quantity(b['metric'], b['value'])} against "
            f"{quantity(b['metric'], b['threshold'])}"
            for b in s.baseline
        )
        message = (
            f"the limits are too small for worker {s.name!r}: {n} generations in a row were at "
            f"high pressure within {format_duration(self.settings.cooldown_s)} of becoming "
            f"ready ({figures}). Raise the thresholds (--high, --critical) or the memory "
            f"limit, or lower the worker's baseline memory."
        )
        acts.append(Record(s.name, g.number, EventType.LIMITS_TOO_SMALL, message,
                           {"generations": list(s.baseline)}))
        acts.append(GiveUp(s.name, message, EXIT_LIMITS_TOO_SMALL))
        return acts

    def _tick_slot(self, now: float, s: _Slot, headroom: int | None) -> list[Action]:
        acts: list[Action] = []
        timeout = self.settings.ready_timeout_s
        if s.pending is not None:
            p = s.generations[s.pending]
            if now - p.started >= timeout:
                p.state = transition(p.state, GenerationState.RETIRING, _who(s.name, p.number))
                acts.append(Retire(
                    s.name, p.number, self.settings.grace_s,
                    f"replacement {_who(s.name, p.number)} did not report ready within "
                    f"{format_duration(timeout)}",
                ))
                acts += self._failed_start(
                    now, s, p, f"did not report ready within {format_duration(timeout)}")
        g = s.generations.get(s.current)
        if g is None or g.state is GenerationState.EXITED:
            if s.plan is not None and s.pending is None and now >= s.cooldown_until:
                acts += self._spawn(now, s, s.plan)
            return acts
        if g.state not in _LIVE or g.change is None:
            return acts
        if g.level >= Level.HIGH and self._held(now, s) is None:
            # The cooldown ended and the level still asks for a replacement: act again.
            acts += self._pressing(now, s, g, g.change, headroom, None)
        elif g.level is Level.MEDIUM and (
            s.last_notify is None or now - s.last_notify >= self.settings.renotify_s
        ):
            acts.append(Notify(s.name, g.number, g.level, g.change))
            s.last_notify = now
        return acts

    def _emit(self, acts: list[Action]) -> list[Action]:
        if not self.settings.dry_run:
            return acts
        return [_describe(a) for a in acts]


def _describe(a: Action) -> Record:
    """The dry-run form of an action: a record of what would have been done."""
    if isinstance(a, Notify):
        cause = f" ({explain(a.change)})" if a.change is not None else ""
        return Record(a.slot, a.generation, DRY_RUN,
                      f"would notify {_who(a.slot, a.generation)} of {a.level.label} "
                      f"pressure{cause}", {"action": "notify", "level": a.level.label})
    if isinstance(a, Spawn):
        return Record(a.slot, a.generation, DRY_RUN,
                      f"would spawn generation {a.generation} of {a.slot!r} with profile "
                      f"{a.profile}: {a.reason}", {"action": "spawn", "profile": a.profile})
    if isinstance(a, Retire):
        return Record(a.slot, a.generation, DRY_RUN,
                      f"would retire {_who(a.slot, a.generation)} (TERM, KILL after "
                      f"{format_duration(a.grace_s)}): {a.reason}",
                      {"action": "retire", "grace_s": a.grace_s})
    if isinstance(a, GiveUp):
        return Record(a.slot, 0, DRY_RUN,
                      f"would exit with status {a.exit_status}: {a.message}",
                      {"action": "give_up", "exit_status": a.exit_status})
    if a.type == EventType.BREAK_BEFORE_MAKE:
        return Record(a.slot, a.generation, DRY_RUN, f"would break before make: {a.message}",
                      {"action": "break_before_make", **a.data})
    return a


def _escalate(current: str, wanted: str) -> str:
    return current if _RANK[current] >= _RANK[wanted] else wanted


def _who(slot: str, generation: int) -> str:
    return f"generation {generation} of {slot!r}"


def _change_data(change: Change) -> dict[str, Any]:
    return {"level": change.level.label, "previous": change.previous.label,
            "metric": change.metric, "value": change.value, "threshold": change.threshold}


__all__ = [
    "DRY_RUN",
    "EXIT_LIMITS_TOO_SMALL",
    "PROFILES",
    "Action",
    "GiveUp",
    "Notify",
    "Policy",
    "PolicySettings",
    "Record",
    "Retire",
    "Spawn",
]

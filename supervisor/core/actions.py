"""The vocabulary between the policy and the main loop: actions out, exits in.

The policy (`supervisor/core/policy.py`) returns these actions; the main loop carries them out
(spawn, stop, send, record, end) and reports back what the world did, among others an
`Exit` for every generation it reaps. Plain frozen values, so that policy tests are tables.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from snapshots.schema import EventType, SpawnCause
from supervisor.core.pressure import Change, explain
from supervisor.core.units import format_duration
from workers.protocol import Level

#: Event type of the records that dry-run mode returns instead of actions.
DRY_RUN = "dry_run"


@dataclass(frozen=True, slots=True)
class Notify:
    """Send `pressure` at `level` on the generation's channel (and the optional medium signal)."""

    worker: str
    generation: int
    level: Level
    change: Change | None


@dataclass(frozen=True, slots=True)
class Spawn:
    """Start `generation` of `worker` with `profile` ("normal", "high" or "critical"), for
    `cause`, which `reason` says in words."""

    worker: str
    generation: int
    profile: str
    reason: str
    cause: SpawnCause

    @property
    def kind(self) -> str:
        """The event type that records it: `start` for a first start or a restart, `spawn`
        for a replacement started beside (or after) the generation it replaces."""
        return EventType.SPAWN if self.cause.replaces else EventType.START


@dataclass(frozen=True, slots=True)
class Retire:
    """Stop `generation`: `shutdown` message, time to exit, TERM, `grace_s`, KILL."""

    worker: str
    generation: int
    grace_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class Record:
    """An event to log and write; `type` is a snapshots.schema.EventType value or DRY_RUN.

    Keys of `data` that are fields of the snapshot `event` record (`delay_s`, `attempt`,
    `exit_status`, `profile`, ...) are written as those fields; the rest go to its `data`.
    """

    worker: str
    generation: int
    type: str
    message: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Finish:
    """Nothing is running any more and nothing will start: memwarden exits with `exit_status`."""

    exit_status: int
    message: str


Action = Notify | Spawn | Retire | Record | Finish


@dataclass(frozen=True, slots=True)
class Exit:
    """How a reaped generation ended, as the main loop saw it.

    `status` follows the shell convention (128+N for signal N); `ok` is an exit with status
    0; `by_us` is True when the exit followed memwarden's own `shutdown` or signals and was
    not a SIGKILL memwarden never sent (the kernel's OOM killer, or a person with `kill -9`).
    """

    status: int
    ok: bool
    description: str
    by_us: bool = False


def describe(a: Action) -> Record:
    """The dry-run form of an action: a record of what would have been done."""
    if isinstance(a, Notify):
        cause = f" ({explain(a.change)})" if a.change is not None else ""
        return Record(a.worker, a.generation, DRY_RUN,
                      f"would notify {who(a.worker, a.generation)} of {a.level.label} "
                      f"pressure{cause}", {"action": "notify", "level": a.level.label})
    if isinstance(a, Spawn):
        return Record(a.worker, a.generation, DRY_RUN,
                      f"would spawn generation {a.generation} of {a.worker!r} with profile "
                      f"{a.profile}: {a.reason}", {"action": "spawn", "profile": a.profile,
                                                   "cause": a.cause.value})
    if isinstance(a, Retire):
        return Record(a.worker, a.generation, DRY_RUN,
                      f"would retire {who(a.worker, a.generation)} (grace "
                      f"{format_duration(a.grace_s)}): {a.reason}",
                      {"action": "retire", "grace_s": a.grace_s})
    if isinstance(a, Finish):
        return Record("", 0, DRY_RUN, f"would exit with status {a.exit_status}: {a.message}",
                      {"action": "finish", "exit_status": a.exit_status})
    if a.type == "break_before_make":
        return Record(a.worker, a.generation, DRY_RUN, f"would break before make: {a.message}",
                      {"action": "break_before_make", **a.data})
    return a


def who(worker: str, generation: int) -> str:
    """How messages name a generation: `generation 2 of 'web'`."""
    return f"generation {generation} of {worker!r}"


__all__ = ["DRY_RUN", "Action", "Exit", "Finish", "Notify", "Record", "Retire", "Spawn",
           "describe", "who"]

"""The snapshot format: JSONL, one msgspec Struct per line, tagged on `kind`.

This module is the single owner of the snapshot records. It may import only the
worker protocol (for level names). `docs/snapshots.md` describes every field.

Evolution rules: the major version changes only when a reader of the old major
could misread new files; a new field always has a default; no field changes type
or meaning; readers ignore unknown fields. Event types are open strings, so a
newer writer's event reaches an older reader as an event of an unknown type.
"""

from __future__ import annotations

import enum
from typing import Any

import msgspec

from workers.protocol import LevelName

#: "major.minor"; readers refuse an unknown major and accept any minor.
FORMAT_VERSION = "1.2"
FORMAT_MAJOR = 1


class Record(msgspec.Struct, tag_field="kind", kw_only=True, omit_defaults=True):
    """Every record carries `t`, the wall-clock time (Unix seconds) it describes."""

    t: float


class Header(Record, tag="header", omit_defaults=False):
    """First record of every file: who wrote it, where, under which limit and config.

    Written with every field, defaults included, so that `version` is always on the line:
    a reader must see the version to refuse a major it does not know. A header without
    `version` (none is written so) is read as format 1.
    """

    version: str = FORMAT_VERSION
    host: str = ""
    pod: str | None = None
    namespace: str | None = None
    container: str | None = None
    supervisor_pid: int = 0
    started: float = 0.0
    limit: int | None = None
    interval_s: float = 0.001
    sample_period_s: float = 1.0
    thresholds: dict[str, int] = {}
    config: dict[str, Any] = {}
    file_index: int = 0
    #: 1.1: how `sample.memory` is measured: "cgroup", "pss" or "rss" (1.0: the RSS sum).
    measure: str = "rss"
    #: 1.2: the workload the pod belongs to (`WORKLOAD_NAME`, from one of the pod's labels by
    #: the downward API): the fleet view groups by it instead of guessing from the pod name.
    workload: str | None = None


class Sample(Record, tag="sample"):
    """One worker over one sample period (default 1 s), summarised from the ring."""

    worker: str
    generation: int
    pid: int
    rss: int
    rss_min: int
    rss_max: int
    rss_mean: float
    ticks: int = 0
    late: int = 0
    missed: int = 0
    procs: int = 1
    slope: float = 0.0
    level: LevelName = "low"
    container: int | None = None
    limit: int | None = None
    stats: dict[str, float] = {}
    dropped: int = 0
    #: 1.1: the figure the thresholds compare at the end of the period (`header.measure`);
    #: the `rss` figures are the tree's plain RSS, scaled alike. None in 1.0 files.
    memory: int | None = None
    #: 1.1: the biggest processes of the tree, `{"pid", "name", "rss"}`.
    members: list[dict[str, Any]] = []
    #: 1.1: the generation's start-up against its worker's envelope (docs/snapshots.md);
    #: empty before the first discovery and in files written before it.
    startup: dict[str, Any] = {}


class EventType(enum.StrEnum):
    """The event types this version writes; readers must accept others."""

    START = "start"
    SPAWN_FAILED = "spawn_failed"
    READY = "ready"
    EXIT = "exit"
    RESTART = "restart"
    GIVE_UP = "give_up"
    SIGNAL = "signal"
    SHUTDOWN = "shutdown"
    LEVEL = "level"
    NOTIFY = "notify"
    TRIMMED = "trimmed"
    SPAWN = "spawn"
    RETIRE = "retire"
    KILL = "kill"
    BREAK_BEFORE_MAKE = "break_before_make"
    COOLDOWN = "cooldown"
    BASELINE_HIGH = "baseline_high"
    LIMITS_TOO_SMALL = "limits_too_small"
    CHANNEL_ERROR = "channel_error"
    REPORT = "report"
    DROPPED = "dropped"
    VICTIM = "victim"
    BACKOFF = "backoff"
    LIMITS = "limits"
    DRY_RUN = "dry_run"
    NOT_READY = "not_ready"


class SpawnCause(enum.StrEnum):
    """Why a generation was started: `data.cause` of its `start` or `spawn` event (1.2), so
    that a reader need not read it from the reason's text."""

    START = "start"  # the worker's first generation
    RESTART = "restart"  # after its generation exited, or failed to start
    PRESSURE = "pressure"  # a replacement for a generation at HIGH or CRITICAL
    REQUEST = "request"  # a replacement asked for with `memwarden replace`

    @property
    def replaces(self) -> bool:
        """Started to replace a generation (a `spawn` event), not to run one (`start`)."""
        return self in (SpawnCause.PRESSURE, SpawnCause.REQUEST)


class Event(Record, tag="event"):
    """Something the supervisor did or saw. Fields beyond `type` are set when they apply."""

    type: str
    worker: str = ""
    generation: int = 0
    pid: int = 0
    message: str = ""
    # level changes
    level: LevelName | None = None
    previous: LevelName | None = None
    metric: str | None = None
    value: float | None = None
    threshold: float | None = None
    # exits
    returncode: int | None = None
    signal: str | None = None
    exit_status: int | None = None
    oom_kill: bool = False
    expected: bool = False
    uptime_s: float | None = None
    # spawns, retirements, restarts
    profile: str | None = None
    reason: str | None = None
    delay_s: float | None = None
    attempt: int | None = None
    # memory effects
    rss: int | None = None
    rss_after: int | None = None
    dropped: int | None = None
    ms: float | None = None
    data: dict[str, Any] = {}


class Burst(Record, tag="burst"):
    """Full-resolution ring window around an event (the flight recorder).

    `t` is the wall time of the first sample; each further sample is `dt_us[i]` microseconds
    after the previous one and `rss_delta[i]` bytes above it. `rss0` is the first sample.
    """

    worker: str
    generation: int
    pid: int
    cause: str
    interval_us: int
    rss0: int
    dt_us: list[int]
    rss_delta: list[int]


AnyRecord = Header | Sample | Event | Burst

__all__ = [
    "FORMAT_MAJOR",
    "FORMAT_VERSION",
    "AnyRecord",
    "Burst",
    "Event",
    "EventType",
    "Header",
    "Record",
    "Sample",
    "SpawnCause",
]

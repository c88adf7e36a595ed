"""The analysis result: msgspec Structs that are also the stable JSON schema (`--format json`).

Schema `memwarden.analysis/1`. Evolution follows the snapshot rules: fields are only added,
with defaults; none is renamed or changes type. Sizes are bytes, times Unix seconds,
durations seconds, growth rates MB/h (10^6 bytes per hour). `None` means "not applicable"
or, for a projection, "not reached at this rate". `docs/analyze.md` describes every field.
"""

from __future__ import annotations

from typing import Literal

import msgspec

SCHEMA = "memwarden.analysis/1"
Verdict = Literal["none", "suspected", "likely", "confirmed"]
VERDICTS: tuple[Verdict, ...] = ("none", "suspected", "likely", "confirmed")


class _Out(msgspec.Struct, kw_only=True):
    pass


class Trend(_Out, kw_only=True):
    """A fitted trend; slopes in MB/h, `low`/`high` the Theil-Sen 95 % interval."""

    slope_mb_h: float
    low_mb_h: float
    high_mb_h: float
    ols_mb_h: float
    r2: float
    z: float
    p: float
    points: int
    effective_points: float


class Projection(_Out, kw_only=True):
    """When a target size is reached (see "Time to a threshold" in docs/analyze.md).

    From the record's end (`from_t`) and the memory of the generation still running there
    (`from_bytes`, of `generation`), at its rate: `seconds` is never negative, `reached`
    means that generation was already at or above the target at the record's end, and
    `seconds` is None ("not at this rate") when memory is not growing.
    """

    target: str
    bytes: int
    seconds: float | None
    earliest: float | None
    latest: float | None
    reached: bool = False
    from_t: float | None = None
    from_bytes: int | None = None
    generation: int = 0
    rate_from: str = ""  # "trend" (the generation's own) or "pooled" (every generation's)


class LevelTime(_Out, kw_only=True):
    level: str
    seconds: float
    share: float


class Transition(_Out, kw_only=True):
    t: float
    level: str
    previous: str
    metric: str | None = None
    value: float | None = None
    threshold: float | None = None
    generation: int = 0


class Crossing(_Out, kw_only=True):
    """Where memory crossed the line whose level change started a replacement.

    `t`/`rss`: the first sample of the run that confirmed the change; `confirmed_t`/
    `confirmed_rss`: the sample that confirmed it. `source` is `burst` (the flight recorder's
    millisecond samples) or `event` (no burst: the value the level event carries, at the
    event's time).
    """

    t: float
    rss: int
    threshold: float
    metric: str
    level: str
    confirmed_t: float
    confirmed_rss: int
    source: str


class Replacement(_Out, kw_only=True):
    """A new generation and what it bought.

    `rss_before` is the old generation's memory at the crossing that started the replacement
    (`before_from` = `crossing`), else over the sample period of the spawn (`samples`: a
    replacement by hand or for the container's pressure); `rss_after` the new generation's
    memory over its first sample period once ready; `rss_peak_before` the old generation's
    highest memory, up to its retirement.
    """

    generation: int
    t: float
    reason: str | None
    profile: str | None
    rss_before: int | None
    rss_after: int | None
    freed: int | None
    ready_after_s: float | None
    held_s: float | None
    until: str
    crossing: Crossing | None = None
    rss_peak_before: int | None = None
    before_from: str = "samples"


class Trims(_Out, kw_only=True):
    count: int = 0
    freed_total: int = 0
    freed_mean: float = 0.0
    freed_share_mean: float | None = None
    dropped_share_mean: float | None = None
    ms_mean: float | None = None


class Gc(_Out, kw_only=True):
    collections: float | None = None
    pause_ms_total: float | None = None
    pause_ms_per_hour: float | None = None
    pause_ms_mean: float | None = None


class Attribution(_Out, kw_only=True):
    """Where growth comes from: python_objects, native, fragmentation, none or unknown."""

    kind: str
    detail: str
    objects_per_mb: float | None = None
    bytes_per_object: float | None = None


class PooledLeak(_Out, kw_only=True):
    """A leak seen across generations: each grew at about one rate until it ended.

    `rate_mb_s` is the median of the generations' rates after start-up, `low_mb_s`/
    `high_mb_s` the slowest and fastest of them; `replaced` how many memwarden replaced for
    pressure and `lifetime_min_s`/`lifetime_max_s` how long those lasted; `left_out` the
    growing generations whose rate was more than twice off the others'. `summary` is the
    sentence every format prints.
    """

    verdict: Verdict
    rate_mb_s: float
    low_mb_s: float
    high_mb_s: float
    generations: list[int]
    replaced: int
    lifetime_min_s: float | None
    lifetime_max_s: float | None
    summary: str
    left_out: list[int] = []


class Segment(_Out, kw_only=True):
    """Shape, trends and verdict of one generation (or of a worker's main generation)."""

    shape: str
    shape_detail: str
    trend: Trend
    baseline: Trend
    relevant: Trend
    verdict: Verdict
    reasons: list[str]


class Generation(_Out, kw_only=True):
    generation: int
    profile: str | None
    start: float
    end: float
    uptime_s: float
    samples: int
    rss_start: int
    rss_end: int
    rss_max: int
    slope_mb_h: float
    shape: str
    verdict: Verdict
    max_level: str
    trims: int
    objects_per_mb: float | None
    level_seconds: dict[str, float] = {}
    growth_peak_mb_s: float | None = None  # highest growth measured live, after warm-up
    finding: str | None = None  # the latest `finding` of the generation's leak reports
    finding_t: float | None = None
    at_ready: int | None = None  # memory over its first sample period once ready
    growth_mb_s: float | None = None  # Theil-Sen rate after start-up (pooled.py); None: short
    in_leak: bool = False  # one of the generations the pooled leak counts


class Targets(_Out, kw_only=True):
    """Growth and objects per MB against the original automaton design's targets.

    Growth: `healthy` under 1 MB/s, `elevated` from 1 MB/s, `warning` over 5 MB/s,
    `critical` over 10 MB/s, `unknown` (and `growth_mb_s` null) when no generation was long
    enough to judge. `growth_mb_s` is the sustained trend the verdict weighed;
    `growth_peak_mb_s` the highest growth the supervisor measured (its robust slope over the
    growth window) after each generation's warm-up, and `seconds_over` how long growth stayed
    over 1, 5 and 10 MB/s. Objects per MB: `met` above 10, else `below`.
    """

    growth_mb_s: float | None
    growth: str
    growth_peak_mb_s: float | None = None
    growth_peak: str | None = None
    seconds_over: list[float] = []
    objects_per_mb: float | None = None
    objects: str | None = None


class Ending(_Out, kw_only=True):
    """How supervision of a worker ended, when the record says it did.

    `kind`: `gave_up` (memwarden stopped supervising: `reason` `limits_too_small`, exit status
    3, or `restart_budget`), `exited` (the worker ended by itself and was not restarted) or
    `stopped` (memwarden was told to stop).
    """

    kind: str
    reason: str
    t: float
    generation: int
    exit_status: int | None
    message: str


class Worker(_Out, kw_only=True):
    source: str
    worker: str
    start: float
    end: float
    samples: int
    windows: int
    window_s: float
    limit: int | None
    thresholds: dict[str, int]
    verdict: Verdict
    reasons: list[str]
    main_generation: int
    segment: Segment | None
    attribution: Attribution
    projections: list[Projection]
    levels: list[LevelTime]
    max_level: str
    transitions: int
    transition_list: list[Transition]
    flaps_per_hour: float
    flapping: bool
    replacements: list[Replacement]
    trims: Trims
    gc: Gc
    generations: list[Generation]
    events: dict[str, int]
    bursts: int
    ending: Ending | None = None
    targets: Targets | None = None
    leak: PooledLeak | None = None  # the leak its generations show together
    measure: str = "rss"  # the figure thresholds compare (header.measure)


class Advice(_Out, kw_only=True):
    """One recommended setting: its value (bytes, or seconds for a cooldown), as written in
    the configuration, and why."""

    name: str
    value: float
    text: str
    reason: str


class WorkerAdvice(_Out, kw_only=True):
    """A worker's observed working set and the thresholds recommended for it.

    `startup`: the highest of its generations' memory at ready; `typical`:
    the 90th percentile of the windows' highest memory; `peak`: the highest memory of its
    healthy operation (for a leak, the start-up level plus the usual excursions above the
    trend, since the leak itself has no natural peak).
    """

    worker: str
    startup: int | None
    typical: int
    peak: int
    growth_mb_h: float
    high: Advice
    critical: Advice


class Recommendation(_Out, kw_only=True):
    """Settings for one source (a container): its memory limit and request, memwarden's
    thresholds per worker and the cooldown, each with the reason; and the same paste-ready
    as memwarden TOML, a Kubernetes `resources` block and a compose `mem_limit`."""

    source: str
    margin: float
    limit: Advice
    request: Advice
    cooldown: Advice
    workers: list[WorkerAdvice]
    notes: list[str]
    toml: str
    kubernetes: str
    compose: str


class Workload(_Out, kw_only=True):
    """One workload over its replicas (several sources: `fleet.py`).

    `workload` is the workload the header records (`by` = `recorded`) or else the pod's
    owner (from the pod name the downward API gives memwarden: `by` = `pod_owner`), and the
    worker; without either, the worker's name and command (`by` = `worker_command`); a
    workload whose replicas were told in two ways says the weaker. `verdict` is the highest
    verdict at least half the replicas reach, `verdicts` how many reached each; the rate's
    spread is over the replicas that leaked (MB/s); `healthy_peak` the `percentile` of the
    replicas' healthy peaks, from which the one `recommendation` of the workload is derived.
    """

    workload: str
    by: str
    worker: str
    replicas: int
    members: list[str]
    verdict: Verdict
    verdicts: dict[str, int]
    leaking: int
    rate_low_mb_s: float | None
    rate_median_mb_s: float | None
    rate_high_mb_s: float | None
    percentile: float
    healthy_peak: int
    recommendation: Recommendation
    summary: str


class ReadSummary(_Out, kw_only=True):
    """What was read; `implausible` records (a time or size no record can hold) and those
    of workers beyond the first 256 of a source (`beyond_workers`) were dropped."""

    files: int
    bytes: int
    records: int
    corrupt: int
    truncated: int
    unknown: int
    dropped_by_writer: int
    problems: list[str]
    implausible: int = 0
    beyond_workers: int = 0


class SourceSummary(_Out, kw_only=True):
    label: str
    host: str
    pod: str | None
    container: str | None
    files: int
    limit: int | None
    version: str | None
    events: dict[str, int] = {}  # supervisor-wide events (start, signal, give_up...) by type
    namespace: str | None = None


class Report(_Out, kw_only=True):
    schema: str = SCHEMA
    generated: float
    verdict: Verdict
    max_level: str
    read: ReadSummary
    sources: list[SourceSummary]
    workers: list[Worker]
    gave_up: list[str] = []  # "source / worker" of each worker memwarden gave up on
    recommendations: list[Recommendation] = []
    workloads: list[Workload] = []  # several sources: records grouped by workload (fleet.py)


__all__ = [
    "SCHEMA",
    "VERDICTS",
    "Advice",
    "Attribution",
    "Crossing",
    "Ending",
    "Gc",
    "Generation",
    "LevelTime",
    "PooledLeak",
    "Projection",
    "ReadSummary",
    "Recommendation",
    "Replacement",
    "Report",
    "Segment",
    "SourceSummary",
    "Targets",
    "Transition",
    "Trend",
    "Trims",
    "Verdict",
    "Worker",
    "WorkerAdvice",
    "Workload",
]

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
    """When a target size is reached at the current trend (seconds from the last sample)."""

    target: str
    bytes: int
    seconds: float | None
    earliest: float | None
    latest: float | None
    reached: bool = False


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


class Replacement(_Out, kw_only=True):
    """A new generation and what it bought."""

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


class ReadSummary(_Out, kw_only=True):
    files: int
    bytes: int
    records: int
    corrupt: int
    truncated: int
    unknown: int
    dropped_by_writer: int
    problems: list[str]


class SourceSummary(_Out, kw_only=True):
    label: str
    host: str
    pod: str | None
    container: str | None
    files: int
    limit: int | None
    version: str | None
    events: dict[str, int] = {}  # supervisor-wide events (start, signal, give_up...) by type


class Report(_Out, kw_only=True):
    schema: str = SCHEMA
    generated: float
    verdict: Verdict
    max_level: str
    read: ReadSummary
    sources: list[SourceSummary]
    workers: list[Worker]


__all__ = [
    "SCHEMA",
    "VERDICTS",
    "Attribution",
    "Gc",
    "Generation",
    "LevelTime",
    "Projection",
    "ReadSummary",
    "Replacement",
    "Report",
    "Segment",
    "SourceSummary",
    "Transition",
    "Trend",
    "Trims",
    "Verdict",
    "Worker",
]

"""The pressure classifier: tables of (state, input, time -> result); no processes, no sleeping."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.core.envelope import Envelope
from supervisor.core.pressure import (
    PSI_HOST,
    PSI_MEDIUM,
    Change,
    ContainerClassifier,
    Thresholds,
    WorkerClassifier,
    explain,
)
from supervisor.settings.config import convert
from supervisor.settings.specs import thresholds as resolve_thresholds
from workers.protocol import Level

MB = 1_000_000
MS = 1_000_000  # ns
S = 1_000_000_000

L, M, H, C = Level.LOW, Level.MEDIUM, Level.HIGH, Level.CRITICAL

TH = resolve_thresholds(convert({}), None)  # 50/200/500 MB, 5/10 MB/s, confirm 3


def rss_run(samples: list[tuple[int, int]], th: Thresholds = TH) -> list[Change]:
    """Feed (t_ms, rss_mb) samples; return every change."""
    w = WorkerClassifier("w", th)
    changes = []
    for t_ms, mb in samples:
        change = w.observe_rss(t_ms * MS, mb * MB)
        if change is not None:
            assert change.level == w.level
            changes.append(change)
    return changes


def ramp(start_ms: int, values: list[int], step_ms: int = 1) -> list[tuple[int, int]]:
    return [(start_ms + i * step_ms, v) for i, v in enumerate(values)]


def test_from_config_resolves_defaults_and_percentages():
    assert TH.rss == (50 * MB, 200 * MB, 500 * MB)
    assert TH.growth == (5e6, 10e6, None)
    assert TH.confirm == 3 and TH.margin == 0.05
    assert TH.dwell_ns == (30 * S, 5 * S, 1 * S)
    cfg = convert({"medium": "50%", "high": "80%", "critical": "95%"})
    with_limit = resolve_thresholds(cfg, 1000 * MB)
    assert with_limit.rss == (500 * MB, 800 * MB, 950 * MB)
    assert with_limit.headroom == (0.25, 0.10, pytest.approx(0.05))
    without = resolve_thresholds(cfg, None)
    assert without.rss == (None, None, None)  # a share of an unknown limit disables the line
    assert without.headroom[2] is None


# (description, samples as (t_ms, MB), expected [(level, previous, t_ms, first_ms)])
RSS_TABLE = [
    ("below every line", ramp(0, [10, 40, 49, 49, 49]), []),
    ("one-sample spike is not pressure", ramp(0, [10, 600, 10, 10, 10]), []),
    ("two-sample spike is not pressure", ramp(0, [10, 600, 600, 10, 10]), []),
    ("three samples confirm", ramp(0, [10, 60, 60, 60, 60]), [(M, L, 3, 1)]),
    ("confirm counts at or above the line", ramp(0, [50, 50, 50]), [(M, L, 2, 0)]),
    ("a fast climb goes straight to the level it held", ramp(0, [10, 250, 260, 270]),
     [(H, L, 3, 1)]),
    ("climb through lines, each confirmed", ramp(0, [60, 60, 60, 210, 210, 210]),
     [(M, L, 2, 0), (H, M, 5, 3)]),
    ("critical", ramp(0, [600, 600, 600]), [(C, L, 2, 0)]),
    ("mixed run confirms the lowest level it held",
     ramp(0, [600, 210, 600]), [(H, L, 2, 0)]),
    ("a dip inside the margin holds the level",
     ramp(0, [60, 60, 60]) + ramp(10, [48] * 5, step_ms=10_000), [(M, L, 2, 0)]),
    ("leaving MEDIUM needs 30 s below line minus margin",
     ramp(0, [60, 60, 60]) + ramp(1000, [40] * 32, step_ms=1000),
     [(M, L, 2, 0), (L, M, 31_000, 1000)]),
    ("a sample back above the lowered line restarts the dwell",
     ramp(0, [60, 60, 60]) + ramp(1000, [40] * 20, step_ms=1000) + [(21_000, 49)]
     + ramp(22_000, [40] * 31, step_ms=1000),
     [(M, L, 2, 0), (L, M, 52_000, 22_000)]),
    ("falling from CRITICAL steps down by each level's dwell",
     ramp(0, [600, 600, 600]) + ramp(100, [0] * 400, step_ms=100),
     [(C, L, 2, 0), (H, C, 1100, 100), (M, H, 5100, 100), (L, M, 30_100, 100)]),
]


@pytest.mark.parametrize(("samples", "expected"), [(s, e) for _, s, e in RSS_TABLE],
                         ids=[d for d, _, _ in RSS_TABLE])
def test_rss_table(samples, expected):
    changes = rss_run(samples)
    got = [(c.level, c.previous, c.t_ns // MS, c.first_ns // MS) for c in changes]
    assert got == expected


def test_change_carries_metric_value_and_threshold():
    up, down = rss_run(ramp(0, [60, 61, 62]) + ramp(1000, [40] * 31, step_ms=1000))
    assert (up.key, up.metric, up.value, up.threshold) == ("w", "memory", 62 * MB, 50 * MB)
    assert (down.metric, down.value) == ("memory", 40 * MB)
    assert down.threshold == pytest.approx(50 * MB * 0.95)


def growth_run(w: WorkerClassifier, rows: list[tuple[float, float, float]]) -> list[Change]:
    """Feed (t_s, memory_mb, rate_mb_s) growth observations; return every change."""
    out = []
    for t_s, mb, rate in rows:
        change = w.observe_growth(int(t_s * S), rate * MB, mb * MB)
        if change is not None:
            assert change.level == w.level
            out.append(change)
    return out


def every(start_s: float, end_s: float, mb: float, rate: float) -> list[tuple[float, float, float]]:
    """Observations every 100 ms from `start_s` to `end_s` of `mb` growing at `rate` MB/s."""
    n = round((end_s - start_s) * 10)
    return [(start_s + i / 10, mb + rate * i / 10, rate) for i in range(n)]


# Default lines: CRITICAL 500 MB, floors 5/10 MB/s, a start-up of 1 s (--ready-after): a
# replacement is safe 2 x 1 + 5 = 7 s ahead, the MEDIUM horizon is 120 s, and a projection
# into HIGH counts once it has held for the growth window (5 s).
@pytest.mark.parametrize(("mb", "rate", "level", "why"), [
    (60, 12, M, "CRITICAL 36.7 s away: inside the horizon, far beyond a replacement"),
    (100, 2, L, "below the MEDIUM floor (5 MB/s): no level, however it projects"),
    (445, 12, H, "CRITICAL 4.6 s away, held for a whole window"),
    (480, 6, M, "3.3 s away but below the HIGH floor (10 MB/s)"),
    (10, 0.0, L, "flat"),
])
def test_growth_raises_a_level_by_the_time_it_leaves(mb, rate, level, why):
    w = WorkerClassifier("w", TH)
    growth_run(w, [(i / 10, mb, rate) for i in range(120)])
    assert w.level == level, why


def test_the_projection_is_what_the_change_says():
    w = WorkerClassifier("w", TH)
    changes = growth_run(w, every(0, 1, 60, 12))
    assert [(c.level, c.metric) for c in changes] == [(M, "projection")]
    assert changes[0].detail == "at 12.0 MB/s CRITICAL 500.0 MB in 36.5s"
    assert changes[0].threshold == 120.0
    assert explain(changes[0]) == ("projection at 12.0 MB/s CRITICAL 500.0 MB in 36.5s "
                                   "against threshold 2min")


def test_the_nearer_of_critical_and_the_limit_is_projected():
    th = resolve_thresholds(convert({"critical": "4GB", "high": "3GB", "medium": "2GB"}),
                            300 * MB)
    w = WorkerClassifier("w", th)
    changes = growth_run(w, every(0, 1, 100, 12))
    assert changes and changes[0].detail == "at 12.0 MB/s the limit 300.0 MB in 16.5s"


def test_the_start_up_measured_moves_the_lines():
    # A worker that took 40 s from spawn to ready needs 2 x 40 + 5 = 85 s to be replaced
    # safely: CRITICAL 36.7 s away is HIGH for it, only MEDIUM for one that starts in 1 s.
    slow = WorkerClassifier("w", TH)
    slow.set_startup(40.0)
    assert growth_run(slow, every(0, 6, 60, 12))[-1].level == H
    quick = WorkerClassifier("w", TH)
    assert growth_run(quick, every(0, 6, 60, 12))[-1].level == M


def test_a_burst_is_not_a_leak():
    # CRITICAL 4 s away at 12 MB/s, but the growth stops after 3 s (the requests ended):
    # MEDIUM, never HIGH, and back to LOW through the dwell times.
    w = WorkerClassifier("w", TH)
    rows = every(0, 3, 440, 12) + every(3, 60, 476, 0.0)
    changes = growth_run(w, rows)
    assert [c.level for c in changes] == [M, L]
    # Growth that falls back (negative) is no projection either.
    w = WorkerClassifier("w", TH)
    assert [c.level for c in growth_run(w, every(0, 3, 440, 12) + every(3, 4, 470, -30))
            ] == [M]


def test_growth_and_size_combine_to_the_highest_input():
    w = WorkerClassifier("w", TH)
    for t in range(3):
        assert w.observe_rss(t * MS, 60 * MB) is None or t == 2
    assert w.level == M
    changes = growth_run(w, every(1, 8, 445, 12))
    assert [(c.level, c.previous, c.metric) for c in changes] == [(H, M, "projection")]
    # RSS falling to LOW does not lower the level while growth still holds HIGH.
    for i in range(40):
        assert w.observe_rss((20 + i) * S, 10 * MB) is None
    assert w.level == H


def test_growth_medium_needs_sustained_rate():
    w = WorkerClassifier("w", TH)
    rates = [6e6, 6e6, 0.0, 6e6, 6e6, 6e6]
    results = [w.observe_growth(i * 100 * MS, r, 60 * MB) for i, r in enumerate(rates)]
    assert [c.level if c else None for c in results] == [None] * 5 + [M]


def test_fast_path_agrees_with_the_slow_path():
    # The two-comparison band must never skip a sample that would matter: compare with a
    # classifier whose band is disabled on every sample.
    fast = WorkerClassifier("w", TH)
    slow = WorkerClassifier("w", TH)
    values = [10, 60, 60, 60, 55, 48, 60, 210, 210, 210, 30, 30] + [30] * 40
    for i, mb in enumerate(values):
        slow.rss_band.lo, slow.rss_band.hi = math.inf, -math.inf
        a = fast.observe_rss(i * S, mb * MB)
        b = slow.observe_rss(i * S, mb * MB)
        assert a == b
        assert fast.level == slow.level


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=700), min_size=1, max_size=200))
def test_every_rise_was_held_for_confirm_samples(values):
    w = WorkerClassifier("w", TH)
    level = L
    for i, mb in enumerate(values):
        change = w.observe_rss(i * 10 * MS, mb * MB)
        if change is None:
            assert w.level == level
            continue
        assert change.previous == level and change.level != level
        if change.level > level:
            line = TH.rss[change.level - 1]
            assert all(v * MB >= line for v in values[i - TH.confirm + 1 : i + 1])
            assert i >= TH.confirm - 1
        else:
            dwell = TH.dwell_ns[level - 1]
            assert change.t_ns - change.first_ns >= dwell
        level = change.level


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2000), min_size=1, max_size=100),
       st.integers(min_value=0, max_value=99))
def test_a_single_spike_never_escalates(lows, spike_at):
    values = [v % 49 for v in lows]
    values.insert(spike_at % (len(values) + 1), 10_000)
    assert rss_run(ramp(0, values)) == []


# -- the container -----------------------------------------------------------------------

LIMIT = 1000 * MB


def container(th: Thresholds = TH) -> ContainerClassifier:
    return ContainerClassifier(resolve_thresholds(convert({}), LIMIT), LIMIT)


# (description, [(t_ms, working set MB, growth MB/s)], expected [(level, metric)])
CONTAINER_TABLE = [
    ("plenty of headroom", [(i, 500, 0.0) for i in range(5)], []),
    ("under 25 % left", [(i, 760, 0.0) for i in range(3)], [(M, "headroom")]),
    ("under 10 % left", [(i, 910, 0.0) for i in range(3)], [(H, "headroom")]),
    ("under the 5 % reserve", [(i, 960, 0.0) for i in range(3)], [(C, "headroom")]),
    ("exhaustion in under 10 s at the current rate", [(i, 500, 60.0) for i in range(3)],
     [(H, "exhaustion")]),
    ("exhaustion in under 2 s", [(i, 500, 300.0) for i in range(3)], [(C, "exhaustion")]),
    ("shrinking is no exhaustion", [(i, 700, -50.0) for i in range(5)], []),
    ("a one-sample dip in headroom is nothing",
     [(0, 500, 0.0), (1, 990, 0.0), (2, 500, 0.0), (3, 500, 0.0)], []),
]


@pytest.mark.parametrize(("samples", "expected"), [(s, e) for _, s, e in CONTAINER_TABLE],
                         ids=[d for d, _, _ in CONTAINER_TABLE])
def test_container_table(samples, expected):
    c = container()
    got = []
    for t_ms, ws_mb, rate in samples:
        change = c.observe(t_ms * MS, ws_mb * MB, rate * MB)
        if change is not None:
            got.append((change.level, change.metric))
    assert got == expected


def test_headroom_change_reports_fractions():
    c = container()
    changes = [c.observe(i * MS, 760 * MB, 0.0) for i in range(3)]
    assert changes[2].value == pytest.approx(0.24)
    assert changes[2].threshold == pytest.approx(0.25)
    assert changes[2].key == ""


def test_oom_kill_moving_is_critical_at_once():
    c = container()
    assert c.observe_kernel(0, {"oom_kill": 2, "max": 10}, None, None) is None  # baseline
    assert c.observe_kernel(100 * MS, {"oom_kill": 2, "max": 10}, None, None) is None
    change = c.observe_kernel(200 * MS, {"oom_kill": 3, "max": 10}, None, None)
    assert (change.level, change.metric, change.value) == (C, "kernel", 1)
    # Leaving CRITICAL still takes its dwell (1 s) of quiet counters.
    assert c.observe_kernel(700 * MS, {"oom_kill": 3}, None, None) is None
    assert c.observe_kernel(1600 * MS, {"oom_kill": 3}, None, None) is None
    later = c.observe_kernel(1700 * MS, {"oom_kill": 3}, None, None)
    assert (later.level, later.previous) == (L, C)  # levels this input cannot hold: no dwell


def test_limit_hits_count_only_under_headroom_pressure():
    c = container()
    c.observe_kernel(0, {"max": 0}, None, None)
    # Page cache filling up to the limit makes "max" move for a healthy streaming worker.
    assert c.observe_kernel(100 * MS, {"max": 50}, None, None) is None
    for i in range(3):
        c.observe(200 * MS + i * MS, 800 * MB, 0.0)
    assert c.level == M
    change = c.observe_kernel(300 * MS, {"max": 60}, None, None)
    assert (change.level, change.metric) == (H, "reclaim")


def test_cgroup_psi_raises_and_host_psi_only_corroborates():
    c = container()
    for i in range(3):  # the host alone under pressure: nothing
        assert c.observe_kernel(i * 100 * MS, {}, 0.0, PSI_HOST + 50) is None
    assert c.level == L
    changes = [c.observe_kernel((10 + i) * 100 * MS, {}, PSI_MEDIUM + 1, PSI_HOST + 50)
               for i in range(3)]
    # The cgroup's own PSI gives MEDIUM; the host's, already high, lifts it one step.
    assert (changes[2].level, changes[2].previous) == (H, L)
    assert c.level == H


def test_container_rejects_a_non_positive_limit():
    with pytest.raises(ValueError, match="positive"):
        ContainerClassifier(TH, 0)


def test_stat_gate_is_below_every_headroom_line():
    c = container()
    # Under the gate even usage itself (>= working set) is below the MEDIUM line lowered by
    # the margin (headroom 25 % * 1.05), so the working set cannot matter there.
    assert c.stat_gate <= LIMIT * (1 - 0.25 * 1.05)
    for i in range(5):
        assert c.observe(i * MS, c.stat_gate - 1, 0.0) is None


def load(env: Envelope, generation: int, seconds: float, mb: float,
         after: float = 0.0) -> list[bool]:
    """Feed a start-up that loads `mb` over `seconds` (starting `after` s late), then holds it
    to 60 s, one point per second; return whether it was starting at each."""
    out = []
    for age in range(60):
        share = min(max(age - after, 0) / seconds, 1.0)
        out.append(env.observe(generation, float(age), 20 * MB + share * mb * MB))
    return out


def test_the_first_generation_draws_the_envelope_until_it_levels_off():
    env = Envelope()
    assert all(load(env, 1, 20, 600))  # still drawing: starting throughout
    env.end(1, "it levelled off", levelled=True)
    assert not env.starting(1) and env.why_ended(1) == "it levelled off"
    assert env.at(10) == pytest.approx(320 * MB) and env.at(500) == 620 * MB
    assert not env.observe(1, 61.0, 700 * MB)  # its own growth from now on is judged


@pytest.mark.parametrize(("after", "mb", "starting", "why"), [
    (0, 600, True, "the same start-up again"),
    (8, 600, True, "slower (a busy host): below the curve for its age"),
    (0, 580, True, "a little less"),
    (0, 900, False, "more than the envelope holds: judged as growth"),
])
def test_later_generations_are_held_to_the_envelope(after, mb, starting, why):
    env = Envelope()
    load(env, 1, 20, 600)
    env.end(1, "it levelled off", levelled=True)
    assert all(load(env, 2, 20, mb, after=after)) is starting, why


def test_a_faster_start_leaves_the_envelope_and_the_end_is_for_good():
    env = Envelope()
    load(env, 1, 20, 600)
    env.end(1, "it said ready", levelled=True)
    assert env.observe(2, 1.0, 40 * MB)
    assert not env.observe(2, 2.0, 400 * MB)  # 400 MB at 2 s: the first had 80 MB
    assert not env.observe(2, 3.0, 50 * MB)  # back under it: still not starting
    assert env.why_ended(2) == "rose above its start-up envelope"
    assert env.points()[0] == (0.0, 20 * MB)

"""The policy as tables: (call at time t) -> actions. No processes, no clock, no sleeping."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.core.actions import DRY_RUN, Action, Exit, Finish, Notify, Record, Retire, Spawn
from supervisor.core.policy import (
    EXIT_LIMITS_TOO_SMALL,
    Policy,
    PolicySettings,
    Refused,
    WorkerSettings,
)
from supervisor.core.pressure import Change as PressureChange
from supervisor.core.pressure import WorkerClassifier
from supervisor.core.states import GenerationState, IllegalTransition, transition
from supervisor.settings.config import Config, convert
from supervisor.settings.specs import policy_settings, thresholds
from workers.protocol import Level

MB = 1000 * 1000
LOW, MEDIUM, HIGH, CRITICAL = Level.LOW, Level.MEDIUM, Level.HIGH, Level.CRITICAL
THRESHOLD = {LOW: 50 * MB, MEDIUM: 50 * MB, HIGH: 200 * MB, CRITICAL: 500 * MB}
SETTINGS = PolicySettings(cooldown_s=5.0, cooldown_max_s=40.0, critical_grace_s=2.0,
                          ready_timeout_s=30.0, baseline_generations=3)
KILLED = Exit(137, ok=False, description="killed by SIGKILL; out of memory")
BY_US = Exit(143, ok=False, description="killed by SIGTERM", by_us=True)


@dataclass(frozen=True)
class Change:
    """Shaped like the classifier's level change."""

    key: str
    level: Level
    previous: Level
    metric: str
    value: float
    threshold: float
    t_ns: int = 0
    first_ns: int = 0
    detail: str = ""


def change(level: Level, previous: Level = LOW) -> Change:
    threshold = THRESHOLD[level]
    value = threshold + 10 * MB if level > LOW else threshold - 10 * MB
    return Change("worker", level, previous, "rss", value, threshold)


def make(restart: str = "never", grace: float = 10.0, **overrides: object) -> Policy:
    """A policy whose one worker has just been started (generation 1, starting)."""
    policy = Policy(dataclasses.replace(SETTINGS, **overrides),
                    [WorkerSettings("worker", grace_s=grace, restart=restart)])  # type: ignore[arg-type]
    assert summary(policy.start(0.0)) == [("spawn", 1, "normal")]
    return policy


# Steps: each builds a call on the policy; `play` checks the summary of what it returned.
Step = Callable[[Policy], list[Action]]


def lvl(t: float, gen: int, level: Level, previous: Level = LOW, *,
        headroom: int | None = None, container: Level = LOW, footprint: int | None = None,
        worker: str = "worker") -> Step:
    return lambda p: p.level(t, worker, gen, change(level, previous), headroom=headroom,
                             container=container, footprint=footprint)


def ready(t: float, gen: int, rss: int | None = 100 * MB, worker: str = "worker") -> Step:
    return lambda p: p.ready(t, worker, gen, rss)


def exited(t: float, gen: int, exit: Exit = BY_US, worker: str = "worker") -> Step:
    return lambda p: p.exited(t, worker, gen, exit)


def tick(t: float, headroom: int | None = None, container: Level = LOW) -> Step:
    return lambda p: p.tick(t, headroom=headroom, container=container)


def stop(t: float) -> Step:
    return lambda p: p.stop(t, "received SIGTERM")


def summary(actions: list[Action]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for a in actions:
        if isinstance(a, Notify):
            out.append(("notify", a.generation, a.level.label))
        elif isinstance(a, Spawn):
            out.append(("spawn", a.generation, a.profile))
        elif isinstance(a, Retire):
            out.append(("retire", a.generation, a.grace_s))
        elif isinstance(a, Record):
            if a.type != "ready":  # every accepted ready begins with one; tested apart
                out.append(("record", a.generation, str(a.type)))
        else:
            out.append(("finish", a.exit_status))
    return out


def play(policy: Policy, table: list[tuple[Step, list[tuple[object, ...]]]]) -> list[list[Action]]:
    """Run every step in order; fail naming the first step whose actions differ."""
    seen = []
    for i, (step, expected) in enumerate(table):
        actions = step(policy)
        assert summary(actions) == expected, f"step {i}: {actions}"
        seen.append(actions)
    return seen


def test_ready_is_recorded_once_with_the_memory() -> None:
    policy = make()
    (record,) = policy.ready(0.25, "worker", 1, 120 * MB, how="said ready")
    assert isinstance(record, Record) and record.type == "ready"
    assert record.message == "ready (said ready) after 250ms with 120.0 MB"
    assert record.data == {"rss": 120 * MB}
    assert policy.ready(0.3, "worker", 1, 1) == []


def test_medium_notifies_once_per_cooldown_and_low_relaxes() -> None:
    play(make(), [
        (ready(0.1, 1), []),
        (lvl(1.0, 1, MEDIUM), [("notify", 1, "medium")]),
        (tick(2.0), []),
        (tick(5.9), []),
        (tick(6.0), [("notify", 1, "medium")]),
        (tick(6.1), []),
        (tick(10.9), []),
        (tick(11.0), [("notify", 1, "medium")]),
        (lvl(12.0, 1, LOW, MEDIUM), [("notify", 1, "low")]),
        (tick(30.0), []),
    ])


def test_quiet_while_no_timer_can_fire() -> None:
    policy = make()
    assert not policy.quiet()  # starting: its ready timeout runs
    policy.ready(0.0, "worker", 1, MB)
    assert policy.quiet()
    policy.level(1.0, "worker", 1, change(MEDIUM), headroom=None)
    assert not policy.quiet()  # MEDIUM reminders
    policy.level(2.0, "worker", 1, change(LOW, MEDIUM), headroom=None)
    assert policy.quiet()
    policy.replace(3.0, "worker", "by hand")
    assert not policy.quiet()  # a replacement starting
    policy.stop(4.0, "stop")
    assert not policy.quiet()


def test_medium_reminder_period_is_configurable_and_never_below_a_second() -> None:
    play(make(medium_renotify_s=2.0), [
        (ready(0.0, 1), []),
        (lvl(0.0, 1, MEDIUM), [("notify", 1, "medium")]),
        (tick(1.9), []),
        (tick(2.0), [("notify", 1, "medium")]),
    ])
    # A cooldown of 0 must not remind the worker at every check.
    play(make(cooldown_s=0.0), [
        (ready(0.0, 1), []),
        (lvl(0.0, 1, MEDIUM), [("notify", 1, "medium")]),
        (tick(0.05), []),
        (tick(0.5), []),
        (tick(1.0), [("notify", 1, "medium")]),
    ])


def test_a_level_reached_while_starting_is_judged_at_ready() -> None:
    play(make(), [
        (lvl(0.2, 1, MEDIUM), []),
        (lvl(0.4, 1, LOW, MEDIUM), []),
        (ready(1.0, 1), []),  # it was LOW again when it became ready: nothing to say
        (lvl(2.0, 1, MEDIUM), [("notify", 1, "medium")]),
    ])
    play(make(), [
        (lvl(0.2, 1, MEDIUM), []),
        (ready(1.0, 1), [("notify", 1, "medium")]),
    ])


def test_high_spawns_then_retires_only_after_ready() -> None:
    policy = make()
    play(policy, [
        (ready(0.1, 1), []),
        (lvl(20.0, 1, HIGH), [("notify", 1, "high"), ("spawn", 2, "high")]),
        (tick(20.5), []),
        (tick(40.0), []),  # still within the ready timeout: keep waiting, both alive
        (ready(41.0, 2), [("retire", 1, 10.0)]),
        (exited(42.0, 1), []),
    ])
    assert policy.profile_of("worker", 2) == "high"
    assert policy.state_of("worker", 2) is GenerationState.READY
    assert policy.state_of("worker", 1) is None
    assert policy.pending("worker") is None
    assert policy.role("worker", 2) == "current"


def test_each_spawn_says_why_it_starts() -> None:
    """A first start, a restart, a replacement for pressure and one asked for: the cause the
    spawn record carries (`data.cause`), and the event type each is recorded as."""
    crash = Exit(3, ok=False, description="exited with status 3")
    policy = Policy(SETTINGS, [WorkerSettings("worker", restart="on-failure")])
    spawns = [a for a in policy.start(0.0) if isinstance(a, Spawn)]
    policy.ready(0.5, "worker", 1, 100 * MB)
    policy.exited(1.0, "worker", 1, crash)
    spawns += [a for a in policy.tick(60.0) if isinstance(a, Spawn)]
    policy.ready(61.0, "worker", 2, 100 * MB)
    spawns += [a for a in policy.level(80.0, "worker", 2, change(HIGH), headroom=None)
               if isinstance(a, Spawn)]
    policy.ready(81.0, "worker", 3, 100 * MB)
    policy.exited(82.0, "worker", 2, BY_US)
    spawns += [a for a in policy.replace(90.0, "worker", "by hand") if isinstance(a, Spawn)]
    assert [(a.generation, a.cause, a.kind) for a in spawns] == [
        (1, "start", "start"), (2, "restart", "start"), (3, "pressure", "spawn"),
        (4, "request", "spawn")]


def test_spawn_and_retire_reasons_name_the_cause_and_the_grace() -> None:
    policy = make(grace=30.0)
    policy.ready(0.1, "worker", 1, 50 * MB)
    spawn = policy.level(20.0, "worker", 1, change(HIGH), headroom=None)[1]
    assert isinstance(spawn, Spawn) and spawn.kind == "spawn"
    assert "generation 1 of 'worker'" in spawn.reason
    assert "rss 210.0 MB against threshold 200.0 MB" in spawn.reason
    assert "make before break" in spawn.reason
    _, retire = policy.ready(21.0, "worker", 2, 120 * MB)
    assert isinstance(retire, Retire) and retire.grace_s == 30.0  # the worker's own grace
    assert "generation 2 of 'worker' is ready with 120.0 MB" in retire.reason
    assert policy.generation("worker", 1).grace_s == 30.0


def test_critical_with_small_headroom_stops_first_then_starts() -> None:
    steps = play(make(), [
        (ready(0.5, 1, rss=300 * MB), []),
        (lvl(20.0, 1, CRITICAL, headroom=100 * MB, footprint=300 * MB),
         [("notify", 1, "critical"), ("record", 1, "break_before_make"), ("retire", 1, 2.0)]),
        (tick(21.0), []),
        (exited(21.5, 1), [("spawn", 2, "critical")]),
        (ready(22.0, 2), []),  # nothing left to retire
    ])
    bbm = steps[1][1]
    assert isinstance(bbm, Record)
    assert bbm.data["headroom"] == 100 * MB and bbm.data["footprint"] == 300 * MB
    assert "headroom 100.0 MB is less than the 300.0 MB" in bbm.message


def test_critical_footprint_defaults_to_memory_at_ready() -> None:
    play(make(), [
        (ready(0.5, 1, rss=300 * MB), []),
        (lvl(20.0, 1, CRITICAL, headroom=299 * MB),
         [("notify", 1, "critical"), ("record", 1, "break_before_make"), ("retire", 1, 2.0)]),
    ])


def test_critical_with_ample_or_unknown_headroom_makes_before_break() -> None:
    play(make(), [
        (ready(0.5, 1, rss=300 * MB), []),
        (lvl(20.0, 1, CRITICAL, headroom=301 * MB),
         [("notify", 1, "critical"), ("spawn", 2, "critical")]),
        (ready(21.0, 2), [("retire", 1, 2.0)]),
    ])
    play(make(), [
        (ready(0.5, 1, rss=300 * MB), []),
        (lvl(20.0, 1, CRITICAL), [("notify", 1, "critical"), ("spawn", 2, "critical")]),
    ])


def test_hold_while_replacement_pending_is_recorded_once() -> None:
    policy = make()
    steps = play(policy, [
        (ready(0.0, 1), []),
        (lvl(20.0, 1, HIGH), [("notify", 1, "high"), ("spawn", 2, "high")]),
        (lvl(21.0, 1, CRITICAL, HIGH), [("notify", 1, "critical"), ("record", 1, "cooldown")]),
        (lvl(22.0, 1, HIGH, CRITICAL), [("notify", 1, "high")]),
        (tick(23.0), []),
    ])
    record = steps[2][1]
    assert isinstance(record, Record)
    assert "generation 1 of 'worker' at critical pressure (rss" in record.message
    assert "replacement generation 2 has not reported ready yet" in record.message


def test_ready_timeout_is_a_failed_start_then_cooldown_holds() -> None:
    policy = make()
    steps = play(policy, [
        (ready(0.0, 1), []),
        (lvl(100.0, 1, HIGH), [("notify", 1, "high"), ("spawn", 2, "high")]),
        (tick(129.9), []),
        (tick(130.0), [("retire", 2, 10.0), ("record", 2, "spawn_failed")]),
        (ready(130.5, 2), []),  # too late: it is being stopped
        (lvl(131.0, 1, CRITICAL, HIGH), [("notify", 1, "critical"), ("record", 1, "cooldown")]),
        (lvl(132.0, 1, HIGH, CRITICAL), [("notify", 1, "high")]),
        (exited(133.0, 2), []),
        (tick(134.9), []),
        (tick(135.0), [("spawn", 3, "high")]),
        (ready(136.0, 3), [("retire", 1, 10.0)]),
    ])
    failed = steps[3][1]
    assert isinstance(failed, Record)
    assert "did not report ready within 30s" in failed.message
    assert "1 of 5 starts within 60s" in failed.message
    hold = steps[5][1]
    assert isinstance(hold, Record)
    assert hold.data["remaining_s"] == pytest.approx(4.0)


def test_replacements_dying_before_ready_spend_the_restart_budget() -> None:
    died = Exit(1, ok=False, description="exited with status 1")
    policy = make(restart_budget=2, cooldown_s=1.0, cooldown_max_s=1.0)
    steps = play(policy, [
        (ready(0.0, 1), []),
        (lvl(10.0, 1, HIGH), [("notify", 1, "high"), ("spawn", 2, "high")]),
        (exited(10.5, 2, died), [("record", 2, "spawn_failed")]),
        (tick(11.5), [("spawn", 3, "high")]),
        (exited(12.0, 3, died), [("record", 3, "spawn_failed")]),
        (tick(13.0), [("spawn", 4, "high")]),
        # The third failed start within the window: give up, stop what is left, exit 1.
        (exited(13.5, 4, died),
         [("record", 4, "spawn_failed"), ("record", 4, "give_up"), ("retire", 1, 10.0)]),
        (exited(14.0, 1), [("finish", 1)]),
    ])
    give_up = steps[6][1]
    assert "restart budget spent: 2 failed starts and restarts within 60s" in give_up.message


def test_failed_start_after_break_before_make_starts_another() -> None:
    died = Exit(1, ok=False, description="exited with status 1")
    play(make(), [
        (ready(0.0, 1), []),
        (lvl(10.0, 1, CRITICAL, headroom=MB, footprint=100 * MB),
         [("notify", 1, "critical"), ("record", 1, "break_before_make"), ("retire", 1, 2.0)]),
        (exited(11.0, 1), [("spawn", 2, "critical")]),
        (exited(11.5, 2, died), [("record", 2, "spawn_failed")]),
        (tick(16.4), []),
        (tick(16.5), [("spawn", 3, "critical")]),
        (ready(17.0, 3), []),
    ])


def test_baseline_above_high_warns_per_generation_and_never_gives_up() -> None:
    policy = make(cooldown_max_s=5.0)
    play(policy, [
        (ready(0.0, 1), []),
        (lvl(0.5, 1, HIGH), [("notify", 1, "high"), ("spawn", 2, "high")]),
        (lvl(0.6, 2, HIGH), []),  # while starting: judged at ready
        (ready(1.0, 2, rss=250 * MB),
         [("retire", 1, 10.0), ("record", 2, "baseline_high"), ("notify", 2, "high"),
          ("record", 2, "cooldown")]),
        (exited(1.5, 1), []),
        (tick(5.9), []),
        (tick(6.0), [("spawn", 3, "high")]),
        (lvl(6.5, 3, HIGH), []),
        (ready(7.0, 3, rss=260 * MB),
         [("retire", 2, 10.0), ("record", 3, "baseline_high"), ("notify", 3, "high"),
          ("record", 3, "cooldown")]),
        (tick(12.0), [("spawn", 4, "high")]),
        (lvl(12.5, 4, HIGH), []),
        (ready(13.0, 4, rss=270 * MB),
         [("retire", 3, 10.0), ("record", 4, "baseline_high"), ("notify", 4, "high"),
          ("record", 4, "cooldown")]),
        (tick(18.0), [("spawn", 5, "high")]),
    ])


def test_baseline_above_high_exits_3_when_asked() -> None:
    policy = make(on_baseline_high="exit", baseline_generations=2, cooldown_max_s=5.0)
    steps = play(policy, [
        (ready(0.0, 1), []),
        (lvl(0.5, 1, HIGH), [("notify", 1, "high"), ("spawn", 2, "high")]),
        (lvl(0.6, 2, HIGH), []),
        (ready(1.0, 2, rss=250 * MB),
         [("retire", 1, 10.0), ("record", 2, "baseline_high"), ("notify", 2, "high"),
          ("record", 2, "cooldown")]),
        (exited(1.5, 1), []),
        (tick(6.0), [("spawn", 3, "high")]),
        (lvl(6.5, 3, CRITICAL), []),
        (ready(7.0, 3, rss=600 * MB),
         [("retire", 2, 10.0), ("record", 3, "baseline_high"), ("record", 3, "limits_too_small"),
          ("retire", 3, 10.0)]),
        (exited(7.5, 2), []),
        (exited(8.0, 3), [("finish", EXIT_LIMITS_TOO_SMALL)]),
    ])
    message = steps[7][3].message
    assert "limits are too small for worker 'worker'" in message
    assert "250.0 MB at ready" in message and "600.0 MB at ready" in message


def test_baseline_count_resets_after_a_generation_that_held() -> None:
    play(make(on_baseline_high="exit", baseline_generations=2, cooldown_max_s=5.0), [
        (ready(0.0, 1), []),
        (lvl(0.5, 1, HIGH), [("notify", 1, "high"), ("spawn", 2, "high")]),
        (lvl(0.6, 2, HIGH), []),
        (ready(1.0, 2), [("retire", 1, 10.0), ("record", 2, "baseline_high"),
                         ("notify", 2, "high"), ("record", 2, "cooldown")]),
        (tick(6.0), [("spawn", 3, "high")]),
        (ready(7.0, 3), [("retire", 2, 10.0)]),  # below HIGH at ready: the run is broken
        (lvl(20.0, 3, HIGH), [("notify", 3, "high"), ("spawn", 4, "high")]),
        (lvl(20.5, 4, HIGH), []),
        (ready(21.0, 4), [("retire", 3, 10.0), ("record", 4, "baseline_high"),
                          ("notify", 4, "high"), ("record", 4, "cooldown")]),
    ])


def test_the_cooldown_grows_for_fast_risers_and_relaxes_after_one_that_held() -> None:
    policy = make(cooldown_s=2.0, cooldown_max_s=8.0)
    steps = play(policy, [
        (ready(0.0, 1), []),
        # HIGH 1 s after ready, within twice the 2 s cooldown: the next cooldown is 4 s.
        (lvl(1.0, 1, HIGH), [("notify", 1, "high"), ("record", 1, "backoff"),
                             ("spawn", 2, "high")]),
        (ready(2.0, 2), [("retire", 1, 10.0)]),
        (lvl(3.0, 2, HIGH), [("notify", 2, "high"), ("record", 2, "cooldown")]),
        (tick(5.9), []),
        (tick(6.0), [("record", 2, "backoff"), ("spawn", 3, "high")]),  # 4 s < 8 s: now 8 s
        (ready(7.0, 3), [("retire", 2, 10.0)]),
        (lvl(8.0, 3, HIGH), [("notify", 3, "high"), ("record", 3, "cooldown")]),
        (tick(14.9), []),
        (tick(15.0), [("spawn", 4, "high")]),  # capped at 8 s: no change to record
        (ready(16.0, 4), [("retire", 3, 10.0)]),
        # Generation 4 held out 20 s, more than twice 8 s: back to 2 s.
        (lvl(36.0, 4, HIGH), [("notify", 4, "high"), ("record", 4, "backoff"),
                              ("spawn", 5, "high")]),
    ])
    assert steps[1][1].data == {"cooldown_s": 4.0, "previous_s": 2.0, "life_s": 1.0}
    assert "1s after it became ready (within 10s): the cooldown of its successor grows " \
        "from 2s to 4s" in steps[1][1].message
    assert steps[5][0].data["cooldown_s"] == 8.0
    assert steps[11][1].data["cooldown_s"] == 2.0 and "held out 20s" in steps[11][1].message
    assert policy.cooldown("worker") == 2.0


def test_critical_waits_at_most_the_base_cooldown() -> None:
    play(make(cooldown_s=2.0, cooldown_max_s=64.0), [
        (ready(0.0, 1), []),
        (lvl(1.0, 1, HIGH), [("notify", 1, "high"), ("record", 1, "backoff"),
                             ("spawn", 2, "high")]),
        (ready(1.5, 2), [("retire", 1, 10.0)]),
        (lvl(1.6, 2, HIGH), [("notify", 2, "high"), ("record", 2, "cooldown")]),
        (lvl(3.0, 2, CRITICAL, HIGH), [("notify", 2, "critical")]),
        (tick(3.4), []),
        # The cooldown for HIGH grew to 4 s; CRITICAL waits 2 s from ready at the most.
        (tick(3.5), [("record", 2, "backoff"), ("spawn", 3, "critical")]),
    ])


def test_critical_ignores_the_cooldown_when_the_headroom_is_at_stake() -> None:
    play(make(), [
        (ready(0.0, 1), []),
        (lvl(10.0, 1, HIGH), [("notify", 1, "high"), ("spawn", 2, "high")]),
        (ready(11.0, 2), [("retire", 1, 10.0)]),
        (lvl(11.5, 2, CRITICAL, headroom=900 * MB, container=HIGH),
         [("notify", 2, "critical"), ("record", 2, "backoff"), ("spawn", 3, "critical")]),
    ])


def test_critical_at_stake_while_the_replacement_starts_stops_the_old_one_now() -> None:
    play(make(), [
        (ready(0.0, 1), []),
        (lvl(10.0, 1, HIGH), [("notify", 1, "high"), ("spawn", 2, "high")]),
        (lvl(10.5, 1, CRITICAL, HIGH, headroom=10 * MB, container=CRITICAL),
         [("notify", 1, "critical"), ("record", 1, "break_before_make"), ("retire", 1, 2.0)]),
        (exited(11.0, 1), []),
        (ready(11.5, 2), []),  # it takes over; nothing left to retire
        (lvl(30.0, 2, HIGH), [("notify", 2, "high"), ("spawn", 3, "high")]),
    ])


def test_steps_down_after_critical_are_not_crossings() -> None:
    policy = make()
    candidates = [("worker", 1, 5 * MB, 400 * MB)]
    acts = policy.ready(0.0, "worker", 1, 100 * MB)
    acts = policy.container_level(10.0, change(CRITICAL), candidates, headroom=None)
    assert summary(acts) == [("record", 1, "victim"), ("notify", 1, "critical"),
                             ("spawn", 2, "critical")]
    assert summary(policy.ready(10.5, "worker", 2, 50 * MB)) == [("retire", 1, 2.0)]
    fresh = [("worker", 2, 0.0, 50 * MB)]
    # The container's level steps down through its dwell times; the fresh generation is
    # not chosen, not told, and gets no strike.
    for t, (level, previous) in enumerate([(HIGH, CRITICAL), (MEDIUM, HIGH), (LOW, MEDIUM)]):
        assert policy.container_level(11.0 + t, change(level, previous), fresh,
                                      headroom=500 * MB) == []
    assert summary(policy.tick(20.0, headroom=500 * MB)) == []


def test_profiles_escalate_and_never_relax() -> None:
    policy = make()
    play(policy, [
        (ready(0.0, 1), []),
        (lvl(10.0, 1, CRITICAL), [("notify", 1, "critical"), ("spawn", 2, "critical")]),
        (ready(11.0, 2), [("retire", 1, 2.0)]),
        (lvl(30.0, 2, HIGH), [("notify", 2, "high"), ("spawn", 3, "critical")]),
        (ready(31.0, 3), [("retire", 2, 10.0)]),
    ])
    assert policy.profile_of("worker", 3) == "critical"


@pytest.mark.parametrize(("exit", "status"), [
    (BY_US, 143),  # died of the TERM memwarden passed on: 128+N, as tini exits
    (Exit(130, ok=False, description="killed by SIGINT", by_us=True), 130),
    (Exit(0, ok=True, description="exited with status 0", by_us=True), 0),  # caught it
    (Exit(5, ok=False, description="exited with status 5", by_us=True), 5),  # failed its stop
    (Exit(137, ok=False, description="killed by SIGKILL", by_us=True), 137),  # past its grace
    (KILLED, 137),  # the OOM killer during the stop
])
def test_a_requested_stop_exits_with_the_workers_status_as_tini(exit: Exit,
                                                                status: int) -> None:
    policy = make()
    play(policy, [(ready(0.5, 1), []), (stop(1.0), [("retire", 1, 10.0)]),
                  (exited(2.0, 1, exit), [("finish", status)])])


def test_a_worker_that_ended_by_itself_keeps_its_status_through_a_stop() -> None:
    policy = Policy(SETTINGS, [WorkerSettings("a"), WorkerSettings("b")])
    policy.start(0.0)
    play(policy, [
        (ready(0.5, 1, worker="a"), []), (ready(0.5, 1, worker="b"), []),
        (exited(1.0, 1, Exit(3, ok=False, description="exited with status 3"), worker="a"),
         []),
        (stop(2.0), [("retire", 1, 10.0)]),
        (exited(3.0, 1, worker="b"), [("finish", 3)]),
    ])


def test_dry_run_acts_on_nothing_but_starts_and_stops() -> None:
    policy = make(dry_run=True)
    steps = play(policy, [
        (ready(0.5, 1, rss=300 * MB), []),
        (lvl(1.0, 1, MEDIUM), [("record", 1, DRY_RUN)]),
        (lvl(20.0, 1, HIGH, MEDIUM), [("record", 1, DRY_RUN), ("record", 2, DRY_RUN)]),
        (lvl(21.0, 1, CRITICAL, HIGH), [("record", 1, DRY_RUN), ("record", 1, "cooldown")]),
        (tick(24.9), []),
        (tick(25.0, headroom=MB),
         [("record", 1, DRY_RUN), ("record", 1, DRY_RUN), ("record", 2, DRY_RUN)]),
        (tick(26.0), []),
        (stop(27.0), [("retire", 1, 10.0)]),
        (exited(28.0, 1), [("finish", 143)]),
    ])
    assert steps[1][0].message.startswith("would notify generation 1 of 'worker' of medium")
    assert steps[2][1].message.startswith(
        "would spawn generation 2 of 'worker' with profile high: generation 1 of 'worker' "
        "at high pressure (rss")
    assert [r.data["action"] for r in steps[5]] == ["break_before_make", "retire", "spawn"]
    assert policy.pending("worker") is None


def test_container_pressure_picks_fastest_grower_then_largest() -> None:
    policy = Policy(SETTINGS, [WorkerSettings(n) for n in ("a", "b", "c")])
    policy.start(0.0)
    for name in ("a", "b", "c"):
        policy.ready(0.0, name, 1, MB)
    candidates = [("a", 1, 1.0 * MB, 500 * MB), ("b", 1, 5.0 * MB, 100 * MB),
                  ("c", 1, 5.0 * MB, 200 * MB), ("gone", 1, 50.0 * MB, 900 * MB)]
    actions = policy.container_level(1.0, change(HIGH), candidates, headroom=None)
    assert summary(actions) == [("record", 1, "victim"), ("notify", 1, "high"),
                                ("record", 1, "backoff"), ("spawn", 2, "high")]
    assert {a.worker for a in actions} == {"c"}
    assert "fastest grower" in actions[0].message
    # growth equal everywhere: the largest (a rise from LOW to MEDIUM)
    flat = [("a", 1, 0.0, 500 * MB), ("b", 1, 0.0, 100 * MB)]
    policy2 = Policy(SETTINGS, [WorkerSettings(n) for n in ("a", "b")])
    policy2.start(0.0)
    policy2.ready(0.0, "a", 1, MB)
    policy2.ready(0.0, "b", 1, MB)
    actions = policy2.container_level(2.0, change(MEDIUM), flat, headroom=None)
    assert [(a.worker, type(a).__name__) for a in actions] == [("a", "Record"), ("a", "Notify")]
    # the way back goes to the worker that was told to shed memory
    actions = policy2.container_level(3.0, change(LOW, MEDIUM), [], headroom=None)
    assert [(a.worker, type(a).__name__) for a in actions] == [("a", "Notify")]
    assert policy2.container_level(4.0, change(LOW, MEDIUM), flat, headroom=None) == []


def test_container_relief_skips_a_victim_since_replaced() -> None:
    policy = Policy(SETTINGS, [WorkerSettings("a")])
    policy.start(0.0)
    policy.ready(0.0, "a", 1, MB)
    actions = policy.container_level(10.0, change(HIGH), [("a", 1, MB, MB)], headroom=None)
    assert summary(actions) == [("record", 1, "victim"), ("notify", 1, "high"),
                                ("spawn", 2, "high")]
    assert summary(policy.ready(11.0, "a", 2, MB)) == [("retire", 1, 10.0)]
    assert policy.container_level(12.0, change(LOW, HIGH), [], headroom=None) == []


def test_stale_reports_are_ignored_and_unknown_workers_raise() -> None:
    policy = make()
    play(policy, [
        (ready(0.0, 1), []),
        (lvl(10.0, 1, HIGH), [("notify", 1, "high"), ("spawn", 2, "high")]),
        (ready(11.0, 2), [("retire", 1, 10.0)]),
        (lvl(11.5, 1, CRITICAL, HIGH), []),  # retiring: its level no longer matters
        (ready(11.6, 1), []),
        (exited(12.0, 1), []),
        (exited(12.1, 1), []),  # reaped twice, or a late report
        (lvl(12.2, 7, HIGH), []),
    ])
    with pytest.raises(KeyError, match="unknown worker 'nope'; known workers: 'worker'"):
        policy.ready(13.0, "nope", 1, 0)
    with pytest.raises(KeyError, match="generation 9 of 'worker' is not tracked"):
        policy.profile_of("worker", 9)


def test_an_exit_under_restart_never_ends_memwarden_with_its_status() -> None:
    steps = play(make(), [
        (ready(0.5, 1), []),
        (exited(1.0, 1, KILLED), [("finish", 137)]),
        (tick(2.0), []),
    ])
    assert "killed by SIGKILL; out of memory" in steps[1][0].message
    assert "--restart is never" in steps[1][0].message


def test_crash_restarts_back_off_then_the_budget_gives_up() -> None:
    crash = Exit(3, ok=False, description="exited with status 3")
    policy = make("on-failure", restart_budget=2, backoff_initial_s=0.5)
    steps = play(policy, [
        (ready(0.5, 1), []),
        (exited(1.0, 1, crash), [("record", 2, "restart")]),
        (tick(1.4), []),
        (tick(1.5), [("spawn", 2, "normal")]),
        (exited(2.0, 2, crash), [("record", 3, "restart")]),
        (tick(2.9), []),
        (tick(3.0), [("spawn", 3, "normal")]),
        (exited(3.5, 3, crash), [("record", 3, "give_up"), ("finish", 3)]),
    ])
    assert steps[1][0].data == {"attempt": 1, "delay_s": 0.5}
    assert "restarting in 500ms (restart 1 of 2 within 60s)" in steps[1][0].message
    assert steps[4][0].data["delay_s"] == 1.0
    assert "restart budget spent: 2 restarts within 60s" in steps[7][0].message


def test_a_crash_while_a_replacement_starts() -> None:
    # --restart never: the worker ends; the starting replacement is stopped too.
    play(make(), [
        (ready(0.0, 1), []),
        (lvl(10.0, 1, HIGH), [("notify", 1, "high"), ("spawn", 2, "high")]),
        (exited(10.5, 1, KILLED), [("retire", 2, 10.0)]),
        (ready(11.0, 2), []),
        (exited(11.5, 2), [("finish", 137)]),
    ])
    # --restart always: the starting replacement takes over as the restart.
    play(make("always"), [
        (ready(0.0, 1), []),
        (lvl(10.0, 1, HIGH), [("notify", 1, "high"), ("spawn", 2, "high")]),
        (exited(10.5, 1, KILLED), [("record", 2, "restart")]),
        (ready(11.0, 2), []),
        (lvl(40.0, 2, HIGH), [("notify", 2, "high"), ("spawn", 3, "high")]),
    ])


def test_an_oom_kill_seen_before_the_reap_is_one_exit_one_decision() -> None:
    # The kernel killed generation 1; the container's oom_kill count moved before memwarden
    # reaped it, so the container went CRITICAL first and a break before make was decided.
    # The exit was not memwarden's doing (SIGKILL it never sent): under --restart never it
    # ends memwarden with 137, and nothing is started after it.
    policy = make()
    policy.ready(0.0, "worker", 1, 100 * MB)
    oom = Change("", CRITICAL, LOW, "kernel", 1.0, 1.0)
    acts = policy.container_level(5.0, oom, [("worker", 1, 0.0, 300 * MB)], headroom=0)
    assert summary(acts) == [("record", 1, "victim"), ("notify", 1, "critical"),
                             ("record", 1, "backoff"), ("record", 1, "break_before_make"),
                             ("retire", 1, 2.0)]
    assert summary(policy.exited(5.1, "worker", 1, KILLED)) == [("finish", 137)]
    assert policy.tick(30.0) == []


def test_stop_retires_everything_and_finishes_with_the_workers_status() -> None:
    policy = make()
    play(policy, [
        (ready(0.0, 1), []),
        (lvl(10.0, 1, HIGH), [("notify", 1, "high"), ("spawn", 2, "high")]),
        (stop(10.5), [("retire", 1, 10.0), ("retire", 2, 10.0)]),
        (stop(10.6), []),
        (exited(11.0, 2), []),
        (exited(11.5, 1, Exit(0, ok=True, description="exited with status 0", by_us=True)),
         [("finish", 0)]),
    ])
    with pytest.raises(Refused, match="stopping"):
        policy.replace(12.0, "worker", "by hand")


def test_a_command_that_cannot_start_ends_with_127_and_a_failed_replacement_does_not() -> None:
    policy = make()
    assert summary(policy.spawn_failed(0.0, "worker", 1, status=127,
                                       message="cannot start 'x': No such file")) == [
        ("record", 1, "spawn_failed"), ("finish", 127)]
    policy = make()
    play(policy, [
        (ready(0.0, 1), []),
        (lvl(10.0, 1, HIGH), [("notify", 1, "high"), ("spawn", 2, "high")]),
        (lambda p: p.spawn_failed(10.0, "worker", 2, status=126, message="not runnable"),
         [("record", 2, "spawn_failed")]),
        (tick(15.0), [("spawn", 3, "high")]),
    ])


def test_a_first_generation_that_never_says_ready_is_supervised_as_ready() -> None:
    steps = play(make(), [
        (lvl(1.0, 1, HIGH), []),
        (tick(29.9), []),
        (tick(30.0), [("record", 1, "baseline_high"), ("notify", 1, "high"),
                      ("record", 1, "backoff"), ("spawn", 2, "high")]),
    ])
    assert "did not report ready within 30s: supervised as ready" in steps[2][0].message
    assert "became ready at high pressure (rss 210.0 MB" in steps[2][1].message


@pytest.mark.parametrize(("current", "target", "allowed"), [
    (GenerationState.EXITED, GenerationState.READY, "nothing (final state)"),
    (GenerationState.READY, GenerationState.STARTING, "EXITED, RETIRING"),
    (GenerationState.RETIRING, GenerationState.READY, "EXITED"),
])
def test_illegal_transitions_name_the_states(
    current: GenerationState, target: GenerationState, allowed: str
) -> None:
    with pytest.raises(IllegalTransition) as err:
        transition(current, target, "generation 2 of 'web'")
    assert str(err.value) == (
        f"generation 2 of 'web' cannot go from {current.name} to {target.name}; "
        f"allowed from {current.name}: {allowed}"
    )


def test_settings_from_config_and_validation() -> None:
    s = policy_settings(Config(dry_run=True))
    assert (s.cooldown_s, s.cooldown_max_s, s.critical_grace_s, s.ready_timeout_s) == (
        5, 300, 2, 30)
    assert (s.baseline_generations, s.dry_run, s.renotify_s, s.on_baseline_high) == (
        3, True, 5.0, "continue")
    with pytest.raises(ValueError, match="cooldown_s must be a duration >= 0"):
        PolicySettings(cooldown_s=-1)
    with pytest.raises(ValueError, match="medium_renotify_s must be > 0"):
        PolicySettings(medium_renotify_s=0.0)
    with pytest.raises(ValueError, match="cooldown_max_s"):
        PolicySettings(cooldown_s=10.0, cooldown_max_s=5.0)
    with pytest.raises(ValueError, match="two workers named 'w'"):
        Policy(SETTINGS, [WorkerSettings("w"), WorkerSettings("w")])


def test_replace_by_hand_makes_before_break_with_the_same_profile() -> None:
    p = make()
    with pytest.raises(Refused, match="no ready generation"):
        p.replace(0.5, "worker", "requested")
    p.ready(0.5, "worker", 1, MB)
    acts = p.replace(1.0, "worker", "requested")
    assert summary(acts) == [("spawn", 2, "normal")]
    with pytest.raises(Refused, match="already replacing worker 'worker': generation 2"):
        p.replace(1.5, "worker", "requested")
    assert summary(p.ready(2.0, "worker", 2, 10 << 20)) == [("retire", 1, 10.0)]


# Invariants over random sequences of reports, replayed against a model of the processes.

_op = st.one_of(
    st.tuples(st.just("level"), st.integers(0, 3), st.sampled_from(list(Level)),
              st.sampled_from([None, MB, 10**12]), st.sampled_from(list(Level))),
    st.tuples(st.just("ready"), st.integers(0, 3), st.integers(0, 400 * MB)),
    st.tuples(st.just("exit"), st.integers(0, 3), st.booleans(), st.booleans()),
    st.tuples(st.just("tick"), st.floats(0.0, 40.0)),
    st.tuples(st.just("stop")),
)


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(_op, max_size=60), dry_run=st.booleans(),
       restart=st.sampled_from(["never", "on-failure", "always"]))
def test_invariants_hold_for_any_sequence(ops: list[tuple], dry_run: bool, restart: str) -> None:
    policy = Policy(dataclasses.replace(SETTINGS, dry_run=dry_run),
                    [WorkerSettings("worker", restart=restart)])  # type: ignore[arg-type]
    world: dict[int, str] = {}  # generation -> starting / ready / retiring (exited removed)
    finished = stopped = False
    now, level_of = 0.0, LOW

    def apply(actions: list[Action]) -> None:
        nonlocal finished
        assert not finished or not actions, f"acted after finishing: {actions}"
        bbm = any(isinstance(a, Record) and a.type == "break_before_make" for a in actions)
        for a in actions:
            if isinstance(a, Spawn):
                starting = [g for g, s in world.items() if s == "starting"]
                assert not starting, f"two generations starting: {actions}"
                assert a.generation not in world and a.generation > max(world, default=0)
                world[a.generation] = "starting"
            elif isinstance(a, Retire):
                if world.get(a.generation) == "ready" and not stopped \
                        and policy.ending("worker") is None:
                    others = [g for g, s in world.items() if s in ("ready", "starting")
                              and g != a.generation]
                    assert others or bbm, f"retired the only live generation: {actions}"
                if a.generation in world:
                    world[a.generation] = "retiring"
            elif isinstance(a, Finish):
                assert not world, f"finished with generations alive: {world}"
                finished = True
            elif isinstance(a, Record) and a.type == "ready" and a.generation in world:
                world[a.generation] = "ready"  # also after a ready timeout

    apply(policy.start(now))
    for op in ops:
        gens = sorted(world) or [1]
        if op[0] == "tick":
            now += op[1]
            apply(policy.tick(now, headroom=MB))
            continue
        if op[0] == "stop":
            stopped = True
            apply(policy.stop(now, "stop"))
            continue
        gen = gens[op[1] % len(gens)]
        now += 0.1
        if op[0] == "level":
            apply(policy.level(now, "worker", gen, change(op[2], level_of), headroom=op[3],
                               container=op[4]))
            level_of = op[2]
        elif op[0] == "ready":
            if world.get(gen) == "starting":
                world[gen] = "ready"
            apply(policy.ready(now, "worker", gen, op[2]))
        elif gen in world:
            by_us = world[gen] == "retiring" and op[2]
            del world[gen]
            apply(policy.exited(now, "worker", gen, Exit(
                0 if op[3] else 1, ok=op[3], description="exited", by_us=by_us)))
    if dry_run:  # pressure spawned nothing: only the first generation and restarts exist
        assert all(a == "starting" or a == "ready" or a == "retiring" for a in world.values())


def test_growth_acts_by_the_time_it_leaves():
    # The classifier's own changes, fed to the policy: a start-up's growth far below
    # CRITICAL tells the worker (MEDIUM) and replaces nothing; a burst that stops is given
    # back; growth that holds a projection inside what a replacement needs replaces it.
    def fed(rows: list[tuple[float, float, float]]) -> list[PressureChange]:
        w = WorkerClassifier("worker#1", thresholds(convert({}), None))  # CRITICAL 500 MB
        return [c for t, mb, rate in rows
                if (c := w.observe_growth(int(t * 1e9), rate * MB, mb * MB)) is not None]

    def acts(changes: list[PressureChange]) -> list[tuple[object, ...]]:
        p = make()
        p.ready(1.0, "worker", 1, 40 * MB)
        out: list[tuple[object, ...]] = []
        for c in changes:
            out += summary(p.level(20.0 + c.t_ns / 1e9, "worker", 1, c, headroom=None))
        return out

    far = fed([(i / 10, 60 + 1.2 * i, 12) for i in range(100)])  # CRITICAL ~36 s away
    assert acts(far) == [("notify", 1, "medium")]
    burst = fed([(i / 10, 440 + 1.2 * i, 12) for i in range(30)]
                + [(3 + i / 10, 476, 0.0) for i in range(600)])
    assert acts(burst) == [("notify", 1, "medium"), ("notify", 1, "low")]
    leak = fed([(i / 10, 440 + 1.2 * i, 12) for i in range(60)])
    assert acts(leak) == [("notify", 1, "medium"), ("notify", 1, "high"), ("spawn", 2, "high")]

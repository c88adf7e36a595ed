"""The policy as tables: (call at time t) -> actions. No processes, no clock, no sleeping."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.config import Config
from supervisor.policy import (
    DRY_RUN,
    EXIT_LIMITS_TOO_SMALL,
    Action,
    GiveUp,
    Notify,
    Policy,
    PolicySettings,
    Record,
    Retire,
    Spawn,
)
from supervisor.states import GenerationState, IllegalTransition, transition
from workers.protocol import Level

MB = 1000 * 1000
LOW, MEDIUM, HIGH, CRITICAL = Level.LOW, Level.MEDIUM, Level.HIGH, Level.CRITICAL
THRESHOLD = {LOW: 50 * MB, MEDIUM: 50 * MB, HIGH: 200 * MB, CRITICAL: 500 * MB}
SETTINGS = PolicySettings(
    cooldown_s=5.0, grace_s=10.0, critical_grace_s=2.0, ready_timeout_s=30.0,
    baseline_generations=3,
)


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


def change(level: Level, previous: Level = LOW) -> Change:
    threshold = THRESHOLD[level]
    value = threshold + 10 * MB if level > LOW else threshold - 10 * MB
    return Change("worker", level, previous, "rss", value, threshold)


def make(**overrides: object) -> Policy:
    policy = Policy(dataclasses.replace(SETTINGS, **overrides))
    policy.add_slot("worker", 1, 0.0)
    return policy


# Steps: each builds a call on the policy; `play` checks the summary of what it returned.
Step = Callable[[Policy], list[Action]]


def lvl(t: float, gen: int, level: Level, previous: Level = LOW, *,
        headroom: int | None = None, footprint: int | None = None, slot: str = "worker") -> Step:
    return lambda p: p.level(t, slot, gen, change(level, previous),
                             headroom=headroom, footprint=footprint)


def ready(t: float, gen: int, rss: int = 100 * MB, slot: str = "worker") -> Step:
    return lambda p: p.ready(t, slot, gen, rss)


def exited(t: float, gen: int, expected: bool = True, slot: str = "worker") -> Step:
    return lambda p: p.exited(t, slot, gen, expected=expected)


def tick(t: float, headroom: int | None = None) -> Step:
    return lambda p: p.tick(t, headroom=headroom)


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
            out.append(("record", a.generation, str(a.type)))
        else:
            out.append(("give_up", a.exit_status))
    return out


def play(policy: Policy, table: list[tuple[Step, list[tuple[object, ...]]]]) -> list[list[Action]]:
    """Run every step in order; fail naming the first step whose actions differ."""
    seen = []
    for i, (step, expected) in enumerate(table):
        actions = step(policy)
        assert summary(actions) == expected, f"step {i}: {actions}"
        seen.append(actions)
    return seen


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


def test_medium_reminder_period_is_configurable() -> None:
    play(make(medium_renotify_s=2.0), [
        (lvl(0.0, 1, MEDIUM), [("notify", 1, "medium")]),
        (tick(1.9), []),
        (tick(2.0), [("notify", 1, "medium")]),
    ])


def test_high_spawns_then_retires_only_after_ready() -> None:
    policy = make()
    play(policy, [
        (ready(0.1, 1), []),
        (lvl(1.0, 1, HIGH), [("notify", 1, "high"), ("spawn", 2, "high")]),
        (tick(1.5), []),
        (tick(20.0), []),  # still within the ready timeout: keep waiting, both alive
        (ready(21.0, 2), [("retire", 1, 10.0)]),
        (exited(22.0, 1), []),
    ])
    assert policy.profile_of("worker", 2) == "high"
    assert policy.state_of("worker", 2) is GenerationState.READY
    assert policy.state_of("worker", 1) is None
    assert policy.pending("worker") is None


def test_spawn_and_retire_reasons_name_the_cause() -> None:
    policy = make()
    spawn = policy.level(1.0, "worker", 1, change(HIGH), headroom=None, footprint=None)[1]
    assert isinstance(spawn, Spawn)
    assert "generation 1 of 'worker'" in spawn.reason
    assert "rss 210.0 MB against threshold 200.0 MB" in spawn.reason
    assert "make before break" in spawn.reason
    (retire,) = policy.ready(2.0, "worker", 2, 120 * MB)
    assert isinstance(retire, Retire)
    assert "generation 2 of 'worker' is ready" in retire.reason


def test_critical_with_small_headroom_stops_first_then_starts() -> None:
    policy = make()
    (_, bbm, _), _, _, _ = play(policy, [
        (lvl(1.0, 1, CRITICAL, headroom=100 * MB, footprint=300 * MB),
         [("notify", 1, "critical"), ("record", 1, "break_before_make"), ("retire", 1, 2.0)]),
        (tick(2.0), []),
        (exited(2.5, 1), [("spawn", 2, "critical")]),
        (ready(3.0, 2), []),  # nothing left to retire
    ])
    assert isinstance(bbm, Record)
    assert bbm.data["headroom"] == 100 * MB and bbm.data["footprint"] == 300 * MB
    assert "headroom 100.0 MB is less than the 300.0 MB" in bbm.message


def test_critical_footprint_defaults_to_rss_at_ready() -> None:
    play(make(), [
        (ready(0.5, 1, rss=300 * MB), []),
        (lvl(1.0, 1, CRITICAL, headroom=299 * MB),
         [("notify", 1, "critical"), ("record", 1, "break_before_make"), ("retire", 1, 2.0)]),
    ])


def test_critical_with_ample_headroom_makes_before_break() -> None:
    play(make(), [
        (ready(0.5, 1, rss=300 * MB), []),
        (lvl(1.0, 1, CRITICAL, headroom=301 * MB),
         [("notify", 1, "critical"), ("spawn", 2, "critical")]),
        (ready(2.0, 2), [("retire", 1, 2.0)]),
    ])


def test_critical_without_known_headroom_makes_before_break() -> None:
    play(make(), [
        (ready(0.5, 1, rss=300 * MB), []),
        (lvl(1.0, 1, CRITICAL), [("notify", 1, "critical"), ("spawn", 2, "critical")]),
    ])


def test_hold_while_replacement_pending_is_recorded_once() -> None:
    policy = make()
    steps = play(policy, [
        (lvl(0.0, 1, HIGH), [("notify", 1, "high"), ("spawn", 2, "high")]),
        (lvl(1.0, 1, CRITICAL, HIGH), [("notify", 1, "critical"), ("record", 1, "cooldown")]),
        (lvl(2.0, 1, HIGH, CRITICAL), [("notify", 1, "high")]),
        (tick(3.0), []),
    ])
    record = steps[1][1]
    assert isinstance(record, Record)
    assert "generation 1 of 'worker' at critical pressure (rss" in record.message
    assert "replacement generation 2 has not reported ready yet" in record.message


def test_ready_timeout_is_a_failed_start_then_cooldown_holds() -> None:
    policy = make()
    steps = play(policy, [
        (lvl(0.0, 1, HIGH), [("notify", 1, "high"), ("spawn", 2, "high")]),
        (tick(29.9), []),
        (tick(30.0), [("retire", 2, 10.0), ("record", 2, "spawn_failed")]),
        (ready(30.5, 2), []),  # too late: it is being stopped
        (lvl(31.0, 1, CRITICAL, HIGH), [("notify", 1, "critical"), ("record", 1, "cooldown")]),
        (lvl(32.0, 1, HIGH, CRITICAL), [("notify", 1, "high")]),
        (exited(33.0, 2), []),
        (tick(34.9), []),
        (tick(35.0), [("spawn", 3, "high")]),
        (ready(36.0, 3), [("retire", 1, 10.0)]),
    ])
    failed = steps[2][1]
    assert isinstance(failed, Record)
    assert "did not report ready within 30s" in failed.message
    hold = steps[4][1]
    assert isinstance(hold, Record)
    assert hold.data["remaining_s"] == pytest.approx(4.0)


def test_replacement_dying_before_ready_is_a_failed_start() -> None:
    play(make(), [
        (lvl(0.0, 1, HIGH), [("notify", 1, "high"), ("spawn", 2, "high")]),
        (exited(1.0, 2, expected=False), [("record", 2, "spawn_failed")]),
        (tick(5.9), []),
        (tick(6.0), [("spawn", 3, "high")]),
    ])


def test_failed_start_after_break_before_make_starts_another() -> None:
    play(make(), [
        (lvl(0.0, 1, CRITICAL, headroom=MB, footprint=100 * MB),
         [("notify", 1, "critical"), ("record", 1, "break_before_make"), ("retire", 1, 2.0)]),
        (exited(1.0, 1), [("spawn", 2, "critical")]),
        (exited(1.5, 2, expected=False), [("record", 2, "spawn_failed")]),
        (tick(6.4), []),
        (tick(6.5), [("spawn", 3, "critical")]),
        (ready(7.0, 3), []),
    ])


def test_baseline_above_high_ends_in_give_up() -> None:
    policy = make()
    steps = play(policy, [
        (lvl(0.0, 1, HIGH), [("notify", 1, "high"), ("spawn", 2, "high")]),
        (ready(1.0, 2, rss=250 * MB), [("retire", 1, 10.0)]),
        (exited(1.5, 1), []),
        (lvl(2.0, 2, HIGH),
         [("notify", 2, "high"), ("record", 2, "baseline_high"), ("record", 2, "cooldown")]),
        (tick(5.9), []),
        (tick(6.0), [("spawn", 3, "high")]),
        # Its level was already CRITICAL while it started: judged as soon as it is ready.
        (lvl(6.5, 3, CRITICAL), []),
        (ready(7.0, 3, rss=260 * MB),
         [("retire", 2, 10.0), ("notify", 3, "critical"), ("record", 3, "baseline_high"),
          ("record", 3, "cooldown")]),
        (tick(12.0), [("spawn", 4, "critical")]),
        (ready(13.0, 4, rss=270 * MB), [("retire", 3, 2.0)]),
        (lvl(13.5, 4, HIGH),
         [("notify", 4, "high"), ("record", 4, "baseline_high"),
          ("record", 4, "limits_too_small"), ("give_up", EXIT_LIMITS_TOO_SMALL)]),
        (tick(100.0), []),
        (lvl(101.0, 4, CRITICAL, HIGH), []),
    ])
    give_up = steps[10][-1]
    assert isinstance(give_up, GiveUp)
    assert "limits are too small for worker 'worker'" in give_up.message
    for rss in ("250.0 MB", "260.0 MB", "270.0 MB"):
        assert rss in give_up.message
    assert "against 200.0 MB" in give_up.message


def test_baseline_count_resets_after_a_generation_that_held() -> None:
    play(make(baseline_generations=2), [
        (lvl(0.0, 1, HIGH), [("notify", 1, "high"), ("spawn", 2, "high")]),
        (ready(1.0, 2), [("retire", 1, 10.0)]),
        (lvl(2.0, 2, HIGH),
         [("notify", 2, "high"), ("record", 2, "baseline_high"), ("record", 2, "cooldown")]),
        (tick(6.0), [("spawn", 3, "high")]),
        (ready(7.0, 3), [("retire", 2, 10.0)]),
        # generation 3 held below HIGH for its first cooldown: the run is broken
        (lvl(20.0, 3, HIGH), [("notify", 3, "high"), ("spawn", 4, "high")]),
        (ready(21.0, 4), [("retire", 3, 10.0)]),
        (lvl(22.0, 4, HIGH),
         [("notify", 4, "high"), ("record", 4, "baseline_high"), ("record", 4, "cooldown")]),
    ])


def test_profiles_escalate_and_never_relax() -> None:
    policy = make(baseline_generations=10)
    play(policy, [
        (lvl(0.0, 1, CRITICAL), [("notify", 1, "critical"), ("spawn", 2, "critical")]),
        (ready(1.0, 2), [("retire", 1, 2.0)]),
        (lvl(20.0, 2, HIGH), [("notify", 2, "high"), ("spawn", 3, "critical")]),
        (ready(21.0, 3), [("retire", 2, 10.0)]),
    ])
    assert policy.profile_of("worker", 3) == "critical"
    assert policy.next_profile("worker") == "critical"


def test_dry_run_acts_on_nothing() -> None:
    policy = make(dry_run=True)
    steps = play(policy, [
        (ready(0.5, 1, rss=300 * MB), []),
        (lvl(1.0, 1, MEDIUM), [("record", 1, DRY_RUN)]),
        (lvl(2.0, 1, HIGH, MEDIUM), [("record", 1, DRY_RUN), ("record", 2, DRY_RUN)]),
        (lvl(3.0, 1, CRITICAL, HIGH), [("record", 1, DRY_RUN), ("record", 1, "cooldown")]),
        (tick(6.9), []),
        (tick(7.0, headroom=MB),
         [("record", 1, DRY_RUN), ("record", 1, DRY_RUN), ("record", 2, DRY_RUN)]),
        (tick(8.0), []),
    ])
    assert steps[1][0].message.startswith("would notify generation 1 of 'worker' of medium")
    assert steps[2][1].message.startswith(
        "would spawn generation 2 of 'worker' with profile high: generation 1 of 'worker' "
        "at high pressure (rss")
    assert [r.data["action"] for r in steps[5]] == ["break_before_make", "retire", "spawn"]
    # nothing was started or stopped, and nothing waits for a replacement
    assert policy.pending("worker") is None
    assert policy.state_of("worker", 1) is GenerationState.READY


def test_container_pressure_picks_fastest_grower_then_largest() -> None:
    policy = Policy(SETTINGS)
    for name in ("a", "b", "c"):
        policy.add_slot(name, 1, 0.0)
    candidates = [("a", 1, 1.0 * MB, 500 * MB), ("b", 1, 5.0 * MB, 100 * MB),
                  ("c", 1, 5.0 * MB, 200 * MB), ("gone", 1, 50.0 * MB, 900 * MB)]
    actions = policy.container_level(1.0, change(HIGH), candidates, headroom=None)
    assert summary(actions) == [("record", 1, "victim"), ("notify", 1, "high"),
                                ("spawn", 2, "high")]
    assert {a.slot for a in actions} == {"c"}
    assert "fastest grower" in actions[0].message
    # growth equal everywhere: the largest
    flat = [("a", 1, 0.0, 500 * MB), ("b", 1, 0.0, 100 * MB)]
    actions = policy.container_level(2.0, change(MEDIUM), flat, headroom=None)
    assert [(a.slot, type(a).__name__) for a in actions] == [("a", "Record"), ("a", "Notify")]
    # the way back goes to the worker that was told to shed memory
    actions = policy.container_level(3.0, change(LOW, MEDIUM), [], headroom=None)
    assert [(a.slot, type(a).__name__) for a in actions] == [("a", "Record"), ("a", "Notify")]
    assert policy.container_level(4.0, change(LOW), flat, headroom=None) == []


def test_container_relief_skips_a_victim_since_replaced() -> None:
    policy = Policy(SETTINGS)
    policy.add_slot("a", 1, 0.0)
    actions = policy.container_level(0.0, change(HIGH), [("a", 1, MB, MB)], headroom=None)
    assert summary(actions) == [("record", 1, "victim"), ("notify", 1, "high"),
                                ("spawn", 2, "high")]
    assert summary(policy.ready(1.0, "a", 2, MB)) == [("retire", 1, 10.0)]
    assert policy.container_level(2.0, change(LOW, HIGH), [], headroom=None) == []


def test_stale_reports_are_ignored_and_unknown_slots_raise() -> None:
    policy = make()
    play(policy, [
        (lvl(0.0, 1, HIGH), [("notify", 1, "high"), ("spawn", 2, "high")]),
        (ready(1.0, 2), [("retire", 1, 10.0)]),
        (lvl(1.5, 1, CRITICAL, HIGH), []),  # retiring: its level no longer matters
        (ready(1.6, 1), []),
        (exited(2.0, 1), []),
        (exited(2.1, 1), []),  # reaped twice, or a late report
        (lvl(2.2, 7, HIGH), []),
    ])
    with pytest.raises(KeyError, match="unknown slot 'nope'; known slots: 'worker'"):
        policy.ready(3.0, "nope", 1, 0)
    with pytest.raises(KeyError, match="generation 9 of 'worker' is not tracked"):
        policy.profile_of("worker", 9)


def test_crash_of_current_generation_is_left_to_restarts() -> None:
    policy = make()
    play(policy, [
        (ready(0.5, 1), []),
        (exited(1.0, 1, expected=False), []),
        (tick(2.0), []),
    ])
    with pytest.raises(ValueError, match="not new"):
        policy.add_slot("worker", 1, 2.0)
    policy.add_slot("worker", 2, 2.0, profile=policy.next_profile("worker"))
    with pytest.raises(ValueError, match="still has live generation"):
        policy.add_slot("worker", 3, 2.5)
    play(policy, [(lvl(3.0, 2, HIGH), [("notify", 2, "high"), ("spawn", 3, "high")])])


def test_crash_of_current_while_replacement_starts() -> None:
    play(make(), [
        (lvl(0.0, 1, HIGH), [("notify", 1, "high"), ("spawn", 2, "high")]),
        (exited(0.5, 1, expected=False), []),
        (ready(1.0, 2), []),
    ])


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


def test_legal_transitions() -> None:
    s = transition(GenerationState.STARTING, GenerationState.READY)
    s = transition(s, GenerationState.RETIRING)
    assert transition(s, GenerationState.EXITED) is GenerationState.EXITED


def test_settings_from_config_and_validation() -> None:
    s = PolicySettings.from_config(Config(dry_run=True))
    assert (s.cooldown_s, s.grace_s, s.critical_grace_s, s.ready_timeout_s) == (5, 10, 2, 30)
    assert (s.baseline_generations, s.dry_run, s.renotify_s) == (3, True, 5.0)
    with pytest.raises(ValueError, match="cooldown_s must be a duration >= 0"):
        PolicySettings(cooldown_s=-1)
    with pytest.raises(ValueError, match="medium_renotify_s must be > 0"):
        PolicySettings(medium_renotify_s=0.0)
    with pytest.raises(ValueError, match="baseline_generations must be >= 1"):
        PolicySettings(baseline_generations=0)
    with pytest.raises(ValueError, match="unknown profile 'tight'"):
        Policy(SETTINGS).add_slot("w", 1, 0.0, profile="tight")


# Invariants over random sequences of reports, replayed against a model of the processes.

_op = st.one_of(
    st.tuples(st.just("level"), st.integers(0, 3), st.sampled_from(list(Level)),
              st.sampled_from([None, MB, 10**12])),
    st.tuples(st.just("ready"), st.integers(0, 3), st.integers(0, 400 * MB)),
    st.tuples(st.just("exit"), st.integers(0, 3), st.booleans()),
    st.tuples(st.just("tick"), st.floats(0.0, 40.0)),
)


@settings(max_examples=300, deadline=None)
@given(ops=st.lists(_op, max_size=60), dry_run=st.booleans())
def test_invariants_hold_for_any_sequence(ops: list[tuple], dry_run: bool) -> None:
    policy = make(dry_run=dry_run)
    world = {1: "starting"}  # generation -> starting / ready / retiring (exited ones removed)
    spawned_starting: set[int] = set()
    now, level_of = 0.0, LOW
    for op in ops:
        gens = sorted(world) or [1]
        if op[0] == "tick":
            now += op[1]
            actions = policy.tick(now, headroom=MB)
        else:
            gen = gens[op[1] % len(gens)]
            now += 0.1
            if op[0] == "level":
                actions = policy.level(now, "worker", gen, change(op[2], level_of),
                                       headroom=op[3], footprint=None)
                level_of = op[2]
            elif op[0] == "ready":
                if world.get(gen) == "starting":
                    world[gen] = "ready"
                    spawned_starting.discard(gen)
                actions = policy.ready(now, "worker", gen, op[2])
            else:
                expected = world.get(gen) == "retiring" or op[2]
                world.pop(gen, None)
                spawned_starting.discard(gen)
                actions = policy.exited(now, "worker", gen, expected=expected)
        if dry_run:
            assert all(isinstance(a, Record) for a in actions), actions
            continue
        bbm = any(isinstance(a, Record) and a.type == "break_before_make" for a in actions)
        for a in actions:
            if isinstance(a, Spawn):
                assert not spawned_starting, f"two pending replacements: {actions}"
                assert a.generation not in world
                world[a.generation] = "starting"
                spawned_starting.add(a.generation)
            elif isinstance(a, Retire):
                if world.get(a.generation) == "ready":
                    others = [g for g, s in world.items() if s == "ready" and g != a.generation]
                    assert others or bbm, f"retired the only live generation: {actions}"
                if a.generation in world:
                    world[a.generation] = "retiring"
                spawned_starting.discard(a.generation)
        assert len(spawned_starting) <= 1


def test_replace_by_hand_makes_before_break_with_the_same_profile() -> None:
    p = Policy(PolicySettings())
    p.add_slot("w", 1, 0.0)
    acts = p.replace(1.0, "w", "requested")
    assert [type(a).__name__ for a in acts] == ["Spawn"]
    assert acts[0].generation == 2 and acts[0].profile == "normal"
    again = p.replace(1.5, "w", "requested")
    assert [type(a).__name__ for a in again] == ["Record"]
    assert "already under way" in again[0].message
    retire = p.ready(2.0, "w", 2, 10 << 20)
    assert [(type(a).__name__, a.generation) for a in retire] == [("Retire", 1)]

"""The PSS share refresh (`pss.Rollups`) on real processes: which members it reads first,
and that its budget is spent in CPU time, not in wall time (both clocks are injected, so
nothing here depends on how fast the machine is); and the per-process breakdown made of
what the sampler keeps."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator

import pytest

from supervisor.linux import breakdown, procfs, pss
from tests.conftest import kill_tree

Member = tuple[int, int]


@pytest.fixture
def members() -> Iterator[list[Member]]:
    """Ten idle real processes, as (pid, start time)."""
    procs = [subprocess.Popen(["sleep", "1000"]) for _ in range(10)]
    try:
        found = []
        for p in procs:
            start = procfs.start_time(p.pid)
            assert start is not None
            found.append((p.pid, start))
        yield found
    finally:
        for p in procs:
            kill_tree(p)


class Clocks:
    """A wall clock and a CPU clock that move only when told (or when a rollup is read)."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.cpu = 0.0

    def read_with(self, monkeypatch: pytest.MonkeyPatch, *, wall_s: float,
                  cpu_s: float) -> list[int]:
        """Make each rollup read (the real one) take `wall_s` of wall time and `cpu_s` of CPU;
        return the list the pids read are appended to, in order."""
        order: list[int] = []
        real = pss.read_rollup

        def timed(pid: int) -> pss.Rollup | None:
            order.append(pid)
            self.wall += wall_s
            self.cpu += cpu_s
            return real(pid)

        monkeypatch.setattr(pss, "read_rollup", timed)
        return order


def rollups(clocks: Clocks, budget: float) -> pss.Rollups:
    return pss.Rollups(budget, stale_s=10.0, clock=lambda: clocks.wall,
                       cpu_clock=lambda: clocks.cpu)


def test_new_and_growing_members_are_read_before_stable_ones(
        members: list[Member], monkeypatch: pytest.MonkeyPatch) -> None:
    clocks = Clocks()
    order = clocks.read_with(monkeypatch, wall_s=0.0, cpu_s=0.001)
    r = rollups(clocks, budget=1.0)
    old, grown, new = members[:4], members[4], members[5]
    clocks.wall = 1.0  # a whole core for a second: every member fits
    assert r.refresh((m, 1000) for m in [*old, grown])
    assert sorted(order) == sorted(pid for pid, _ in [*old, grown])
    order.clear()
    # Long after: every member read is stale. The new one comes first, then the one that
    # grew, then the stale ones, oldest first (here: all as old).
    clocks.wall = 100.0
    r.refresh([*((m, 1000) for m in old), (grown, 1000 + pss.GROWTH_PAGES), (new, 1000)])
    assert order[:2] == [new[0], grown[0]]
    assert sorted(order[2:]) == sorted(pid for pid, _ in old)
    order.clear()
    # Soon after: nothing is stale; only what grew again is read.
    clocks.wall = 101.0
    r.refresh([*((m, 1000) for m in old), (grown, 2000 + pss.GROWTH_PAGES), (new, 1000)])
    assert order == [grown[0]]


def test_the_budget_is_spent_in_cpu_time_not_wall_time(
        members: list[Member], monkeypatch: pytest.MonkeyPatch) -> None:
    clocks = Clocks()
    # A contended host: each read waits 100 ms for a core but computes for 1 ms.
    order = clocks.read_with(monkeypatch, wall_s=0.1, cpu_s=0.001)
    r = rollups(clocks, budget=0.01)
    clocks.wall = 1.0  # 10 ms of CPU earned: all ten reads fit (a wall budget: one)
    r.refresh((m, 1000) for m in members)
    assert len(order) == len(members)
    assert r.spent_s == pytest.approx(0.01)
    # Reads that cost more CPU, with 9 ms earned: the budget runs out after two.
    order = clocks.read_with(monkeypatch, wall_s=0.0, cpu_s=0.005)
    later = rollups(clocks, budget=0.01)
    clocks.wall += 0.9
    later.refresh((m, 1000) for m in members)
    assert len(order) == 2


def test_the_breakdown_is_made_of_what_the_sampler_keeps(members: list[Member]) -> None:
    """Figures as given, biggest first; each name read from /proc once, not per request."""
    (small, small_start), (big, big_start) = members[:2]
    sizes = [(small, small_start, 1_000_000, None), (big, big_start, 5_000_000, 4_000_000)]
    names = breakdown.Names()
    got = breakdown.members(sizes, names, memory=5_000_000)
    assert [(m.pid, m.name, m.cmdline, m.rss, m.pss) for m in got] == [
        (big, "sleep", "sleep 1000", 5_000_000, 4_000_000),
        (small, "sleep", "sleep 1000", 1_000_000, None)]
    assert got[0].share == pytest.approx(0.8)
    # Gone now: its name is still what was read the first time (no /proc read per request)...
    os.kill(big, signal.SIGKILL)
    os.waitpid(big, 0)
    assert [m.name for m in breakdown.members(sizes, names, memory=None)] == ["sleep", "sleep"]
    # ...but a process never seen before that is gone is left out.
    assert breakdown.members(sizes, breakdown.Names(), memory=None)[0].pid == small

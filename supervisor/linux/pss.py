"""Proportional set size: how much of a process's resident memory is really its own.

RSS counts a page shared by N processes N times; PSS counts 1/N of it in each. A browser
or a prefork server shares most of its memory, and summed RSS read 2.5 to 8 times what the
tree really held. `/proc/PID/smaps_rollup` gives Pss, Rss and SwapPss, but walks the page
tables to do it: measured here at 0.4-2 ms per headless Chromium process, against ~1 us
for the statm read of every tick. So each process's PSS/RSS ratio is read at a slow rate,
new and growing processes first, within a budget of the reading thread's CPU time, and the
ticker scales each process's statm RSS by it; the swapped-out share is added beside, so
that a leak moving out to swap does not look flat.

What counts is the proportional share of anonymous and shared memory (`Pss_Anon` and
`Pss_Shmem`), not of file-backed mappings: a program's text and the files it maps are page
cache the kernel can drop, shared with every process that maps them and charged to
whichever cgroup read them first. Measured on headless Chromium with four tabs: full PSS
482 MB, anonymous and shared 244 MB, the working set of a cgroup holding just that tree
264 MB. Kernels older than 5.14 lack the split; there the full PSS is used.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

#: Scales are fixed-point: SCALE_ONE is a ratio of 1 (RSS as it is).
SCALE_SHIFT = 16
SCALE_ONE = 1 << SCALE_SHIFT
#: Share of one core that reading smaps_rollup may take, on average, counted in the reading
#: thread's CPU time. At 0.5 %, a 23-process Chromium tree (about 20 ms of CPU for all of
#: its rollups) is read through every ~4 s. CPU time, not wall time: under contention a read
#: waits for a core (and for the GIL) far longer than it computes, and a budget counted in
#: wall time was spent on waiting: at a load of 3-6 on 2 cores, 18 of 32 readings of a
#: Chromium tree were more than 20 % low.
BUDGET = 0.005
#: A process's ratio is read again after this long at the latest (budget permitting).
STALE_S = 10.0
#: A member whose RSS grew by this many pages (or GROWTH_SHARE of its RSS at its last read,
#: if more) since its ratio was read is read before the stale ones: what grows is where a
#: share is likely to have moved, and a leaking tab should not wait its turn.
GROWTH_PAGES = 256
GROWTH_SHARE = 0.05

Member = tuple[int, int]  # (pid, start time)


class Rollup(NamedTuple):
    """A process's figures from its smaps_rollup, in bytes."""

    rss: int  #: the resident set
    pss: int  #: its proportional share of it, file mappings included
    held: int  #: the share that is anonymous or shared memory (`pss` where not split)
    swap: int  #: the proportional share swapped out


def read_rollup(pid: int) -> Rollup | None:
    """The process's `Rollup` from /proc/PID/smaps_rollup (the one reader of that file);
    None when it is gone or may not be read."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            data = f.read()
    except OSError:
        return None
    kb: dict[bytes, int] = {}
    for line in data.splitlines():
        name, _, rest = line.partition(b":")
        if name in (b"Rss", b"Pss", b"Pss_Anon", b"Pss_Shmem", b"SwapPss"):
            kb[name] = int(rest.split()[0])
    if b"Rss" not in kb or b"Pss" not in kb:
        return None
    held = (kb[b"Pss_Anon"] + kb.get(b"Pss_Shmem", 0) if b"Pss_Anon" in kb else kb[b"Pss"])
    return Rollup(kb[b"Rss"] * 1024, kb[b"Pss"] * 1024, held * 1024, kb.get(b"SwapPss", 0) * 1024)


class Rollups:
    """Each member's scale (PSS/RSS, fixed-point) and swapped share, refreshed within BUDGET.

    Members never read yet go first, then growing ones (most grown first), then the longest
    unread of those due (STALE_S). A member not read yet is given the mean scale of those
    that were (a new browser tab is made of the same shared pages as the others), or
    SCALE_ONE when none was. The budget accrues with `clock` (wall time: a share of a core)
    and is spent by `cpu_clock` (the reading thread's CPU time); both are injectable.
    """

    def __init__(self, budget: float = BUDGET, stale_s: float = STALE_S, *,
                 clock: Callable[[], float] = time.monotonic,
                 cpu_clock: Callable[[], float] = time.thread_time) -> None:
        self.budget = budget
        self.stale_s = stale_s
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._tokens = 0.0
        self._last = clock()
        #: member -> (when read, scale, swap, its RSS in pages then, its full PSS then)
        self._read: dict[Member, tuple[float, int, int, int, int]] = {}
        self.reads = 0
        self.spent_s = 0.0  # CPU seconds spent reading

    def refresh(self, members: Iterable[tuple[Member, int]]) -> bool:
        """Read the members most in need, within the budget; True when a figure changed.
        `members` come with their RSS in pages now (<= 0: unknown). Members not listed any
        more are forgotten."""
        now = self._clock()
        self._tokens = min(self._tokens + (now - self._last) * self.budget, 0.05)
        self._last = now
        wanted = dict(members)
        self._read = {m: v for m, v in self._read.items() if m in wanted}
        changed = False
        for member in self._due(wanted, now):
            if self._tokens <= 0:
                break
            t0 = self._cpu_clock()
            figures = read_rollup(member[0])
            cost = self._cpu_clock() - t0
            self._tokens -= cost
            self.reads += 1
            self.spent_s += cost
            if figures is None:
                continue
            rss, held, swap = figures.rss, figures.held, figures.swap
            scale = SCALE_ONE if rss <= 0 else min((held << SCALE_SHIFT) // rss, SCALE_ONE)
            old = self._read.get(member)
            self._read[member] = (now, scale, swap, wanted[member], figures.pss)
            changed = changed or old is None or old[1:3] != (scale, swap)
        return changed

    def _due(self, wanted: dict[Member, int], now: float) -> list[Member]:
        """The members to read, in order: new, then grown (most first), then stale (oldest
        first); the others not at all."""
        keyed: list[tuple[int, float, Member]] = []
        for member, pages in wanted.items():
            got = self._read.get(member)
            if got is None:
                keyed.append((0, 0.0, member))
                continue
            when, _, _, then, _ = got
            grown = pages - then if pages > 0 and then > 0 else 0
            if grown >= max(GROWTH_PAGES, then * GROWTH_SHARE):
                keyed.append((1, -grown, member))
            elif now - when >= self.stale_s:
                keyed.append((2, when, member))
        keyed.sort()
        return [member for _, _, member in keyed]

    def scale(self, member: Member) -> int:
        """The member's RSS scale; the mean of the others' before it was read."""
        got = self._read.get(member)
        if got is not None:
            return got[1]
        if not self._read:
            return SCALE_ONE
        return sum(v[1] for v in self._read.values()) // len(self._read)

    def swap(self, member: Member) -> int:
        """Bytes of the member swapped out, its share of shared ones (0 before it was read)."""
        got = self._read.get(member)
        return 0 if got is None else got[2]

    def pss(self, member: Member) -> int | None:
        """The member's full PSS in bytes at its last reading (None before it was read)."""
        got = self._read.get(member)
        return None if got is None else got[4]


__all__ = ["BUDGET", "SCALE_ONE", "SCALE_SHIFT", "Rollup", "Rollups", "read_rollup"]

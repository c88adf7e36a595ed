"""The discoverer: the sampler's slow thread, at the discovery cadence (100 ms by default).

It follows each tree (`trees`: new children, orphans, PID reuse), refreshes the slow
figures (PSS shares within their CPU budget, each cgroup's inactive file cache and swap,
the tree's plain RSS), reads the container's slower cgroup files and computes growth
slopes. It never changes what the ticker reads: it hands its results over as work the
ticker runs at the top of a tick (`Ticker.queue`).

Why a thread of its own: a /proc scan or a slope takes hundreds of microseconds and gives
the GIL away at every file open; done inside the tick it would make ticks late.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from supervisor.core.envelope import LEVEL_RATE, Envelope
from supervisor.core.identity import GenerationId
from supervisor.core.pressure import Thresholds
from supervisor.core.projection import Projection
from supervisor.core.slope import resistant_slope, sustained_slope
from supervisor.linux import procfs
from supervisor.linux.cgroup import host_psi_some_avg10
from supervisor.linux.pss import SCALE_ONE, Rollups
from supervisor.linux.trees import ProcTree
from supervisor.sensing.layout import INACTIVE, USAGE, SamplerStats
from supervisor.sensing.probe import Probe
from supervisor.sensing.ring import Ring
from supervisor.sensing.ticker import Ticker

log = logging.getLogger("memwarden.discoverer")

#: Every this many discovery rounds, each cgroup's member list is read even when nothing
#: suggests it changed (a process moved into it by hand): at most 1 s late by default.
VERIFY_EVERY = 10
#: cgroup mode: a generation's memory.stat and swap (its offset) are read again when its
#: usage moved by OFFSET_STEP or OFFSET_SHARE of it since the last reading, and at the
#: latest after OFFSET_STALE_NS. What the offset misses in between moves usage too (new
#: cache, reclaim, swapping out), except pages turning active or inactive in place.
OFFSET_STEP = 1 << 20
OFFSET_SHARE = 0.01
OFFSET_STALE_NS = 1_000_000_000
#: statm modes: each member's size is read again after this long even when neither the
#: tree nor the ticker's figure for it moved (two members moving in opposite directions).
SIZES_STALE_NS = 1_000_000_000


class Discoverer:
    """Follows the watched trees and the slow figures; its results go through the ticker."""

    def __init__(self, ticker: Ticker, *, interval_s: float, thresholds: Thresholds,
                 measure: str, ring_seconds: float, stats: SamplerStats) -> None:
        self.ticker = ticker
        self.interval_s = interval_s
        self.thresholds = thresholds
        self.measure = measure
        self.stats = stats
        self.rollups = Rollups() if measure == "pss" else None
        self.stopping = threading.Event()
        self.wake = threading.Event()  # set by a new watch and by stop: discover now
        self._table = procfs.ProcessTable()
        self._last_pid = procfs.LastPid()
        # (last pid, each probe's readers) at the previous discovery round; see `_follow_proc`.
        self._quiet_key: tuple[int | None, tuple[tuple[procfs.StatmReader, ...], ...]] = (
            None, ())
        self._seen: tuple[int, tuple[Probe, ...]] | None = None
        self._cgroup_seen: tuple[int | None, tuple[Probe, ...]] = (None, ())
        self._rounds = 0
        self._growth_queued = False  # growth observations queued and not yet run
        #: Each worker's start-up envelope and the longest spawn-to-ready measured on its
        #: generations (seconds), by worker name; this thread alone writes them.
        self.envelopes: dict[str, Envelope] = {}
        self._startups: dict[str, float] = {}
        self.container_since = 0
        #: The container's growth over the window (None until a whole window was seen).
        self.container_slope: float | None = None
        self._container_ring: Ring | None = None
        if ticker.container is not None:
            self._container_ring = Ring(max(int(ring_seconds / interval_s), 8))

    def run(self) -> None:
        """The thread's body. One timed wait per round: a thread that polls (say every 10
        ms) for new watches took the GIL 100 times a second and measurably delayed ticks."""
        while not self.stopping.is_set():
            started = time.monotonic()
            self.wake.clear()
            try:
                self._discover()
            except Exception:
                log.exception("process tree discovery failed; retrying next interval")
            self.stats.discoveries += 1
            self.wake.wait(max(started + self.interval_s - time.monotonic(), 0.0))

    def close(self) -> None:
        self._table.close()
        self._last_pid.close()

    def _discover(self) -> None:
        probes = self.ticker.probes
        now = time.monotonic_ns()
        if probes:
            if self.measure == "cgroup":
                self._follow_cgroups(probes)
            else:
                self._follow_proc(probes)
            self._refresh(probes, now)
            slopes = [(probe, judged) for probe in probes
                      if (judged := self._growth(probe, now)) is not None]
            # A projection inside its classifier's quiet growth band changes nothing. That
            # band moves only when growth is observed, which only this queue does: while
            # nothing of it is outstanding, the band read here is the ticker's. Skipping
            # spares the compiled ticker a GIL hand-off per round for every worker that
            # does not grow. (The band holds seconds signed: lower is worse.)
            if slopes and (self._growth_queued or any(
                    not band.lo <= -seconds < band.hi
                    for probe, (seconds, _) in slopes
                    if (band := probe.classifier.growth_band))):
                self._growth_queued = True
                self.ticker.queue(lambda tick_ns: self._observe_growth(tick_ns, slopes))
        if self._container_ring is not None and self.ticker.cgroup is not None:
            self._sense_container(now)

    def _follow_proc(self, probes: tuple[Probe, ...]) -> None:
        # Quiet round: no process was created since the previous round (the last pid is
        # unchanged) and no watched process was lost (each probe still has the readers it
        # had then). Then no tree can have gained a member, and none lost one other than
        # by a death the ticker already dropped; a lost member's children, which the
        # kernel re-parents, show as a changed reader tuple. Deaths elsewhere cannot move
        # a process into or out of a watched tree.
        last_pid = self._last_pid.read()
        readers = tuple(probe.readers for probe in probes)
        quiet = (last_pid is not None and last_pid == self._quiet_key[0]
                 and readers == self._quiet_key[1])
        self._quiet_key = (last_pid, readers)
        table = self._table.scan(quiet=quiet)
        seen = (self._table.generation, probes)
        if seen == self._seen:
            return  # no process came or went, and the watches are the same
        self._seen = seen
        children = procfs.children_map({pid: ppid for pid, (ppid, _) in table.items()})
        self._adopt_orphans(probes, table)
        for probe in probes:
            self._follow(probe, probe.tree.members(table, children))

    def _follow_cgroups(self, probes: tuple[Probe, ...]) -> None:
        # The kernel keeps each generation's list (one small read of cgroup.procs each),
        # but at the discovery rate those reads were a fifth of the discoverer's cost per
        # worker. A cgroup gains a member by a fork, which moves the last pid, or by a
        # write to its cgroup.procs (a process moved in: caught by the verification round
        # within VERIFY_EVERY rounds); it loses one by a death, which the tree's RSS read
        # of the round before saw (`Probe.lost`). Otherwise, and with the same watches as
        # the round before, its list is unchanged.
        last_pid = self._last_pid.read()
        self._rounds += 1
        quiet = (last_pid is not None and (last_pid, probes) == self._cgroup_seen
                 and self._rounds % VERIFY_EVERY != 0)
        self._cgroup_seen = (last_pid, probes)
        for probe in probes:
            if not (quiet and not probe.lost):
                self._follow(probe, probe.tree.members())

    def _adopt_orphans(self, probes: tuple[Probe, ...], table: dict[int, tuple[int, int]]) -> None:
        """Give processes re-parented to memwarden that no tree knows to the generation they
        left: the one whose process group they are in, else the only worker's newest."""
        me = os.getpid()
        owned = {pid for probe in probes if isinstance(probe.tree, ProcTree)
                 for pid in probe.tree.known} | {probe.root for probe in probes}
        for pid, (ppid, start) in table.items():
            if ppid != me or pid in owned:
                continue
            trees = [p.tree for p in probes if isinstance(p.tree, ProcTree)]
            owner = next((t for t in trees if t.claims(pid)), None)
            if owner is None and not _leads_a_group(pid):
                # A group leader re-parented here is a worker being started (or a daemon
                # that kept the session it made): never somebody else's helper.
                ids = {p: GenerationId.parse(p.key) for p in probes}
                workers = {i.worker if i is not None else p.key for p, i in ids.items()}
                if len(workers) == 1 and trees:
                    newest = max(probes, key=lambda p: ids[p].number if ids[p] else 0)
                    owner = newest.tree if isinstance(newest.tree, ProcTree) else None
            if owner is not None:
                owner.adopt((pid, start))

    def _follow(self, probe: Probe, members: list[tuple[int, int]]) -> None:
        """Give the probe a reader for each member (the ticker swaps them in)."""
        if probe.closed or not members:
            return  # the root is gone: the lifecycle will unwatch it
        current = {(r.pid, r.start): r for r in probe.readers}
        if len(members) == len(current) and all(m in current for m in members):
            return
        readers = []
        for pid, start in members:
            reader = current.get((pid, start))
            if reader is None:
                try:
                    reader = procfs.StatmReader(pid)
                except ProcessLookupError:
                    continue
                if reader.start != start:  # the pid was reused between the list and now
                    reader.close()
                    continue
            readers.append(reader)
        rollups = self.rollups
        scale_of = {(r.pid, r.start): rollups.scale((r.pid, r.start)) if rollups else SCALE_ONE
                    for r in readers}
        seen = probe.readers
        fresh = [r for r in readers if r not in seen]
        ticker = self.ticker

        def swap(_now: int) -> None:
            # Runs on the ticker. It may have dropped lost readers since `seen` was read,
            # or the probe may have been retired: never bring a retired reader back.
            if probe.closed:
                ticker.retire(fresh)
                return
            current = probe.readers
            final = tuple(r for r in readers if r in current or r in fresh)
            probe.set_readers(final, tuple(scale_of[(r.pid, r.start)] for r in final))
            ticker.retire(r for r in current if r not in final)

        ticker.queue(swap)

    def _refresh(self, probes: tuple[Probe, ...], now: int) -> None:
        """The slow figures: each tree's plain RSS, each cgroup's swap and inactive file cache
        (when its usage moved, or the last reading is old: see OFFSET_STEP), the PSS shares
        (within their CPU budget). What the ticker reads changes on the ticker."""
        offsets: list[tuple[Probe, int]] = []
        for probe in probes:
            if probe.closed:
                continue
            # In rss mode the ticker's own figure is that sum, and a lone process's size:
            # no reads needed. Each member's size is kept for `status` and the snapshots.
            if self.measure == "rss" and len(probe.readers) <= 1:
                probe.rss = probe.memory
                probe.sizes = tuple(((r.pid, r.start), probe.rss // procfs.PAGE_SIZE)
                                    for r in probe.readers)
            elif ((probe.memory, probe.readers) != probe.sized
                  or now - probe.sized_ns >= SIZES_STALE_NS):
                # With the same members and the same figure on the ticker, the members'
                # sizes are as they were: one statm read per member and round spared (with
                # 100 idle workers, half of a round's cost).
                probe.sized, probe.sized_ns = (probe.memory, probe.readers), now
                probe.rss = probe.tree_rss()
            cgroup = probe.cgroup
            if cgroup is None:
                continue
            # memory.stat is ~40 lines to parse: read per worker at the discovery rate it
            # made most of the discoverer's cost (about 80 of 150 us per worker per round).
            # A read of its own: taken from the ticker's last figure minus the offset, it
            # left the offset stale while page cache came and went under a limit, and a
            # worker writing a file crossed MEDIUM on cache alone.
            usage = cgroup.usage()
            last = probe.stat_usage
            if (probe.stat_ns is not None and now - probe.stat_ns < OFFSET_STALE_NS
                    and abs(usage - last) < max(OFFSET_STEP, OFFSET_SHARE * last)):
                continue
            probe.stat_ns, probe.stat_usage = now, usage
            # What the kernel can drop at once is not held; swapped-out memory is.
            offset = cgroup.swap() - cgroup.inactive_file()
            if offset != probe.offset:
                offsets.append((probe, offset))
        scales: list[tuple[Probe, dict[tuple[int, int], int]]] = []
        rollups = self.rollups
        if rollups is not None and rollups.refresh(m for p in probes for m in p.sizes):
            for probe in probes:
                scales.append((probe, {m: rollups.scale(m) for m in probe.members}))
                offset = sum(rollups.swap(m) for m in probe.members)
                if offset != probe.offset:
                    offsets.append((probe, offset))
        if not offsets and not scales:
            return  # nothing changed: the compiled ticker need not take the GIL for it

        def settle(_now: int) -> None:
            # On the ticker, like every change to what it reads.
            for probe, offset in offsets:
                probe.offset = offset
            for probe, scale_of in scales:
                readers = probe.readers
                new = tuple(scale_of.get((r.pid, r.start), SCALE_ONE) for r in readers)
                if not probe.closed and new != tuple(scale for _, scale in probe.sources):
                    probe.set_readers(readers, new)

        self.ticker.queue(settle)

    def _growth(self, probe: Probe, now: int) -> tuple[float, Projection] | None:
        """Record the probe's newest sample in its envelope and its trend; once a whole
        window has been seen since the worker became ready, set its slope, and once its
        start-up has ended, return where its sustained growth leads (`project`)."""
        # Why one point per discovery rather than a decimated read of the whole window: it
        # costs O(1) per worker per round, and the robust line over ~50 points still
        # resists the odd spike that lands on a sampling point.
        newest = probe.ring.newest()
        if probe.closed or newest is None:
            return None
        envelope = self.envelopes.get(probe.worker)
        if envelope is None:
            envelope = self.envelopes[probe.worker] = Envelope()
        since = probe.since_ns
        if since is not None and probe.said_ready:
            envelope.end(probe.generation, "it said ready", levelled=True)
        age = (newest[0] - probe.born_ns) / 1e9
        starting = envelope.observe(probe.generation, age, newest[1])
        probe.startup = _startup(envelope, probe.generation, age)
        if since is None:
            return None
        if probe.trend_since != since:
            probe.trend_since = since
            probe.trend_t.clear()
            probe.trend_v.clear()
            self._measured(probe, since)
        if newest[0] < since:
            return None
        probe.trend_t.append(newest[0])
        probe.trend_v.append(newest[1])
        if now - since < self.thresholds.growth_window_ns:
            return None
        values = probe.trend_v
        if len(values) >= 9 and values.count(values[0]) == len(values):
            # Flat, as an idle worker is: no line to fit (9: what sustained_slope needs).
            probe.slope = growth = 0.0
        else:
            ts, points = list(probe.trend_t), list(values)
            probe.slope = resistant_slope(ts, points)
            growth = sustained_slope(ts, points)
        if growth is None:
            return None
        if starting:
            if growth >= LEVEL_RATE:
                return None  # at or below its envelope, still growing: starting up
            envelope.end(probe.generation, "it levelled off", levelled=True)
            probe.startup = _startup(envelope, probe.generation, age)
        return probe.classifier.project(now, growth, newest[1])

    def envelope_points(self, worker: str) -> list[tuple[float, int]]:
        """`worker`'s start-up envelope as (age s, bytes) points; [] before it has one."""
        envelope = self.envelopes.get(worker)
        return [] if envelope is None else envelope.points()

    def _measured(self, probe: Probe, since: int) -> None:
        """Learn the generation's spawn-to-ready; give its classifier the longest its worker
        has shown (a replacement is safe only if it can start as slowly as one did)."""
        took = max((since - probe.born_ns) / 1e9, 0.0)
        longest = max(self._startups.get(probe.worker, took), took)
        self._startups[probe.worker] = longest
        probe.classifier.set_startup(longest)

    def _observe_growth(self, tick_ns: int,
                        slopes: list[tuple[Probe, tuple[float, Projection]]]) -> None:
        self._growth_queued = False
        for probe, (seconds, projection) in slopes:
            if not probe.closed:
                change = probe.classifier.observe_projection(tick_ns, seconds, projection)
                if change is not None:
                    self.ticker.report(change)

    def _sense_container(self, now: int) -> None:
        ticker, ring = self.ticker, self._container_ring
        cgroup, container = ticker.cgroup, ticker.container
        assert cgroup is not None and container is not None and ring is not None
        inactive = cgroup.inactive_file()  # before usage: see CgroupMemory.working_set()
        usage = cgroup.usage()
        if usage < 0:
            return
        ws = max(usage - inactive, 0)
        ring.append(now, ws)
        window = self.thresholds.growth_window_ns
        slope = None
        if now - self.container_since >= window:
            ts, values = ring.window(now - window, now)
            slope = resistant_slope(ts, values)
        self.container_slope = slope
        ticker.container_slope = slope or 0.0
        events = cgroup.events()
        psi = cgroup.psi_some_avg10()
        host = host_psi_some_avg10()

        def observe(tick_ns: int) -> None:
            if self.stopping.is_set():
                return
            ticker.control[USAGE] = usage
            ticker.working_set = ws
            ticker.control[INACTIVE] = inactive
            for change in (container.observe(tick_ns, ws, slope or 0.0),
                           container.observe_kernel(tick_ns, events, psi, host)):
                if change is not None:
                    ticker.report(change)

        ticker.queue(observe)


def _leads_a_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except OSError:
        return True  # gone: nothing to adopt


def _startup(envelope: Envelope, generation: int, age_s: float) -> dict[str, object]:
    """A generation's start-up as the snapshots carry it (`Sample.startup`)."""
    out: dict[str, object] = {"starting": envelope.starting(generation), "age_s": round(age_s, 1)}
    at = envelope.at(age_s) if envelope.levelled else None
    if at is not None:
        out["envelope"] = int(at)
    why = envelope.why_ended(generation)
    if why is not None:
        out["ended"] = why
    return out


__all__ = ["Discoverer"]

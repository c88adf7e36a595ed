"""The millisecond sampler: every worker's memory each tick, level changes out.

Two threads. The *ticker* wakes on absolute deadlines (no drift), reads each watched
generation's memory (`probe.Probe`: one cgroup usage file, or one kept-open statm per
process of its tree scaled by its PSS share), appends it to the generation's ring and feeds
the classifiers; it does nothing else, so that it stays on time. The *discoverer* runs at
the slower discovery cadence: it follows each tree (`trees`: new children, orphans, PID
reuse), refreshes the slow figures (PSS shares within their CPU budget, the inactive file
cache and swap of each cgroup, the tree's plain RSS), reads the container's slower cgroup
files and computes growth slopes, and hands its results to the ticker through a queue
that the ticker drains at the top of a tick. Classifier state is only ever touched by the
ticker, so it needs no lock.

Why not one thread: a /proc scan or a slope takes hundreds of microseconds and gives the
GIL away at every file open; done inside the tick it would make ticks late. The ticker's
reads keep the GIL (`timing.c_pread`): a read that let it go could wait a whole switch
interval to get it back whenever the event loop is busy.

Two tickers do the same work. The compiled one (`supervisor/_ticker.c`, built by `pip
install` where a C compiler exists) holds no GIL while it sleeps and reads, and calls back
into Python only for Python work: the queue, a value outside its classifier's quiet band,
a lost process, the container near a headroom line (`_drain`, `_observe`, `_drop_lost`,
`_container_tick` below, which the Python ticker calls too). The Python ticker is the
fallback. `MEMWARDEN_TICKER=python|c` forces one. Both share the ring storage and the
control cells (`PENDING` ... `INACTIVE`): counters, the flag that says work is queued,
the stop flag and the container's usage.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from supervisor import procfs
from supervisor.cgroup import CgroupMemory, host_psi_some_avg10
from supervisor.config import ConfigError
from supervisor.pressure import Change, ContainerClassifier, Thresholds
from supervisor.probe import Probe
from supervisor.pss import SCALE_ONE, SCALE_SHIFT, Rollups
from supervisor.ring import Ring
from supervisor.slope import resistant_slope, sustained_slope
from supervisor.timing import (
    OFFSET_0,
    KeptOpen,
    ReadBuffer,
    c_pread,
    lower_switch_interval,
    lower_timer_slack,
    raise_to_realtime,
)
from supervisor.trees import ProcTree, Tree
from supervisor.units import format_duration
from workers.protocol import Level

log = logging.getLogger("memwarden.sampler")

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

#: The control cells both tickers share (an array('q'), in this order; `_ticker.c` keeps
#: the same): work queued, stop, the tick counters, the container's usage and the inactive
#: file cache at the last memory.stat reading.
PENDING, STOP, TICKS, LATE, MISSED, MAX_LATE_NS, USAGE, INACTIVE = range(8)
#: What a build of `_ticker.c` must declare to be used: a stale build is not.
LAYOUT = ("control:pending,stop,ticks,late,missed,max_late_ns,usage,inactive;"
          "ring:samples,head,count,appends;1")

try:
    from supervisor import _ticker
except ImportError:  # built without a C compiler: the Python ticker runs
    _ticker = None  # type: ignore[assignment]
#: Whether the compiled ticker can run here (built, and from this version of the source).
BUILT = _ticker is not None and getattr(_ticker, "LAYOUT", None) == LAYOUT


def choose_ticker(asked: str | None = None) -> tuple[str, str]:
    """Return ("c" or "python", why, for the log): `asked`, else $MEMWARDEN_TICKER, else the
    compiled ticker where it is built. Raise ConfigError for another name, or for "c" where
    the compiled ticker is not built (or was built from another version of the source)."""
    source = "asked"
    if asked is None and (asked := os.environ.get("MEMWARDEN_TICKER") or None) is not None:
        source = "MEMWARDEN_TICKER"
    if asked is None:
        if BUILT:
            return "c", "supervisor._ticker"
        return "python", ("supervisor._ticker is not built here: no C compiler at install"
                          if _ticker is None else "supervisor._ticker is a stale build")
    if asked not in ("c", "python"):
        raise ConfigError(f"{source}={asked}: expected python or c")
    if asked == "c" and not BUILT:
        raise ConfigError(f"{source}=c: the compiled ticker (supervisor._ticker) is not built "
                          "here, or is stale; reinstall memwarden where a C compiler and the "
                          "Python headers exist, or use python")
    return asked, f"{source}={asked}"


class SamplerStats:
    """Counters of the sampler, read by anyone. The ticker's live in the control cells that
    either ticker writes (see `PENDING` ...); `discoveries` is the discoverer's own."""

    __slots__ = ("_cells", "discoveries")

    def __init__(self, cells: array[int]) -> None:
        self._cells = cells
        self.discoveries = 0

    @property
    def ticks(self) -> int:
        return self._cells[TICKS]

    @property
    def late(self) -> int:
        """Ticks that started more than a tenth of the interval after their deadline."""
        return self._cells[LATE]

    @property
    def missed(self) -> int:
        """Deadlines skipped because a tick started a whole interval late or more."""
        return self._cells[MISSED]

    @property
    def max_late_ns(self) -> int:
        return self._cells[MAX_LATE_NS]


@dataclass(frozen=True, slots=True)
class WorkerView:
    """A consistent-enough look at one worker for the event loop (copied values, live ring).

    `memory` is the figure thresholds compare (the ring holds it); `rss` the tree's plain
    RSS sum at the last discovery.
    """

    key: str
    ring: Ring
    level: Level
    procs: int
    memory: int
    rss: int
    slope: float | None  # bytes/s over the growth window; None until the window is full
    pids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ContainerView:
    """The container's last figures (bytes, bytes/s) and level; usage and working set are
    -1 until the first read of the cgroup (within one discovery interval of `start`)."""

    working_set: int
    usage: int
    limit: int
    level: Level
    slope: float | None


class Sampler:
    """Samples watched process trees on a dedicated thread; reports level changes only."""

    def __init__(
        self,
        *,
        interval_s: float,
        discover_interval_s: float,
        ring_seconds: float,
        thresholds: Thresholds,
        on_change: Callable[[Change], None],
        cgroup: CgroupMemory | None = None,
        limit: int | None = None,
        realtime: bool = False,
        measure: str = "rss",
        ticker: str | None = None,
    ) -> None:
        """Prepare (nothing runs until `start`). Raise ValueError for non-positive intervals,
        ConfigError for a ticker that cannot run (see `choose_ticker`).

        `measure` is "cgroup" (each watch comes with its generation's cgroup), "pss" (statm
        RSS scaled by each process's PSS share) or "rss" (statm RSS as it is). `ticker` is
        "c" or "python" (default: `choose_ticker`); `self.ticker` says which one runs.

        `on_change` runs on the sampler thread for every level change (workers and the
        container): it must be cheap and thread-safe. `limit` (bytes) enables the
        container classifier; `cgroup` supplies its usage, working set and kernel signals.
        `realtime` asks for SCHED_FIFO on the ticker thread (`timing.raise_to_realtime`):
        off by default, as it needs CAP_SYS_NICE and affects the host's scheduling.
        """
        if interval_s <= 0 or discover_interval_s <= 0 or ring_seconds <= 0:
            raise ValueError("sampler interval, discovery interval and ring length must be > 0")
        self.interval_ns = int(interval_s * 1e9)
        self.discover_interval_s = discover_interval_s
        self.capacity = max(round(ring_seconds / interval_s), 1)
        self.thresholds = thresholds
        self.on_change = on_change
        self.cgroup = cgroup
        self.limit = limit
        self.realtime = realtime
        if measure not in ("cgroup", "pss", "rss"):
            raise ValueError(f"measure must be cgroup, pss or rss, got {measure!r}")
        self.measure = measure
        self.rollups = Rollups() if measure == "pss" else None
        self.ticker, self._ticker_why = choose_ticker(ticker)
        self._control = array("q", bytes(8 * 8))
        self._control[USAGE] = -1
        self.stats = SamplerStats(self._control)
        window_s = thresholds.growth_window_ns / 1e9
        self._trend_points = max(int(window_s / discover_interval_s) + 2, 8)
        self._probes: tuple[Probe, ...] = ()
        self._by_key: dict[str, Probe] = {}
        self._lock = threading.Lock()  # serialises watch/unwatch against each other only
        self._pending: deque[Callable[[int], None]] = deque()  # run by the ticker (`_queue`)
        self._retired: deque[KeptOpen] = deque()  # closed by the ticker
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by watch() and stop(): discover now
        self._table = procfs.ProcessTable()
        self._last_pid = procfs.LastPid()
        # (last pid, each probe's readers) at the previous discovery round; see `_discover`.
        self._quiet_key: tuple[int | None, tuple[tuple[procfs.StatmReader, ...], ...]] = (
            None, ())
        self._buf = ReadBuffer(procfs.StatmReader.BYTES)
        self._seen: tuple[int, tuple[Probe, ...]] | None = None
        self._cgroup_seen: tuple[int | None, tuple[Probe, ...]] = (None, ())
        self._rounds = 0
        self._growth_queued = False  # growth observations queued and not yet run
        self._threads: list[threading.Thread] = []
        self._previous_switch: float | None = None
        self._container: ContainerClassifier | None = None
        self._container_ring: Ring | None = None
        self._container_since = 0
        self._working_set = -1
        self._container_slope: float | None = None
        if limit is not None and limit > 0:
            self._container = ContainerClassifier(thresholds, limit)
            per_s = 1.0 / discover_interval_s
            self._container_ring = Ring(max(int(ring_seconds * per_s), 8))

    # -- the event loop's side -------------------------------------------------------------

    def start(self) -> None:
        """Start the ticker and discoverer threads; raise RuntimeError if already started.

        While running, the process-wide `sys.setswitchinterval` is lowered to a tenth of the
        interval (see `timing.lower_switch_interval`); `stop` restores it.
        """
        if self._threads:
            raise RuntimeError("sampler already started")
        self._previous_switch = lower_switch_interval(self.interval_ns / 1e9 / 10)
        self._container_since = time.monotonic_ns()
        log.info("sampling every %s with the %s ticker (%s)",
                 format_duration(self.interval_ns / 1e9),
                 "compiled" if self.ticker == "c" else "Python", self._ticker_why)
        ticker = self._tick_loop_c if self.ticker == "c" else self._tick_loop
        for name, target in (("memwarden-sampler", ticker),
                             ("memwarden-discover", self._discover_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop both threads, wait for them, and close every descriptor. Safe to call twice."""
        self._control[STOP] = 1
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        with self._lock:
            probes, self._probes, self._by_key = self._probes, (), {}
        for probe in probes:
            probe.closed = True  # pending work for it only closes what it opened
        now = time.monotonic_ns()
        while self._pending:  # retirements and swaps the ticker did not get to
            self._pending.popleft()(now)
        for probe in probes:
            for reader in probe.readers:
                reader.close()
        while self._retired:
            self._retired.popleft().close()
        self._table.close()
        self._last_pid.close()
        if self._previous_switch is not None:
            sys.setswitchinterval(self._previous_switch)
            self._previous_switch = None

    def watch(self, key: str, pid: int, tree: Tree | None = None,
              cgroup: CgroupMemory | None = None) -> None:
        """Sample the generation rooted at `pid` under `key` (replacing any earlier watch of
        `key`). `tree` says who belongs to it (default: a `trees.ProcTree` of `pid`);
        `cgroup`, in cgroup mode, is its own cgroup, whose usage is then the figure.

        Raise ProcessLookupError when `pid` is already gone. Other members join at the next
        discovery, within one discovery interval.
        """
        if self.measure == "cgroup" and cgroup is None:
            raise ValueError("in cgroup mode each watch needs the generation's cgroup")
        root = procfs.StatmReader(pid)
        if tree is None:
            tree = ProcTree(pid, root.start)
        probe = Probe(key, tree, root, Ring(self.capacity), self.thresholds,
                      self._trend_points, cgroup if self.measure == "cgroup" else None)
        with self._lock:
            old = self._by_key.get(key)
            by_key = dict(self._by_key)
            by_key[key] = probe
            self._by_key = by_key
            self._probes = tuple(by_key.values())
        self._control[PENDING] = 1  # the compiled ticker takes the new probes in
        if old is not None:
            self._retire(old)
        self._wake_discoverer()

    def growth_from(self, key: str, t_ns: int | None = None) -> None:
        """Judge `key`'s growth from `t_ns` (default now) on, typically the moment it became
        ready: the growth input speaks once a whole growth window after that has been seen.
        Unknown keys are ignored."""
        probe = self._by_key.get(key)
        if probe is not None:
            probe.since_ns = time.monotonic_ns() if t_ns is None else t_ns

    def unwatch(self, key: str) -> None:
        """Stop sampling `key`; unknown keys are ignored."""
        with self._lock:
            by_key = dict(self._by_key)
            old = by_key.pop(key, None)
            self._by_key = by_key
            self._probes = tuple(by_key.values())
        if old is not None:
            self._retire(old)

    def view(self, key: str) -> WorkerView | None:
        """Return the worker's current figures, or None when `key` is not watched."""
        probe = self._by_key.get(key)
        if probe is None:
            return None
        members = probe.members
        return WorkerView(
            key=key,
            ring=probe.ring,
            level=probe.classifier.level,
            procs=len(members),
            memory=probe.memory,
            rss=probe.rss,
            slope=probe.slope,
            pids=tuple(pid for pid, _ in members),
        )

    def container(self) -> ContainerView | None:
        """Return the container's figures, or None when no limit is known."""
        if self._container is None:
            return None
        return ContainerView(
            working_set=self._working_set,
            usage=self._control[USAGE],
            limit=self._container.limit,
            level=self._container.level,
            slope=self._container_slope,
        )

    def _retire(self, probe: Probe) -> None:
        # The ticker may be reading these descriptors right now, and a descriptor closed
        # under it could be reused by another open: every reader is closed by the ticker,
        # at the top of a tick, after it stopped using the tuple that held it.
        def retire(_now: int) -> None:
            probe.closed = True
            self._retired.extend(probe.readers)
            if probe.cgroup is not None:
                probe.usage_fd = -1
                self._retired.append(probe.cgroup)  # its kept-open usage file

        self._queue(retire)

    def _queue(self, work: Callable[[int], None]) -> None:
        """Have the ticker run `work(tick_ns)` at the top of its next tick (any thread)."""
        self._pending.append(work)
        self._control[PENDING] = 1  # after the append: a drain clears it before it runs

    def _wake_discoverer(self) -> None:
        self._wake.set()

    # -- the ticker ------------------------------------------------------------------------

    def _tick_loop_c(self) -> None:
        lower_timer_slack(1)
        if self.realtime:
            raise_to_realtime()
        container, cgroup = self._container, self.cgroup
        watched = container is not None and cgroup is not None
        try:
            _ticker.run(self, self._control, self.interval_ns, procfs.PAGE_SIZE,
                        cgroup.usage_fd if watched else -1,
                        container.stat_gate if watched else 0)
        except Exception:  # a bug in the compiled ticker's set-up must not end sampling
            log.exception("the compiled sampler ticker failed; the Python ticker takes over")
            self._tick_loop()

    def _tick_loop(self) -> None:
        lower_timer_slack(1)
        if self.realtime:
            raise_to_realtime()
        interval = self.interval_ns
        tolerance = interval // 10
        control = self._control
        monotonic_ns = time.monotonic_ns
        sleep = time.sleep
        stopping = self._stop.is_set
        deadline = monotonic_ns() + interval
        while not stopping():
            now = monotonic_ns()
            if now < deadline:
                sleep((deadline - now) * 1e-9)
                now = monotonic_ns()
            late = now - deadline
            if late >= interval:
                skipped = late // interval
                control[MISSED] += skipped
                deadline += skipped * interval
            if late > tolerance:
                control[LATE] += 1
            if late > control[MAX_LATE_NS]:
                control[MAX_LATE_NS] = late
            try:
                self._tick(now)
            except Exception as e:  # a bug must not end sampling; it is logged, off the hot path
                self._tick_failed(e)
            control[TICKS] += 1
            deadline += interval

    def _tick(self, now: int) -> None:
        if self._pending or self._retired:
            self._drain(now)
        page, shift = procfs.PAGE_SIZE, SCALE_SHIFT
        # One shared buffer for every read of the tick: each is parsed before the next.
        pread, address, size, buffer = c_pread, self._buf.address, self._buf.size, self._buf.buffer
        offset = OFFSET_0
        # The loop below runs once per worker per tick, after a sleep that left the caches
        # cold: it keeps to local names, and tests the classifier's band inline (one object
        # fewer to touch than `observe_rss`, and no call) so that the common case is one
        # pread, one parse, one ring append and two comparisons. Measured and not kept:
        # binding `ring.append` once per probe (one more cold object per worker, slower);
        # parsing by index/slice (300 ns) or `value` (183 ns) against `raw.split` (178 ns).
        for probe in self._probes:
            usage_fd = probe.usage_fd
            if usage_fd >= 0:  # cgroup mode: the kernel's figure for the whole generation
                if pread(usage_fd, address, size, offset) <= 0:
                    continue  # its cgroup is gone: the generation has ended
                memory = int(buffer.raw.split(None, 1)[0]) + probe.offset
                if memory < 0:
                    memory = 0
            else:
                total = 0
                lost = False
                for fd, scale in probe.sources:
                    if pread(fd, address, size, offset) > 0:
                        # "size resident shared ...": the resident pages, second number.
                        total += int(buffer.raw.split(None, 2)[1]) * scale
                    else:  # gone (ESRCH) or nothing to read
                        lost = True
                if lost:
                    self._drop_lost(probe)
                memory = ((total * page) >> shift) + probe.offset
            probe.ring.append(now, memory)
            band = probe.band
            if band.lo <= memory < band.hi:  # `observe_rss`'s own fast path: no change
                continue
            self._observe(probe, now, memory)
        if self._container is not None and self.cgroup is not None:
            usage = self.cgroup.usage()
            control = self._control
            control[USAGE] = usage
            if usage - control[INACTIVE] >= self._container.stat_gate:
                self._container_tick(now)

    # What the compiled ticker calls back, with the GIL; the Python ticker calls them too.

    def _drain(self, now: int) -> None:
        """Run the work queued by the other threads, then close the descriptors retired."""
        pending = self._pending
        while pending:
            pending.popleft()(now)
        retired = self._retired
        while retired:
            retired.popleft().close()

    def _observe(self, probe: Probe, now: int, memory: int) -> None:
        """A value outside the probe's quiet band: the classifier's slow path.

        In cgroup mode the offset (inactive file cache, swap) is that of the discoverer's
        last memory.stat reading, up to a round old: a file writer's new cache reads as held
        memory until the next one. A rise out of the band is therefore judged on a fresh
        reading (tens of microseconds, only when the band is left upward), and the ticker
        takes the new offset in at its next tick.
        """
        cgroup = probe.cgroup
        if cgroup is not None and memory >= probe.band.hi:
            offset = cgroup.swap() - cgroup.inactive_file()  # before usage, as in _refresh
            usage = cgroup.usage()
            if usage >= 0:
                memory = max(usage + offset, 0)
                probe.stat_ns, probe.stat_usage = now, usage
                if offset != probe.offset:
                    probe.offset = offset
                    self._control[PENDING] = 1
        change = probe.classifier.observe_rss(now, memory)
        if change is not None:
            self._report(self.on_change, change)

    def _container_tick(self, now: int) -> None:
        """The container's working set, read afresh because its usage is near a headroom line.

        memory.stat is ~40 lines of text, too dear for every tick. The working set never
        exceeds usage, and usage minus the inactive cache of the last reading errs high when
        new cache arrives: the ticker calls this only while that estimate reaches the
        classifier's `stat_gate` (a file writer at the limit triggers it only when its new
        cache outgrows the last reading).
        """
        cgroup, container = self.cgroup, self._container
        assert cgroup is not None and container is not None
        inactive = cgroup.inactive_file()  # before usage: see CgroupMemory.working_set()
        usage = cgroup.usage()
        if usage >= 0:
            self._control[INACTIVE] = inactive
            ws = max(usage - inactive, 0)
            self._working_set = ws
            change = container.observe(now, ws, self._container_slope or 0.0)
            if change is not None:
                self._report(self.on_change, change)

    def _drop_lost(self, probe: Probe) -> None:
        """A process of the tree is gone: drop its reader (rare; allocating here is fine).
        Its descriptor is closed at the next drain, once no ticker reads it any more."""
        scale_of = {fd: scale for fd, scale in probe.sources}
        keep, scales = [], []
        for reader in probe.readers:
            if reader.rss_pages() < 0:
                self._retired.append(reader)
            else:
                keep.append(reader)
                scales.append(scale_of.get(reader.fd, SCALE_ONE))
        probe.set_readers(tuple(keep), tuple(scales))
        self._control[PENDING] = 1

    @staticmethod
    def _tick_failed(error: BaseException) -> None:
        log.error("sampler tick failed; sampling goes on", exc_info=error)

    @staticmethod
    def _report(on_change: Callable[[Change], None], change: Change) -> None:
        try:
            on_change(change)
        except Exception:
            log.exception("level change handler failed for %s", change)

    # -- the discoverer --------------------------------------------------------------------

    def _discover_loop(self) -> None:
        # One timed wait per round: a thread that polls (say every 10 ms) for new watches
        # took the GIL 100 times a second and measurably delayed ticks.
        while not self._stop.is_set():
            started = time.monotonic()
            self._wake.clear()
            try:
                self._discover()
            except Exception:
                log.exception("process tree discovery failed; retrying next interval")
            self.stats.discoveries += 1
            self._wake.wait(max(started + self.discover_interval_s - time.monotonic(), 0.0))

    def _discover(self) -> None:
        probes = self._probes
        now = time.monotonic_ns()
        if probes:
            if self.measure == "cgroup":
                self._follow_cgroups(probes)
            else:
                self._follow_proc(probes)
            self._refresh(probes, now)
            slopes = [(probe, slope) for probe in probes
                      if (slope := self._growth(probe, now)) is not None]
            # A slope inside its classifier's quiet growth band changes nothing. That band
            # moves only when growth is observed, which only this queue does: while nothing
            # of it is outstanding, the band read here is the ticker's. Skipping spares the
            # compiled ticker a GIL hand-off per round for every worker that does not grow.
            if slopes and (self._growth_queued or any(
                    not band.lo <= slope < band.hi
                    for probe, slope in slopes
                    if (band := probe.classifier.growth_band))):
                self._growth_queued = True
                self._queue(lambda tick_ns: self._observe_growth(tick_ns, slopes))
        if self._container is not None and self.cgroup is not None:
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
                workers = {p.key.rpartition("#")[0] for p in probes}
                if len(workers) == 1 and trees:
                    newest = max(probes, key=lambda p: _generation_of(p.key))
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

        def swap(_now: int) -> None:
            # Runs on the ticker. It may have dropped lost readers since `seen` was read,
            # or the probe may have been retired: never bring a retired reader back.
            if probe.closed:
                self._retired.extend(fresh)
                return
            current = probe.readers
            final = tuple(r for r in readers if r in current or r in fresh)
            probe.set_readers(final, tuple(scale_of[(r.pid, r.start)] for r in final))
            self._retired.extend(r for r in current if r not in final)

        self._queue(swap)

    def _refresh(self, probes: tuple[Probe, ...], now: int) -> None:
        """The slow figures: each tree's plain RSS, each cgroup's swap and inactive file cache
        (when its usage moved, or the last reading is old: see OFFSET_STEP), the PSS shares
        (within their CPU budget). What the ticker reads changes on the ticker."""
        offsets: list[tuple[Probe, int]] = []
        for probe in probes:
            if probe.closed:
                continue
            # In rss mode the ticker's own figure is that sum: no reads needed.
            probe.rss = probe.memory if self.measure == "rss" else probe.tree_rss()
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
        if rollups is not None and rollups.refresh(m for p in probes for m in p.members):
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

        self._queue(settle)

    def _growth(self, probe: Probe, now: int) -> float | None:
        """Record the probe's newest sample in its trend; once a whole window has been seen
        since the worker became ready, set its slope and return its sustained growth."""
        # Why one point per discovery rather than a decimated read of the whole window: it
        # costs O(1) per worker per round, and the robust line over ~50 points still
        # resists the odd spike that lands on a sampling point.
        since = probe.since_ns
        if probe.closed or since is None:
            return None
        if probe.trend_since != since:
            probe.trend_since = since
            probe.trend_t.clear()
            probe.trend_v.clear()
        newest = probe.ring.newest()
        if newest is None or newest[0] < since:
            return None
        probe.trend_t.append(newest[0])
        probe.trend_v.append(newest[1])
        if now - since < self.thresholds.growth_window_ns:
            return None
        values = probe.trend_v
        if len(values) >= 9 and values.count(values[0]) == len(values):
            # Flat, as an idle worker is: no line to fit (9: what sustained_slope needs).
            probe.slope = 0.0
            return 0.0
        ts, points = list(probe.trend_t), list(values)
        probe.slope = resistant_slope(ts, points)
        return sustained_slope(ts, points)

    def _observe_growth(self, tick_ns: int, slopes: list[tuple[Probe, float]]) -> None:
        self._growth_queued = False
        for probe, slope in slopes:
            if not probe.closed:
                change = probe.classifier.observe_growth(tick_ns, slope)
                if change is not None:
                    self._report(self.on_change, change)

    def _sense_container(self, now: int) -> None:
        cgroup, container, ring = self.cgroup, self._container, self._container_ring
        assert cgroup is not None and container is not None and ring is not None
        inactive = cgroup.inactive_file()  # before usage: see CgroupMemory.working_set()
        usage = cgroup.usage()
        if usage < 0:
            return
        ws = max(usage - inactive, 0)
        ring.append(now, ws)
        window = self.thresholds.growth_window_ns
        slope = None
        if now - self._container_since >= window:
            ts, values = ring.window(now - window, now)
            slope = resistant_slope(ts, values)
        self._container_slope = slope
        events = cgroup.events()
        psi = cgroup.psi_some_avg10()
        host = host_psi_some_avg10()

        def observe(tick_ns: int) -> None:
            if self._stop.is_set():
                return
            self._control[USAGE] = usage
            self._working_set = ws
            self._control[INACTIVE] = inactive
            for change in (container.observe(tick_ns, ws, slope or 0.0),
                           container.observe_kernel(tick_ns, events, psi, host)):
                if change is not None:
                    self._report(self.on_change, change)

        self._queue(observe)


def _generation_of(key: str) -> int:
    """The generation number of a watch key `worker#n` (0 for a key without one)."""
    number = key.rpartition("#")[2]
    return int(number) if number.isdigit() else 0


def _leads_a_group(pid: int) -> bool:
    try:
        return os.getpgid(pid) == pid
    except OSError:
        return True  # gone: nothing to adopt


__all__ = ["ContainerView", "Sampler", "SamplerStats", "WorkerView"]

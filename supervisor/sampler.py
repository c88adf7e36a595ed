"""The millisecond sampler: every worker's tree RSS each tick, level changes out.

Two threads. The *ticker* wakes on absolute deadlines (no drift), reads one kept-open
statm per process of every watched tree, appends each worker's sum to its ring and feeds
the classifiers; it does nothing else, so that it stays on time. The *discoverer* runs at
the slower discovery cadence: it rediscovers each tree (new children, PID reuse), reads
the container's slower cgroup files and computes growth slopes, and hands its results to
the ticker through a queue that the ticker drains at the top of a tick. Classifier state
is only ever touched by the ticker, so it needs no lock.

Why not one thread: a /proc scan or a slope takes hundreds of microseconds and gives the
GIL away at every file open; done inside the tick it would make ticks late. The ticker's
reads keep the GIL (`timing.c_pread`): a read that let it go could wait a whole switch
interval to get it back whenever the event loop is busy.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from supervisor import procfs
from supervisor.cgroup import CgroupMemory, host_psi_some_avg10
from supervisor.pressure import Change, ContainerClassifier, Thresholds, WorkerClassifier
from supervisor.ring import Ring
from supervisor.slope import resistant_slope, sustained_slope
from supervisor.timing import (
    OFFSET_0,
    ReadBuffer,
    c_pread,
    lower_switch_interval,
    lower_timer_slack,
    raise_to_realtime,
)
from workers.protocol import Level

log = logging.getLogger("memwarden.sampler")


@dataclass(slots=True)
class SamplerStats:
    """Counters of the sampler; each written by one of its threads only, read by anyone."""

    ticks: int = 0
    late: int = 0  # ticks that started more than a tenth of the interval after their deadline
    missed: int = 0  # deadlines skipped because a tick started a whole interval late or more
    max_late_ns: int = 0
    discoveries: int = 0


@dataclass(frozen=True, slots=True)
class WorkerView:
    """A consistent-enough look at one worker for the event loop (copied values, live ring)."""

    key: str
    ring: Ring
    level: Level
    procs: int
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


class _Probe:
    """One watched worker. `readers` and `fds` are swapped whole, never mutated; a reader is
    closed only after the ticker stopped using the tuple that held its descriptor."""

    __slots__ = ("band", "classifier", "closed", "fds", "key", "readers", "ring", "root", "rss",
                 "since_ns", "slope", "trend_since", "trend_t", "trend_v")

    def __init__(self, key: str, root: procfs.StatmReader, ring: Ring, th: Thresholds,
                 trend_points: int) -> None:
        self.key = key
        self.root = root.pid
        self.readers: tuple[procfs.StatmReader, ...] = ()
        self.fds: tuple[int, ...] = ()
        self.set_readers((root,))
        self.ring = ring
        self.classifier = WorkerClassifier(key, th)
        # The classifier's RSS input, whose band [lo, hi) is where `observe_rss` returns at
        # once; the ticker tests it inline and calls `observe_rss` only outside it. The
        # input object lives as long as the classifier; its band moves in place.
        self.band = self.classifier.rss_band
        self.rss = 0
        self.slope: float | None = None
        # Growth is judged only from the moment the worker is ready (`Sampler.growth_from`):
        # a start-up ramp is loading, not leaking. Written by the event loop, read by the
        # discoverer, which restarts the trend when it sees a new value in `trend_since`.
        self.since_ns: int | None = None
        self.trend_since: int | None = None
        self.closed = False
        # The ring decimated to one sample per discovery: what the growth slope reads.
        self.trend_t: deque[int] = deque(maxlen=trend_points)
        self.trend_v: deque[int] = deque(maxlen=trend_points)

    def set_readers(self, readers: tuple[procfs.StatmReader, ...]) -> None:
        self.readers = readers
        self.fds = tuple(r.fd for r in readers)


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
    ) -> None:
        """Prepare (nothing runs until `start`). Raise ValueError for non-positive intervals.

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
        self.stats = SamplerStats()
        window_s = thresholds.growth_window_ns / 1e9
        self._trend_points = max(int(window_s / discover_interval_s) + 2, 8)
        self._probes: tuple[_Probe, ...] = ()
        self._by_key: dict[str, _Probe] = {}
        self._lock = threading.Lock()  # serialises watch/unwatch against each other only
        self._pending: deque[Callable[[int], None]] = deque()  # run by the ticker
        self._retired: deque[procfs.StatmReader] = deque()  # closed by the ticker
        self._stop = threading.Event()
        self._wake = threading.Event()  # set by watch() and stop(): discover now
        self._table = procfs.ProcessTable()
        self._last_pid = procfs.LastPid()
        # (last pid, each probe's readers) at the previous discovery round; see `_discover`.
        self._quiet_key: tuple[int | None, tuple[tuple[procfs.StatmReader, ...], ...]] = (
            None, ())
        self._buf = ReadBuffer(procfs.StatmReader.BYTES)
        self._seen: tuple[int, tuple[_Probe, ...]] | None = None
        self._threads: list[threading.Thread] = []
        self._previous_switch: float | None = None
        self._container: ContainerClassifier | None = None
        self._container_ring: Ring | None = None
        self._container_since = 0
        self._usage = -1
        self._working_set = -1
        self._inactive = 0  # inactive file cache at the last memory.stat reading
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
        for name, target in (("memwarden-sampler", self._tick_loop),
                             ("memwarden-discover", self._discover_loop)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop both threads, wait for them, and close every descriptor. Safe to call twice."""
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

    def watch(self, key: str, pid: int) -> None:
        """Sample the tree rooted at `pid` under `key` (replacing any earlier watch of `key`).

        Raise ProcessLookupError when `pid` is already gone. Descendants join at the next
        discovery, within one discovery interval.
        """
        root = procfs.StatmReader(pid)
        probe = _Probe(key, root, Ring(self.capacity), self.thresholds, self._trend_points)
        with self._lock:
            old = self._by_key.get(key)
            by_key = dict(self._by_key)
            by_key[key] = probe
            self._by_key = by_key
            self._probes = tuple(by_key.values())
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
        readers = probe.readers
        return WorkerView(
            key=key,
            ring=probe.ring,
            level=probe.classifier.level,
            procs=len(readers),
            rss=probe.rss,
            slope=probe.slope,
            pids=tuple(r.pid for r in readers),
        )

    def container(self) -> ContainerView | None:
        """Return the container's figures, or None when no limit is known."""
        if self._container is None:
            return None
        return ContainerView(
            working_set=self._working_set,
            usage=self._usage,
            limit=self._container.limit,
            level=self._container.level,
            slope=self._container_slope,
        )

    def _retire(self, probe: _Probe) -> None:
        # The ticker may be reading these descriptors right now, and a descriptor closed
        # under it could be reused by another open: every reader is closed by the ticker,
        # at the top of a tick, after it stopped using the tuple that held it.
        def retire(_now: int) -> None:
            probe.closed = True
            self._retired.extend(probe.readers)

        self._pending.append(retire)

    def _wake_discoverer(self) -> None:
        self._wake.set()

    # -- the ticker ------------------------------------------------------------------------

    def _tick_loop(self) -> None:
        lower_timer_slack(1)
        if self.realtime:
            raise_to_realtime()
        interval = self.interval_ns
        tolerance = interval // 10
        stats = self.stats
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
                stats.missed += skipped
                deadline += skipped * interval
            if late > tolerance:
                stats.late += 1
            if late > stats.max_late_ns:
                stats.max_late_ns = late
            try:
                self._tick(now)
            except Exception:  # a bug must not end sampling; it is logged, off the hot path
                log.exception("sampler tick failed; sampling goes on")
            stats.ticks += 1
            deadline += interval

    def _tick(self, now: int) -> None:
        pending = self._pending
        while pending:
            pending.popleft()(now)
        retired = self._retired
        while retired:
            retired.popleft().close()
        page = procfs.PAGE_SIZE
        on_change = self.on_change
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
            total = 0
            lost = False
            for fd in probe.fds:
                if pread(fd, address, size, offset) > 0:
                    # "size resident shared ...": the resident pages are the second number.
                    total += int(buffer.raw.split(None, 2)[1])
                else:  # gone (ESRCH) or nothing to read
                    lost = True
            if lost:
                self._drop_lost(probe)
            rss = total * page
            probe.rss = rss
            probe.ring.append(now, rss)
            band = probe.band
            if band.lo <= rss < band.hi:  # `observe_rss`'s own fast path: nothing can change
                continue
            change = probe.classifier.observe_rss(now, rss)
            if change is not None:
                self._report(on_change, change)
        container = self._container
        if container is not None and self.cgroup is not None:
            usage = self.cgroup.usage()
            self._usage = usage
            # memory.stat is ~40 lines of text, too dear for every tick. The working set
            # never exceeds usage, and usage minus the inactive cache of the last reading
            # errs high when new cache arrives: read it afresh only while that estimate
            # is near a headroom line (a file writer at the limit triggers it only when
            # its new cache outgrows the last reading).
            if usage - self._inactive >= container.stat_gate:
                inactive = self.cgroup.inactive_file()  # before usage: see working_set()
                usage = self.cgroup.usage()
                if usage >= 0:
                    self._inactive = inactive
                    ws = max(usage - inactive, 0)
                    self._working_set = ws
                    change = container.observe(now, ws, self._container_slope or 0.0)
                    if change is not None:
                        self._report(on_change, change)

    def _drop_lost(self, probe: _Probe) -> None:
        # A process of the tree is gone: drop its reader (rare; allocating here is fine).
        keep = []
        for reader in probe.readers:
            if reader.rss_pages() < 0:
                self._retired.append(reader)
            else:
                keep.append(reader)
        probe.set_readers(tuple(keep))

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
            # Quiet round: no process was created since the previous round (the last pid is
            # unchanged) and no watched process was lost (each probe still has the readers
            # it had then). Then no tree can have gained a member, and none lost one other
            # than by a death the ticker already dropped; a lost member's children, which
            # the kernel re-parents (possibly out of the tree), show as a changed reader
            # tuple. Deaths elsewhere cannot move a process into or out of a watched tree.
            last_pid = self._last_pid.read()
            readers = tuple(probe.readers for probe in probes)
            quiet = (last_pid is not None and last_pid == self._quiet_key[0]
                     and readers == self._quiet_key[1])
            self._quiet_key = (last_pid, readers)
            table = self._table.scan(quiet=quiet)
            seen = (self._table.generation, probes)
            if seen != self._seen:  # a process came or went, or the watches changed
                self._seen = seen
                children = procfs.children_map({pid: ppid for pid, (ppid, _) in table.items()})
                for probe in probes:
                    self._rediscover(probe, table, children)
            slopes = [(probe, slope) for probe in probes
                      if (slope := self._growth(probe, now)) is not None]
            if slopes:
                self._pending.append(lambda tick_ns: self._observe_growth(tick_ns, slopes))
        if self._container is not None and self.cgroup is not None:
            self._sense_container(now)

    def _rediscover(self, probe: _Probe, table: dict[int, tuple[int, int]],
                    children: dict[int, list[int]]) -> None:
        if probe.closed:
            return
        current = {(r.pid, r.start): r for r in probe.readers}
        wanted = [probe.root, *procfs.subtree(probe.root, children)]
        keys = [(pid, table[pid][1]) for pid in wanted if pid in table]
        if all(k in current for k in keys) and len(keys) == len(current):
            return
        readers = []
        for pid, start in keys:
            reader = current.get((pid, start))
            if reader is None:
                try:
                    reader = procfs.StatmReader(pid)
                except ProcessLookupError:
                    continue
                if reader.start != start:  # the pid was reused between the scan and now
                    reader.close()
                    continue
            readers.append(reader)
        if not readers:
            return  # the root is gone; the lifecycle will unwatch it
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
            probe.set_readers(final)
            self._retired.extend(r for r in current if r not in final)

        self._pending.append(swap)

    def _growth(self, probe: _Probe, now: int) -> float | None:
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
        ts, values = list(probe.trend_t), list(probe.trend_v)
        probe.slope = resistant_slope(ts, values)
        return sustained_slope(ts, values)

    def _observe_growth(self, tick_ns: int, slopes: list[tuple[_Probe, float]]) -> None:
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
            self._usage = usage
            self._working_set = ws
            self._inactive = inactive
            for change in (container.observe(tick_ns, ws, slope or 0.0),
                           container.observe_kernel(tick_ns, events, psi, host)):
                if change is not None:
                    self._report(self.on_change, change)

        self._pending.append(observe)


__all__ = ["ContainerView", "Sampler", "SamplerStats", "WorkerView"]

"""The millisecond sampler: every worker's memory each tick, level changes out.

The main loop's interface to sensing. Two threads do the work: the *ticker*
(`ticker.Ticker`) wakes on absolute deadlines, reads each watched generation's memory,
appends it to the generation's ring and feeds the classifiers; the *discoverer*
(`discoverer.Discoverer`) follows the trees and the slow figures at the discovery cadence
and hands its results to the ticker. This class starts and stops them, takes watches and
gives the event loop consistent-enough views of what they measured.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from supervisor.core.pressure import Change, ContainerClassifier, Thresholds
from supervisor.core.units import format_duration
from supervisor.linux import procfs
from supervisor.linux.breakdown import Names, Size
from supervisor.linux.cgroup import CgroupMemory
from supervisor.linux.notify import PSI_STALL_US, PSI_WINDOW_US, Notifier
from supervisor.linux.timing import lower_switch_interval
from supervisor.linux.trees import ProcTree, Tree
from supervisor.sensing.discoverer import Discoverer
from supervisor.sensing.layout import PENDING, STOP, USAGE, SamplerStats
from supervisor.sensing.probe import Probe
from supervisor.sensing.ring import Ring
from supervisor.sensing.ticker import Ticker, choose_ticker
from workers.protocol import Level

log = logging.getLogger("memwarden.sampler")


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
    #: Each member as of the last discovery (`breakdown.Size`: pid, start, RSS, PSS in pss
    #: mode as of its last reading), for the per-process breakdown.
    sizes: tuple[Size, ...] = ()
    #: Its start-up against its worker's envelope (`Sample.startup`; {} before a discovery).
    startup: dict[str, object] = field(default_factory=dict)


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
        notify: bool = True,
    ) -> None:
        """Prepare (nothing runs until `start`). Raise ValueError for non-positive intervals,
        ConfigError for a ticker that cannot run (see `ticker.choose_ticker`).

        `measure` is "cgroup" (each watch comes with its generation's cgroup), "pss" (statm
        RSS scaled by each process's PSS share) or "rss" (statm RSS as it is). `ticker` is
        "c" or "python" (default: `choose_ticker`); `self.ticker` says which one runs.
        `thresholds` are the lines of a watch that brings none, and the container's.

        `on_change` runs on the sampler thread for every level change (workers and the
        container): it must be cheap and thread-safe. `limit` (bytes) enables the
        container classifier; `cgroup` supplies its usage, working set and kernel signals.
        `realtime` asks for SCHED_FIFO on the ticker thread (`timing.raise_to_realtime`):
        off by default, as it needs CAP_SYS_NICE and affects the host's scheduling.
        `notify` False leaves the kernel's notifications unarmed where they would be: the
        ticks alone watch memory (`scripts/bench_reaction.py` compares the two).
        """
        if interval_s <= 0 or discover_interval_s <= 0 or ring_seconds <= 0:
            raise ValueError("sampler interval, discovery interval and ring length must be > 0")
        if measure not in ("cgroup", "pss", "rss"):
            raise ValueError(f"measure must be cgroup, pss or rss, got {measure!r}")
        self.interval_ns = int(interval_s * 1e9)
        self.capacity = max(round(ring_seconds / interval_s), 1)
        self.thresholds = thresholds
        self.measure = measure
        self.ticker, self._ticker_why = choose_ticker(ticker)
        container = (ContainerClassifier(thresholds, limit)
                     if limit is not None and limit > 0 else None)
        # The kernel's notifications where generations have memory cgroups of their own;
        # `notifications` says which, or why none (for the start-up log and `status`).
        notifier = None
        if not notify:
            self._notifications = "none: not asked for"
        elif measure != "cgroup":
            self._notifications = f"none: the {measure} measure has no cgroup per generation"
        elif cgroup is None:
            self._notifications = "none: no memory cgroup"
        else:
            notifier = Notifier(cgroup.version)
            self._notifications = (
                "cgroup v1 thresholds, OOM and pressure level" if cgroup.version == 1 else
                f"cgroup v2 memory.events by inotify, PSI trigger (some "
                f"{PSI_STALL_US // 1000}ms in {PSI_WINDOW_US // 1_000_000}s)")
        self._ticking = Ticker(interval_ns=self.interval_ns, on_change=on_change,
                               cgroup=cgroup, container=container, realtime=realtime,
                               which=self.ticker, notifier=notifier,
                               burst=thresholds.confirm)
        self.stats = SamplerStats(self._ticking.control)
        self._discoverer = Discoverer(self._ticking, interval_s=discover_interval_s,
                                      thresholds=thresholds, measure=measure,
                                      ring_seconds=ring_seconds, stats=self.stats)
        window_s = thresholds.growth_window_ns / 1e9
        self._trend_points = max(int(window_s / discover_interval_s) + 2, 8)
        self._by_key: dict[str, Probe] = {}
        self._lock = threading.Lock()  # serialises watch/unwatch against each other only
        self._threads: list[threading.Thread] = []
        self._previous_switch: float | None = None
        #: The members' names and command lines, read once per process (`breakdown.Names`).
        self.names = Names()

    @property
    def notifications(self) -> str:
        """What wakes the ticker between its ticks, or "none: <why>"; a PSI trigger the
        kernel refused (said when the first generation was armed) is named with why."""
        notifier = self._ticking.notifier
        if notifier is not None and notifier.psi_refused is not None:
            return (f"cgroup v2 memory.events by inotify; no PSI trigger "
                    f"({notifier.psi_refused}): the ticks alone watch reclaim pressure")
        return self._notifications

    def start(self) -> None:
        """Start the ticker and discoverer threads; raise RuntimeError if already started.

        While running, the process-wide `sys.setswitchinterval` is lowered to a tenth of the
        interval (see `timing.lower_switch_interval`); `stop` restores it.
        """
        if self._threads:
            raise RuntimeError("sampler already started")
        self._previous_switch = lower_switch_interval(self.interval_ns / 1e9 / 10)
        self._discoverer.container_since = time.monotonic_ns()
        log.info("sampling every %s with the %s ticker (%s)",
                 format_duration(self.interval_ns / 1e9),
                 "compiled" if self.ticker == "c" else "Python", self._ticker_why)
        if self._ticking.notifier is None:
            log.info("kernel notifications: %s; the ticks alone watch memory",
                     self.notifications)
        else:
            log.info("kernel notifications: %s, between the ticks", self.notifications)
        for name, target in (("memwarden-sampler", self._ticking.run),
                             ("memwarden-discover", self._discoverer.run)):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop both threads, wait for them, and close every descriptor. Safe to call twice."""
        self._ticking.control[STOP] = 1
        self._ticking.stopping.set()
        self._discoverer.stopping.set()
        self._discoverer.wake.set()
        for thread in self._threads:
            thread.join()
        self._threads.clear()
        with self._lock:
            probes, self._ticking.probes, self._by_key = self._ticking.probes, (), {}
        for probe in probes:
            probe.closed = True  # pending work for it only closes what it opened
        self._ticking.close()
        for probe in probes:
            for reader in probe.readers:
                reader.close()
        self._discoverer.close()
        if self._ticking.notifier is not None:
            self._ticking.notifier.close()
        if self._previous_switch is not None:
            sys.setswitchinterval(self._previous_switch)
            self._previous_switch = None

    def watch(self, key: str, pid: int, tree: Tree | None = None,
              cgroup: CgroupMemory | None = None, *,
              thresholds: Thresholds | None = None) -> None:
        """Sample the generation rooted at `pid` under `key` (replacing any earlier watch of
        `key`). `tree` says who belongs to it (default: a `trees.ProcTree` of `pid`);
        `cgroup`, in cgroup mode, is its own cgroup, whose usage is then the figure;
        `thresholds` are its worker's own lines (default: the sampler's).

        Raise ProcessLookupError when `pid` is already gone. Other members join at the next
        discovery, within one discovery interval.
        """
        if self.measure == "cgroup" and cgroup is None:
            raise ValueError("in cgroup mode each watch needs the generation's cgroup")
        root = procfs.StatmReader(pid)
        if tree is None:
            tree = ProcTree(pid, root.start)
        th = thresholds or self.thresholds
        probe = Probe(key, tree, root, Ring(self.capacity), th,
                      self._trend_points, cgroup if self.measure == "cgroup" else None)
        notifier = self._ticking.notifier
        if notifier is not None and probe.cgroup is not None:
            # Before the probe is read: an earlier watch of `key` is disarmed by its
            # retirement, which goes by the armed object, not the key.
            probe.armed = notifier.arm(probe.cgroup.path, th.rss, 0)
        with self._lock:
            old = self._by_key.get(key)
            by_key = dict(self._by_key)
            by_key[key] = probe
            self._by_key = by_key
            self._ticking.probes = tuple(by_key.values())
        self._ticking.control[PENDING] = 1  # the compiled ticker takes the new probes in
        if old is not None:
            self._retire(old)
        self._discoverer.wake.set()

    def arm_shared(self, path: str) -> None:
        """Listen to reclaim pressure on the workers' common cgroup at `path`, whose limit
        is where they reclaim: the kernel reports pressure on the cgroup whose limit forced
        the reclaim and its ancestors, never on the generations below it."""
        notifier = self._ticking.notifier
        # v2 needs none: a cgroup's PSI counts the stalls of its own tasks, whichever
        # ancestor's limit forced the reclaim.
        if notifier is not None and notifier.version == 1:
            self._ticking.shared = notifier.arm(path, (None, None, None), 0, oom=False)

    def growth_from(self, key: str, t_ns: int | None = None, *,
                    said_ready: bool = False) -> None:
        """Judge `key`'s growth from `t_ns` (default now) on, typically the moment it became
        ready: the growth input speaks once a whole growth window after that has been seen
        and its start-up has ended (`said_ready`: the worker said so on the channel; else
        its start-up envelope tells). Unknown keys are ignored."""
        probe = self._by_key.get(key)
        if probe is not None:
            probe.said_ready = said_ready
            probe.since_ns = time.monotonic_ns() if t_ns is None else t_ns

    def unwatch(self, key: str) -> None:
        """Stop sampling `key`; unknown keys are ignored."""
        with self._lock:
            by_key = dict(self._by_key)
            old = by_key.pop(key, None)
            self._by_key = by_key
            self._ticking.probes = tuple(by_key.values())
        if old is not None:
            self._retire(old)

    def view(self, key: str) -> WorkerView | None:
        """Return the worker's current figures, or None when `key` is not watched."""
        probe = self._by_key.get(key)
        if probe is None:
            return None
        members = probe.members
        current = set(members)
        rollups = self._discoverer.rollups
        page = procfs.PAGE_SIZE
        return WorkerView(
            key=key,
            ring=probe.ring,
            level=probe.classifier.level,
            procs=len(members),
            memory=probe.memory,
            rss=probe.rss,
            slope=probe.slope,
            pids=tuple(pid for pid, _ in members),
            # Members gone at that reading, or since dropped by the ticker, are left out;
            # so is one that held no page (a zombie not yet reaped: statm reads all zeros).
            sizes=tuple((member[0], member[1], pages * page,
                         rollups.pss(member) if rollups is not None else None)
                        for member, pages in probe.sizes if pages > 0 and member in current),
            startup=probe.startup,
        )

    def envelope(self, worker: str) -> list[tuple[float, int]]:
        """`worker`'s start-up envelope as (age s, bytes) points ([] before it has one)."""
        return self._discoverer.envelope_points(worker)

    def container(self) -> ContainerView | None:
        """Return the container's figures, or None when no limit is known."""
        container = self._ticking.container
        if container is None:
            return None
        return ContainerView(
            working_set=self._ticking.working_set,
            usage=self._ticking.control[USAGE],
            limit=container.limit,
            level=container.level,
            slope=self._discoverer.container_slope,
        )

    def _retire(self, probe: Probe) -> None:
        # The ticker may be reading these descriptors right now, and a descriptor closed
        # under it could be reused by another open: every reader is closed by the ticker,
        # at the top of a tick, after it stopped using the tuple that held it.
        ticker = self._ticking

        def retire(_now: int) -> None:
            probe.closed = True
            ticker.retire(probe.readers)
            if ticker.notifier is not None and probe.armed is not None:
                ticker.notifier.disarm(probe.armed)
            if probe.cgroup is not None:
                probe.usage_fd = -1
                ticker.retire((probe.cgroup,))  # its kept-open usage file

        ticker.queue(retire)


__all__ = ["ContainerView", "Sampler", "SamplerStats", "WorkerView"]

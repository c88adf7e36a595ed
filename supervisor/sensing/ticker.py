"""The ticker: every watched generation's memory, each tick, on absolute deadlines.

It reads each probe's memory (`probe.Probe`: one cgroup usage file, or one kept-open statm
per process of its tree scaled by its PSS share), appends it to the probe's ring and feeds
the classifier only when the figure leaves the classifier's quiet band; it does nothing
else, so that it stays on time. Every change to what it reads (new probes, new members,
new offsets and scales, descriptors to close) is work other threads queue (`queue`) and
the ticker runs at the top of a tick (`drain`): classifier state and the descriptors it
reads are only ever touched on this thread, so they need no lock.

Two tick loops do the same work. The compiled one (`_ticker.c`, built by `pip install`
where a C compiler exists) holds no GIL while it sleeps and reads, and calls back into
Python only for Python work: `drain`, `observe` (a value outside the band), `drop_lost` (a
process gone), `container_tick` (the container near a headroom line) and `tick_failed`,
which the Python loop calls too. The Python loop is the fallback. `MEMWARDEN_TICKER=python|c`
forces one. Both share the control cells (`layout`) and the rings' storage.

The reads keep the GIL (`timing.c_pread`): a read that let it go could wait a whole switch
interval to get it back whenever the event loop is busy.

Where the kernel's notifications are armed (`notify.Notifier`), both loops wait for the
next deadline on the notifier's descriptor rather than sleeping: a threshold crossed wakes
them at the allocation, and they run the classifier's confirming run of ticks at once, on
fresh reads (`notified`, `settled`), as they do when a v2 cgroup's memory.events says it hit
a limit; the level change then names the notification as its source. The kernel checks v1
thresholds only every 128 pages charged on a CPU (`notify`'s doc), so a tick often reads the
crossing first: it then has the same confirming run made at once (`Notifier.poke`), and the
level change names the tick. OOM kills and
reclaim-pressure notifications feed the worker's classifier directly.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import replace

from supervisor.core.pressure import Change, ContainerClassifier
from supervisor.linux import procfs
from supervisor.linux.cgroup import CgroupMemory
from supervisor.linux.notify import LIMIT, OOM, THRESHOLD, TICK, Armed, Notifier, Waiter
from supervisor.linux.pss import SCALE_ONE, SCALE_SHIFT
from supervisor.linux.timing import (
    OFFSET_0,
    KeptOpen,
    ReadBuffer,
    c_pread,
    lower_timer_slack,
    raise_priority,
    raise_to_realtime,
)
from supervisor.sensing.layout import (
    INACTIVE,
    LATE,
    LAYOUT,
    MAX_LATE_NS,
    MISSED,
    NOTIFIED,
    PENDING,
    TICKS,
    USAGE,
    cells,
)
from supervisor.sensing.probe import Probe
from supervisor.settings.config import ConfigError

log = logging.getLogger("memwarden.ticker")

#: How long a worker's cgroup must stay without reclaim-pressure notifications before it is
#: listened to again (they repeat on every reclaim pass) and its calm is fed to the
#: classifier, whose dwell then lowers the level.
QUIET_NS = 100_000_000

try:
    from supervisor.sensing import _ticker
except ImportError:  # built without a C compiler: the Python tick loop runs
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
            return "c", "supervisor.sensing._ticker"
        return "python", ("supervisor.sensing._ticker is not built here: no C compiler at "
                          "install" if _ticker is None
                          else "supervisor.sensing._ticker is a stale build")
    if asked not in ("c", "python"):
        raise ConfigError(f"{source}={asked}: expected python or c")
    if asked == "c" and not BUILT:
        raise ConfigError(f"{source}=c: the compiled ticker (supervisor.sensing._ticker) is "
                          "not built here, or is stale; reinstall memwarden where a C compiler "
                          "and the Python headers exist, or use python")
    return asked, f"{source}={asked}"


class Ticker:
    """The tick side of the sampler: what it reads, the work queued for it, its counters."""

    def __init__(self, *, interval_ns: int, on_change: Callable[[Change], None],
                 cgroup: CgroupMemory | None, container: ContainerClassifier | None,
                 realtime: bool, which: str, notifier: Notifier | None = None,
                 burst: int = 1) -> None:
        self.interval_ns = interval_ns
        self.on_change = on_change
        self.cgroup = cgroup
        self.container = container  # the container's classifier (None: no limit known)
        self.realtime = realtime
        self.which = which  # "c" or "python"
        self.notifier = notifier  # the kernel's notifications (None: the ticks alone)
        self.burst = burst  # immediate ticks after a threshold: the classifier's `confirm`
        self.cause = "tick"  # what woke the reading under way (`Change.source`)
        self.confirming = False  # the immediate ticks of a notification are under way
        #: The workers' common cgroup, armed for reclaim pressure (`Sampler.arm_shared`).
        self.shared: Armed | None = None
        self.shared_ns = -QUIET_NS  # when its last notification came (< 0: listening)
        self.control = cells()
        #: What each tick reads: replaced whole by the sampler (under its lock), never mutated.
        self.probes: tuple[Probe, ...] = ()
        self.working_set = -1  # the container's, at its last reading on this thread
        #: The container's growth (bytes/s) as the discoverer last computed it (0 before).
        self.container_slope = 0.0
        self._pending: deque[Callable[[int], None]] = deque()  # run by `drain`
        self._retired: deque[KeptOpen] = deque()  # closed by `drain`
        self._buf = ReadBuffer(procfs.StatmReader.BYTES)
        self.stopping = threading.Event()

    # -- what other threads call -----------------------------------------------------------

    def queue(self, work: Callable[[int], None]) -> None:
        """Have the ticker run `work(tick_ns)` at the top of its next tick (any thread)."""
        self._pending.append(work)
        self.control[PENDING] = 1  # after the append: a drain clears it before it runs

    def retire(self, readers: Iterable[KeptOpen]) -> None:
        """Close these descriptors at the next drain; on the ticker's thread only, or once
        it has stopped."""
        self._retired.extend(readers)

    def run(self) -> None:
        """The thread's body: the compiled loop where chosen, else the Python one."""
        lower_timer_slack(1)
        # Real-time only when asked (it affects the host's scheduling); a higher priority
        # among ordinary tasks where permitted, so that a busy host does not starve ticks.
        if not (self.realtime and raise_to_realtime()):
            raise_priority()
        if self.which == "c":
            watched = self.container is not None and self.cgroup is not None
            try:
                _ticker.run(self, self.control, self.interval_ns, procfs.PAGE_SIZE,
                            self.cgroup.usage_fd if watched else -1,  # type: ignore[union-attr]
                            self.container.stat_gate if watched else 0,  # type: ignore[union-attr]
                            self.notifier.fd if self.notifier is not None else -1)
                return
            except Exception:  # a bug in the compiled ticker's set-up must not end sampling
                log.exception("the compiled sampler ticker failed; the Python ticker takes over")
        self._loop()

    def close(self) -> None:
        """Once the thread has stopped: run what is still queued, close what is retired."""
        now = time.monotonic_ns()
        while self._pending:  # retirements and swaps the ticker did not get to
            self._pending.popleft()(now)
        while self._retired:
            self._retired.popleft().close()

    # -- the Python tick loop --------------------------------------------------------------

    def _loop(self) -> None:
        interval = self.interval_ns
        tolerance = interval // 10
        control = self.control
        monotonic_ns = time.monotonic_ns
        sleep = time.sleep
        stopping = self.stopping.is_set
        waiter = Waiter(self.notifier.fd) if self.notifier is not None else None
        deadline = monotonic_ns() + interval
        while not stopping():
            now = monotonic_ns()
            if waiter is not None:
                while now < deadline and not stopping():
                    if waiter.wait(deadline - now):
                        control[NOTIFIED] += 1
                        self._immediate()
                    now = monotonic_ns()
            elif now < deadline:
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
                self.tick_failed(e)
            control[TICKS] += 1
            deadline += interval

    def _immediate(self) -> None:
        """The Python loop's part of a notification: what the compiled loop does in C."""
        try:
            for _ in range(self.notified(time.monotonic_ns())):
                self._tick(time.monotonic_ns())
        except Exception as e:
            self.tick_failed(e)
        self.settled()

    def _tick(self, now: int) -> None:
        control = self.control
        if self._pending or self._retired or control[PENDING]:
            control[PENDING] = 0  # before draining, as the compiled loop does
            self.drain(now)
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
        for probe in self.probes:
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
                    self.drop_lost(probe)
                memory = ((total * page) >> shift) + probe.offset
            probe.ring.append(now, memory)
            band = probe.band
            if band.lo <= memory < band.hi:  # `observe_rss`'s own fast path: no change
                continue
            self.observe(probe, now, memory)
        if self.container is not None and self.cgroup is not None:
            usage = self.cgroup.usage()
            control = self.control
            control[USAGE] = usage
            if usage - control[INACTIVE] >= self.container.stat_gate:
                self.container_tick(now)

    # -- what the compiled loop calls back, with the GIL; the Python loop calls them too -----

    def drain(self, now: int) -> None:
        """Run the work queued by the other threads, then close the descriptors retired."""
        pending = self._pending
        while pending:
            pending.popleft()(now)
        retired = self._retired
        while retired:
            retired.popleft().close()
        if self.notifier is not None:
            self.calm(now)

    def calm(self, now: int) -> None:
        """Follow the offsets with the thresholds, and lower what a kernel notification
        raised once its cgroup has been quiet for QUIET_NS. Run at each drain; while a
        notification holds a level or a descriptor is muted, it asks for the next drain
        itself (an idle worker queues no work that would)."""
        notifier = self.notifier
        assert notifier is not None
        again = False
        if self.shared is not None and self.shared_ns >= 0:
            if now - self.shared_ns >= QUIET_NS:
                notifier.unmute(self.shared)
                self.shared_ns = -QUIET_NS
            else:
                again = True
        for probe in self.probes:
            armed = probe.armed
            if armed is None:
                continue
            notifier.rearm(armed, probe.offset)
            if probe.kernel_ns and now - probe.kernel_ns >= QUIET_NS:
                notifier.unmute(armed)
                classifier = probe.classifier
                for change in (classifier.observe_pressure(now, 0),
                               classifier.observe_oom(now, 0)):
                    if change is not None:
                        self.report(change)
                if not classifier.kernel_held:
                    probe.kernel_ns = 0
            again = again or probe.kernel_ns != 0
        if again:
            self.control[PENDING] = 1

    def notified(self, now: int) -> int:
        """Kernel notifications woke the loop: read them; feed the OOM and pressure ones to
        their worker's classifier; return how many immediate ticks to run (a threshold:
        the classifier's confirming run, `burst`), with `cause` naming it until `settled`."""
        assert self.notifier is not None
        ticks = 0
        # Rare: allocating is fine.
        probes = {probe.armed: probe for probe in self.probes if probe.armed is not None}
        for armed, kind in self.notifier.ready():
            if armed is self.shared:
                # Reclaim under the workers' common limit: charged to the largest of them,
                # which the kernel reclaims from the most (exact with one worker).
                armed, largest = None, -1
                for probe in self.probes:
                    if probe.armed is not None and probe.memory > largest:
                        armed, largest = probe.armed, probe.memory
                self.shared_ns = now  # muted until QUIET_NS of quiet (`calm`)
            probe = probes.get(armed)
            if probe is None or probe.closed:
                continue
            if kind in (THRESHOLD, LIMIT, TICK):  # the figure may be at a line: read it now
                ticks, self.cause = self.burst, kind
                continue
            probe.kernel_ns = now
            classifier = probe.classifier
            if kind == OOM:
                change = classifier.observe_oom(now, 1)
            else:  # PRESSURE: weighed by how much of its usage is held, not cache
                change = classifier.observe_pressure(now, 1, self._held(probe))
            if change is not None:
                self.report(replace(change, source=kind))
            self.control[PENDING] = 1  # `calm` lowers it again, at drains
        self.confirming = ticks > 0
        return ticks

    @staticmethod
    def _held(probe: Probe) -> float:
        """The share of its cgroup's usage that is not file cache, read now. Not the
        working set: a file writer's fresh cache counts as active there (measured on
        6.18, where the writer of `test_page_cache_under_a_limit_stays_low` read as held)."""
        cgroup = probe.cgroup
        if cgroup is None:
            return 1.0
        stat = cgroup.stat()
        cache = stat.get("file" if cgroup.version == 2 else "total_cache", 0)
        usage = cgroup.usage()
        return max(usage - cache, 0) / usage if usage > 0 else 1.0

    def settled(self) -> None:
        """The immediate ticks of a notification are done: later readings are the ticks'."""
        self.cause = "tick"
        self.confirming = False

    def observe(self, probe: Probe, now: int, memory: int) -> None:
        """A value outside the probe's quiet band: the classifier's slow path.

        In cgroup mode the offset (inactive file cache, swap) is that of the discoverer's
        last memory.stat reading, up to a round old: a file writer's new cache reads as held
        memory until the next one. A rise out of the band is therefore judged on a fresh
        reading (tens of microseconds, only when the band is left upward), and the ticker
        takes the new offset in at its next tick.

        Where the kernel's notifications are armed, a tick that starts a run towards a
        higher level has the rest of the run read at once (`Notifier.poke`), as the
        kernel's event would have, rather than over the next ticks.
        """
        cgroup = probe.cgroup
        if cgroup is not None and memory >= probe.band.hi:
            offset = cgroup.swap() - cgroup.inactive_file()  # before usage, as the discoverer
            usage = cgroup.usage()
            if usage >= 0:
                memory = max(usage + offset, 0)
                probe.stat_ns, probe.stat_usage = now, usage
                if offset != probe.offset:
                    probe.offset = offset
                    self.control[PENDING] = 1
        change = probe.classifier.observe_rss(now, memory)
        if change is not None:
            self.report(change)
        elif probe.armed is not None and not self.confirming and probe.band.rising:
            self.notifier.poke(probe.armed)  # type: ignore[union-attr]

    def container_tick(self, now: int) -> None:
        """The container's working set, read afresh because its usage is near a headroom line.

        memory.stat is ~40 lines of text, too dear for every tick. The working set never
        exceeds usage, and usage minus the inactive cache of the last reading errs high when
        new cache arrives: the ticker calls this only while that estimate reaches the
        classifier's `stat_gate` (a file writer at the limit triggers it only when its new
        cache outgrows the last reading).
        """
        cgroup, container = self.cgroup, self.container
        assert cgroup is not None and container is not None
        inactive = cgroup.inactive_file()  # before usage: see CgroupMemory.working_set()
        usage = cgroup.usage()
        if usage >= 0:
            self.control[INACTIVE] = inactive
            ws = max(usage - inactive, 0)
            self.working_set = ws
            change = container.observe(now, ws, self.container_slope)
            if change is not None:
                self.report(change)

    def drop_lost(self, probe: Probe) -> None:
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
        self.control[PENDING] = 1

    @staticmethod
    def tick_failed(error: BaseException) -> None:
        log.error("sampler tick failed; sampling goes on", exc_info=error)

    def report(self, change: Change) -> None:
        """Hand a level change on (on this thread); a failing handler is logged, not raised."""
        if self.cause != "tick" and change.source == "tick":
            change = replace(change, source=self.cause)
        try:
            self.on_change(change)
        except Exception:
            log.exception("level change handler failed for %s", change)


__all__ = ["BUILT", "Ticker", "choose_ticker"]

"""Kernel memory notifications: the cgroup v1 event interfaces, behind one epoll set.

The kernel sees every charge; asking it to wake us costs nothing between events, where
polling costs a read per tick. A generation's v1 memory cgroup offers three notifications
(`cgroup.event_control`, written "<eventfd> <file fd> <argument>"):

* `memory.usage_in_bytes` with thresholds: signalled by the allocation that crosses one,
  either way (tried here: the event came with usage at 104,857,600 for a 100 MiB line, and
  again on the way down). One eventfd carries several thresholds; closing it unregisters them, so
  re-arming at new figures is a new eventfd.
* `memory.oom_control`: signalled when the cgroup's OOM killer is about to act, before the
  kill (the victim's exit is reaped after it).
* `memory.pressure_level` "medium": reclaim is struggling. Signalled on every reclaim pass
  (hundreds a second at a limit, measured here), so its reader rate-limits what it hands on.

Every eventfd is in one epoll set, whose descriptor the tick loops wait on (`fd`): a ready
epoll descriptor is readable, so a loop needs to wait on one descriptor only, however many
generations are armed. `ready()` reads (clears) what fired and says whose it was.

Not built yet: the v2 interfaces (`memory.events` by inotify, PSI triggers on a cgroup's
`memory.pressure`): memwarden's generation cgroups are v1 on the machines it was tried on.

A cgroup removed while armed must not turn into an event. v1 signals each of its eventfds
once, after the directory is gone (tried here: each woke within 30 ms of the rmdir and read
1, as a real event does: an OOM one would have read as CRITICAL); a descriptor whose file
is gone reports EPOLLERR for ever, and epoll reports that even on a muted descriptor. So
a descriptor that fires with an error, or whose cgroup directory no longer exists, has
every descriptor of its cgroup closed and taken out of the set, counted in `dropped`, and
is never reported.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import select
import threading
from dataclasses import dataclass

log = logging.getLogger("memwarden.notify")

#: What fired, as the level records and the log name it.
THRESHOLD, OOM, PRESSURE = "threshold", "oom", "pressure"
#: How far the offset between usage and the compared figure may move before the thresholds
#: are re-armed: a line is then at most this far from where the figure crosses it, and the
#: ticks still catch what the event misses.
REARM_STEP = 1 << 20


@dataclass(eq=False)
class Armed:
    """One generation's eventfds and what its thresholds were armed at."""

    path: str
    threshold_fd: int = -1
    oom_fd: int = -1
    pressure_fd: int = -1
    lines: tuple[int, ...] = ()  # the lines on the compared figure
    offset: int = 0  # the offset the usage thresholds were computed with


def _register(path: str, name: str, *arguments: str) -> int:
    """A fresh eventfd registered on `path`/`name` once per argument (none: once, bare);
    raise OSError. One write registers one argument: the kernel refuses "<efd> <fd> 1 2"
    with EINVAL (tried here), so several thresholds are several writes on one eventfd."""
    efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
    try:
        target = os.open(os.path.join(path, name), os.O_RDONLY | os.O_CLOEXEC)
        try:
            control = os.open(os.path.join(path, "cgroup.event_control"),
                              os.O_WRONLY | os.O_CLOEXEC)
            try:
                for argument in arguments or ("",):
                    os.write(control, f"{efd} {target} {argument}".rstrip().encode())
            finally:
                os.close(control)
        finally:
            os.close(target)
    except OSError:
        os.close(efd)
        raise
    return efd


def usage_lines(lines: tuple[float | None, ...], offset: int) -> tuple[str, ...]:
    """The usage thresholds for lines on the compared figure (usage + offset)."""
    return tuple(str(max(int(line) - offset, 1)) for line in lines if line is not None)


class Notifier:
    """The armed notifications of every watched generation, in one epoll set.

    `arm` is called by the thread that takes the watch, everything else by the ticker
    (which polls the descriptors `disarm` closes); the map of descriptors is replaced whole,
    never mutated, so a reader sees one or the other, and the writers of both threads take
    `_lock` so that neither replaces the map with a copy that misses the other's change.
    """

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self.fd = self._epoll.fileno()
        self._by_fd: dict[int, tuple[Armed, str]] = {}
        self._lock = threading.Lock()
        #: Descriptors closed because their cgroup was gone (removed, or reporting an error).
        self.dropped = 0

    @staticmethod
    def available(version: int) -> bool:
        """Whether generations of a cgroup of this version can be armed (v1 only, so far)."""
        return version == 1

    def arm(self, path: str, lines: tuple[float | None, ...], offset: int, *,
            oom: bool = True) -> Armed | None:
        """Arm the cgroup at `path`: its thresholds at `lines` (on the compared figure), the
        OOM notification (unless `oom` is False) and the medium pressure level. Return None
        (logged at debug) when the kernel refuses; the ticks alone then watch it."""
        armed = Armed(path, offset=offset,
                       lines=tuple(int(x) for x in lines if x is not None))
        try:
            if armed.lines:
                armed.threshold_fd = _register(path, "memory.usage_in_bytes",
                                               *usage_lines(lines, offset))
            if oom:
                armed.oom_fd = _register(path, "memory.oom_control")
            armed.pressure_fd = _register(path, "memory.pressure_level", "medium")
        except OSError as e:
            log.debug("cannot arm notifications on %s: %s", path, e.strerror or e)
            self._close(armed)
            return None
        with self._lock:
            by_fd = dict(self._by_fd)
            for fd, kind in ((armed.threshold_fd, THRESHOLD), (armed.oom_fd, OOM),
                             (armed.pressure_fd, PRESSURE)):
                if fd >= 0:
                    by_fd[fd] = (armed, kind)
            self._by_fd = by_fd
        for fd in (armed.threshold_fd, armed.oom_fd, armed.pressure_fd):
            if fd >= 0:
                self._epoll.register(fd, select.EPOLLIN)
        return armed

    def rearm(self, armed: Armed, offset: int) -> bool:
        """Re-arm the thresholds for a new offset when it moved by more than REARM_STEP;
        return whether it did."""
        if armed.threshold_fd < 0 or abs(offset - armed.offset) <= REARM_STEP:
            return False
        try:
            fd = _register(armed.path, "memory.usage_in_bytes",
                           *usage_lines(armed.lines, offset))
        except OSError:
            return False  # the cgroup is going away: the old lines stay until disarmed
        old, armed.threshold_fd, armed.offset = armed.threshold_fd, fd, offset
        with self._lock:
            by_fd = {k: v for k, v in self._by_fd.items() if k != old}
            by_fd[fd] = (armed, THRESHOLD)
            self._by_fd = by_fd
        self._epoll.register(fd, select.EPOLLIN)
        self._forget(old)
        return True

    def disarm(self, armed: Armed) -> None:
        """Close its eventfds (which unregisters them from the cgroup)."""
        self._close(armed)

    def ready(self) -> list[tuple[Armed, str]]:
        """Read (clear) every eventfd that fired; return (armed, kind) for each, leaving out
        (and dropping) the descriptors of a cgroup that is gone. Never blocks."""
        out: list[tuple[Armed, str]] = []
        gone: set[int] = set()  # closed in this call: their numbers may be reused meanwhile
        for fd, events in self._epoll.poll(0):
            entry = self._by_fd.get(fd)
            if entry is None or fd in gone:  # forgotten meanwhile: never leave it in the set
                if fd not in gone:
                    with contextlib.suppress(OSError):
                        self._epoll.unregister(fd)
                continue
            if events & (select.EPOLLERR | select.EPOLLHUP) or not os.path.isdir(entry[0].path):
                gone.update(self._drop(entry[0]))  # would be ready for ever, or a false event
                continue
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(fd)
            if entry[1] == PRESSURE:  # repeats on every reclaim pass: muted until `unmute`
                with contextlib.suppress(OSError):
                    self._epoll.modify(fd, 0)
            out.append(entry)
        return out

    def unmute(self, armed: Armed) -> None:
        """Listen again to its pressure notifications, muted since the last one."""
        if armed.pressure_fd >= 0:
            with contextlib.suppress(OSError):
                self._epoll.modify(armed.pressure_fd, select.EPOLLIN)

    def close(self) -> None:
        """Close every eventfd still armed, and the epoll set."""
        for fd in list(self._by_fd):
            self._forget(fd)
        self._epoll.close()

    def _drop(self, armed: Armed) -> tuple[int, ...]:
        """Its cgroup is gone: close all its descriptors, count them, return them."""
        fds = tuple(fd for fd in (armed.threshold_fd, armed.oom_fd, armed.pressure_fd)
                    if fd >= 0)
        log.debug("%s is gone: its %d notification descriptor(s) are dropped", armed.path,
                  len(fds))
        self._close(armed)
        self.dropped += len(fds)
        return fds

    def _close(self, armed: Armed) -> None:
        for fd in (armed.threshold_fd, armed.oom_fd, armed.pressure_fd):
            if fd >= 0:
                self._forget(fd)
        armed.threshold_fd = armed.oom_fd = armed.pressure_fd = -1

    def _forget(self, fd: int) -> None:
        with self._lock:
            self._by_fd = {k: v for k, v in self._by_fd.items() if k != fd}
        with contextlib.suppress(OSError):
            self._epoll.unregister(fd)
        with contextlib.suppress(OSError):
            os.close(fd)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _PollFd(ctypes.Structure):
    _fields_ = [("fd", ctypes.c_int), ("events", ctypes.c_short), ("revents", ctypes.c_short)]


class Waiter:
    """ppoll on one descriptor with a nanosecond timeout, for the Python tick loop.

    Why ctypes: `select.poll` and `select.epoll` take milliseconds (rounded up), which at a
    1 ms interval would make most ticks late; `time.sleep` cannot be woken by a descriptor.
    The structures are allocated once; each wait sets four integers and makes one call.
    Measured on a shared 2-vCPU host (the Python loop alone at 1 ms, 3 s, three runs each):
    late ticks 100-284 with `time.sleep`, 105-500 with this; missed 22-40 against 4-22;
    within the host's noise either way.
    """

    def __init__(self, fd: int) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._ppoll = libc.ppoll
        self._ppoll.argtypes = (ctypes.c_void_p, ctypes.c_ulong, ctypes.c_void_p,
                                ctypes.c_void_p)
        self._ppoll.restype = ctypes.c_int
        self._pfd = _PollFd(fd, select.POLLIN, 0)
        self._ts = _Timespec(0, 0)
        self._pfd_p = ctypes.addressof(self._pfd)
        self._ts_p = ctypes.addressof(self._ts)

    def wait(self, ns: int) -> bool:
        """Wait up to `ns` nanoseconds; return whether the descriptor became readable."""
        ts = self._ts
        ts.tv_sec, ts.tv_nsec = divmod(ns, 1_000_000_000)
        got = self._ppoll(self._pfd_p, 1, self._ts_p, None)
        if got < 0 and ctypes.get_errno() != errno.EINTR:
            raise OSError(ctypes.get_errno(), "ppoll")
        return got > 0


__all__ = ["OOM", "PRESSURE", "REARM_STEP", "THRESHOLD", "Armed", "Notifier", "Waiter",
           "usage_lines"]

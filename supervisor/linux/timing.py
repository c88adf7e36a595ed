"""What keeps the sampler thread on time: timer slack, GIL hand-off and GIL-keeping reads.

The sampler thread shares the GIL with the event loop. Two things decide how late its tick
runs when the loop is busy: how long a waiting thread waits before the holder is asked to
let go (`sys.getswitchinterval()`, 5 ms by default), and how often the sampler gives the
GIL away. It gives it away once per sleep, unavoidably; `GilRead` avoids giving it away
once more per file read.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
import threading

log = logging.getLogger("memwarden.timing")

_PR_SET_TIMERSLACK = 29

# Why a ctypes call into libc rather than os.pread: os.pread releases the GIL around the
# system call, and re-taking it can cost a whole switch interval when another thread is
# busy, once per read. Measured on a 2-vCPU VM with a thread encoding JSON and 100
# reads of statm per 1 ms tick: os.pread gave a median tick delay of 5 ms and a p99 of
# 350 ms; the same reads through a PyDLL function (which keeps the GIL; the kernel
# answers a /proc or cgroup read of a few bytes in well under a microsecond) kept the
# tick on time. os.preadv into a
# bytearray was slower than os.pread and has the same hand-off.
_libc = ctypes.PyDLL(None, use_errno=True)  # the process's own C library (Linux only)

#: pread(fd: int, address: c_void_p, size: c_size_t, offset: c_long) -> bytes read or -1,
#: without releasing the GIL. No `argtypes` on purpose: converting arguments through them
#: cost 270 ns of a 830 ns call here; callers pass ready-made ctypes values (`ReadBuffer`,
#: `OFFSET_0`) instead, and a plain int only for the descriptor (a C int either way).
c_pread = _libc.pread
c_pread.restype = ctypes.c_ssize_t
OFFSET_0 = ctypes.c_long(0)

_c_prctl = _libc.prctl
_c_prctl.restype = ctypes.c_int
_c_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


class ReadBuffer:
    """A preallocated buffer for `c_pread`; `raw` is its whole content (stale bytes included)."""

    __slots__ = ("address", "buffer", "size")

    def __init__(self, size: int) -> None:
        self.buffer = ctypes.create_string_buffer(size)
        self.address = ctypes.c_void_p(ctypes.addressof(self.buffer))
        self.size = ctypes.c_size_t(size)


class GilRead:
    """Repeated reads of the start of one open file into its own preallocated buffer."""

    __slots__ = ("_buf", "fd")

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self._buf = ReadBuffer(size)

    def read(self) -> bytes | None:
        """Return `size` bytes read from offset 0 (the tail may be stale or NUL); None on error
        or an empty read. Callers parse only up to the first newline."""
        buf = self._buf
        n = c_pread(self.fd, buf.address, buf.size, OFFSET_0)
        return buf.buffer.raw if n > 0 else None

    def close(self) -> None:
        """Close the descriptor; later reads return None. Safe to call twice."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


def read_whole(path: str) -> bytes | None:
    """A small kernel file, whole, with plain system calls (None when it cannot be read):
    the discoverer reads one per worker and round, and a buffered file object cost three
    quarters of each read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 16384):
            chunks.append(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


class KeptOpen:
    """Base of an object whose one kept-open file is the `GilRead` in its `_reader`.

    `close()` closes that descriptor and is safe to call twice, also on an object whose
    `__init__` raised before opening it; collecting the object closes it too, so a reader
    dropped without `close()` does not leak its descriptor.
    """

    __slots__ = ()

    _reader: GilRead

    def close(self) -> None:
        """Close the kept-open descriptor; later reads report it unreadable (-1)."""
        reader = getattr(self, "_reader", None)  # absent when __init__ raised
        if reader is not None:
            reader.close()

    def __del__(self) -> None:
        self.close()


def lower_timer_slack(ns: int = 1) -> bool:
    """Set the calling thread's timer slack (default 50 us) to `ns`; False if not possible.

    Timer slack lets the kernel defer a sleeping thread's wake-up to batch timers; at a 1 ms
    interval the default 50 us is 5 % of the period.
    """
    return _c_prctl(_PR_SET_TIMERSLACK, ns, 0, 0, 0) == 0


def raise_to_realtime(priority: int = 10) -> bool:
    """Put the calling thread under SCHED_FIFO at `priority`; False when not permitted.

    A real-time thread is woken on time even when every core is busy with ordinary tasks:
    measured on a 2-vCPU VM with 100 workers at 1 ms, missed ticks fell from 0.4-1.7 % to 0-0.1 %
    with another thread encoding JSON, and max lateness from several ms to about 1 ms.
    SCHED_RESET_ON_FORK keeps the policy from leaking into anything this thread forks.
    Needs CAP_SYS_NICE (root outside a container); without it nothing changes. The kernel's
    real-time throttling (95 % of a CPU by default) still bounds a thread gone wrong.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK,
                              os.sched_param(priority))
    except (OSError, AttributeError) as e:
        log.info("sampler stays at normal priority (SCHED_FIFO refused: %s)", e)
        return False
    return True


#: The sampler thread's nice value where it may raise its own priority: ahead of ordinary
#: tasks (nice 0) on a busy host, still behind anything an administrator raised further,
#: and never real-time (see `raise_to_realtime` for that, asked for explicitly).
SAMPLER_NICE = -10


def raise_priority(nice: int = SAMPLER_NICE) -> bool:
    """Give the calling thread (only: Linux keeps a nice value per thread) the nice value
    `nice`; False, said once in the log, when not permitted.

    A thread at nice 0 on a host whose cores are busy with other nice-0 tasks gets its turn
    late, and a 1 ms tick late is a tick missed. Lowering nice needs CAP_SYS_NICE or a high
    enough RLIMIT_NICE; without them the thread stays where it is. Anything the thread
    forks would inherit the value: the sampler thread forks nothing.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except OSError as e:
        log.info("sampler thread stays at the normal nice value (nice %d refused: %s)",
                 nice, e)
        return False
    return True


def lower_switch_interval(limit_s: float) -> float | None:
    """Lower `sys.setswitchinterval` to at most `limit_s`; return the previous value if changed.

    A thread waking from its sleep waits up to one switch interval for a busy thread to let
    go of the GIL; the process-wide default of 5 ms is five whole 1 ms ticks.
    """
    previous = sys.getswitchinterval()
    if previous <= limit_s:
        return None
    sys.setswitchinterval(limit_s)
    log.debug("switch interval lowered from %s s to %s s for the sampler", previous, limit_s)
    return previous


__all__ = [
    "OFFSET_0",
    "SAMPLER_NICE",
    "GilRead",
    "KeptOpen",
    "ReadBuffer",
    "c_pread",
    "lower_switch_interval",
    "lower_timer_slack",
    "raise_priority",
    "raise_to_realtime",
]

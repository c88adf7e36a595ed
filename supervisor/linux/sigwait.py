"""The signals memwarden forwards only when another process sent them.

PIPE and XFSZ also report memwarden's own writes (a closed pipe, a file past its size
limit), and SEGV, BUS, ILL, FPE, TRAP and SYS a fault of memwarden itself: a handler
cannot tell those from the same signal sent with kill(1), and a handler returning to a
faulting instruction would loop on it. So these are blocked in every thread and taken by
one thread waiting in sigwaitinfo, which sees only what was sent to the whole process: what
the kernel raises for a write or a fault is directed at the thread that did it. Such a
fault, blocked, still ends memwarden at once (the kernel unblocks it and takes the default
action), and a write's signal stays pending on its thread and its call fails with EPIPE
or EFBIG, as without the block. What the waiting thread takes is handed to the event loop
through a pipe, one byte per signal, and forwarded like any other.

Children must not inherit the block: `unblocked()` lifts it on the spawning thread while
it forks, with PIPE and XFSZ ignored there and the faults at their default, so a signal
arriving in that moment is dropped (PIPE, XFSZ) or, for a fault signal sent by kill,
ends memwarden exactly as it would without any of this.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import AsyncIterator, Iterator

import anyio

WAITED = frozenset({
    signal.SIGPIPE, signal.SIGXFSZ,
    signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGTRAP, signal.SIGSYS,
})


def block() -> None:
    """Block WAITED in the calling thread, and so in every thread it starts from now on.

    Called before memwarden starts its first thread: a thread with one of them unblocked
    would take a SEGV sent by kill(1) and die with the process.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)


@contextlib.contextmanager
def unblocked() -> Iterator[None]:
    """Lift the block on this thread while a child is forked, so that the child starts with
    no signal blocked. A PIPE its own writes left pending on this thread is then delivered,
    and ignored."""
    previous = signal.pthread_sigmask(signal.SIG_UNBLOCK, WAITED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Waiter:
    """A thread that takes the WAITED signals sent by other processes and passes their
    numbers on to `received()`."""

    def __init__(self) -> None:
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="memwarden-sigwait",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """End the thread (it wakes on a signal directed at it) and close the pipe."""
        self._stopping = True
        if self._thread.ident is not None and self._thread.is_alive():
            signal.pthread_kill(self._thread.ident, signal.SIGPIPE)
            self._thread.join()
        os.close(self._read)
        os.close(self._write)

    def _run(self) -> None:
        me = os.getpid()
        while True:
            info = signal.sigwaitinfo(WAITED)
            if self._stopping:
                return
            # Sent by a process (kill, sigqueue, tgkill): si_code <= 0. Raised by the
            # kernel for one of our own threads: directed at that thread, never seen here;
            # the pid check is a second guard.
            if info.si_code <= 0 and info.si_pid != me:
                with contextlib.suppress(BlockingIOError):  # 64 KiB of signals unread
                    os.write(self._write, bytes((info.si_signo,)))

    async def received(self) -> AsyncIterator[int]:
        """Each signal taken, in order, for as long as the waiter runs."""
        while True:
            await anyio.wait_readable(self._read)
            with contextlib.suppress(BlockingIOError):
                for signum in os.read(self._read, 4096):
                    yield signum

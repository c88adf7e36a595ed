"""Stopping one generation by escalation, the same for every reason to stop it.

1. A cooperative worker (it spoke on its channel) is sent `shutdown` and given up to the
   grace to save and exit by itself.
2. Every process still in its tree gets SIGTERM, and each gets the grace from the moment
   *it* was signalled: a browser's children that are still flushing when the main process
   has already exited are not cut short. Members that appear later (forked during the
   shutdown, or found once their parent exited) are signalled when seen, with a grace of
   their own.
3. Whatever is still running at its deadline gets SIGKILL.

Retirements, `memwarden stop`, memwarden's own TERM and the leftovers of a generation
whose main process exited by itself all go through `stop_generation`.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable

import anyio

from supervisor.core.exitstatus import signal_name
from supervisor.core.units import format_duration
from supervisor.linux import process
from supervisor.loop.handles import Handle

log = logging.getLogger("memwarden.stopping")

#: How often the tree is looked at while it stops (one /proc scan each time).
POLL_S = 0.05
#: How long processes sent SIGKILL may take to vanish before memwarden stops waiting for
#: them (a process in uninterruptible sleep cannot die until its I/O ends).
KILL_WAIT_S = 5.0

Emit = Callable[..., object]


async def stop_generation(h: Handle, grace: float, *, shutdown: Callable[[], bool],
                          emit: Emit, sig: int = signal.SIGTERM) -> None:
    """Stop `h` by escalation (see the module docstring); return once its root has been
    reaped and no member of its tree is left, or KILL_WAIT_S after the last SIGKILL.

    `shutdown` sends the channel's `shutdown` message and returns whether it went out;
    `emit` records an event (`EventLog.emit`); `sig` replaces SIGTERM (memwarden stopped by
    SIGINT passes SIGINT on, as a shell's Ctrl-C would). Never raises for processes that
    vanish.
    """
    h.stopping = True
    try:
        if h.alive and h.spoke and shutdown():
            h.told_shutdown = True
            with anyio.move_on_after(grace):
                await h.exited.wait()
        await _escalate(h, grace, emit, sig)
    finally:
        h.stopped.set()


async def _escalate(h: Handle, grace: float, emit: Emit, sig: int) -> None:
    deadlines: dict[tuple[int, int], float] = {}
    killed_at: float | None = None
    while True:
        members = h.tree.members()
        if not members and not h.alive:
            return
        now = time.monotonic()
        fresh = [m for m in members if m not in deadlines]
        if fresh:
            # The group first (it also reaches members forked since the scan), then each
            # member that left the group by pid and start time. Never twice: a second TERM
            # can land while a worker's handler is already exiting and kill it by the signal.
            grouped = h.alive and process.signal_group(h.child, sig)
            process.signal_pids([m for m in fresh
                                 if not (grouped and process.in_group(m[0], h.child.pgid))],
                                sig)
            h.signalled.add(sig)
            for m in fresh:
                deadlines[m] = now + grace
        overdue = [m for m in members if deadlines[m] <= now]
        if overdue:
            if killed_at is None:
                killed_at = now
                emit("kill", f"still running {format_duration(grace)} after {signal_name(sig)}: "
                     f"SIGKILL to {_count(overdue)} ({_pids(overdue)})",
                     worker=h.worker, generation=h.number, pid=h.pid)
            h.signalled.add(signal.SIGKILL)
            if h.cgroup is not None and len(overdue) == len(members):
                h.cgroup.kill()  # the whole cgroup at once, forks under way included
            else:
                process.signal_pids(overdue, signal.SIGKILL)
        if killed_at is not None and now - killed_at > KILL_WAIT_S:
            log.error("[%s gen %d] %s still not gone %gs after SIGKILL (uninterruptible "
                      "sleep?)", h.worker, h.number, _pids(members), KILL_WAIT_S)
            return
        wait = min([POLL_S, *(d - now for d in deadlines.values() if d > now)])
        if h.alive:  # woken early by the root's exit, which usually ends the tree
            with anyio.move_on_after(max(wait, 0.001)):
                await h.exited.wait()
        else:
            await anyio.sleep(max(wait, 0.001))


def _count(members: list[tuple[int, int]]) -> str:
    return "1 process" if len(members) == 1 else f"{len(members)} processes"


def _pids(members: list[tuple[int, int]]) -> str:
    shown = ", ".join(f"pid {pid}" for pid, _ in members[:8])
    return shown + (f" and {len(members) - 8} more" if len(members) > 8 else "")


__all__ = ["KILL_WAIT_S", "POLL_S", "stop_generation"]

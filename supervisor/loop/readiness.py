"""Readiness probes, run on the event loop: is a starting generation serving yet?

One attempt answers `Answer(ok, detail)`; `Prober.until_ready` repeats attempts until one
succeeds or the generation is no longer waiting (ready by the channel, failed, gone). How
long it may take is not decided here: the policy's ready timeout turns a replacement that
never answered into a failed start, and the arbiter logs the probe's last answer with it.

Every attempt is bounded (`ATTEMPT_S`): a probe that hangs (an HTTP server that accepts and
never answers) is a failed attempt, not a stuck loop. The exec probe's process is reaped by
the one reaper (`linux.reaper`): the arbiter hands its exit status over by pid (`exited`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import anyio.abc

from supervisor.core.exitstatus import ExitStatus
from supervisor.linux import handoff
from supervisor.settings.probes import Probe

#: The longest one attempt may take.
ATTEMPT_S = 2.0
#: The pause between attempts: a server that is up is seen within this; a probe costs a
#: connection (an exec probe a process) per pause, negligible at this rate.
PAUSE_S = 0.1
#: How often a connection still in the backlog is looked at again.
ACCEPT_POLL_S = 0.01
#: How far a file's timestamp may lag the clock it is compared with.
COARSE_S = 0.01
#: The most of an HTTP answer read: the status line is all a probe needs.
HEAD_BYTES = 4096


@dataclass(frozen=True, slots=True)
class Answer:
    """One attempt: `ok`, and what it saw, for people ("HTTP 200", "connection refused")."""

    ok: bool
    detail: str


class Prober:
    """Runs one worker's probe against one generation started at `started_wall` (time.time()
    of its start: `ready_file` must be newer)."""

    def __init__(self, probe: Probe, started_wall: float, *, cwd: str | None = None,
                 env: dict[str, str] | None = None,
                 members: Callable[[], list[int]] | None = None) -> None:
        """`members` lists the generation's processes: a TCP or HTTP probe counts only when
        one of them accepted its connection (`handoff.accepted_by`), not the generation it
        replaces, which holds the same port or shares the same handed-over socket."""
        self.probe = probe
        self.members = members
        self.started_wall = started_wall
        self.cwd = cwd
        self.env = env
        self.attempts = 0
        self.last: Answer | None = None
        self._exits: dict[int, tuple[anyio.Event, list[int]]] = {}

    async def until_ready(self, waiting: Callable[[], bool]) -> Answer | None:
        """Attempt until one succeeds (its Answer) or `waiting()` turns false (None)."""
        while waiting():
            answer = await self.attempt()
            self.attempts += 1
            self.last = answer
            if answer.ok:
                return answer
            await anyio.sleep(PAUSE_S)
        return None

    async def attempt(self) -> Answer:
        """One bounded attempt."""
        p = self.probe
        with anyio.move_on_after(ATTEMPT_S):
            if p.kind in ("tcp", "http"):
                return await self._connect(p)
            if p.kind == "exec":
                return await self._exec(p)
            return _file(p, self.started_wall)
        return Answer(False, f"no answer within {ATTEMPT_S:g}s")

    # -- exec: the reaper owns waitpid, so the exit comes back through `exited` ----------

    def owns(self, pid: int) -> bool:
        """Whether `pid` is one of this prober's commands."""
        return pid in self._exits

    def exited(self, pid: int, raw: int) -> None:
        """The reaper collected our command `pid` with wait status `raw`."""
        entry = self._exits.get(pid)
        if entry is not None:
            entry[1].append(raw)
            entry[0].set()

    async def _exec(self, p: Probe) -> Answer:
        try:
            popen = subprocess.Popen(
                list(p.argv), cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, process_group=0)
        except OSError as e:
            return Answer(False, f"cannot run {p.argv[0]!r}: {e.strerror or e}")
        done, status = anyio.Event(), []
        self._exits[popen.pid] = (done, status)
        try:
            await done.wait()
        finally:
            if status:
                del self._exits[popen.pid]
            else:  # cancelled by the attempt's bound: end it; the reaper reaps it
                with contextlib.suppress(OSError):
                    os.killpg(popen.pid, signal.SIGKILL)
            popen.returncode = status[0] if status else -1  # never waited on by subprocess
        exit = ExitStatus.from_wait(status[0])
        return Answer(exit.ok, f"{p.argv[0]} {exit.describe()}")


    # -- tcp and http: which generation accepted? ----------------------------------------

    async def _connect(self, p: Probe) -> Answer:
        try:
            stream = await anyio.connect_tcp(p.host, p.port)
        except OSError as e:
            return Answer(False, _error(e))
        async with stream:
            who = await self._accepted(stream, p)
            if who is not None:
                return who
            if p.kind == "tcp":
                return Answer(True, f"connection to {p.text} accepted")
            return await _http(stream, p)

    async def _accepted(self, stream: anyio.abc.SocketStream, p: Probe) -> Answer | None:
        """None once a process of this generation has accepted the connection; else why
        the attempt does not count. Waits while the connection is in the backlog."""
        if self.members is None:
            return None
        client_port = stream.extra(anyio.abc.SocketAttribute.local_port)
        while True:
            holder = handoff.accepted_by(p.port, client_port, self.members)
            if holder is not None and holder > 0:
                return None
            if holder == -1:
                return Answer(False, f"port {p.port} closed the connection before memwarden "
                              "could see which process accepted it")
            if holder == 0:
                return Answer(False, f"port {p.port} answered by another process, not this "
                              "generation (the one it replaces?)")
            await anyio.sleep(ACCEPT_POLL_S)


async def _http(stream: anyio.abc.SocketStream, p: Probe) -> Answer:
    host = f"[{p.host}]" if ":" in p.host else p.host
    request = (f"GET {p.path} HTTP/1.1\r\nHost: {host}:{p.port}\r\n"
               "User-Agent: memwarden-ready\r\nConnection: close\r\n\r\n")
    head = b""
    try:
        await stream.send(request.encode("latin-1", "replace"))
        while b"\r\n" not in head and len(head) < HEAD_BYTES:
            head += await stream.receive(HEAD_BYTES)
    except (OSError, anyio.EndOfStream, anyio.BrokenResourceError) as e:
        if not head:
            return Answer(False, f"no answer ({_error(e)})")
    line = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    parts = line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return Answer(False, f"not an HTTP answer: {line[:80]!r}")
    code = int(parts[1])
    return Answer(200 <= code < 400, f"HTTP {code}")


def _file(p: Probe, started_wall: float) -> Answer:
    try:
        st = os.stat(p.path)
    except OSError as e:
        return Answer(False, f"{p.path}: {e.strerror or e}")
    # Files are stamped from the kernel's coarse clock, up to a tick (10 ms at HZ=100)
    # behind the time the generation's start was taken from.
    if st.st_mtime < started_wall - COARSE_S:
        return Answer(False, f"{p.path} is older than the generation")
    return Answer(True, f"{p.path} written")


def _error(e: BaseException) -> str:
    # anyio's connect_tcp wraps the last attempt's error ("All connection attempts failed").
    if isinstance(e.__cause__, OSError):
        e = e.__cause__
    if isinstance(e, OSError) and e.errno:
        return os.strerror(e.errno).lower()
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return str(e) or type(e).__name__


def wall_of(monotonic: float) -> float:
    """The wall-clock time of a monotonic instant: a file's mtime is wall-clock."""
    return time.time() - (time.monotonic() - monotonic)


__all__ = ["ATTEMPT_S", "PAUSE_S", "Answer", "Prober", "wall_of"]

"""Starting and signalling worker processes: the one place that forks, execs and kills.

Workers run in their own process group with PR_SET_PDEATHSIG, a raised oom_score_adj and
the channel socket inherited. Nothing here waits for a child: the reaper owns `waitpid`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from supervisor.linux import prctl as linux
from supervisor.linux import procfs, sigwait
from workers import protocol

log = logging.getLogger("memwarden.process")

#: Signals the supervisor does not act on. It catches them with a no-op handler rather than
#: SIG_IGN, because an ignored disposition would survive exec into the worker.
SWALLOWED = (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU)


def _find_setpriv() -> str | None:
    """util-linux setpriv, if it can set the parent-death signal (2.33 and later)."""
    path = shutil.which("setpriv")
    if path is None:
        return None
    try:
        text = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return path if "--pdeathsig" in text else None


# Why a launcher: PR_SET_PDEATHSIG must be set by the child itself. Doing it in a
# preexec_fn forces subprocess to fork() the whole supervisor instead of vfork(): 1.6 ms
# and up to 9 ms per start measured on a 2-vCPU VM, against 0.14 ms with setpriv, which sets the
# signal and execs the worker (same pid). The preexec path remains for machines without
# setpriv and for the terminal hand-over, which must happen before the worker runs.
_SETPRIV = _find_setpriv()
#: util-linux choom sets the worker's oom_score_adj before it runs a single instruction of
#: its own: written from outside after the start, a worker that forks at once (a browser's
#: zygotes) would hand memwarden's own score (-1000) to children born before the write.
_CHOOM = shutil.which("choom")


class SpawnError(Exception):
    """The command could not be started; `exit_status` is 127 (not found) or 126 (not runnable)."""

    def __init__(self, message: str, exit_status: int) -> None:
        super().__init__(message)
        self.exit_status = exit_status


@dataclass(eq=False)
class Child:
    """A started worker process; `popen` is kept only so subprocess never reaps it itself."""

    pid: int
    start: int | None
    argv: list[str]
    channel: socket.socket | None
    popen: subprocess.Popen[bytes]

    @property
    def pgid(self) -> int:
        return self.pid

    def reaped(self, status: int) -> None:
        """Tell the Popen object its child is gone so that it never calls waitpid itself."""
        self.popen.returncode = status


def spawn(
    argv: list[str],
    *,
    env: Mapping[str, str],
    cwd: str | None,
    with_channel: bool,
    oom_score_adj: int | None,
    take_terminal: bool,
    launcher: list[str] | None = None,
    listen: Sequence[int] = (),
) -> Child:
    """Start `argv` in a new process group; return the Child or raise SpawnError.

    `launcher` is a command prefix that does its part and execs the rest under the same pid
    (joining the generation's cgroup, `workercgroup.GenerationCgroup.launcher`).
    `listen` are descriptors the worker gets at 3, 4, ... (`handoff`; `env` holds their
    LISTEN_FDS), with LISTEN_PID set to its own pid by the last launcher before it.

    Must be called from the thread that lives as long as the supervisor (the main
    thread): PR_SET_PDEATHSIG fires when the forking *thread* exits.
    """
    ours, theirs = (socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM) if with_channel
                    else (None, None))
    child_env = dict(env)
    pass_fds: tuple[int, ...] = ()
    channel_fd = -1
    if theirs is not None:
        # With sockets handed over, the channel sits above the fds they move to.
        channel_fd = (fcntl.fcntl(theirs.fileno(), fcntl.F_DUPFD_CLOEXEC, 3 + len(listen))
                      if listen else theirs.fileno())
        child_env[protocol.ENV_FD] = str(channel_fd)
        pass_fds = (channel_fd,)
    parent = os.getpid()
    terminal = take_terminal and _owns_terminal()

    def child_setup() -> None:  # runs in the child between fork and exec
        linux.set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != parent:  # the supervisor died before prctl took effect
            os._exit(1)
        if oom_score_adj is not None:
            with contextlib.suppress(OSError):
                linux.set_oom_score_adj(oom_score_adj)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        if listen:
            _hand_over(listen, channel_fd)
        if terminal:
            signal.signal(signal.SIGTTOU, signal.SIG_IGN)
            os.tcsetpgrp(0, os.getpgrp())
            signal.signal(signal.SIGTTOU, signal.SIG_DFL)

    if listen:
        launcher = [*(launcher or ()), *_LISTEN_PID]
    try:
        if _SETPRIV is not None and not terminal and not listen:
            _check_runnable(argv[0], child_env.get("PATH", os.defpath), cwd)
            choom = ([_CHOOM, "-n", str(oom_score_adj), "--"]
                     if _CHOOM is not None and oom_score_adj is not None else [])
            with sigwait.unblocked():  # setpriv and the worker inherit this thread's mask
                popen = subprocess.Popen(
                    [*(launcher or ()), _SETPRIV, "--pdeathsig", "KILL", "--", *choom, *argv],
                    env=child_env, cwd=cwd, pass_fds=pass_fds, process_group=0,
                    close_fds=True)
        else:
            if launcher:
                _check_runnable(argv[0], child_env.get("PATH", os.defpath), cwd)
            # With sockets handed over the child closes what it must not inherit itself
            # (`_hand_over`): close_fds would close the fds they were moved to.
            popen = subprocess.Popen(
                [*(launcher or ()), *argv], env=child_env, cwd=cwd,
                pass_fds=() if listen else pass_fds, process_group=0,
                preexec_fn=child_setup, close_fds=not listen)
    except FileNotFoundError as e:
        _close_fd(channel_fd, theirs)
        _close(ours, theirs)
        where = f" in {cwd}" if cwd and e.filename == cwd else ""
        raise SpawnError(f"cannot start {argv[0]!r}: {e.strerror}{where}", 127) from None
    except PermissionError as e:
        _close_fd(channel_fd, theirs)
        _close(ours, theirs)
        raise SpawnError(f"cannot start {argv[0]!r}: {e.strerror} (not executable?)", 126) from None
    except OSError as e:
        _close_fd(channel_fd, theirs)
        _close(ours, theirs)
        raise SpawnError(f"cannot start {argv[0]!r}: {e.strerror or e}", 126) from None
    if theirs is not None:
        _close_fd(channel_fd, theirs)
        theirs.close()
    if ours is not None:
        ours.setblocking(False)
    if oom_score_adj is not None:
        _set_oom_score_adj(popen.pid, oom_score_adj)
    if terminal:
        give_terminal(popen.pid)
    return Child(popen.pid, procfs.start_time(popen.pid), list(argv), ours, popen)


#: The last launcher before a worker that inherits sockets: the shell sets LISTEN_PID to its
#: own pid and execs the worker under it, which is how the worker knows they are its own
#: (sd_listen_fds(3) ignores them when LISTEN_PID is another process's).
_LISTEN_PID = ["/bin/sh", "-c", 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"', "sh"]


def _hand_over(listen: Sequence[int], channel_fd: int) -> None:
    """In the child before exec: `listen` to fds 3, 4, ..., the channel kept, every other
    descriptor from 3 on closed (close_fds is off on this path)."""
    for i, fd in enumerate(listen):
        os.dup2(fd, 3 + i)  # dup2 leaves the copy inheritable
    first = 3 + len(listen)
    if channel_fd >= 0:
        os.set_inheritable(channel_fd, True)
        os.closerange(first, channel_fd)
        os.closerange(channel_fd + 1, _MAX_FD)
    else:
        os.closerange(first, _MAX_FD)


_MAX_FD = os.sysconf("SC_OPEN_MAX") if os.sysconf("SC_OPEN_MAX") > 0 else 1 << 20


def _close_fd(fd: int, theirs: socket.socket | None) -> None:
    if theirs is not None and fd >= 0 and fd != theirs.fileno():
        with contextlib.suppress(OSError):
            os.close(fd)


def _check_runnable(program: str, path: str, cwd: str | None) -> None:
    """Raise the errors exec would (ENOENT, EACCES) before handing the command to setpriv."""
    if "/" in program:
        candidates = [os.path.join(cwd or "", program)]
    else:
        candidates = [os.path.join(d or ".", program) for d in path.split(os.pathsep)]
    found = [c for c in candidates if os.path.isfile(c)]
    if any(os.access(c, os.X_OK) for c in found):
        return
    if found or any(os.path.isdir(c) for c in candidates if "/" in program):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), found[0] if found
                              else program)
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


def _set_oom_score_adj(pid: int, value: int) -> None:
    try:
        linux.set_oom_score_adj(value, pid)
    except OSError as e:  # lowering needs CAP_SYS_RESOURCE; the worker still runs
        log.debug("oom_score_adj %s for %s: %s", value, pid, e)


def _close(*socks: socket.socket | None) -> None:
    for s in socks:
        if s is not None:
            s.close()


def _owns_terminal() -> bool:
    """True when stdin is a terminal whose foreground group is ours (we may hand it on)."""
    try:
        return os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp()
    except OSError:
        return False


def give_terminal(pgid: int) -> None:
    """Make `pgid` the terminal's foreground group (both sides do it, as shells do: no race)."""
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(0, pgid)
    except OSError:
        pass
    finally:
        signal.signal(signal.SIGTTOU, old)


def take_back_terminal() -> None:
    """Make our own group the foreground group again, if stdin is a terminal."""
    if os.isatty(0):
        give_terminal(os.getpgrp())


def signal_group(child: Child, sig: int) -> bool:
    """Send `sig` to the child's process group; return False when nothing was there.

    Only while the child is unreaped: its pid, and so the group id, cannot be reused then.
    """
    try:
        os.killpg(child.pgid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError as e:  # a member changed credentials; signal the others one by one
        log.debug("killpg %s: %s", child.pgid, e)
        return False


def in_group(pid: int, pgid: int) -> bool:
    """True while `pid` is in process group `pgid`."""
    try:
        return os.getpgid(pid) == pgid
    except OSError:
        return False


def signal_pids(members: Iterable[tuple[int, int]], sig: int) -> int:
    """Signal each (pid, start time) still alive and still the same process."""
    sent = 0
    for pid, start in list(members):
        if _same(pid, start):
            try:
                os.kill(pid, sig)
                sent += 1
            except ProcessLookupError:
                pass
    return sent


def _same(pid: int, start: int) -> bool:
    return procfs.start_time(pid) == start


def kill_all_descendants(sig: int) -> int:
    """Signal every process below the supervisor (orphans re-parented to us included)."""
    sent = 0
    me = os.getpid()
    for pid in procfs.descendants(me):
        try:
            os.kill(pid, sig)
            sent += 1
        except OSError as e:
            if e.errno != errno.ESRCH:
                log.debug("kill %s: %s", pid, e)
    return sent

"""Each generation in a memory cgroup of its own, where memwarden may create one.

Layout, under memwarden's own memory cgroup P (the container's, or the unit's):

    P/memwarden-<pid>-<start>/            the workers of this memwarden, limited to P's
                                          limit minus a reserve for memwarden itself
    P/memwarden-<pid>-<start>/<worker>.<generation>/   one generation, everything it forks
    P/memwarden-<pid>-<start>.self/       v2 only: memwarden itself (a cgroup with children
                                          may not hold processes there)

Why the reserve: when the kernel must kill in a cgroup at its limit, it picks among the
processes of the cgroup that ran out. With the workers capped below P's limit, that is
always a worker; memwarden's own small allocations (reading /proc, starting the next
generation) never make it the only candidate while a killed worker's memory is still
being given back.

A generation joins its cgroup before it runs any code of its own: its launcher, a shell,
writes its own pid to `cgroup.procs` and execs the rest. Cgroups left by a memwarden that
was SIGKILLed (its pid and start time no longer alive) are emptied and removed at start.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import signal
import time
from dataclasses import dataclass

from supervisor.linux import procfs
from supervisor.linux.cgroup import CgroupMemory, read_procs, read_text

log = logging.getLogger("memwarden.workercgroup")

#: What memwarden keeps below the container's limit for itself: its own RSS at start and
#: this much more (kernel allocations, page cache of its snapshot files), at least MIN.
RESERVE_EXTRA = 16 * 2**20
RESERVE_MIN = 32 * 2**20
#: How long emptying a cgroup may take (processes in uninterruptible sleep die late).
EMPTY_WAIT_S = 5.0
_OURS = re.compile(r"^memwarden-(\d+)-(\d+)(\.self)?$")


class Unavailable(Exception):
    """memwarden may not create cgroups here; the message says why, for the start-up log."""


@dataclass(eq=False)
class GenerationCgroup:
    """One generation's cgroup: its directory, the file it joins by, what it reads."""

    path: str
    version: int
    memory: CgroupMemory  # usage (kept open, read every tick), stat, events

    @property
    def procs(self) -> str:
        return os.path.join(self.path, "cgroup.procs")

    def launcher(self) -> list[str]:
        """The command prefix that moves the process into this cgroup, then execs the rest."""
        return ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', self.procs]

    def oom_kills(self) -> int:
        """How many of its processes the kernel's OOM killer killed."""
        with contextlib.suppress(OSError):
            return self.memory.events().get("oom_kill", 0)
        return 0

    def kill(self) -> int:
        """SIGKILL every process in it (v2: `cgroup.kill`, which also catches forks under
        way); return how many were signalled."""
        pids = read_procs(self.procs) or []
        if self.version == 2 and os.path.exists(os.path.join(self.path, "cgroup.kill")):
            with contextlib.suppress(OSError):
                _write(os.path.join(self.path, "cgroup.kill"), "1")
                return len(pids)
        sent = 0
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                sent += 1
        return sent

    def remove(self) -> bool:
        """Remove the directory once it is empty; False while processes are still in it."""
        self.memory.close()
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno in (errno.EBUSY, errno.ENOTEMPTY):
                return False
            raise
        return True


class WorkerCgroups:
    """The cgroups of this memwarden's workers (see the module docstring)."""

    def __init__(self, parent: CgroupMemory, instance: str, self_leaf: str | None) -> None:
        self.parent = parent
        self.instance = instance
        self.self_leaf = self_leaf
        self.version = parent.version

    @classmethod
    def setup(cls, parent: CgroupMemory | None, *, limit: int | None,
              own_rss: int) -> WorkerCgroups:
        """Prepare the workers' cgroup under `parent`; raise Unavailable saying why not.

        `limit` is the memory limit in force (None: none), `own_rss` memwarden's own RSS,
        which sizes the reserve kept for it.
        """
        if parent is None:
            raise Unavailable("no memory cgroup of memwarden's own was found")
        top = parent.path
        if not os.access(top, os.W_OK):
            raise Unavailable(f"{top} is not writable (run as root, in a privileged "
                              "container, or in a delegated systemd unit)")
        removed = clean_stale(top)
        if removed:
            log.warning("emptied and removed %d cgroup(s) left by a memwarden that was killed",
                        removed)
        me, start = os.getpid(), procfs.start_time(os.getpid())
        name = f"memwarden-{me}-{start}"
        instance = os.path.join(top, name)
        self_leaf = None
        try:
            if parent.version == 2:
                self_leaf = _enter_own_leaf(top, instance + ".self")
            os.mkdir(instance)
            if parent.version == 2:
                _write(os.path.join(instance, "cgroup.subtree_control"), "+memory")
        except OSError as e:
            with contextlib.suppress(OSError):
                os.rmdir(instance)
            raise Unavailable(f"cannot create {instance}: {e.strerror or e}") from None
        if limit is not None:
            reserve = max(own_rss + RESERVE_EXTRA, RESERVE_MIN)
            if limit > 2 * reserve:
                name = "memory.max" if parent.version == 2 else "memory.limit_in_bytes"
                with contextlib.suppress(OSError):
                    _write(os.path.join(instance, name), str(limit - reserve))
        return cls(parent, instance, self_leaf)

    def create(self, worker: str, generation: int) -> GenerationCgroup:
        """Make the cgroup of `generation` of `worker`; raise OSError when the kernel says no."""
        path = os.path.join(self.instance, f"{worker}.{generation}")
        with contextlib.suppress(FileExistsError):
            os.mkdir(path)
        try:
            memory = CgroupMemory.at(path, self.version)
        except OSError:
            with contextlib.suppress(OSError):
                os.rmdir(path)
            raise
        return GenerationCgroup(path, self.version, memory)

    def close(self) -> None:
        """Remove the workers' cgroup (its generations' are removed as they end)."""
        with contextlib.suppress(OSError):
            _empty_and_remove(self.instance)

    def describe(self) -> str:
        return f"each generation in its own cgroup under {self.instance}"


def clean_stale(top: str) -> int:
    """Empty and remove the cgroups under `top` of memwarden processes that no longer run;
    return how many were removed."""
    removed = 0
    try:
        names = os.listdir(top)
    except OSError:
        return 0
    for name in names:
        m = _OURS.match(name)
        if m is None or procfs.start_time(int(m.group(1))) == int(m.group(2)):
            continue
        with contextlib.suppress(OSError):
            _empty_and_remove(os.path.join(top, name))
            removed += 1
    return removed


def _empty_and_remove(path: str) -> None:
    """Kill every process below `path`, then remove its directories, deepest first."""
    deadline = time.monotonic() + EMPTY_WAIT_S
    while True:
        dirs = [d for d, _, _ in os.walk(path, topdown=False)]
        left = 0
        for d in dirs:
            for pid in read_procs(os.path.join(d, "cgroup.procs")) or []:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                left += 1
        if not left:
            for d in dirs:
                os.rmdir(d)
            return
        if time.monotonic() > deadline:
            raise OSError(errno.EBUSY, f"{left} process(es) still in {path}")
        time.sleep(0.02)


def _enter_own_leaf(top: str, leaf: str) -> str:
    """v2: move memwarden into a leaf of its own and let `top`'s children have memory."""
    control = os.path.join(top, "cgroup.subtree_control")
    if "memory" in (read_text(control) or "").split():
        return leaf if os.path.isdir(leaf) else _move_into(leaf)
    if "memory" not in (read_text(os.path.join(top, "cgroup.controllers")) or "").split():
        raise OSError(errno.ENOTSUP, "the memory controller is not available there")
    _move_into(leaf)
    try:
        _write(control, "+memory")
    except OSError:
        # Other processes share memwarden's cgroup: its children cannot have controllers.
        _write(os.path.join(top, "cgroup.procs"), str(os.getpid()))
        with contextlib.suppress(OSError):
            os.rmdir(leaf)
        raise
    return leaf


def _move_into(leaf: str) -> str:
    with contextlib.suppress(FileExistsError):
        os.mkdir(leaf)
    _write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
    return leaf


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


__all__ = ["GenerationCgroup", "Unavailable", "WorkerCgroups", "clean_stale"]

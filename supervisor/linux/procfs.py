"""The one seam for /proc: process start times, process trees and the per-tick statm read.

Everything the sampler learns about a process comes through here, so tests and callers
never parse /proc themselves.
"""

from __future__ import annotations

import os
import resource

from supervisor.linux.timing import GilRead, KeptOpen

PAGE_SIZE: int = os.sysconf("SC_PAGE_SIZE")


def parse_stat(data: bytes | None) -> tuple[int, int] | None:
    """(ppid, start time) from the text of /proc/PID/stat; None when empty or cut short."""
    if not data:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    return (int(fields[1]), int(fields[19])) if len(fields) >= 20 else None


def _stat(pid: int) -> tuple[int, int] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return parse_stat(f.read())
    except OSError:
        return None


def start_time(pid: int) -> int | None:
    """Return field 22 of /proc/PID/stat (start time in clock ticks since boot); None if gone."""
    stat = _stat(pid)
    return None if stat is None else stat[1]


def process_table() -> dict[int, tuple[int, int]]:
    """Return {pid: (ppid, start time)} for every process in /proc; vanishing ones are skipped."""
    table: dict[int, tuple[int, int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and (stat := _stat(int(name))) is not None:
            table[int(name)] = stat
    return table


class ProcessTable:
    """Repeated scans of /proc for {pid: (ppid, start time)}, cheap enough for 10 scans/s.

    A scan starts with one listdir of /proc. When the set of pids is unchanged, nothing
    else is read: a process's parent changes only when the parent dies, which changes the
    set. Otherwise only new pids, and pids whose parent is gone (re-parented), are read.
    Every `verify_every`-th scan re-reads every process, which bounds how long a pid that
    died and was reused between two scans can go unnoticed. Each stat stays open between
    scans (up to `max_open`) and is read with one GIL-keeping pread; an open descriptor
    stays bound to its process, so a reused pid reads as gone and is reopened.

    Why not a full read every scan: it took ~0.5 ms for 170 processes here, ten times a
    second, and the GIL hand-offs it caused were the main source of late sampler ticks.
    """

    def __init__(self, verify_every: int = 10, max_open: int | None = None) -> None:
        self.verify_every = max(verify_every, 1)
        # Kept-open stats must never eat the descriptors memwarden needs for its workers,
        # channels and clients: on a host of thousands of processes a fixed 4096 would
        # reach a soft limit of 1024. A quarter of the limit, at most 4096.
        self.max_open = max_open if max_open is not None else _quarter_of_nofile()
        self.generation = 0  # bumped whenever a scan finds the table changed
        self._open: dict[int, tuple[GilRead, int]] = {}
        self._table: dict[int, tuple[int, int]] = {}
        self._names: list[str] = []
        self._scans = 0
        self._unverified = True  # a pid may have been reused since the last verification

    def scan(self, quiet: bool = False) -> dict[int, tuple[int, int]]:
        """Return {pid: (ppid, start time)} for every process now in /proc (do not mutate it).

        `quiet=True` is the caller's word that no process was created since the previous
        call (see `LastPid`) and that it does not need deaths reflected: /proc is then not
        read at all and the previous table is returned, except on a verification round
        owed since the last one (a pid can only be reused by a creation, and every call
        that followed a creation was not quiet, so quiet rounds need no verification).
        """
        self._scans += 1
        verify = self._scans % self.verify_every == 0
        if quiet and not (verify and self._unverified):
            return self._table
        names = os.listdir("/proc")
        self._unverified = not verify
        if names == self._names and not verify:
            return self._table
        self._names = names
        old = self._table
        pids = {int(n) for n in names if n.isdigit()}
        table: dict[int, tuple[int, int]] = {}
        for pid in pids:
            entry = old.get(pid)
            if entry is not None and not verify:
                ppid, start = entry
                parent = old.get(ppid)
                # A live parent that started no later than its child is still the parent.
                if ppid == 0 or (ppid in pids and parent is not None and parent[1] <= start):
                    table[pid] = entry
                    continue
            fields = self._stat(pid)
            if fields is not None:
                table[pid] = fields
        for pid in [p for p in self._open if p not in table]:
            self._forget(pid)
        if table != old:
            self.generation += 1
        self._table = table
        return table

    def _stat(self, pid: int) -> tuple[int, int] | None:
        entry = self._open.get(pid)
        if entry is not None:
            data = entry[0].read()
            if data is not None:
                # Only the ppid can change (re-parenting); the start time is fixed.
                return int(data[data.rfind(b")") + 2 :].split(None, 2)[1]), entry[1]
            self._forget(pid)
        return self._open_stat(pid)

    def _open_stat(self, pid: int) -> tuple[int, int] | None:
        try:
            fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None
        reader = GilRead(fd, 1024)
        stat = parse_stat(reader.read())
        if stat is None:
            os.close(fd)
            return None
        ppid, start = stat
        if len(self._open) < self.max_open:
            self._open[pid] = (reader, start)
        else:
            os.close(fd)
        return ppid, start

    def _forget(self, pid: int) -> None:
        entry = self._open.pop(pid, None)
        if entry is not None:
            entry[0].close()

    def close(self) -> None:
        """Close every kept descriptor; the table can still scan afterwards."""
        for pid in list(self._open):
            self._forget(pid)
        self._names = []


def _quarter_of_nofile() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 4096 if soft == resource.RLIM_INFINITY else max(min(soft // 4, 4096), 16)


class LastPid(KeptOpen):
    """The last pid the kernel allocated in this process's pid namespace, for 10 reads a second.

    Field 5 of /proc/loadavg. While it stays the same no process (or thread) was created in
    this namespace or below it, so no process can have joined a tree and no pid can have
    been reused: a caller may skip rescanning /proc. `read` returns None when that cannot
    be relied on: /proc is not this namespace's (its /proc/self is another pid) or
    /proc/loadavg is not the kernel's (LXCFS mounts its own over it, with another meaning),
    or the read failed. The descriptor is kept open and read with one GIL-keeping pread.
    """

    __slots__ = ("_reader",)

    def __init__(self) -> None:
        fd = -1
        try:
            if (os.readlink("/proc/self") == str(os.getpid())
                    and os.stat("/proc/loadavg").st_dev == os.stat("/proc").st_dev):
                fd = os.open("/proc/loadavg", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            fd = -1
        self._reader = GilRead(fd, 128)

    def read(self) -> int | None:
        """Return the last allocated pid; None when unknown (see the class). Never raises."""
        if self._reader.fd < 0:
            return None
        data = self._reader.read()
        if data is None:
            return None
        # "0.26 0.34 0.47 1/81 17296\n": the fifth field.
        fields = data.split(None, 5)
        try:
            return int(fields[4])
        except (IndexError, ValueError):
            return None


def parent_map() -> dict[int, int]:
    """Return {pid: ppid} for every process visible in /proc (processes that vanish are skipped)."""
    return {pid: ppid for pid, (ppid, _) in process_table().items()}


def descendants(pid: int, parents: dict[int, int] | None = None) -> list[int]:
    """Return every process below `pid` (not `pid` itself), parents before their children.

    One scan of /proc (or the given `parents` map from `parent_map()`, so that many trees
    share one scan); a process that exits during the scan is simply missing. The kernel's
    /proc/PID/task/*/children would be cheaper, but it is an optional kernel feature.
    """
    return subtree(pid, children_map(parent_map() if parents is None else parents))


def children_map(parents: dict[int, int]) -> dict[int, list[int]]:
    """Invert {pid: ppid} into {ppid: [pids]}, for many `subtree` walks over one scan."""
    children: dict[int, list[int]] = {}
    for child, parent in parents.items():
        children.setdefault(parent, []).append(child)
    return children


def subtree(pid: int, children: dict[int, list[int]]) -> list[int]:
    """Return every process below `pid` in `children`, parents before their children."""
    found: list[int] = []
    frontier = [pid]
    seen = {pid}
    while frontier:
        nxt: list[int] = []
        for p in frontier:
            for k in children.get(p, ()):
                if k not in seen:  # a reused pid cannot loop the walk
                    seen.add(k)
                    nxt.append(k)
        found.extend(nxt)
        frontier = nxt
    return found


def rss_bytes(pid: int) -> int | None:
    """The process's resident set from one read of its statm (for a look now and then,
    not the ticks: those keep theirs open, `StatmReader`); None when it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split(None, 2)[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None


class StatmReader(KeptOpen):
    """A kept-open /proc/PID/statm, read with one pread per call into a preallocated buffer.

    The open descriptor stays bound to the process it was opened for: once that process is
    gone the reads fail (or read nothing) even if the pid is reused, so a reader never
    reports a stranger's memory. `start` (field 22 of stat) identifies the process for
    callers that match pids found later. The read keeps the GIL (see `timing.GilRead`).
    """

    __slots__ = ("_read", "_reader", "pid", "start")

    #: Bytes read per call. The line has seven numbers and may be longer, but only the
    #: first two are parsed, and they fit in 64 bytes with room to spare (2 x 20 digits).
    BYTES = 64

    def __init__(self, pid: int) -> None:
        """Open the process's statm; raise ProcessLookupError if it is gone."""
        try:
            fd = os.open(f"/proc/{pid}/statm", os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, ProcessLookupError):
            raise ProcessLookupError(pid) from None
        start = start_time(pid)
        if start is None:
            os.close(fd)
            raise ProcessLookupError(pid)
        self.pid = pid
        self.start = start
        self._reader = GilRead(fd, self.BYTES)
        self._read = self._reader.read

    def rss_pages(self) -> int:
        """Return the resident set in pages; -1 once the process is gone. Never raises."""
        data = self._read()
        if data is None:  # ESRCH (gone), EBADF (closed) or nothing left to read
            return -1
        # "size resident ...": the second number; a zombie reads as all zeros, which is right.
        return int(data.split(None, 2)[1])

    @property
    def fd(self) -> int:
        """The open descriptor (-1 once closed), for callers that batch their own reads."""
        return self._reader.fd


__all__ = [
    "PAGE_SIZE",
    "LastPid",
    "ProcessTable",
    "StatmReader",
    "children_map",
    "descendants",
    "parent_map",
    "process_table",
    "rss_bytes",
    "start_time",
    "subtree",
]

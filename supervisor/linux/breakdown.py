"""The per-process breakdown of a worker's tree: which process is the big one.

A browser tree is one figure to the thresholds but twenty processes to the person looking
at it. The figures come from what the sampler already keeps (each member's RSS at the last
discovery round, its PSS at its last smaps_rollup reading in pss mode), the names from
/proc once per process (`Names`): `memwarden status`, `top`, the metrics and the few
biggest processes in each snapshot sample cost no page-table walk and no /proc scan per
request. (Read per request with psutil and smaps_rollup, a status of a tree of 30 sleeping
processes cost 5-6 ms of CPU, a Chromium tree 20 ms more.)
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import msgspec

from supervisor.linux.timing import read_whole

#: Processes listed per worker at most (biggest first): a tree of hundreds stays readable.
MAX_MEMBERS = 50
#: Processes a snapshot sample carries per worker.
SAMPLE_MEMBERS = 3
#: Processes whose names `Names` keeps; cleared whole when full (each is then read again).
MAX_NAMES = 4096

#: One member as the sampler keeps it: (pid, start time, RSS bytes, PSS bytes or None).
Size = tuple[int, int, int, int | None]


class Member(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One process of a worker's tree, for the per-process breakdown."""

    pid: int
    name: str = ""
    cmdline: str = ""
    rss: int = 0
    #: Proportional set size: its share of pages shared with others (None: not known).
    pss: int | None = None
    #: Its share of the worker's memory figure, 0 to 1 (None: not known).
    share: float | None = None


def identify(pid: int) -> tuple[str, str] | None:
    """The process's name and command line from /proc (None when it is gone). The name is
    its comm, or where the kernel cut that to 15 characters, the command's own name."""
    comm = read_whole(f"/proc/{pid}/comm")
    raw = read_whole(f"/proc/{pid}/cmdline")
    if comm is None or raw is None:
        return None
    name = comm.decode(errors="replace").rstrip("\n")
    args = raw.rstrip(b"\0").split(b"\0") if raw else []
    if len(name) >= 15 and args:
        command = os.path.basename(args[0].decode(errors="replace"))
        if command.startswith(name):
            name = command
    return name, _short(" ".join(a.decode(errors="replace") for a in args))


class Names:
    """Each process's name and command line, read once per process (by pid and start time:
    a reused pid is read again). Thread-safe enough: entries are added whole."""

    def __init__(self) -> None:
        self._known: dict[tuple[int, int], tuple[str, str] | None] = {}

    def of(self, pid: int, start: int) -> tuple[str, str] | None:
        """The process's (name, command line), None when it is gone or could not be read."""
        key = (pid, start)
        if key not in self._known:
            if len(self._known) >= MAX_NAMES:
                self._known = {}
            self._known[key] = identify(pid)
        return self._known[key]


def members(sizes: Iterable[Size], names: Names, *, memory: int | None,
            limit: int = MAX_MEMBERS) -> list[Member]:
    """The processes of `sizes`, biggest RSS first, at most `limit`: name, command line, RSS
    and PSS as the sampler last had them. `memory` is the worker's figure, for each
    process's share of it. Processes that are gone by the time their name is first read are
    left out."""
    out: list[Member] = []
    for pid, start, rss, pss in sorted(sizes, key=lambda s: -s[2])[:limit]:
        known = names.of(pid, start)
        if known is None:
            continue
        out.append(Member(pid=pid, name=known[0], cmdline=known[1], rss=rss, pss=pss))
    if memory:
        total = sum((m.pss if m.pss is not None else m.rss) for m in out) or 1
        for m in out:
            own = m.pss if m.pss is not None else m.rss
            m.share = round(own / total, 4)
    return out


def _short(cmdline: str, most: int = 200) -> str:
    return cmdline if len(cmdline) <= most else cmdline[: most - 3] + "..."


__all__ = ["MAX_MEMBERS", "SAMPLE_MEMBERS", "Member", "Names", "Size", "identify", "members"]

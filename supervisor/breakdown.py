"""The per-process breakdown of a worker's tree: which process is the big one.

A browser tree is one figure to the thresholds but twenty processes to the person looking
at it. psutil gives each process's name, command line and memory (`memory_full_info`:
PSS and swap from smaps_rollup) portably; it is used here only, off the sampling path: for
`memwarden status`, `top` and the metrics when asked, and for the few biggest processes in
each snapshot sample (RSS only there, which costs a statm read, not a page-table walk).
"""

from __future__ import annotations

from collections.abc import Iterable

import psutil

from supervisor import control

#: Processes listed per worker at most (biggest first): a tree of hundreds stays readable.
MAX_MEMBERS = 50
#: Processes a snapshot sample carries per worker.
SAMPLE_MEMBERS = 3


def members(pids: Iterable[int], *, memory: int | None, full: bool = True,
            limit: int = MAX_MEMBERS) -> list[control.Member]:
    """The processes `pids`, biggest RSS first, at most `limit`: name, command line, RSS, and
    with `full` their PSS (a read of smaps_rollup each: ~1 ms for a browser process).

    `memory` is the worker's figure, for each process's share of it. Processes that exit
    meanwhile, or that memwarden may not read, are left out or shown with what could be read.
    """
    out: list[control.Member] = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            with p.oneshot():
                name = p.name()
                cmdline = " ".join(p.cmdline())
                rss = p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        except psutil.AccessDenied:
            out.append(control.Member(pid=pid, name="?"))
            continue
        out.append(control.Member(pid=pid, name=name, cmdline=_short(cmdline), rss=rss))
    out.sort(key=lambda m: -m.rss)
    out = out[:limit]
    if full:
        for m in out:
            try:
                m.pss = psutil.Process(m.pid).memory_full_info().pss
            except (psutil.Error, AttributeError):
                m.pss = None
    if memory:
        total = sum((m.pss if m.pss is not None else m.rss) for m in out) or 1
        for m in out:
            own = m.pss if m.pss is not None else m.rss
            m.share = round(own / total, 4)
    return out


def _short(cmdline: str, most: int = 200) -> str:
    return cmdline if len(cmdline) <= most else cmdline[: most - 3] + "..."


__all__ = ["MAX_MEMBERS", "SAMPLE_MEMBERS", "members"]

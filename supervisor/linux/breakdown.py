"""The per-process breakdown of a worker's tree: which process is the big one.

A browser tree is one figure to the thresholds but twenty processes to the person looking
at it. psutil gives each process's name and command line portably; the memory comes from
the modules that own those files (`procfs.rss_bytes`: statm, `pss.read_rollup`:
smaps_rollup). Used off the sampling path only: for `memwarden status`, `top` and the
metrics when asked, and for the few biggest processes in each snapshot sample (RSS only
there, which costs a statm read, not a page-table walk).
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from supervisor.linux import procfs, pss

#: Processes listed per worker at most (biggest first): a tree of hundreds stays readable.
MAX_MEMBERS = 50
#: Processes a snapshot sample carries per worker.
SAMPLE_MEMBERS = 3


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


def members(pids: Iterable[int], *, memory: int | None, full: bool = True,
            limit: int = MAX_MEMBERS) -> list[Member]:
    """The processes `pids`, biggest RSS first, at most `limit`: name, command line, RSS, and
    with `full` their PSS (a read of smaps_rollup each: ~1 ms for a browser process).

    `memory` is the worker's figure, for each process's share of it. Processes that exit
    meanwhile, or that memwarden may not read, are left out or shown with what could be read.
    """
    import psutil  # only when a breakdown is asked for: the status client needs just `Member`

    out: list[Member] = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            with p.oneshot():
                name = p.name()
                cmdline = " ".join(p.cmdline())
            rss = procfs.rss_bytes(pid)
            if rss is None:
                continue
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        except psutil.AccessDenied:
            out.append(Member(pid=pid, name="?"))
            continue
        out.append(Member(pid=pid, name=name, cmdline=_short(cmdline), rss=rss))
    out.sort(key=lambda m: -m.rss)
    out = out[:limit]
    if full:
        for m in out:
            rollup = pss.read_rollup(m.pid)
            m.pss = rollup.pss if rollup is not None else None
    if memory:
        total = sum((m.pss if m.pss is not None else m.rss) for m in out) or 1
        for m in out:
            own = m.pss if m.pss is not None else m.rss
            m.share = round(own / total, 4)
    return out


def _short(cmdline: str, most: int = 200) -> str:
    return cmdline if len(cmdline) <= most else cmdline[: most - 3] + "..."


__all__ = ["MAX_MEMBERS", "SAMPLE_MEMBERS", "Member", "members"]

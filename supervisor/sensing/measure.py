"""How a worker's memory is measured: the figure every threshold compares, and why that one.

* `cgroup`: each generation runs in a memory cgroup of its own (`workercgroup`); its figure
  is what the kernel charges it, minus the inactive file cache it could drop at once, plus
  its swap: the working set, as kubelet computes it. One read per tick, whatever the size
  of the tree, and everything the generation forks or daemonises is counted.
* `pss`: the tree's RSS, each process's scaled by its proportional share of anonymous and
  shared memory (`pss`), plus its swapped-out share: right for shared memory (a browser, a
  prefork server), at the cost of one statm read per process per tick.
* `rss`: the plain RSS sum, which counts shared pages once per process that maps them.

`auto` takes cgroup where memwarden may create cgroups, else pss.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from supervisor.linux.cgroup import CgroupMemory
from supervisor.linux.workercgroup import Unavailable, WorkerCgroups
from supervisor.settings.config import ConfigError

MODES = ("cgroup", "pss", "rss")


@dataclass(frozen=True)
class Measure:
    """The mode in force, the sentence that says why, and the workers' cgroups in cgroup mode."""

    how: str
    why: str
    cgroups: WorkerCgroups | None = None


def choose(asked: str, container: CgroupMemory | None, limit: int | None) -> Measure:
    """Resolve `--measure` (auto, cgroup, pss, rss); raise ConfigError when the mode asked
    for by name is not possible here, saying why."""
    why = ""
    if asked in ("auto", "cgroup"):
        try:
            cgroups = WorkerCgroups.setup(container, limit=limit, own_rss=_own_rss())
        except Unavailable as e:
            if asked == "cgroup":
                raise ConfigError(f"--measure cgroup: not possible here: {e}") from None
            why = f"no cgroup of its own for each generation ({e}); "
        else:
            return Measure("cgroup", f"{cgroups.describe()}: the working set the kernel "
                           "charges each generation, whatever it forks", cgroups)
    if asked in ("auto", "pss"):
        if os.path.exists("/proc/self/smaps_rollup"):
            return Measure("pss", why + "the tree's RSS corrected for shared pages by each "
                           "process's proportional share of its anonymous and shared memory")
        if asked == "pss":
            raise ConfigError("--measure pss: this kernel has no /proc/PID/smaps_rollup "
                              "(Linux 4.14 or later)")
        why += "no /proc/PID/smaps_rollup on this kernel; "
    return Measure("rss", why + "the plain RSS sum of the tree (shared pages counted once per "
                   "process)")


def _own_rss() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


__all__ = ["MODES", "Measure", "choose"]

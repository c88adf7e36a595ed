"""Linux access: the only code that reads /proc and /sys or makes system calls of its own.

One reader per kernel file: procfs (stat, statm, ns_last_pid), cgroup (a cgroup's memory
files), workercgroup (the generations' cgroups), pss (smaps_rollup), trees (membership),
process, reaper, sigwait, prctl, timing, breakdown (a tree's processes for people),
notify (the kernel's memory notifications).
"""

__all__ = [
    "breakdown",
    "cgroup",
    "handoff",
    "notify",
    "prctl",
    "process",
    "procfs",
    "pss",
    "reaper",
    "sigwait",
    "timing",
    "trees",
    "workercgroup",
]

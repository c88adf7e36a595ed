"""Who belongs to a generation: the members of its process tree, by cgroup or by /proc.

A generation's tree is everything it started, whatever it did since: children that left
its process group, helpers that double-forked and were re-parented to memwarden. In
cgroup mode the kernel keeps that list (`cgroup.procs` of the generation's own cgroup).
Elsewhere memwarden keeps it from /proc: once a member, always a member until it exits,
and whatever a member starts with it; a process re-parented to memwarden that none of
the known members started is claimed by the generation whose process group it is in.

One owner: the sampler reads members at its discovery rate, stopping reads them while
a generation is stopped, the per-process breakdown lists them.
"""

from __future__ import annotations

import os
from typing import Protocol

from supervisor.linux import procfs
from supervisor.linux.cgroup import read_procs

Member = tuple[int, int]  # (pid, start time in clock ticks): a process, not a reusable pid


class Tree(Protocol):
    """The members of one generation's tree."""

    root: int

    def members(self, table: dict[int, tuple[int, int]] | None = None,
                children: dict[int, list[int]] | None = None) -> list[Member]:
        """Every live member, the root first while it lives. `table`/`children` are a /proc
        scan (`procfs.ProcessTable.scan`, `procfs.children_map`) a caller shares between
        trees; without them a tree reads what it needs itself."""
        ...


class ProcTree:
    """A tree followed through /proc: the root, its descendants, and every member seen
    before with its own descendants (re-parented orphans stay members)."""

    def __init__(self, root: int, start: int | None) -> None:
        self.root = root
        self.pgid = root  # workers start as leaders of their own process group
        self.known: dict[int, int] = {} if start is None else {root: start}

    def members(self, table: dict[int, tuple[int, int]] | None = None,
                children: dict[int, list[int]] | None = None) -> list[Member]:
        if table is None:
            try:
                table = procfs.process_table()
            except OSError:  # no descriptor left to list /proc: keep what is known
                return sorted(self.known.items(), key=lambda m: m[0] != self.root)
        if children is None:
            children = procfs.children_map({pid: ppid for pid, (ppid, _) in table.items()})
        alive = [pid for pid, start in self.known.items()
                 if (entry := table.get(pid)) is not None and entry[1] == start]
        found = dict.fromkeys(alive)
        for pid in alive:
            found.update(dict.fromkeys(procfs.subtree(pid, children)))
        self.known = {pid: table[pid][1] for pid in found}
        # The root first: stopping and status name the worker's own process first.
        return sorted(self.known.items(), key=lambda m: m[0] != self.root)

    def adopt(self, member: Member) -> None:
        """Count `member` (an orphan this tree is found to own) from now on."""
        self.known[member[0]] = member[1]

    def claims(self, pid: int) -> bool:
        """Whether an orphan re-parented to memwarden is in this tree's process group."""
        try:
            return os.getpgid(pid) == self.pgid
        except OSError:
            return False


class CgroupTree:
    """A tree the kernel keeps: every process of the generation's own cgroup."""

    def __init__(self, root: int, procs_path: str) -> None:
        self.root = root
        self.procs_path = procs_path
        self._starts: dict[int, int] = {}

    def members(self, table: dict[int, tuple[int, int]] | None = None,
                children: dict[int, list[int]] | None = None) -> list[Member]:
        pids = read_procs(self.procs_path)
        if pids is None:
            return []  # removed, or unreadable: nothing can be said of its members
        starts = {}
        for pid in pids:
            start = self._starts.get(pid) if table is None else (
                entry[1] if (entry := table.get(pid)) is not None else None)
            if start is None:
                start = procfs.start_time(pid)
            if start is not None:
                starts[pid] = start
        self._starts = starts
        return sorted(starts.items(), key=lambda m: m[0] != self.root)


__all__ = ["CgroupTree", "Member", "ProcTree", "Tree"]

"""One watched generation as the sampler's two threads share it: what the ticker reads each
tick, and the slower figures the discoverer keeps beside.

The ticker reads either one kept-open cgroup usage file (cgroup mode: the kernel's figure
for the whole generation, whatever its size) or one statm per member of the tree (pss and
rss modes), each member's resident pages scaled by its PSS/RSS ratio (`pss.Rollups`; 1 in
rss mode). To that it adds `offset`, the discoverer's correction: in cgroup mode the swap
minus the inactive file cache at the last `memory.stat` reading (what the kernel can drop
at once is not held), in pss mode the members' swapped-out share.

What the ticker reads (`usage_fd`, `sources`, `offset`) changes only on the ticker's own
thread (through the sampler's queue of pending work), and tuples are replaced whole, never
mutated: a descriptor is closed only after no tuple the ticker may still hold refers to it.
The compiled ticker copies these into a table of its own, which it brings up to date after
running that work (`supervisor/sensing/_ticker.c`).
"""

from __future__ import annotations

import time
from collections import deque

from supervisor.core.identity import GenerationId
from supervisor.core.pressure import Thresholds, WorkerClassifier
from supervisor.linux import procfs
from supervisor.linux.cgroup import CgroupMemory
from supervisor.linux.notify import Armed
from supervisor.linux.pss import SCALE_ONE
from supervisor.linux.trees import Tree
from supervisor.sensing.ring import Ring


class Probe:
    """One generation: its tree, its sources, its ring and classifier, its figures."""

    __slots__ = ("armed", "band", "born_ns", "cgroup", "classifier", "closed", "generation",
                 "kernel_ns", "key", "lost", "members", "offset", "readers", "ring", "root",
                 "rss", "said_ready", "since_ns", "sized", "sized_ns", "sizes", "slope",
                 "sources", "startup", "stat_ns", "stat_usage", "tree", "trend_since",
                 "trend_t", "trend_v", "usage_fd", "worker")

    def __init__(self, key: str, tree: Tree, root: procfs.StatmReader | None, ring: Ring,
                 th: Thresholds, trend_points: int, cgroup: CgroupMemory | None) -> None:
        self.key = key
        # Whose start-up envelope it draws on (`core.envelope`): a key that is not a
        # generation's identity is a worker of its own.
        ident = GenerationId.parse(key)
        self.worker, self.generation = (ident.worker, ident.number) if ident else (key, 1)
        self.born_ns = time.monotonic_ns()  # watched at its spawn: its age counts from here
        self.tree = tree
        self.root = tree.root
        self.cgroup = cgroup
        # cgroup mode: the one file the ticker reads; -1 in the statm modes.
        self.usage_fd = cgroup.usage_fd if cgroup is not None else -1
        self.readers: tuple[procfs.StatmReader, ...] = ()
        self.sources: tuple[tuple[int, int], ...] = ()  # (statm fd, scale), statm modes only
        self.members: tuple[tuple[int, int], ...] = ()  # (pid, start) as last discovered
        self.set_readers((root,) if root is not None else (), (SCALE_ONE,))
        self.offset = 0
        # cgroup mode: when the offset was last read, and the usage then (the discoverer
        # reads memory.stat again when usage has moved, or the reading grows old).
        self.stat_ns: int | None = None
        self.stat_usage = 0
        self.ring = ring
        self.classifier = WorkerClassifier(key, th)
        # The classifier's memory input, whose band [lo, hi) is where `observe_rss` returns
        # at once; the ticker tests it inline and calls `observe_rss` only outside it. The
        # input object lives as long as the classifier; its band moves in place.
        self.band = self.classifier.rss_band
        self.rss = 0  # the tree's plain RSS sum, as of the last discovery
        self.lost = False  # a member was gone at the last discovery (its reader failed)
        #: Each member's RSS in pages at the last discovery (-1: gone), for `pss.Rollups`.
        self.sizes: tuple[tuple[tuple[int, int], int], ...] = ()
        #: The ticker's figure and the readers when `sizes` was read, and when (discoverer).
        self.sized: tuple[int, tuple[procfs.StatmReader, ...]] | None = None
        self.sized_ns = 0
        self.slope: float | None = None
        # Growth is judged only from the moment the worker is ready (`Sampler.growth_from`):
        # a start-up ramp is loading, not leaking. Written by the event loop, read by the
        # discoverer, which restarts the trend when it sees a new value in `trend_since`.
        self.since_ns: int | None = None
        # It said ready on the channel (written before `since_ns`): its start-up is over.
        self.said_ready = False
        # Its start-up against its worker's envelope, as the discoverer last judged it
        # (replaced whole; read by the snapshots): see `Sampler.view`.
        self.startup: dict[str, object] = {}
        self.trend_since: int | None = None
        self.closed = False
        # When a kernel notification (pressure, OOM) last raised its classifier; 0: none
        # held (the ticker feeds the calm that lowers it again, `Ticker.calm`).
        self.kernel_ns = 0
        self.armed: Armed | None = None  # its kernel notifications (`notify.Notifier.arm`)
        # The ring decimated to one sample per discovery: what the growth slope reads.
        self.trend_t: deque[int] = deque(maxlen=trend_points)
        self.trend_v: deque[int] = deque(maxlen=trend_points)

    @property
    def memory(self) -> int:
        """The figure thresholds compare, as of the last tick (its ring's newest; 0 before)."""
        newest = self.ring.newest()
        return 0 if newest is None else newest[1]

    def set_readers(self, readers: tuple[procfs.StatmReader, ...],
                    scales: tuple[int, ...]) -> None:
        """Replace the members' readers and their scales (on the ticker's thread only)."""
        self.readers = readers
        self.members = tuple((r.pid, r.start) for r in readers)
        if self.usage_fd < 0:
            self.sources = tuple(zip((r.fd for r in readers), scales, strict=True))

    def tree_rss(self) -> int:
        """The plain sum of the members' RSS, read now (bytes); for the discoverer, which
        learns from `lost` whether a member is gone and from `sizes` each member's RSS."""
        sizes = tuple(((r.pid, r.start), r.rss_pages()) for r in self.readers)
        self.sizes = sizes
        self.lost = any(got < 0 for _, got in sizes)
        return sum(got for _, got in sizes if got > 0) * procfs.PAGE_SIZE


__all__ = ["Probe"]

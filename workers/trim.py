"""Trimming: shed state through registered callbacks, then hand the memory back.

What returns memory on CPython with glibc, as measured on a 2-vCPU VM:

* dropping the *oldest* entries frees whole pymalloc arenas (one arena is released
  only when every block in it is free, and old entries were allocated together);
  dropping the same number spread evenly returns a tenth as much. Callbacks
  therefore drop oldest-first.
* a dict never shrinks its table; rebuilding it after a large drop returns more.
* `malloc_trim(0)` costs a few ms and returns tens of MB (most of it with big buffers).
* `gc.collect()` after a drop returns what reference cycles held, and nothing else. On a
  store of 200k objects with 10 % dropped: acyclic objects (414k tracked), 22 MB came back
  by reference counting alone and a collection added 0.2 MB for 142 ms; objects with
  cycles (1M tracked), the drop alone returned nothing (the objects wait in the oldest
  generation, which CPython collects only once a quarter of its size is waiting) and the
  collection returned 22 MB for 317 ms. Trims are rare (a level change, or the worker's
  own threshold), and one that returns nothing leaves the pressure to grow into a
  replacement, so the policy collects by default.
"""

from __future__ import annotations

import gc
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from workers import memory
from workers._log import get_logger
from workers.protocol import Level, Limits, Trimmed

log = get_logger(__name__)

#: A dict is rebuilt when a drop removed at least this share of it. Below a third,
#: CPython's dict copy clones the table at its old size, so a rebuild would buy nothing.
REBUILD_SHARE = 1 / 3


class Trimmable(Protocol):
    """What a registered store provides: `trim` drops the oldest share and says how many."""

    kind: str

    def trim(self, fraction: float) -> int: ...

    def __len__(self) -> int: ...


class TrimPolicy:
    """How much a trim sheds per level and what it does after the callbacks.

    `collect` runs `gc.collect()` after the callbacks: on by default, since state held in
    reference cycles is not given back without it (see the module docstring for the
    pause it costs, about 0.3 us per tracked object); turn it off for a worker whose state
    has no cycles and whose pauses matter more. Objects frozen with `gc.freeze()` are
    never collected: drop only unfrozen state if it has cycles. `malloc_trim` is on: a
    few ms for tens of MB.
    """

    def __init__(self, medium: float = 0.10, high: float = 0.25, critical: float = 0.50,
                 collect: bool = True, malloc_trim: bool = True) -> None:
        for name, share in (("medium", medium), ("high", high), ("critical", critical)):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"TrimPolicy {name}: a share within 0..1, got {share}")
        self.medium, self.high, self.critical = medium, high, critical
        self.collect = collect
        self.malloc_trim = malloc_trim

    def fraction(self, level: Level) -> float:
        """Return the share of state to drop at `level` (0 at LOW)."""
        return {Level.LOW: 0.0, Level.MEDIUM: self.medium, Level.HIGH: self.high,
                Level.CRITICAL: self.critical}[level]


class _Entry:
    __slots__ = ("is_store", "name", "priority", "seq", "target")

    def __init__(self, priority: int, seq: int, name: str, target: Callable[[], Any],
                 is_store: bool) -> None:
        self.priority = priority
        self.seq = seq
        self.name = name
        #: Returns the store or callback, or None once a weakly held store is gone.
        self.target = target
        self.is_store = is_store

    def __lt__(self, other: _Entry) -> bool:
        return (self.priority, self.seq) < (other.priority, other.seq)


def rebuild_after_drop(d: dict[Any, Any], dropped: int, before: int) -> dict[Any, Any]:
    """Return a right-sized copy of `d` when `dropped` of `before` entries is a large
    share, else `d` itself. Callers must replace their reference with the result."""
    if before and dropped / before >= REBUILD_SHARE:
        return dict(d)
    return d


class Trimmer:
    """The registry of trim callbacks and stores, and the trim procedure itself.

    Stores are held weakly (a store that is dropped unregisters itself); plain callbacks
    are held strongly. Callbacks run in ascending priority, ties in registration order.
    A callback that raises is logged and skipped: a trim must never hurt the worker.
    """

    def __init__(self, policy: TrimPolicy | None = None) -> None:
        self.policy = policy or TrimPolicy()
        self._entries: list[_Entry] = []
        self._seq = 0
        self._lock = threading.Lock()

    def _add(self, name: str, target: Callable[[], Any], priority: int, is_store: bool) -> None:
        with self._lock:
            taken = {e.name for e in self._entries}
            unique, n = name, 1
            while unique in taken:
                n += 1
                unique = f"{name}#{n}"
            self._seq += 1
            self._entries.append(_Entry(priority, self._seq, unique, target, is_store))
            self._entries.sort()

    def register(self, store: Trimmable, name: str, priority: int = 0) -> None:
        """Hold `store` weakly; it is trimmed, sized in stats and told new limits."""
        self._add(name, weakref.ref(store), priority, True)

    def add_callback(self, fn: Callable[[float], int], name: str = "", priority: int = 0) -> None:
        """Register `fn(fraction) -> dropped`; it must drop its oldest state first."""
        self._add(name or getattr(fn, "__qualname__", "callback"), lambda: fn, priority, False)

    def remove(self, obj: object) -> None:
        """Unregister a store or callback (no error if it was not registered)."""
        with self._lock:
            # `==` rather than `is`: every access to a bound method makes a new object.
            self._entries = [e for e in self._entries if e.target() != obj]

    def _live(self) -> list[tuple[_Entry, Any]]:
        with self._lock:
            pairs = [(e, e.target()) for e in self._entries]
            self._entries = [e for e, t in pairs if t is not None]
        return [(e, t) for e, t in pairs if t is not None]

    def stores(self) -> list[tuple[str, Any]]:
        """Return (name, store) for every registered store still alive."""
        return [(e.name, t) for e, t in self._live() if e.is_store]

    def sizes(self) -> dict[str, int]:
        """Return the length of every registered store, by name."""
        return {e.name: len(t) for e, t in self._live() if e.is_store}

    def nbytes(self) -> dict[str, int]:
        """Return the bytes held by every registered store that knows it (`nbytes`)."""
        return {e.name: int(t.nbytes) for e, t in self._live()
                if e.is_store and hasattr(t, "nbytes")}

    def totals(self) -> tuple[int, int]:
        """Return (objects, history entries) summed over the stores of those kinds."""
        objects = history = 0
        for e, t in self._live():
            if e.is_store:
                if t.kind == "history":
                    history += len(t)
                elif t.kind == "objects":
                    objects += len(t)
        return objects, history

    def apply_limits(self, limits: Limits) -> None:
        """Pass new limits to every store that follows them."""
        for e, t in self._live():
            apply = getattr(t, "apply_limits", None) if e.is_store else None
            if apply is not None:
                try:
                    apply(limits)
                except Exception:
                    log.exception("store %s rejected new limits; it keeps its old ones", e.name)

    def run(self, fraction: float, reason: str = "") -> Trimmed:
        """Drop `fraction` (0..1) of every registered store, oldest first, then give the
        memory back (gc only if the policy says so, `malloc_trim` on glibc).

        Returns the `trimmed` message to send: objects dropped, RSS before and after, ms.
        """
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"trim fraction must be within 0..1, got {fraction}")
        start = time.perf_counter()
        before = memory.rss()
        dropped = 0
        for entry, target in self._live():
            call = target.trim if entry.is_store else target
            try:
                dropped += int(call(fraction) or 0)
            except Exception:
                log.exception("trim callback %s failed; the other callbacks still run",
                              entry.name)
        if self.policy.collect:
            gc.collect()
        if self.policy.malloc_trim:
            memory.malloc_trim()
        after = memory.rss()
        ms = (time.perf_counter() - start) * 1000.0
        log.debug("trim (%s): dropped %s, rss %s -> %s in %.1f ms",
                  reason, dropped, before, after, ms)
        return Trimmed(dropped=dropped, rss_before=before, rss_after=after, ms=ms,
                       reason=reason)

"""Garbage-collector accounting and tuning: pauses counted with `gc.callbacks`, thresholds
set from the profile's limits, and `freeze()` for state that lives as long as the worker.

Measured on CPython 3.11 with glibc: a full collection pauses 135-400 ms at 2M tracked
objects, while after `gc.freeze()` it costs microseconds. Collection thresholds matter
for workers with a large long-lived state and short-lived reference cycles: with the
interpreter's threshold0 of 700, objects still in use at a young collection are promoted,
and once dead they wait in the oldest generation for a full collection, which CPython
runs only when a quarter as many objects as that generation holds are waiting. In one
such worker (300k long-lived objects, a page with a reference cycle per step, each kept
for 50 steps) the garbage held grew by 146 MB at 700, 51 MB at 2,000, 24 MB at 5,000 and
15 MB at 10,000, with 6,160, 2,066, 852 and 433 collections and the same total pause
(0.35-0.55 s per 200k steps); the longest young collection grew from 2 to 5-8 ms.
So the profiles default to a threshold0 of 10,000 (`Limits.gc_threshold0`).
"""

from __future__ import annotations

import gc
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workers.protocol import Limits

#: The interpreter's own thresholds, read before the first change.
_original: tuple[int, int, int] | None = None


class GcWatch:
    """Counts collections and their total pause while installed."""

    def __init__(self) -> None:
        self.collections = 0
        self.pause_ns = 0
        self._started = 0
        self._installed = False

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter_ns()
        elif self._started:
            self.pause_ns += time.perf_counter_ns() - self._started
            self.collections += 1
            self._started = 0

    def install(self) -> None:
        """Start counting (idempotent)."""
        if not self._installed:
            gc.callbacks.append(self._callback)
            self._installed = True

    def uninstall(self) -> None:
        """Stop counting (idempotent)."""
        if self._installed:
            gc.callbacks.remove(self._callback)
            self._installed = False

    @property
    def pause_ms(self) -> float:
        """Total pause of the collections seen, in milliseconds."""
        return self.pause_ns / 1e6


def freeze() -> int:
    """Move every object tracked now into the permanent generation; return how many.

    Call it once the worker has loaded its long-lived state: later collections then skip
    those objects, which removes most of the pause. Frozen objects are never collected,
    so do not freeze state that will be dropped.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def apply_thresholds(limits: Limits) -> tuple[int, int, int]:
    """Set the collector's thresholds from `limits` (a 0 keeps the interpreter's own value
    for that generation); return the thresholds in force."""
    global _original
    if _original is None:
        _original = gc.get_threshold()
    wanted = (limits.gc_threshold0 or _original[0], limits.gc_threshold1 or _original[1],
              limits.gc_threshold2 or _original[2])
    if gc.get_threshold() != wanted:
        gc.set_threshold(*wanted)
    return wanted

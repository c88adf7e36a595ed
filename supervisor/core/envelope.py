"""A worker's start-up envelope: the memory its generations held at each age while starting.

A leaf of the decision core (plain values in, booleans out; no I/O, no clock). The rate of
growth cannot tell a start-up from a leak, but the worker's own history can: a model read
from a slow disk loads the same 600 MB in every generation, a little slower on a busy host.
So memwarden learns, per worker, the highest memory its generations held at each age (from
spawn) while they were starting, the first generation's curve refined by the later ones,
and a generation at or below that curve for its age is starting up: its growth is not
judged. Its start-up ends, for good, when it

* rises above the curve (by more than `TOLERANCE` and `SLACK`, the noise of one start);
* levels off (the caller saw its sustained growth fall below `LEVEL_RATE`);
* says ready on the channel (a cooperative worker knows when it has started).

Before any start-up has ended there is no curve yet: the generation is drawing it, and is
starting until it levels off or says ready. The envelope lives in memory only (the
snapshots carry it for people); a restart of memwarden learns it again.
"""

from __future__ import annotations

#: The curve's resolution in age: one point per half second.
BUCKET_S = 0.5
#: Ages past this are not recorded (a start-up longer than this is judged as it goes).
MAX_AGE_S = 900.0
#: Above the curve by this fraction plus `SLACK` bytes is above it: two starts of the same
#: program differ by a few percent and a few allocator arenas.
TOLERANCE = 0.10
SLACK = 16 << 20
#: Sustained growth below this (bytes/s; the monitoring brief's target band, < 1 MB/s) is a
#: start-up that has levelled off.
LEVEL_RATE = 1e6
#: How many generations before the newest ended one are remembered.
KEPT = 8


class Envelope:
    """One worker's start-up curve and which of its generations are starting."""

    __slots__ = ("_curve", "_ended", "levelled")

    def __init__(self) -> None:
        self._curve: list[float] = []  # running maximum of memory per age bucket
        self._ended: dict[int, str] = {}  # generation -> why its start-up ended
        #: True once a generation's start-up ended by levelling off or saying ready: the
        #: curve is known and later generations are held to it.
        self.levelled = False

    def at(self, age_s: float) -> float | None:
        """The curve's memory at `age_s` (flat past its last point); None before any point."""
        if not self._curve:
            return None
        i = min(int(max(age_s, 0.0) / BUCKET_S), len(self._curve) - 1)
        return self._curve[i]

    def observe(self, generation: int, age_s: float, memory: float) -> bool:
        """Take `generation`'s memory (bytes) at `age_s` seconds after its spawn; return True
        while it is starting up (and then refine the curve with it)."""
        if generation in self._ended:
            return False
        bound = self.at(age_s) if self.levelled else None
        if bound is not None and memory > bound * (1.0 + TOLERANCE) + SLACK:
            self.end(generation, "rose above its start-up envelope")
            return False
        if age_s < MAX_AGE_S:
            i = int(max(age_s, 0.0) / BUCKET_S)
            curve = self._curve
            while len(curve) <= i:  # new ages carry the curve's maximum so far
                curve.append(curve[-1] if curve else 0.0)
            for j in range(i, len(curve)):  # keep it a running maximum
                if curve[j] >= memory:
                    break
                curve[j] = memory
        return True

    def end(self, generation: int, why: str, *, levelled: bool = False) -> None:
        """End `generation`'s start-up (once); `levelled`: it ended by levelling off or by
        saying ready, so the curve is now known."""
        self._ended.setdefault(generation, why)
        for old in [n for n in self._ended if n < generation - KEPT]:
            del self._ended[old]  # long gone: a worker replaced for days keeps a few
        if levelled:
            self.levelled = True

    def starting(self, generation: int) -> bool:
        """True until `generation`'s start-up has ended."""
        return generation not in self._ended

    def why_ended(self, generation: int) -> str | None:
        """Why `generation`'s start-up ended, or None while it is starting."""
        return self._ended.get(generation)

    def points(self) -> list[tuple[float, int]]:
        """The curve as (age in s, bytes) where it changes: what the snapshots carry."""
        out: list[tuple[float, int]] = []
        for i, v in enumerate(self._curve):
            if not out or int(v) != out[-1][1]:
                out.append((i * BUCKET_S, int(v)))
        return out


__all__ = ["BUCKET_S", "LEVEL_RATE", "MAX_AGE_S", "SLACK", "TOLERANCE", "Envelope"]

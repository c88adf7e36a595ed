"""The investigator's finding: one paragraph that says what the figures point at.

Pure functions of the figures (no process access), so that every rule is tested as a
table. The rules follow the original leak investigator: memory that grows while the
objects do not (look outside the stores), history that grows, arrays that are large or
growing inside the state, and duplicate ids.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from workers.shapes import Array, Shape

MB = 1_000_000
#: Memory growth that counts: at least this much, and this share of the RSS before.
GROWTH_BYTES = 10 * MB
GROWTH_SHARE = 0.10
#: Stores count as flat when they changed by at most this share (and 10 objects).
FLAT_SHARE = 0.01
#: An array is named when it holds at least this many elements, or grew by as many.
LARGE_ARRAY = 10_000
#: A generous average for what one more GC-tracked object holds: new objects explain a
#: growth only when, at this size, they account for half of it or more.
BYTES_PER_OBJECT = 1000


class Figures:
    """What one report measured: RSS, GC-tracked objects, allocator blocks, and the
    objects held in the worker's stores (not counting histories)."""

    __slots__ = ("blocks", "rss", "state", "t", "tracked")

    def __init__(self, t: float, rss: int, tracked: int, blocks: int, state: int) -> None:
        self.t, self.rss, self.tracked, self.blocks, self.state = t, rss, tracked, blocks, state


def size(n: float) -> str:
    """Bytes in decimal units, as people read them (`120 MB`)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def _growth(now: Figures, before: Figures, top_type: tuple[str, int] | None) -> str:
    """The sentence about memory between two reports."""
    d_rss = now.rss - before.rss
    d_state = now.state - before.state
    d_tracked = now.tracked - before.tracked
    d_blocks = now.blocks - before.blocks
    secs = max(now.t - before.t, 0.0)
    over = f" over {secs:.0f} s" if secs >= 1 else ""
    if d_rss < max(GROWTH_BYTES, GROWTH_SHARE * before.rss):
        return (f"Memory changed by {size(d_rss)}{over} to {size(now.rss)}, with "
                f"{now.state:,} objects in the stores: no growth worth a look.")
    flat = abs(d_state) <= max(10, FLAT_SHARE * before.state)
    if flat and d_tracked * BYTES_PER_OBJECT < d_rss / 2:
        where = ("native memory (C extensions, buffers), fragmentation, or a cache the "
                 "allocator does not see") if d_blocks <= max(1000, 0.05 * before.blocks) \
            else (f"Python allocated {d_blocks:,} more blocks without more tracked objects: "
                  "strings or bytes kept in a hidden cache")
        return (f"Memory grew {size(d_rss)}{over} while objects stayed at {now.state:,}: "
                f"look outside the stores — {where}.")
    if not flat and d_state > 0:
        return (f"Memory grew {size(d_rss)}{over} with the stores, which grew by "
                f"{d_state:,} objects to {now.state:,}: the state itself; tighter "
                "max_objects or trims bound it.")
    culprit = f"; the type that grew most is {top_type[0]} (+{top_type[1]:,})" \
        if top_type else ""
    return (f"Memory grew {size(d_rss)}{over} while {d_tracked:,} Python objects appeared "
            f"outside the stores (which hold {now.state:,}){culprit}.")


def worker_finding(now: Figures, before: Figures | None, *,
                   store_growth: Mapping[str, int], histories: Mapping[str, int],
                   arrays: Sequence[Array], top_type: tuple[str, int] | None = None,
                   duplicates: Sequence[str] = ()) -> str:
    """The paragraph for a live report. `histories` maps each history store to its length
    now; `arrays` are the report's, longest first."""
    parts: list[str] = []
    if before is None:
        parts.append(f"First report: {size(now.rss)} RSS, {now.state:,} objects in the "
                     "stores; growth shows from the next report on.")
    else:
        parts.append(_growth(now, before, top_type))
        for name, length in histories.items():
            grew = store_growth.get(name, 0)
            if grew > 0:
                parts.append(f"The history {name} grew by {grew:,} entries to {length:,}.")
        growing = [a for a in arrays if a.grew]
        if growing:
            a = max(growing, key=lambda a: a.grew or 0)
            grew = a.grew or 0
            if grew >= LARGE_ARRAY or grew * 2 >= a.length:
                parts.append(f"{a.where}, a {a.kind}, grew by {grew:,} to {a.length:,} "
                             "elements.")
    parts += _arrays_and_duplicates(arrays, duplicates)
    return " ".join(parts)


def _arrays_and_duplicates(arrays: Sequence[Array], duplicates: Sequence[str]) -> list[str]:
    parts = []
    if arrays and arrays[0].length >= LARGE_ARRAY:
        a = arrays[0]
        parts.append(f"The largest array in the state is {a.where}: a {a.kind} of "
                     f"{a.length:,} elements (about {size(a.nbytes)}).")
    if duplicates:
        parts.append(f"{len(duplicates):,} duplicate id(s) in the state files (first: "
                     f"{duplicates[0]}): two objects claim one id.")
    return parts


def file_finding(path: str, objects: int, shapes: Sequence[Shape], arrays: Sequence[Array],
                 duplicates: Sequence[str], malformed: int, torn: bool,
                 file_bytes: int) -> str:
    """The paragraph for a state file."""
    kinds = len(shapes)
    parts = [f"{path} holds {objects:,} objects of {kinds} shape{'s' * (kinds != 1)} in "
             f"{size(file_bytes)}."]
    if shapes:
        s = shapes[0]
        share = s.nbytes / file_bytes if file_bytes else 0.0
        parts.append(f"Most bytes are {s.shape} ({s.count:,} object{'s' * (s.count != 1)}, "
                     f"{share:.0%} of the file).")
    parts += _arrays_and_duplicates(arrays, duplicates)
    if malformed or torn:
        parts.append(f"{malformed:,} malformed line(s)"
                     f"{' and a torn last line (a crash cut it short)' if torn else ''}; "
                     "they are skipped on load.")
    return " ".join(parts)

"""The leak investigator: what kinds of Python objects the worker holds and which grow.

Built on objgraph's type counts (tracemalloc is not used: it slows every allocation
while enabled, and a supervised worker must not pay that all the time). Its cost is
measured and sent with every answer: about 0.4 s at 2M objects, and it sees only
GC-tracked objects, so a report also carries `sys.getallocatedblocks()` (every block,
0.25 ms) to tell Python object growth from native or fragmentation growth.

Command line, against a state file:

    python -m workers.investigate automaton.jsonl [--top 20] [--json]

It checks every line (malformed, torn, duplicate ids), loads the objects and reports
the type growth of loading them and objects per MB. Exit status 0 when the file is
clean, 1 when it holds duplicates or malformed lines, 2 when it cannot be read.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import sys
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from workers import memory, statefile
from workers.protocol import Report

#: Container types whose length the "largest containers" section ranks.
_CONTAINERS = (dict, list, set, frozenset, tuple, deque, bytearray)


def type_counts(objects: Sequence[object] | None = None) -> dict[str, int]:
    """Return {type name: count} over `objects` (default: every GC-tracked object)."""
    import objgraph  # imported here only: investigations are rare, the import is not light

    if objects is None:
        objects = gc.get_objects()
    return objgraph.typestats(objects=objects, shortnames=False)


def growth(before: dict[str, int], after: dict[str, int], top: int) -> dict[str, int]:
    """Return the `top` types that grew most from `before` to `after`, with the increase."""
    deltas = ((name, n - before.get(name, 0)) for name, n in after.items())
    return dict(heapq.nlargest(top, (d for d in deltas if d[1] > 0), key=lambda d: d[1]))


def largest_containers(objects: Iterable[object], top: int) -> list[dict[str, object]]:
    """Return the `top` longest containers: type, length and own size in bytes."""
    sized = ((len(o), id(o), o) for o in objects if isinstance(o, _CONTAINERS))
    best = heapq.nlargest(top, sized, key=lambda t: t[0])
    return [{"type": type(o).__qualname__, "len": n, "bytes": sys.getsizeof(o)}
            for n, _, o in best]


def duplicate_ids(path: str, limit: int = 1000) -> tuple[list[str], int, int, bool]:
    """Scan a whole state file; return (duplicate ids, up to `limit`), malformed lines,
    lines, torn. Raises OSError when unreadable."""
    revs: dict[Any, int] = {}
    dups: list[str] = []
    malformed = lines = 0
    torn = False
    for lines, record, is_torn in statefile.read_records(path):  # noqa: B007
        if is_torn:
            torn = True
        elif record is None:
            malformed += 1
        elif record.get(statefile.DELETED):
            revs.pop(record["id"], None)
        else:
            oid = record["id"]
            rev = record.get(statefile.REV, 0)
            rev = rev if isinstance(rev, int) else 0
            if oid in revs and rev <= revs[oid] and len(dups) < limit:
                dups.append(str(oid))
            revs[oid] = rev
    return dups, malformed, lines, torn


class Investigator:
    """Answers `investigate` requests; growth is measured from one report to the next
    (the first report's growth is counted from nothing)."""

    def __init__(self) -> None:
        self._previous: dict[str, int] = {}

    def report(self, request_id: str, top: int = 20,
               state_files: Iterable[str] = ()) -> Report:
        """Investigate this process now; return the `report` message (cost in `ms`)."""
        start = time.perf_counter()
        objects = gc.get_objects()
        try:
            counts = type_counts(objects)
            grown = growth(self._previous, counts, top)
            largest = largest_containers(objects, top)
            n_objects = len(objects)
        finally:
            del objects  # the list holds every object alive; let it go at once
        self._previous = counts
        dups: list[str] = []
        errors: list[str] = []
        for path in state_files:
            try:
                dups += duplicate_ids(path)[0]
            except OSError as e:
                errors.append(f"{path}: {e.strerror}")
        rss = memory.rss()
        return Report(
            id=request_id,
            ms=(time.perf_counter() - start) * 1000.0,
            growth=grown,
            largest=largest,
            objects_per_mb=n_objects / (rss / 1e6) if rss else None,
            duplicates=dups,
            error="; ".join(errors),
            objects=n_objects,
            blocks=sys.getallocatedblocks(),
            rss=rss,
        )


def examine_file(path: str, top: int = 20) -> dict[str, Any]:
    """Check and load a state file; return the findings as plain data."""
    start = time.perf_counter()
    dups, malformed, lines, torn = duplicate_ids(path)
    before_counts = type_counts()
    rss_before = memory.rss()
    loaded = statefile.load(path, max_objects=sys.maxsize)
    counts = type_counts()
    rss_after = memory.rss()
    grown = growth(before_counts, counts, top)
    held_mb = (rss_after - rss_before) / 1e6
    n = len(loaded.objects)
    del loaded
    return {
        "path": path,
        "lines": lines,
        "objects": n,
        "malformed": malformed,
        "torn": torn,
        "duplicates": dups,
        "growth": grown,
        "rss_growth_mb": round(held_mb, 3),
        "objects_per_mb": round(n / held_mb, 1) if held_mb > 0 else None,
        "ms": round((time.perf_counter() - start) * 1000.0, 1),
    }


def _print_text(found: dict[str, Any]) -> None:
    print(f"{found['path']}: {found['lines']} lines, {found['objects']} objects, "
          f"{found['malformed']} malformed, torn last line: {'yes' if found['torn'] else 'no'}")
    dups = found["duplicates"]
    print(f"  duplicate ids: {len(dups)}" + (f" ({', '.join(dups[:10])}"
                                              f"{', ...' if len(dups) > 10 else ''})"
                                              if dups else ""))
    per_mb = found["objects_per_mb"]
    print(f"  loading them grew RSS by {found['rss_growth_mb']} MB"
          + (f" ({per_mb} objects per MB)" if per_mb else ""))
    print("  types added by loading:")
    for name, n in found["growth"].items():
        print(f"    {n:>10}  {name}")
    print(f"  investigated in {found['ms']} ms")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m workers.investigate",
        description="Check Automaton state files: duplicate ids, malformed or torn lines, "
                    "the object types they load into and objects per MB.")
    parser.add_argument("paths", nargs="+", metavar="FILE", help="a JSONL state file")
    parser.add_argument("--top", type=int, default=20, help="types to list (default 20)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per file")
    args = parser.parse_args(argv)
    status = 0
    for path in args.paths:
        try:
            found = examine_file(path, args.top)
        except OSError as e:
            print(f"{path}: cannot read: {e.strerror}", file=sys.stderr)
            status = 2
            continue
        if args.json:
            print(msgspec.json.encode(found).decode())
        else:
            _print_text(found)
        if (found["duplicates"] or found["malformed"]) and status == 0:
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())

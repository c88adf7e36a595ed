"""The leak investigator: what the worker's state is made of, what grows, and a finding.

A live report (the answer to `investigate`) holds:

* the state by shape: the objects of every registered store grouped by their own kind
  (a dict's `type`/`kind` field or its keys, else its class), with counts and bytes;
* the longest arrays inside the state, each named by where it is
  (`automaton.objects['obj-7'].links`, `example.leaked`), with their growth since the
  previous report; objects the worker watches (`Client.watch`, as every Automaton does)
  are walked through their attributes, so a list outside every store is found too;
* every store's size and its growth since the previous report (histories included);
* the type growth of all GC-tracked objects (objgraph's counts; the first report leaves
  out the interpreter's own machinery, which only says what was imported);
* duplicate ids in the worker's state files, allocator blocks, RSS;
* a one-paragraph finding (`workers.finding`), e.g. "Memory grew 120 MB while objects
  stayed at 1,000: look outside the stores - native memory, ...".

tracemalloc is not used: it slows every allocation while enabled, and a supervised
worker must not pay that all the time. The cost of each report is measured and sent in
`ms` (about 0.4 s at 2M objects, the object census dominating).

Command line, against a state file:

    python -m workers.investigate automaton.jsonl [--top 20] [--json]

It checks every line (malformed, torn, duplicate ids), groups the objects by shape with
their bytes in the file, names the longest arrays inside them, measures objects per MB by
loading them, and ends with a finding. Exit status 0 when the file is clean, 1 when it
holds duplicates or malformed lines, 2 when it cannot be read.
"""

from __future__ import annotations

import argparse
import gc
import heapq
import os
import sys
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from workers import memory, statefile
from workers.finding import Figures, file_finding, size, worker_finding
from workers.protocol import Report
from workers.shapes import Walk

if TYPE_CHECKING:
    from workers.trim import Trimmer

#: Container types whose length the "largest containers" section ranks.
_CONTAINERS = (dict, list, set, frozenset, tuple, deque, bytearray)

#: The interpreter's own machinery: left out of a first report's type growth, where
#: counting from nothing would list every function and class imported.
_MACHINERY = frozenset({
    "builtins.function", "builtins.type", "builtins.module", "builtins.code",
    "builtins.cell", "builtins.getset_descriptor", "builtins.method_descriptor",
    "builtins.wrapper_descriptor", "builtins.builtin_function_or_method",
    "builtins.member_descriptor", "builtins.property", "builtins.classmethod",
    "builtins.staticmethod", "builtins.weakref", "builtins.method", "_abc._abc_data",
    "builtins.frame", "builtins.classmethod_descriptor", "builtins.mappingproxy",
})


def type_counts(objects: Sequence[object] | None = None) -> dict[str, int]:
    """Return {type name: count} over `objects` (default: every GC-tracked object)."""
    import objgraph  # imported on first use only: investigations are rare, it is not light

    if objects is None:
        objects = gc.get_objects()
    return objgraph.typestats(objects=objects, shortnames=False)


def _census() -> list[object]:
    """Every GC-tracked object, taken after the investigator's own import, so that a second
    report does not count objgraph's objects as growth."""
    import objgraph  # noqa: F401

    return gc.get_objects()


def growth(before: dict[str, int], after: dict[str, int], top: int,
           leave_out: frozenset[str] = frozenset()) -> dict[str, int]:
    """Return the `top` types that grew most from `before` to `after`, with the increase."""
    deltas = ((name, n - before.get(name, 0)) for name, n in after.items()
              if name not in leave_out)
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


class Watched(Protocol):
    """What an investigation walks in a worker: the stores registered for trimming and the
    objects it watches (`workers.client.Client` is one)."""

    trimmer: Trimmer

    def roots(self) -> Iterable[tuple[str, object]]: ...


def walk_client(walk: Walk, client: Watched) -> None:
    """Walk every registered store's entries and every watched object's attributes."""
    stores = client.trimmer.stores()
    known = {id(store) for _, store in stores} | {id(client)}
    for name, store in stores:
        entries = getattr(store, "entries", None)
        if entries is None:
            continue
        for key, value in entries():
            walk.entry(name, f"{name}[{key!r}]", value)
    for name, root in client.roots():
        skip = getattr(root, "investigate_skip", frozenset())
        for attr, value in list(vars(root).items()):
            if attr not in skip and id(value) not in known:
                walk.walk(value, f"{name}.{attr}")


class Investigator:
    """Answers `investigate` requests; growth is measured from one report to the next."""

    def __init__(self) -> None:
        self._counts: dict[str, int] | None = None
        self._figures: Figures | None = None
        self._sizes: dict[str, int] = {}
        self._lengths: dict[str, int] | None = None

    def report(self, request_id: str, top: int = 20, client: Watched | None = None,
               state_files: Iterable[str] = ()) -> Report:
        """Investigate this process now; return the `report` message (cost in `ms`)."""
        start = time.perf_counter()
        objects = _census()
        try:
            counts = type_counts(objects)
            largest = largest_containers(objects, top)
            n_objects = len(objects)
        finally:
            del objects  # the list holds every object alive; let it go at once
        first = self._counts is None
        grown = growth(self._counts or {}, counts, top, _MACHINERY if first else frozenset())
        self._counts = counts

        walk = Walk(before=self._lengths)
        sizes: dict[str, int] = {}
        histories: dict[str, int] = {}
        state = 0
        if client is not None:
            walk_client(walk, client)
            for name, store in client.trimmer.stores():
                sizes[name] = len(store)
                if store.kind == "history":
                    histories[name] = sizes[name]
                else:
                    state += sizes[name]
        store_growth = {} if first else \
            {name: n - self._sizes.get(name, 0) for name, n in sizes.items()}
        self._sizes = sizes
        arrays = walk.top_arrays(top)
        self._lengths = walk.lengths()

        dups: list[str] = []
        errors: list[str] = []
        for path in state_files:
            try:
                dups += duplicate_ids(path)[0]
            except OSError as e:
                errors.append(f"{path}: {e.strerror}")
        if walk.truncated:
            errors.append(f"the state walk stopped after {walk.budget:,} objects")
        rss = memory.rss()
        blocks = sys.getallocatedblocks()
        figures = Figures(time.monotonic(), rss, n_objects, blocks, state)
        top_type = next(iter(grown.items()), None)
        finding = worker_finding(figures, self._figures, store_growth=store_growth,
                                 histories=histories, arrays=arrays, top_type=top_type,
                                 duplicates=dups)
        self._figures = figures
        return Report(
            id=request_id,
            ms=(time.perf_counter() - start) * 1000.0,
            growth=grown,
            largest=largest,
            objects_per_mb=n_objects / (rss / 1e6) if rss else None,
            duplicates=dups,
            error="; ".join(errors),
            objects=n_objects,
            blocks=blocks,
            rss=rss,
            shapes=[s.to_dict() for s in walk.top_shapes(top)],
            arrays=[a.to_dict() for a in arrays],
            stores=sizes,
            store_growth=store_growth,
            finding=finding,
        )


def examine_file(path: str, top: int = 20) -> dict[str, Any]:
    """Check and load a state file; return the findings as plain data. Raises OSError
    when the file cannot be read."""
    start = time.perf_counter()
    file_bytes = os.stat(path).st_size
    dups, malformed, lines, torn = duplicate_ids(path)
    rss_before = memory.rss()
    loaded = statefile.load(path, max_objects=sys.maxsize)
    rss_after = memory.rss()
    walk = Walk()
    encode = msgspec.json.encode
    for oid, (obj, _) in loaded.objects.items():
        walk.entry("", str(oid), obj, size=len(encode(obj)) + 1)
    n = len(loaded.objects)
    del loaded
    shapes = walk.top_shapes(top)
    arrays = walk.top_arrays(top)
    held_mb = (rss_after - rss_before) / 1e6
    return {
        "path": path,
        "bytes": file_bytes,
        "lines": lines,
        "objects": n,
        "malformed": malformed,
        "torn": torn,
        "duplicates": dups,
        "shapes": [{k: v for k, v in s.to_dict().items() if k != "store"} for s in shapes],
        "arrays": [a.to_dict() for a in arrays],
        "rss_growth_mb": round(held_mb, 3),
        "objects_per_mb": round(n / held_mb, 1) if held_mb > 0 else None,
        "finding": file_finding(path, n, shapes, arrays, dups, malformed, torn, file_bytes),
        "ms": round((time.perf_counter() - start) * 1000.0, 1),
    }


def _print_text(found: dict[str, Any]) -> None:
    print(f"{found['path']}: {found['lines']} lines, {found['objects']} objects, "
          f"{found['malformed']} malformed, torn last line: {'yes' if found['torn'] else 'no'}")
    dups = found["duplicates"]
    print(f"  duplicate ids: {len(dups)}" + (f" ({', '.join(dups[:10])}"
                                              f"{', ...' if len(dups) > 10 else ''})"
                                              if dups else ""))
    print("  objects by shape (bytes in the file):")
    for s in found["shapes"]:
        print(f"    {s['count']:>10,}  {size(s['bytes']):>9}  {s['shape']}  "
              f"(e.g. {s['example']})")
    print("  longest arrays inside them:")
    for a in found["arrays"][:10]:
        print(f"    {a['len']:>10,}  {size(a['bytes']):>9}  {a['type']:<9} {a['where']}")
    per_mb = found["objects_per_mb"]
    print(f"  loading them grew RSS by {found['rss_growth_mb']} MB"
          + (f" ({per_mb} objects per MB)" if per_mb else ""))
    print(f"  finding: {found['finding']}")
    print(f"  investigated in {found['ms']} ms")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m workers.investigate",
        description="Check Automaton state files: duplicate ids, malformed or torn lines, "
                    "the objects by shape, the longest arrays inside them, objects per MB, "
                    "and a finding.")
    parser.add_argument("paths", nargs="+", metavar="FILE", help="a JSONL state file")
    parser.add_argument("--top", type=int, default=20,
                        help="shapes and arrays to list (default 20)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per file")
    args = parser.parse_args(argv)
    if args.top < 1:
        parser.error("--top must be at least 1")
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

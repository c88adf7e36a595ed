"""What a worker's state is made of: objects grouped by their own shape, and the longest
arrays inside them, each named by where it is (`automaton.objects['obj-7'].links`).

Used by the leak investigator on live stores and on state files alike. The walk is
bounded (depth, items per container, nodes in all) so that a report costs about as much
as the state is large, never more: at most `MAX_ITEMS` items of a container are visited
and its size is extrapolated from them; the sizes are estimates from `sys.getsizeof`.
"""

from __future__ import annotations

import heapq
import sys
from collections import deque
from collections.abc import Iterable
from itertools import islice
from typing import Any

#: Containers ranked as arrays (anything else with `__len__` and `nbytes`, such as a numpy
#: array, is ranked too, without being walked into).
CONTAINERS = (list, tuple, dict, set, frozenset, deque, bytearray)
#: How deep into an object the walk goes.
MAX_DEPTH = 8
#: Items of one container visited (the rest are extrapolated).
MAX_ITEMS = 1000
#: Longest shape label.
MAX_LABEL = 80
_ATOMS = (str, bytes, int, float, bool, type(None))


class Shape:
    """A kind of state object in one store: how many, bytes, where one of them is."""

    __slots__ = ("count", "example", "nbytes", "shape", "store")

    def __init__(self, store: str, shape: str, count: int, nbytes: int, example: str) -> None:
        self.store, self.shape, self.count, self.nbytes = store, shape, count, nbytes
        self.example = example

    def to_dict(self) -> dict[str, object]:
        return {"store": self.store, "shape": self.shape, "count": self.count,
                "bytes": self.nbytes, "example": self.example}


class Array:
    """A container inside the state: where it is, its type, length, bytes, and its growth
    since the previous report (None on a first report)."""

    __slots__ = ("grew", "kind", "length", "nbytes", "where")

    def __init__(self, where: str, kind: str, length: int, nbytes: int,
                 grew: int | None = None) -> None:
        self.where, self.kind, self.length, self.nbytes, self.grew = \
            where, kind, length, nbytes, grew

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"where": self.where, "type": self.kind, "len": self.length,
                                  "bytes": self.nbytes}
        if self.grew is not None:
            out["grew"] = self.grew
        return out


def shape_of(obj: object) -> str:
    """A name for the kind of a state object: for a dict, its `type` or `kind` field when it
    has a short string one, else its keys; for anything else, its class."""
    if isinstance(obj, dict):
        for field in ("type", "kind"):
            value = obj.get(field)
            if isinstance(value, str) and 0 < len(value) <= 40:
                return f"{field}={value}"
        keys = sorted(str(k) for k in obj)
        label = "{" + ", ".join(keys) + "}"
        return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 4] + ", …}"
    cls = type(obj)
    return cls.__qualname__ if cls.__module__ == "builtins" else \
        f"{cls.__module__}.{cls.__qualname__}"


def _step(path: str, key: object) -> str:
    if isinstance(key, str) and key.isidentifier():
        return f"{path}.{key}"
    return f"{path}[{key!r}]"


class Walk:
    """Accumulates shapes and arrays over many roots; `budget` bounds the nodes visited.

    `before` (where -> length at the previous report) names arrays to follow whatever
    their rank, so that their growth can be told; otherwise only the `KEEP` longest are
    kept, so that the walk's own memory stays small.
    """

    KEEP = 1000

    def __init__(self, budget: int = 1_000_000, before: dict[str, int] | None = None) -> None:
        self.budget = budget
        self.before = before
        self.visited = 0
        self.truncated = False
        #: (store, shape) -> [store, count, bytes, an example's where, shape]
        self.shapes: dict[tuple[str, str], list[Any]] = {}
        #: The longest arrays: a min-heap of (len, where, type name, bytes).
        self._longest: list[tuple[int, str, str, int]] = []
        #: Arrays named in `before`: where -> (len, type name, bytes).
        self._followed: dict[str, tuple[int, str, int]] = {}
        self._seen_where: set[str] = set()

    def entry(self, store: str, where: str, obj: object, size: int | None = None) -> None:
        """Count one state object under its shape (with `size` in bytes if known, e.g. its
        line in a file) and rank the arrays inside it."""
        walked = self.walk(obj, where, rank_root=False)
        key = (store, shape_of(obj))
        group = self.shapes.get(key)
        if group is None:
            self.shapes[key] = [store, 1, size if size is not None else walked, where, key[1]]
        else:
            group[1] += 1
            group[2] += size if size is not None else walked

    def walk(self, root: object, where: str, rank_root: bool = True) -> int:
        """Rank every container reachable from `root` (bounded; `root` itself too unless
        `rank_root` is False, as for a state object, whose keys are no array); return its
        size estimate."""
        total = 0
        seen: set[int] = set()
        todo: list[tuple[object, str, int]] = [(root, where, 0)]
        while todo:
            obj, path, depth = todo.pop()
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            self.visited += 1
            if self.visited > self.budget:
                self.truncated = True
                break
            size = sys.getsizeof(obj, 0)
            if isinstance(obj, _ATOMS):
                total += size
                continue
            if isinstance(obj, CONTAINERS) or (hasattr(obj, "__len__") and hasattr(obj, "nbytes")):
                n = len(obj)  # type: ignore[arg-type]
                size = max(size, int(getattr(obj, "nbytes", 0)))
                if not isinstance(obj, CONTAINERS) or isinstance(obj, bytearray):
                    self._array(path, n, obj, size)
                    total += size
                    continue
                # The first items are copied in one C call, which holds the GIL: another
                # thread cannot change the container in the middle (the investigator
                # runs on the client thread while the worker goes on).
                items: Iterable[tuple[object, object]]
                if isinstance(obj, dict):
                    items = list(islice(obj.items(), MAX_ITEMS))
                elif isinstance(obj, set | frozenset):
                    items = [(None, v) for v in list(islice(obj, MAX_ITEMS))]
                else:
                    items = enumerate(list(islice(obj, MAX_ITEMS)))  # type: ignore[call-overload]
                inner = 0
                visited = 0
                for key, value in items:
                    visited += 1
                    if isinstance(value, _ATOMS):
                        inner += sys.getsizeof(value, 0)
                    elif depth < MAX_DEPTH:
                        child = path if key is None else _step(path, key)
                        todo.append((value, child, depth + 1))
                if visited and n > visited:
                    inner = inner * n // visited  # extrapolated from the items seen
                size += inner
                if depth or rank_root:
                    self._array(path, n, obj, size)
            elif depth < MAX_DEPTH and hasattr(obj, "__dict__"):
                for key, value in vars(obj).items():
                    if not isinstance(value, _ATOMS):
                        todo.append((value, _step(path, key), depth + 1))
            total += size
        return total

    def _array(self, where: str, n: int, obj: object, size: int) -> None:
        if not n or where in self._seen_where:
            return
        kind = type(obj).__qualname__
        if self.before is not None and where in self.before:
            self._followed[where] = (n, kind, size)
        item = (n, where, kind, size)
        if len(self._longest) < self.KEEP:
            heapq.heappush(self._longest, item)
            self._seen_where.add(where)
        elif n > self._longest[0][0]:
            gone = heapq.heapreplace(self._longest, item)
            self._seen_where.discard(gone[1])
            self._seen_where.add(where)

    def lengths(self) -> dict[str, int]:
        """where -> length of every array kept: the `before` of the next walk."""
        out = {where: n for n, where, _, _ in self._longest}
        out.update((where, a[0]) for where, a in self._followed.items())
        return out

    def top_shapes(self, top: int) -> list[Shape]:
        """The `top` shapes holding most bytes."""
        best = heapq.nlargest(top, self.shapes.values(), key=lambda g: g[2])
        return [Shape(g[0], g[4], g[1], g[2], g[3]) for g in best]

    def top_arrays(self, top: int) -> list[Array]:
        """The `top` longest arrays with where they are; after a previous walk (`before`)
        each says how much it grew, and the fastest growers are included even when
        shorter."""
        every = {where: (n, kind, size) for n, where, kind, size in self._longest}
        every.update(self._followed)
        chosen = dict(heapq.nlargest(top, every.items(), key=lambda kv: kv[1][0]))
        before = self.before
        if before is not None:
            grown = [(w, a) for w, a in every.items() if a[0] > before.get(w, 0)]
            for where, a in heapq.nlargest(max(1, top // 4), grown,
                                           key=lambda kv: kv[1][0] - before.get(kv[0], 0)):
                chosen.setdefault(where, a)
        return [Array(where, kind, n, size,
                      None if before is None else n - before.get(where, 0))
                for where, (n, kind, size) in sorted(chosen.items(), key=lambda kv: -kv[1][0])]

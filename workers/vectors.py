"""A bounded vector store: at most `maxlen` vectors, kept as float16, the least recently
used (or the oldest) evicted first, trimmed under pressure.

The pattern of retrieval-augmented services: embeddings arrive as float32 and pile up.
Stored as float16 they take half the memory (an embedding needs the direction, not the
seventh digit; `cosine` vectors are normalised first, so every component fits float16's
range), and a bound turns "grows until the OOM killer" into "forgets the least used".

Vectors live in one contiguous slab, rows kept dense (a removal moves the last row into
the hole), grown by doubling up to `maxlen` and shrunk after trims, so `nbytes` is what
the store really holds. With numpy installed (`pip install memwarden[vectors]`) the slab
is a numpy array and `search` is a chunked matrix product; without it the slab is a
`bytearray` written with `struct`'s half-float format: the same bound, the same bytes,
but `search` runs in pure Python (see `scripts/bench_workers.py` for both rates).
`import workers` never imports numpy; a store imports it when created.
"""

from __future__ import annotations

import heapq
import math
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from workers.bounded import _Store

if TYPE_CHECKING:
    from workers.client import Client

K = TypeVar("K")

Dtype = Literal["float16", "float32"]
Backend = Literal["numpy", "stdlib"]
_ITEMSIZE = {"float16": 2, "float32": 4}
_STRUCT = {"float16": "e", "float32": "f"}
#: First slab size, in rows.
MIN_ROWS = 64
#: Floats converted to float32 at once by a numpy search (4 MB).
SEARCH_CHUNK_FLOATS = 1 << 20


def _numpy() -> Any:
    try:
        import numpy
    except ImportError:
        return None
    return numpy


class VectorStore(_Store, Generic[K]):
    """At most `maxlen` vectors of `dim` floats, by key.

    `evict="lru"` drops the least recently used first (`get` and `search` hits count as
    use); `"oldest"` drops the least recently added. `dtype="float32"` keeps full
    precision at twice the memory. `metric="cosine"` normalises vectors on the way in and
    ranks by cosine similarity; `"dot"` keeps them as given (values beyond float16's
    +-65504 are then refused). `backend` forces numpy or the standard library (default:
    numpy when installed). Raises ValueError for bad arguments, and ImportError for
    `backend="numpy"` without numpy.
    """

    kind = "vectors"
    _what = "VectorStore"

    def __init__(
        self,
        dim: int,
        maxlen: int | None = None,
        *,
        name: str = "vectors",
        evict: Literal["lru", "oldest"] = "lru",
        dtype: Dtype = "float16",
        metric: Literal["cosine", "dot"] = "cosine",
        backend: Backend | None = None,
        follow: str | None = None,
        client: Client | None = None,
        register: bool = True,
        priority: int = 0,
    ) -> None:
        if dim < 1:
            raise ValueError(f"VectorStore {name!r}: dim must be at least 1, got {dim}")
        if evict not in ("lru", "oldest") or dtype not in _ITEMSIZE or \
                metric not in ("cosine", "dot"):
            raise ValueError(f"VectorStore {name!r}: evict is 'lru' or 'oldest', dtype "
                             f"'float16' or 'float32', metric 'cosine' or 'dot'; got "
                             f"{evict!r}, {dtype!r}, {metric!r}")
        np = _numpy() if backend in (None, "numpy") else None
        if backend == "numpy" and np is None:
            raise ImportError("VectorStore(backend='numpy') needs numpy: "
                              "pip install 'memwarden[vectors]'")
        self.dim = dim
        self.dtype: Dtype = dtype
        self.metric = metric
        self.evict = evict
        self.backend: Backend = "numpy" if np is not None else "stdlib"
        self._np = np
        self._rowbytes = dim * _ITEMSIZE[dtype]
        self._fmt = struct.Struct(f"<{dim}{_STRUCT[dtype]}")
        super().__init__(maxlen, name=name, follow=follow, client=client, register=register,
                         priority=priority)

    # -- storage ----------------------------------------------------------------------

    def _hold(self, maxlen: int) -> None:
        self.maxlen = maxlen
        self._rows: OrderedDict[K, int] = OrderedDict()  # key -> row, eviction order
        self._keys: list[K] = []  # row -> key
        self._slab: Any = self._alloc(0)

    def _alloc(self, rows: int) -> Any:
        if self._np is not None:
            return self._np.empty((rows, self.dim), dtype=self.dtype)
        return bytearray(rows * self._rowbytes)

    def _capacity(self) -> int:
        return len(self._slab) if self._np is not None else len(self._slab) // self._rowbytes

    def _resize(self, rows: int) -> None:
        """Reallocate the slab to `rows` rows, keeping the rows in use."""
        n = len(self._keys)
        if self._np is not None:
            new = self._alloc(rows)
            new[:n] = self._slab[:n]
            self._slab = new
        elif rows > self._capacity():
            self._slab.extend(bytes((rows - self._capacity()) * self._rowbytes))
        else:
            del self._slab[rows * self._rowbytes:]

    @property
    def nbytes(self) -> int:
        """Bytes of vector storage held (the slab, including rows not yet used)."""
        return self._capacity() * self._rowbytes

    def _prepare(self, vector: Iterable[float]) -> Any:
        """Check, normalise (cosine) and convert `vector` to a row; raise ValueError."""
        np = self._np
        if np is not None:
            v = np.asarray(vector, dtype=np.float32).reshape(-1)
            if v.shape[0] != self.dim:
                raise ValueError(f"VectorStore {self.name!r}: expected {self.dim} floats, "
                                 f"got {v.shape[0]}")
            if self.metric == "cosine":
                norm = float(np.linalg.norm(v))
                if norm > 0:
                    v = v / norm
            with np.errstate(over="ignore"):
                row = v.astype(self.dtype)
            if not np.isfinite(row).all():
                raise ValueError(self._unfit())
            return row
        values = [float(x) for x in vector]
        if len(values) != self.dim:
            raise ValueError(f"VectorStore {self.name!r}: expected {self.dim} floats, got "
                             f"{len(values)}")
        if self.metric == "cosine":
            norm = math.sqrt(math.fsum(x * x for x in values))
            if norm > 0:
                values = [x / norm for x in values]
        if not all(map(math.isfinite, values)):
            raise ValueError(self._unfit())
        try:
            return self._fmt.pack(*values)
        except (OverflowError, struct.error):
            raise ValueError(self._unfit()) from None

    def _unfit(self) -> str:
        return (f"VectorStore {self.name!r}: a value is not finite or beyond {self.dtype}'s "
                "range (+-65504 for float16); use metric='cosine' or dtype='float32'")

    def _write_row(self, i: int, row: Any) -> None:
        if self._np is not None:
            self._slab[i] = row
        else:
            self._slab[i * self._rowbytes:(i + 1) * self._rowbytes] = row

    def _read_row(self, i: int) -> Any:
        if self._np is not None:
            return self._slab[i].astype(self._np.float32)
        return list(self._fmt.unpack_from(self._slab, i * self._rowbytes))

    # -- the mapping --------------------------------------------------------------------

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, key: K, vector: Iterable[float]) -> None:
        """Store `vector` under `key` (replacing one stored there); when full, the least
        recently used (or oldest) vector goes first. Raises ValueError for a vector of the
        wrong length or values that do not fit."""
        row = self._prepare(vector)
        with self._lock:
            i = self._rows.get(key)
            if i is None:
                if len(self._keys) >= self.maxlen:
                    self._drop(len(self._keys) - self.maxlen + 1)
                i = len(self._keys)
                if i >= self._capacity():
                    self._resize(min(self.maxlen, max(MIN_ROWS, 2 * self._capacity())))
                self._keys.append(key)
            self._rows[key] = i
            self._rows.move_to_end(key)
            self._write_row(i, row)

    put = add

    def get(self, key: K, default: Any = None) -> Any:
        """Return the vector stored under `key` as float32 (a numpy array, or a list of
        floats without numpy), or `default`. Counts as use for LRU eviction."""
        with self._lock:
            i = self._rows.get(key)
            if i is None:
                return default
            if self.evict == "lru":
                self._rows.move_to_end(key)
            return self._read_row(i)

    def pop(self, key: K, default: Any = None) -> Any:
        """Remove `key` and return its vector, or `default`."""
        with self._lock:
            i = self._rows.pop(key, None)
            if i is None:
                return default
            vector = self._read_row(i)
            self._remove_row(i)
            return vector

    def keys(self) -> list[K]:
        """Return the keys, first to be evicted first (a copy)."""
        with self._lock:
            return list(self._rows)

    def _remove_row(self, i: int) -> None:
        """Fill row `i` with the last row (its key already gone from `_rows`)."""
        last = len(self._keys) - 1
        if i != last:
            moved = self._keys[last]
            self._write_row(i, self._slab[last] if self._np is not None else
                            bytes(self._slab[last * self._rowbytes:(last + 1) * self._rowbytes]))
            self._keys[i] = moved
            self._rows[moved] = i
        self._keys.pop()

    def _drop(self, n: int) -> int:
        dropped = 0
        while dropped < n and self._rows:
            _, i = self._rows.popitem(last=False)
            self._remove_row(i)
            dropped += 1
        return dropped

    def _shrink(self) -> None:
        """Give back slab rows no longer needed (after trims and lower bounds)."""
        fit = max(MIN_ROWS, len(self._keys))
        if self._capacity() > fit:
            self._resize(fit)

    def trim(self, fraction: float) -> int:
        """Drop the least recently used (or oldest) `fraction` and shrink the slab to what
        remains; return how many vectors were dropped."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"trim fraction must be within 0..1, got {fraction}")
        with self._lock:
            n = round(len(self._keys) * fraction)
            n = max(n, 1) if self._keys and fraction > 0 else n
            dropped = self._drop(n)
            if dropped:
                self._shrink()
            return dropped

    def set_maxlen(self, maxlen: int) -> None:
        """Change the bound; vectors beyond it are evicted and the slab shrinks."""
        self._checked(maxlen)
        with self._lock:
            self.maxlen = maxlen
            if len(self._keys) > maxlen:
                self._drop(len(self._keys) - maxlen)
            if self._capacity() > maxlen:
                self._resize(max(maxlen, len(self._keys)))

    def clear(self) -> None:
        """Drop every vector and the slab."""
        with self._lock:
            self._rows.clear()
            self._keys = []
            self._slab = self._alloc(0)

    # -- search -------------------------------------------------------------------------

    def search(self, query: Sequence[float] | Any, k: int = 10,
               where: Callable[[K], bool] | None = None) -> list[tuple[K, float]]:
        """Return up to `k` (key, score) pairs, best first: cosine similarity or dot
        product with `query`. `where` filters keys. Hits count as use for LRU eviction.
        Raises ValueError for a query of the wrong length."""
        q = self._query(query)
        with self._lock:
            n = len(self._keys)
            if n == 0 or k < 1:
                return []
            keys = self._keys
            if self._np is not None:
                scores = self._scores_numpy(q, n)
                if where is None:
                    np = self._np
                    top = min(k, n)
                    idx = np.argpartition(scores, n - top)[n - top:]
                    best = [(float(scores[i]), keys[i]) for i in idx[np.argsort(-scores[idx])]]
                else:
                    best = heapq.nlargest(k, ((float(s), key) for s, key in
                                              zip(scores.tolist(), keys, strict=True)
                                              if where(key)), key=lambda p: p[0])
            else:
                unpack, size = self._fmt.unpack_from, self._rowbytes
                pairs = ((math.fsum(a * b for a, b in zip(unpack(self._slab, i * size), q,
                                                            strict=True)), keys[i])
                         for i in range(n) if where is None or where(keys[i]))
                best = heapq.nlargest(k, pairs, key=lambda p: p[0])
            if self.evict == "lru":
                for _, key in best:
                    self._rows.move_to_end(key)
        return [(key, score) for score, key in best]

    def _query(self, query: Sequence[float] | Any) -> Any:
        """The query as float32 (numpy) or floats, normalised for cosine; ValueError when
        its length is wrong."""
        np = self._np
        if np is not None:
            q = np.asarray(query, dtype=np.float32).reshape(-1)
            norm = float(np.linalg.norm(q)) if self.metric == "cosine" else 0.0
        else:
            q = [float(x) for x in query]
            norm = math.sqrt(math.fsum(x * x for x in q)) if self.metric == "cosine" else 0.0
        if len(q) != self.dim:
            raise ValueError(f"VectorStore {self.name!r}: expected a query of {self.dim} "
                             f"floats, got {len(q)}")
        if norm > 0:
            q = q / norm if np is not None else [x / norm for x in q]
        return q

    def _scores_numpy(self, q: Any, n: int) -> Any:
        """Scores of the first `n` rows, converting a chunk at a time to float32 (a
        float16 matrix product has no fast path in numpy and would round every sum)."""
        np = self._np
        rows = max(1, SEARCH_CHUNK_FLOATS // self.dim)
        scores = np.empty(n, dtype=np.float32)
        for start in range(0, n, rows):
            end = min(n, start + rows)
            scores[start:end] = self._slab[start:end].astype(np.float32) @ q
        return scores

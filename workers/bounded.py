"""Bounded building blocks: state that cannot grow without limit.

Each store registers itself (weakly) with a client for trimming, for `stats` and, when
it follows a `Limits` field, for live limit changes. All are safe to use from several
threads (one lock each), so a client trimming on its own thread cannot corrupt them.
Trims always drop the oldest entries: that is what frees whole allocator arenas.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sized
from itertools import islice
from typing import Generic, TypeVar

from workers.client import Client
from workers.client import client as default_client
from workers.protocol import Limits
from workers.trim import rebuild_after_drop

K = TypeVar("K")
V = TypeVar("V")

#: Share of the bound evicted at once when a RecentStore overflows (see RecentStore).
EVICT_BATCH = 1 / 64


def _count(size: int, fraction: float) -> int:
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"trim fraction must be within 0..1, got {fraction}")
    n = round(size * fraction)
    return max(n, 1) if size and fraction > 0 else n


def _client(client: Client | None) -> Client:
    if client is not None:
        return client
    return default_client()


class _Store:
    """What every store shares: its name, the `Limits` field it follows, its lock, and its
    registration with a client, which comes last, once the store is ready to be trimmed.

    A subclass sets up its entries in `_hold` and changes its bound in `set_maxlen`.
    """

    #: What `stats` counts the entries as ("objects", "history", "cache").
    kind: str
    #: The class as messages name it ("RecentStore 'objects': ...").
    _what: str
    #: The entries, set up by `_hold`.
    _d: Sized

    def __init__(
        self,
        maxlen: int | None,
        *,
        name: str,
        follow: str | None,
        client: Client | None,
        register: bool,
        priority: int,
    ) -> None:
        owner = _client(client)
        self.name = name
        self.follow = follow
        if maxlen is None:
            if follow is None:
                raise ValueError(f"{self._what} {name!r}: give maxlen or a Limits field to follow")
            maxlen = int(getattr(owner.limits, follow))
        self._lock = threading.Lock()
        self._hold(self._checked(maxlen))
        if register:
            owner.register(self, name, priority)

    def __len__(self) -> int:
        return len(self._d)

    def _hold(self, maxlen: int) -> None:
        """Set up the (empty) entries, bounded by `maxlen`."""
        raise NotImplementedError

    def _checked(self, maxlen: int) -> int:
        """Return `maxlen`; raise ValueError unless it is at least 1."""
        if maxlen < 1:
            raise ValueError(f"{self._what} {self.name!r}: maxlen must be at least 1, "
                             f"got {maxlen}")
        return maxlen

    def trim(self, fraction: float) -> int:
        """Drop the oldest `fraction` of the entries; return how many were dropped."""
        raise NotImplementedError

    def set_maxlen(self, maxlen: int) -> None:
        """Change the bound to `maxlen`; raise ValueError unless it is at least 1."""
        raise NotImplementedError

    def apply_limits(self, limits: Limits) -> None:
        """Follow `limits` (no-op with `follow=None`)."""
        if self.follow is not None:
            self.set_maxlen(int(getattr(limits, self.follow)))


class RecentStore(_Store, Generic[K, V]):
    """A mapping that keeps the most recent `maxlen` entries (insertion or update order).

    `maxlen` defaults to the client's limit named by `follow` ("max_objects") and
    follows later `limits` messages; `follow=None` fixes it. When full, the oldest
    1/64 of the bound is evicted at once, so the store holds between 63/64 of `maxlen`
    and `maxlen` entries. Why batches: the store is a plain dict (leaner than an
    OrderedDict's extra linked node per entry), and finding a dict's oldest entry
    scans past the slots its deletions left, which done per insert is quadratic
    (measured: 17 µs per insert at 200k entries, against 0.2 µs in batches).
    """

    kind = "objects"
    _what = "RecentStore"

    def __init__(
        self,
        maxlen: int | None = None,
        *,
        name: str = "objects",
        follow: str | None = "max_objects",
        client: Client | None = None,
        register: bool = True,
        priority: int = 0,
    ) -> None:
        super().__init__(maxlen, name=name, follow=follow, client=client, register=register,
                         priority=priority)

    def _hold(self, maxlen: int) -> None:
        self.maxlen = maxlen
        self.evicted = 0
        self._d: dict[K, V] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._d

    def __getitem__(self, key: K) -> V:
        return self._d[key]

    def get(self, key: K, default: V | None = None) -> V | None:
        """Return the value for `key`, or `default`."""
        return self._d.get(key, default)

    def put(self, key: K, value: V) -> None:
        """Insert or replace `key`; either way it becomes the most recent entry."""
        with self._lock:
            d = self._d
            if key in d:
                del d[key]
            d[key] = value
            if len(d) > self.maxlen:
                self._drop(len(d) - self.maxlen + int(self.maxlen * EVICT_BATCH), evicting=True)

    __setitem__ = put

    def pop(self, key: K, default: V | None = None) -> V | None:
        """Remove `key` and return its value, or `default`."""
        with self._lock:
            return self._d.pop(key, default)

    def keys(self) -> list[K]:
        """Return the keys, oldest first (a copy)."""
        with self._lock:
            return list(self._d)

    def values(self) -> list[V]:
        """Return the values, oldest first (a copy)."""
        with self._lock:
            return list(self._d.values())

    def items(self) -> list[tuple[K, V]]:
        """Return the (key, value) pairs, oldest first (a copy)."""
        with self._lock:
            return list(self._d.items())

    def __iter__(self) -> Iterator[K]:
        return iter(self.keys())

    def entries(self) -> list[tuple[K, V]]:
        """The (key, value) pairs, oldest first, for the investigator."""
        return self.items()

    def clear(self) -> None:
        """Drop everything (the table too)."""
        with self._lock:
            self._d = {}

    def _drop(self, n: int, evicting: bool = False) -> int:
        d = self._d
        before = len(d)
        for key in list(islice(d, n)):
            del d[key]
        dropped = before - len(d)
        if evicting:
            self.evicted += dropped
        else:
            self._d = rebuild_after_drop(d, dropped, before)
        return dropped

    def trim(self, fraction: float) -> int:
        """Drop the oldest `fraction` of the entries; return how many were dropped.

        After a large drop the dict is rebuilt: a dict never shrinks its table.
        """
        with self._lock:
            return self._drop(_count(len(self._d), fraction))

    def set_maxlen(self, maxlen: int) -> None:
        """Change the bound; entries beyond it are dropped oldest first."""
        self._checked(maxlen)
        with self._lock:
            self.maxlen = maxlen
            if len(self._d) > maxlen:
                self._drop(len(self._d) - maxlen)


class History(_Store, Generic[V]):
    """An execution history holding the last `maxlen` entries.

    `maxlen` defaults to the client's `max_history` and follows later limits
    (`follow=None` fixes it).
    """

    kind = "history"
    _what = "History"

    def __init__(
        self,
        maxlen: int | None = None,
        *,
        name: str = "history",
        follow: str | None = "max_history",
        client: Client | None = None,
        register: bool = True,
        priority: int = 0,
    ) -> None:
        super().__init__(maxlen, name=name, follow=follow, client=client, register=register,
                         priority=priority)

    def _hold(self, maxlen: int) -> None:
        self._d: deque[V] = deque(maxlen=maxlen)

    @property
    def maxlen(self) -> int:
        """The current bound."""
        return self._d.maxlen or 0

    def __iter__(self) -> Iterator[V]:
        with self._lock:
            return iter(list(self._d))

    def append(self, entry: V) -> None:
        """Add `entry`; the oldest entry goes once the history is full."""
        with self._lock:
            self._d.append(entry)

    def entries(self) -> list[tuple[int, V]]:
        """(position, entry) pairs, oldest first, for the investigator."""
        with self._lock:
            return list(enumerate(self._d))

    def last(self, n: int) -> list[V]:
        """Return up to the `n` most recent entries, oldest first."""
        with self._lock:
            return list(self._d)[-n:] if n > 0 else []

    def trim(self, fraction: float) -> int:
        """Drop the oldest `fraction` of the entries; return how many."""
        with self._lock:
            n = _count(len(self._d), fraction)
            for _ in range(n):
                self._d.popleft()
            return n

    def set_maxlen(self, maxlen: int) -> None:
        """Change the bound, keeping the most recent entries."""
        self._checked(maxlen)
        with self._lock:
            self._d = deque(self._d, maxlen=maxlen)


class LRU(_Store, Generic[K, V]):
    """A cache of at most `maxlen` entries that also drops entries idle for `ttl_s`.

    The session-pool pattern: `get` refreshes an entry; the least recently used goes
    first, whether for room, for idleness or on a trim. `on_evict(key, value)` is
    called for every entry that leaves other than by `pop` (to close a session), outside
    the lock. Expiry is checked on every `put`/`get` and by `expire()`.
    """

    kind = "cache"
    _what = "LRU"

    def __init__(
        self,
        maxlen: int,
        ttl_s: float | None = None,
        *,
        name: str = "cache",
        on_evict: Callable[[K, V], None] | None = None,
        follow: str | None = None,
        client: Client | None = None,
        register: bool = True,
        priority: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        owner = _client(client)
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError(f"LRU {name!r}: ttl_s must be positive, got {ttl_s}")
        self.ttl_s = ttl_s
        self.on_evict = on_evict
        self._clock = clock
        super().__init__(maxlen, name=name, follow=follow, client=owner, register=register,
                         priority=priority)

    def _hold(self, maxlen: int) -> None:
        self.maxlen = maxlen
        self._d: OrderedDict[K, tuple[V, float]] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._d

    def get(self, key: K, default: V | None = None) -> V | None:
        """Return the value for `key` (refreshing it), or `default` if absent or expired."""
        now = self._clock()
        with self._lock:
            gone = self._expire(now)
            item = self._d.get(key)
            if item is not None:
                self._d[key] = (item[0], now)
                self._d.move_to_end(key)
        self._evicted(gone)
        return default if item is None else item[0]

    def put(self, key: K, value: V) -> None:
        """Insert or replace `key` as the most recently used entry."""
        now = self._clock()
        with self._lock:
            gone = self._expire(now)
            self._d[key] = (value, now)
            self._d.move_to_end(key)
            while len(self._d) > self.maxlen:
                k, (v, _) = self._d.popitem(last=False)
                gone.append((k, v))
        self._evicted(gone)

    def entries(self) -> list[tuple[K, V]]:
        """The (key, value) pairs, least recently used first, for the investigator."""
        with self._lock:
            return [(k, v) for k, (v, _) in self._d.items()]

    def pop(self, key: K, default: V | None = None) -> V | None:
        """Remove `key` and return its value (no `on_evict`), or `default`."""
        with self._lock:
            item = self._d.pop(key, None)
        return default if item is None else item[0]

    def expire(self) -> int:
        """Drop the entries idle longer than `ttl_s`; return how many."""
        with self._lock:
            gone = self._expire(self._clock())
        self._evicted(gone)
        return len(gone)

    def _expire(self, now: float) -> list[tuple[K, V]]:
        gone: list[tuple[K, V]] = []
        if self.ttl_s is None:
            return gone
        d = self._d
        # Entries are in last-use order, so the idle ones are all at the front.
        while d:
            key = next(iter(d))
            value, used = d[key]
            if now - used <= self.ttl_s:
                break
            del d[key]
            gone.append((key, value))
        return gone

    def _evicted(self, gone: list[tuple[K, V]]) -> None:
        if self.on_evict is not None:
            for key, value in gone:
                self.on_evict(key, value)

    def trim(self, fraction: float) -> int:
        """Drop the expired entries and the least recently used `fraction`; return how many."""
        with self._lock:
            gone = self._expire(self._clock())
            for _ in range(_count(len(self._d), fraction)):
                k, (v, _) = self._d.popitem(last=False)
                gone.append((k, v))
        self._evicted(gone)
        return len(gone)

    def set_maxlen(self, maxlen: int) -> None:
        """Change the bound; the least recently used entries beyond it are evicted."""
        self._checked(maxlen)
        with self._lock:
            self.maxlen = maxlen
            gone = []
            while len(self._d) > maxlen:
                k, (v, _) = self._d.popitem(last=False)
                gone.append((k, v))
        self._evicted(gone)

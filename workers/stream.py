"""A producer/consumer buffer bounded in bytes: a producer ahead of its consumer waits at
the budget (back-pressure) instead of the buffer growing.

Memory-bounded streaming: a crawler that downloads faster than it parses, a reader ahead
of its writer. A queue bounded by item count is no bound when items range from bytes to
megabytes; this one counts bytes. While the worker is under pressure the budget is cut
by the trim policy's share for the level (10 % at MEDIUM, 25 % at HIGH, 50 % at CRITICAL
by default), so producers are held back sooner; a `lossy` buffer (telemetry, previews)
also drops its oldest items down to the cut budget when a trim runs.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

from workers.bounded import _client, _Store

if TYPE_CHECKING:
    from workers.client import Client

V = TypeVar("V")

#: While the budget is cut by pressure, waiting producers look again this often, so that
#: they go on as soon as the level falls.
PRESSURE_RECHECK_S = 0.1


def default_size(item: object) -> int:
    """Bytes of a bytes-like item (its buffer), else `sys.getsizeof`."""
    try:
        return memoryview(item).nbytes  # type: ignore[arg-type]
    except TypeError:
        return sys.getsizeof(item)


class Closed(Exception):
    """`put` on a closed buffer, or `get` on a closed one that is empty."""


class StreamBuffer(_Store, Generic[V]):
    """Items in arrival order, at most `budget_bytes` of them by `sizeof` (default: the
    buffer size of bytes-like items, else `sys.getsizeof`).

    `put` blocks while the item does not fit; `get` blocks while the buffer is empty. Both
    take a `timeout` and then raise `queue.Full` / `queue.Empty`. `close()` wakes everyone:
    later `put`s raise `Closed`, `get` drains what is left and then raises `Closed`.
    Thread-safe; registered with the client for trims, `stats` (items and `nbytes`).
    """

    kind = "buffer"
    _what = "StreamBuffer"

    def __init__(
        self,
        budget_bytes: int,
        *,
        name: str = "buffer",
        sizeof: Callable[[V], int] = default_size,
        lossy: bool = False,
        client: Client | None = None,
        register: bool = True,
        priority: int = 0,
    ) -> None:
        if budget_bytes < 1:
            raise ValueError(f"StreamBuffer {name!r}: budget_bytes must be at least 1, got "
                             f"{budget_bytes}")
        self.budget_bytes = budget_bytes
        self.sizeof = sizeof
        self.lossy = lossy
        self._owner = _client(client)
        #: Producers blocked in `put` right now.
        self.waiting_producers = 0
        #: Items dropped by trims of a lossy buffer.
        self.dropped = 0
        super().__init__(budget_bytes, name=name, follow=None, client=self._owner,
                         register=register, priority=priority)

    def _hold(self, maxlen: int) -> None:
        self._changed = threading.Condition(self._lock)
        self._items: deque[tuple[V, int]] = deque()
        self._d = self._items
        self.nbytes = 0
        self.closed = False

    def budget(self) -> int:
        """The budget in force now: `budget_bytes`, cut while the worker is under pressure."""
        share = self._owner.trimmer.policy.fraction(self._owner.level)
        return max(1, int(self.budget_bytes * (1.0 - share)))

    def put(self, item: V, timeout: float | None = None) -> None:
        """Append `item`, waiting while it does not fit. Raises ValueError for an item
        larger than the whole budget, `queue.Full` after `timeout` seconds, `Closed` once
        the buffer is closed."""
        n = self.sizeof(item)
        if n > self.budget_bytes:
            raise ValueError(f"StreamBuffer {self.name!r}: an item of {n} bytes can never fit "
                             f"a budget of {self.budget_bytes}")
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            self.waiting_producers += 1
            try:
                while True:
                    if self.closed:
                        raise Closed(f"StreamBuffer {self.name!r} is closed")
                    budget = self.budget()
                    # An empty buffer takes any item that fits the uncut budget: a cut
                    # budget must slow producers, not stop them.
                    if self.nbytes + n <= budget or not self._items:
                        break
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise queue.Full(f"StreamBuffer {self.name!r}: {self.nbytes} of "
                                         f"{budget} bytes held; no room within {timeout} s")
                    if budget < self.budget_bytes:
                        left = PRESSURE_RECHECK_S if left is None else \
                            min(left, PRESSURE_RECHECK_S)
                    self._changed.wait(left)
            finally:
                self.waiting_producers -= 1
            self._items.append((item, n))
            self.nbytes += n
            self._changed.notify_all()

    def get(self, timeout: float | None = None) -> V:
        """Remove and return the oldest item, waiting while there is none. Raises
        `queue.Empty` after `timeout` seconds, `Closed` once closed and drained."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not self._items:
                if self.closed:
                    raise Closed(f"StreamBuffer {self.name!r} is closed and drained")
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise queue.Empty(f"StreamBuffer {self.name!r}: nothing within "
                                      f"{timeout} s")
                self._changed.wait(left)
            item, n = self._items.popleft()
            self.nbytes -= n
            self._changed.notify_all()
            return item

    def close(self) -> None:
        """No more items: wake every producer and consumer (idempotent)."""
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def entries(self) -> list[tuple[int, V]]:
        """(position, item) pairs, oldest first, for the investigator."""
        with self._lock:
            return [(i, item) for i, (item, _) in enumerate(self._items)]

    def trim(self, fraction: float) -> int:
        """A lossy buffer drops its oldest items down to the budget cut by `fraction`;
        another drops nothing (its producers are held back by the cut budget instead).
        Returns how many items were dropped."""
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"trim fraction must be within 0..1, got {fraction}")
        if not self.lossy:
            return 0
        target = self.budget_bytes * (1.0 - fraction)
        dropped = 0
        with self._changed:
            while self._items and self.nbytes > target:
                _, n = self._items.popleft()
                self.nbytes -= n
                dropped += 1
            self.dropped += dropped
            self._changed.notify_all()
        return dropped

    def set_maxlen(self, maxlen: int) -> None:
        """Change the budget (bytes); producers wait until the buffer fits it."""
        self._checked(maxlen)
        with self._changed:
            self.budget_bytes = maxlen
            self._changed.notify_all()

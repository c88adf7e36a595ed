"""A fixed-memory ring of (monotonic ns, RSS bytes) samples for one worker.

One preallocated `array('q')` holding each sample's time and RSS side by side (slot i at
2i and 2i + 1), then the ring's state: head, count and appends (`HEAD`, `COUNT`, `APPENDS`,
counted from the end). `append` writes in place and never allocates, so the supervisor's
memory does not grow with run time. Readers copy out what they ask for.

The state lives in the array rather than in attributes because the compiled ticker
(`supervisor/sensing/_ticker.c`) appends to the same array from C, without the GIL: both sides
update one storage, in the same order (the sample, head, count, then appends, each of the
last three a single aligned 8-byte store, released in C), so the readers below work the
same whichever side appends.

Why one interleaved array rather than a column each: the sampler appends to every worker's
ring once a tick, after a sleep that left the caches cold. Two columns cost two more cache
lines (an array object and a data line) per worker per tick; measured with 100 workers at a
10 ms interval, the append went from about 1.8 us to about 1.45 us per worker.

One thread appends (the sampler); others may read at the same time. A reader counts the
appends made while it copied and drops the oldest samples of its copy that those appends
may have overwritten, so it never returns a torn or out-of-order sample (rejected: a lock,
which the sampler would take 1000 times a second for the rare read). An append writes its
sample before it counts itself, so the slot it writes (the oldest, once the ring is full)
may hold a newer sample than the count says: the array has one slot more than the ring
holds, and readers never read the oldest slot of a full array.
"""

from __future__ import annotations

from array import array

#: Where the ring's state sits in its array, counted from the end (the compiled ticker
#: reads the same layout): the slot the next sample goes to, the samples held, and the
#: appends ever made (for readers on other threads).
HEAD, COUNT, APPENDS = -3, -2, -1
STATE = 3


class Ring:
    """The most recent `capacity` samples; times must be appended in non-decreasing order."""

    __slots__ = ("_data", "_slots", "capacity")

    def __init__(self, capacity: int) -> None:
        """Preallocate the samples; raise ValueError when `capacity` < 1."""
        if capacity < 1:
            raise ValueError(f"ring capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._slots = capacity + 1  # the one more that the next append may be writing
        # t0, rss0, t1, rss1, ..., head, count, appends (count and head over the slots)
        self._data = array("q", bytes(8 * (2 * self._slots + STATE)))

    @property
    def storage(self) -> array[int]:
        """The array samples and state live in, for the compiled ticker's appends."""
        return self._data

    def append(self, t_ns: int, rss: int) -> None:
        """Store one sample, overwriting the oldest when full."""
        data = self._data
        h = data[HEAD]
        data[2 * h] = t_ns
        data[2 * h + 1] = rss
        h += 1
        data[HEAD] = 0 if h == self._slots else h
        if data[COUNT] < self._slots:
            data[COUNT] += 1
        data[APPENDS] += 1

    def __len__(self) -> int:
        return min(self._data[COUNT], self.capacity)

    def _slice(self, start: int, n: int, appends: int, count: int,
               head: int) -> tuple[list[int], list[int]]:
        # Copy `n` samples from `start` (counted from the oldest) of the ring as it was when
        # `appends`, `count` and `head` were read, then drop what was overwritten meanwhile.
        if n <= 0:
            return [], []
        cap, data = self._slots, self._data
        first = (head - count + start) % cap
        end = first + n
        if end <= cap:
            ts = data[2 * first : 2 * end : 2].tolist()
            rss = data[2 * first + 1 : 2 * end : 2].tolist()
        else:
            end -= cap
            ts = data[2 * first : 2 * cap : 2].tolist() + data[: 2 * end : 2].tolist()
            rss = data[2 * first + 1 : 2 * cap : 2].tolist() + data[1 : 2 * end : 2].tolist()
        # Plus one: the append under way, whose sample may be written but not yet counted.
        overwritten = count + (data[APPENDS] - appends) + 1 - cap - start
        if overwritten > 0:
            del ts[:overwritten], rss[:overwritten]
        return ts, rss

    def _state(self) -> tuple[int, int, int]:
        # Appends first: a sample appended after this read only makes the check stricter.
        data = self._data
        appends = data[APPENDS]
        return appends, data[COUNT], data[HEAD]

    def _held(self, count: int) -> int:
        # The first readable position of `count` slots: never the oldest of a full array.
        return max(count - self.capacity, 0)

    def _first_at_or_after(self, t_ns: int, count: int, head: int) -> int:
        # Binary search over the logical order; a slot overwritten during the search can
        # only misplace the cut among samples that `_slice` then drops.
        lo, hi = self._held(count), count
        base, cap, data = head - count, self._slots, self._data
        while lo < hi:
            mid = (lo + hi) // 2
            if data[2 * ((base + mid) % cap)] < t_ns:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def last(self, n: int) -> tuple[list[int], list[int]]:
        """Return (times, rss) of the newest `n` samples (fewer if fewer are held), oldest first."""
        appends, count, head = self._state()
        n = min(max(n, 0), count - self._held(count))
        return self._slice(count - n, n, appends, count, head)

    def window(self, t_from_ns: int, t_to_ns: int) -> tuple[list[int], list[int]]:
        """Return (times, rss) of the samples with t_from_ns <= t <= t_to_ns, oldest first."""
        appends, count, head = self._state()
        lo = self._first_at_or_after(t_from_ns, count, head)
        hi = self._first_at_or_after(t_to_ns + 1, count, head)
        return self._slice(lo, hi - lo, appends, count, head)

    def summary(self, t_from_ns: int, t_to_ns: int) -> tuple[int, int, int, float, int] | None:
        """Return (last, min, max, mean, count) of RSS over the window; None when it is empty."""
        _, rss = self.window(t_from_ns, t_to_ns)
        if not rss:
            return None
        return rss[-1], min(rss), max(rss), sum(rss) / len(rss), len(rss)

    def newest(self) -> tuple[int, int] | None:
        """Return (t_ns, rss) of the newest sample, or None when empty."""
        appends, count, head = self._state()
        if not count:
            return None
        data = self._data
        i = 2 * ((head or self._slots) - 1)
        sample = data[i], data[i + 1]
        # Torn only if the appends meanwhile wrapped round to it.
        return sample if data[APPENDS] - appends < self.capacity else self.newest()


__all__ = ["APPENDS", "COUNT", "HEAD", "STATE", "Ring"]

"""The ring: fixed memory, time-ordered reads, and the same answers as a plain list.

Both tickers append to the same storage: every test that appends runs with Ring.append
and with the compiled ticker's append (`append` fixture), and the readers are the same."""

from __future__ import annotations

import itertools
import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.core.slope import resistant_slope
from supervisor.sensing import ticker as ticking
from supervisor.sensing.ring import Ring

Append = Callable[[Ring, int, int], None]


def python_append(ring: Ring, t_ns: int, value: int) -> None:
    ring.append(t_ns, value)


def c_append(ring: Ring, t_ns: int, value: int) -> None:
    ticking._ticker.append(ring.storage, t_ns, value)


@pytest.fixture(params=["python", "c"])
def append(request: pytest.FixtureRequest) -> Append:
    if request.param == "c" and not ticking.BUILT:
        pytest.skip("the compiled ticker (supervisor.sensing._ticker) is not built here")
    return python_append if request.param == "python" else c_append


def filled(capacity: int, n: int, append: Append) -> Ring:
    ring = Ring(capacity)
    for i in range(n):
        append(ring, i * 10, i * 100)
    return ring


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        Ring(0)


def test_empty_ring():
    ring = Ring(4)
    assert len(ring) == 0
    assert ring.last(3) == ([], [])
    assert ring.window(0, 100) == ([], [])
    assert ring.summary(0, 100) is None


def test_last_before_and_after_wrapping(append):
    ring = filled(4, 3, append)
    assert ring.last(2) == ([10, 20], [100, 200])
    assert ring.last(10) == ([0, 10, 20], [0, 100, 200])
    ring = filled(4, 7, append)  # holds samples 3..6
    assert len(ring) == 4 and ring.capacity == 4
    assert ring.last(4) == ([30, 40, 50, 60], [300, 400, 500, 600])
    assert ring.last(0) == ([], [])


def test_window_is_inclusive_and_time_ordered_across_the_wrap(append):
    ring = filled(5, 12, append)  # holds t = 70..110
    assert ring.window(75, 100) == ([80, 90, 100], [800, 900, 1000])
    assert ring.window(70, 70) == ([70], [700])
    assert ring.window(0, 1000)[0] == [70, 80, 90, 100, 110]
    assert ring.window(200, 300) == ([], [])


def test_summary(append):
    ring = Ring(8)
    for t, v in [(1, 5), (2, 9), (3, 1), (4, 7)]:
        append(ring, t, v)
    assert ring.summary(2, 4) == (7, 1, 9, pytest.approx(17 / 3), 3)


def test_newest(append):
    assert Ring(3).newest() is None
    assert filled(3, 1, append).newest() == (0, 0)
    assert filled(3, 3, append).newest() == (20, 200)
    assert filled(3, 5, append).newest() == (40, 400)


def test_append_retains_no_memory(append):
    ring = Ring(1000)
    for i in range(2000):  # warm up: every slot written once, caches primed
        append(ring, 10**12 + i, 10**9 + i)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(100_000):
            append(ring, 10**12 + i, 10**9 + i)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < 1024  # nothing per append survives it


@settings(max_examples=150, deadline=None)
@given(
    capacity=st.integers(min_value=1, max_value=50),
    steps=st.lists(st.integers(min_value=0, max_value=5), max_size=200),
    bounds=st.tuples(st.integers(0, 600), st.integers(0, 600)),
    n=st.integers(0, 60),
    appender=st.sampled_from([python_append, c_append] if ticking.BUILT else [python_append]),
)
def test_matches_a_list_model(capacity, steps, bounds, n, appender):
    ring = Ring(capacity)
    model: list[tuple[int, int]] = []
    t = 0
    for i, step in enumerate(steps):
        t += step  # equal times are allowed
        appender(ring, t, i)
        model.append((t, i))
    model = model[-capacity:]
    assert len(ring) == len(model)
    lo, hi = min(bounds), max(bounds)
    inside = [(a, b) for a, b in model if lo <= a <= hi]
    assert ring.window(lo, hi) == ([a for a, _ in inside], [b for _, b in inside])
    tail = model[-n:] if n else []
    assert ring.last(n) == ([a for a, _ in tail], [b for _, b in tail])


# -- the slope that reads the ring ---------------------------------------------------------

def test_slope_of_a_line_in_units_per_second():
    ts = [i * 1_000_000 for i in range(100)]  # 1 ms apart
    assert resistant_slope(ts, [5_000 * i for i in range(100)]) == pytest.approx(5e6)


def test_slope_resists_outliers_where_least_squares_would_not():
    ts = [i * 10_000_000 for i in range(60)]
    values = [1000 * i for i in range(60)]
    values[5] = values[55] = 10**9  # two wild samples
    assert resistant_slope(ts, values) == pytest.approx(1000 * 100, rel=0.05)


def test_slope_needs_three_points_and_a_time_span():
    assert resistant_slope([1, 2], [1, 2]) is None
    assert resistant_slope([5, 5, 5], [1, 2, 3]) is None


def test_reads_during_appends_are_never_torn(append):
    # One thread appends (t, 3t) as fast as it can; every read must return matching pairs
    # in strictly increasing time, whatever the interleaving.
    import sys
    import threading

    ring = Ring(64)
    stop = threading.Event()

    def writer() -> None:
        t = 1
        while not stop.is_set():
            append(ring, t, 3 * t)
            t += 1

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for i in range(20_000):
            if i % 3 == 0:
                ts, vs = ring.last(40)
            elif i % 3 == 1:
                newest = ring.newest()
                ts, vs = ([newest[0]], [newest[1]]) if newest else ([], [])
            else:
                t_now = ring.newest()[0] if len(ring) else 0
                ts, vs = ring.window(t_now - 30, t_now)
            assert vs == [3 * t for t in ts]
            assert all(a < b for a, b in itertools.pairwise(ts))
    finally:
        stop.set()
        thread.join()
        sys.setswitchinterval(previous)


@pytest.mark.parametrize("n", [3, 4, 5, 9])
def test_an_append_under_way_is_never_read(append, n) -> None:
    # An append writes its sample before it moves the head and counts itself: a reader
    # between the two steps must neither see that sample nor lose one it should see.
    ring = filled(4, n, append)
    head = ring.storage[-3]
    ring.storage[2 * head], ring.storage[2 * head + 1] = 10**12, 1  # written, not counted
    held = min(n, 4)
    want = ([i * 10 for i in range(n - held, n)], [i * 100 for i in range(n - held, n)])
    assert ring.last(4) == want and ring.last(10) == want
    assert ring.window(0, 10**13) == want and len(ring) == held
    assert ring.newest() == ((n - 1) * 10, (n - 1) * 100)

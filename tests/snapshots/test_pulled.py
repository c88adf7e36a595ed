"""Work pulled from one queue by several processes: results in item order whoever did them,
the largest items first, an item's error in its place, a process killed named."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from snapshots.pulled import pulled


def _square(x: int) -> int:
    if x == 5:
        raise ValueError("five")
    return x * x


@pytest.mark.parametrize("jobs", [1, 2, 3])
def test_results_come_in_item_order_with_errors_in_place(jobs: int) -> None:
    items = list(range(12))
    got = pulled(_square, items, [1] * len(items), jobs)
    assert [g for i, g in enumerate(got) if i != 5] == [i * i for i in items if i != 5]
    assert isinstance(got[5], ValueError) and str(got[5]) == "five"


def test_the_largest_items_are_taken_first() -> None:
    taken: list[str] = []
    pulled(taken.append, ["a", "b", "c", "d"], [10, 40, 20, 40], 1)
    assert taken == ["b", "d", "c", "a"]  # equal sizes in item order


def test_a_process_killed_before_sending_its_results_is_an_error() -> None:
    """The forked process takes an item and dies; this one, holding the first item until
    then (bounded), finishes and finds the results missing."""
    parent = os.getpid()
    taken = multiprocessing.get_context("fork").Event()

    def work(item: int) -> int:
        if os.getpid() != parent:
            taken.set()
            os._exit(3)
        taken.wait(timeout=60)
        return item

    with pytest.raises(ChildProcessError, match="exit status 3"):
        pulled(work, [1, 2, 3], [1, 1, 1], 2)

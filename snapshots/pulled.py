"""Work on items across processes that pull them from one shared queue, the largest first.

Why a queue and not shares fixed in advance: on a shared machine one process is often slowed
for a while (another program takes its core), and with fixed shares that process decides
when all is done. Processes that each take the next item as they finish one share the work
as it actually goes. The largest items go first, so that the last ones, during which a
process may wait for the others to finish, are the smallest.

The calling process pulls too; the others are forked (they inherit the imported modules, the
items and the work instead of receiving them), and each sends back its results once, at the
end, in one message.
"""

from __future__ import annotations

import gc
import multiprocessing
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def pulled(work: Callable[[T], R], items: list[T], sizes: list[int], jobs: int
           ) -> list[R | Exception]:
    """`work` of each item, in item order, over `jobs` processes (this one included); an
    item whose work raised has its exception in its place, the others done all the same.

    Raises ChildProcessError when a forked process ends without sending its results (killed).
    """
    order = sorted(range(len(items)), key=lambda i: -sizes[i])  # ties: in item order
    ctx = multiprocessing.get_context("fork")
    taken: Synchronized[int] = ctx.Value("i", 0)  # type: ignore[assignment]
    children = []
    received = 0
    # What exists now is inherited by the forked processes: kept out of the collector's
    # reach, their collections neither walk it nor write its pages (which each process would
    # then copy for itself).
    gc.freeze()
    try:
        for _ in range(jobs - 1):
            receive, send = ctx.Pipe(duplex=False)
            child = ctx.Process(target=_child, args=(work, items, order, taken, send),
                                daemon=True)
            child.start()
            send.close()
            children.append((child, receive))
        done = dict(_pull(work, items, order, taken))
        for child, receive in children:
            try:
                done.update(receive.recv())
            except EOFError:
                child.join()
                raise ChildProcessError(f"a process analysing sources ended without its "
                                        f"results (exit status {child.exitcode})") from None
            received += 1
    finally:
        for child, receive in children:
            receive.close()
            if received < len(children):  # leaving on an error or an interrupt: stop them
                child.terminate()
            child.join()
        gc.unfreeze()
    return [done[i] for i in range(len(items))]


def _child(work: Callable[[T], R], items: list[T], order: list[int],
           taken: Synchronized[int], send: Connection) -> None:
    with send:
        send.send(list(_pull(work, items, order, taken)))


def _pull(work: Callable[[T], R], items: list[T], order: list[int], taken: Synchronized[int]
          ) -> Iterator[tuple[int, R | Exception]]:
    """(index, result) of each item this process takes, until none is left."""
    while True:
        with taken.get_lock():
            k = taken.value
            taken.value = k + 1
        if k >= len(order):
            return
        i = order[k]
        try:
            yield i, work(items[i])
        except Exception as e:
            yield i, e


__all__ = ["pulled"]

"""The memory both tick loops share: the control cells, and the layout a compiled ticker
must declare to be used.

The Python tick loop (`ticker.Ticker`) and the compiled one (`_ticker.c`) write the same
cells of one `array('q')`, in this order: whether work is queued, the stop flag, the tick
counters, the container's usage and its inactive file cache at the last memory.stat
reading, how many times kernel notifications woke the loop. `_ticker.c` keeps the same
order and exports `LAYOUT`; a build whose `LAYOUT` differs (built from another version of
the source) is not used.
"""

from __future__ import annotations

from array import array

PENDING, STOP, TICKS, LATE, MISSED, MAX_LATE_NS, USAGE, INACTIVE, NOTIFIED = range(9)
CELLS = 9
#: What a build of `_ticker.c` must declare to be used: the cells, the ring's state after
#: its samples (`ring.HEAD` ...), and the version of the callbacks it calls on the ticker.
LAYOUT = ("control:pending,stop,ticks,late,missed,max_late_ns,usage,inactive,notified;"
          "ring:samples,head,count,appends;3")


def cells() -> array[int]:
    """A fresh set of control cells: zeros, the container's usage unknown (-1)."""
    control = array("q", bytes(8 * CELLS))
    control[USAGE] = -1
    return control


class SamplerStats:
    """Counters of the sampler, read by anyone. The ticker's live in the control cells that
    either tick loop writes; `discoveries` is the discoverer's own."""

    __slots__ = ("_cells", "discoveries")

    def __init__(self, control: array[int]) -> None:
        self._cells = control
        self.discoveries = 0

    @property
    def ticks(self) -> int:
        return self._cells[TICKS]

    @property
    def late(self) -> int:
        """Ticks that started more than a tenth of the interval after their deadline."""
        return self._cells[LATE]

    @property
    def missed(self) -> int:
        """Deadlines skipped because a tick started a whole interval late or more."""
        return self._cells[MISSED]

    @property
    def max_late_ns(self) -> int:
        return self._cells[MAX_LATE_NS]

    @property
    def notified(self) -> int:
        """Wake-ups by kernel notifications between ticks (`linux.notify`)."""
        return self._cells[NOTIFIED]


__all__ = [
    "CELLS",
    "INACTIVE",
    "LATE",
    "LAYOUT",
    "MAX_LATE_NS",
    "MISSED",
    "NOTIFIED",
    "PENDING",
    "STOP",
    "TICKS",
    "USAGE",
    "SamplerStats",
    "cells",
]

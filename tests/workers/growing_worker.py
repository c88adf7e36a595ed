"""A worker for the investigator tests.

Usage: growing_worker.py STATE [--native]

Its state holds one object with a 200,000-element list. Each step updates one of 500
objects (the stores stay flat), appends to an execution history that keeps growing
(`growing.journal`) and to a list outside every store (`growing.seen`). With --native,
steps only map and touch 1 MB of anonymous memory each (up to 100 MB), which Python's
object counts do not see.
"""

import mmap
import sys
import time

import workers
from workers.automaton import Automaton
from workers.bounded import History
from workers.protocol import Limits

native = "--native" in sys.argv
workers.connect(stats_interval_s=0.05, investigate_interval_s=0.0)


class Growing(Automaton):
    def __init__(self, path: str) -> None:
        super().__init__(path, limits=Limits(max_objects=1000), name="growing")
        self.journal: History[tuple[str, int]] = History(
            10**7, name="growing.journal", follow=None, client=self.client)
        self.seen: list[int] = []
        self.mapped: list[mmap.mmap] = []

    def step(self) -> None:
        if native:
            if len(self.mapped) < 100:
                m = mmap.mmap(-1, 1 << 20)
                m.write(b"\xa5" * (1 << 20))
                self.mapped.append(m)
            time.sleep(0.01)
            return
        i = self.steps
        self.put({"id": f"o{i % 500}", "n": i})
        self.journal.append(("step", i))
        self.seen.append(i)
        time.sleep(0.0005)


automaton = Growing(sys.argv[1])
automaton.load()
automaton.put({"id": "big", "items": list(range(200_000))})
for i in range(500):
    automaton.put({"id": f"o{i}", "n": i})
automaton.run()

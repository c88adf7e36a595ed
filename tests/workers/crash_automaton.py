"""Adds objects forever, compacting often, and prints each id once its line is written.

Usage: crash_automaton.py PATH FIRST_ID [hold]. The crash test kills it with SIGKILL at
random points; with `hold` its first compaction stops just before the rename that ends it
(the new file written and synced, the old one still in place), says "compacting", and waits
there for the kill: a crash in the middle of a save, every time.
"""

import os
import sys
import time

from workers.automaton import Automaton
from workers.client import Client
from workers.protocol import Limits

path, first = sys.argv[1], int(sys.argv[2])
if sys.argv[3:] == ["hold"]:
    def held(src: str, dst: str) -> None:
        print("compacting", flush=True)
        while True:
            time.sleep(1)
    os.replace = held  # type: ignore[assignment]
automaton = Automaton(path, client=Client(), limits=Limits(max_objects=1_000_000))
automaton.load()
i = first
while True:
    automaton.add({"id": f"o{i}", "pad": "p" * 300})
    print(i, flush=True)
    if i % 25 == 0:
        automaton.save()
    i += 1

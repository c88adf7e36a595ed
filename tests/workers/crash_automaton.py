"""Adds objects forever, compacting often, and prints each id once its line is written.

Usage: crash_automaton.py PATH FIRST_ID. The crash test kills it with SIGKILL at random
points, often in the middle of a compaction.
"""

import sys

from workers.automaton import Automaton
from workers.client import Client
from workers.protocol import Limits

path, first = sys.argv[1], int(sys.argv[2])
automaton = Automaton(path, client=Client(), limits=Limits(max_objects=1_000_000))
automaton.load()
i = first
while True:
    automaton.add({"id": f"o{i}", "pad": "p" * 300})
    print(i, flush=True)
    if i % 25 == 0:
        automaton.save()
    i += 1

"""A generation that shares its state file with the one before it, for the replacement tests.

Usage: shared_automaton.py STATE ACKDIR [RATE]

Each step adds `g<gen>-<i>` and, every third step, updates one of this generation's own
earlier objects with a higher `v`. Only once a write has returned does it append
"<id> <v>" to ACKDIR/<gen>-<pid>.acks: the ids it acknowledged as saved. It compacts
every 40 steps (the file is then replaced by rename while the other generation writes).

Before it says ready it writes until it has taken in a write of another live generation
(SEEN of them, or for up to PRE_WAIT_S), and records how many it saw as "seen <n>": proof
that the two generations wrote to the file at the same time.
"""

import os
import sys
import time

import workers
from workers.automaton import Automaton

PRE_WAIT_S = 0.5
SEEN = 5

state, ackdir = sys.argv[1], sys.argv[2]
rate = float(sys.argv[3]) if len(sys.argv) > 3 else 200.0
gen = os.environ.get("MEMWARDEN_GENERATION", "0")
workers.connect()
acks = os.open(os.path.join(ackdir, f"{gen}-{os.getpid()}.acks"),
               os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)


def ack(text: str) -> None:
    os.write(acks, text.encode() + b"\n")


class Shared(Automaton):
    made = 0

    def step(self) -> None:
        i = self.made
        self.add({"id": f"g{gen}-{i}", "v": 0, "pad": "p" * 200})
        ack(f"g{gen}-{i} 0")
        if i % 3 == 2:
            j = i // 2
            self.put({"id": f"g{gen}-{j}", "v": i, "pad": "q" * 200})
            ack(f"g{gen}-{j} {i}")
        if i % 40 == 39:
            self.save()
        self.made += 1


automaton = Shared(state, name="shared")
automaton.load()
mine = f"g{gen}-"
at_load = {k for k in automaton.objects if not str(k).startswith(mine)}
seen = 0
deadline = time.monotonic() + PRE_WAIT_S
while time.monotonic() < deadline:
    automaton.step()
    automaton.refresh()
    seen = sum(1 for k in automaton.objects
               if not str(k).startswith(mine) and k not in at_load)
    if seen >= SEEN:
        break
    time.sleep(1 / rate)
ack(f"seen {seen}")
automaton.run(interval_s=1 / rate)
ack(f"stopped {automaton.stop_reason}")
automaton.close()

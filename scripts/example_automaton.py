#!/usr/bin/env python3
"""An automaton that accumulates objects: unbounded on its own, bounded under memwarden.

Like the automaton memwarden was first written for, it keeps every object it makes
unless a supervisor gives it limits. So

    python scripts/example_automaton.py                     # grows ~3 MB/s, without end
    memwarden run -- python scripts/example_automaton.py    # levels off at max_objects
    memwarden analyze memwarden-snapshots/

Each step makes one object of --object-kb KB (every tenth step updates an older one
instead), records the step in the history and persists the change to --state
(automaton.jsonl), which a replacement generation shares with it while both run. A
status line goes to stderr once a second. Stops after --duration seconds (default 30) or
--steps steps, or when memwarden retires it (its `shutdown` message or SIGTERM).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import workers
from workers.automaton import Automaton
from workers.protocol import Limits

#: Limits of an automaton nobody supervises: in effect none, so it keeps everything.
UNBOUNDED = Limits(max_objects=10**9, max_history=10**9, trim_threshold_bytes=10**15)


class Example(Automaton):
    def __init__(self, path: str, object_bytes: int, limits: Limits | None,
                 leak_bytes: int = 0) -> None:
        super().__init__(path, limits=limits, name="example")
        self.payload = "x" * object_bytes
        self.made = 0
        # Ids stay unique across generations, which load their predecessor's objects.
        generation = os.environ.get("MEMWARDEN_GENERATION")
        self.prefix = f"g{generation}-" if generation else ""
        # A leak no limit reaches, like a module-level cache nobody clears: what trims
        # cannot fix and only a fresh generation does.
        self.leak_bytes = leak_bytes
        self.leaked: list[bytes] = []
        self.next_status = time.monotonic()

    def step(self) -> None:
        if self.made % 10 == 9 and len(self.objects):
            oldest = self.objects.keys()[0]
            self.put({"id": oldest, "step": self.steps, "data": self.payload + str(self.steps)})
        else:
            self.add({"id": f"obj-{self.prefix}{self.made}", "step": self.steps,
                      "data": self.payload + str(self.made)})
        self.made += 1
        if self.leak_bytes:
            self.leaked.append(os.urandom(self.leak_bytes))
        self.record((self.steps, time.time()))
        now = time.monotonic()
        if now >= self.next_status:
            self.next_status = now + 1.0
            print(f"example_automaton: step {self.steps:>6}  objects {len(self.objects):>6}  "
                  f"history {len(self.history):>6}  rss {workers.rss() / 1e6:6.1f} MB  "
                  f"level {self.client.level.label}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--duration", type=float, default=30.0, help="seconds to run (default 30)")
    p.add_argument("--until", type=float, default=None,
                   help="stop at this Unix time instead (shared by every generation)")
    p.add_argument("--steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--rate", type=float, default=300.0, help="steps per second (default 300)")
    p.add_argument("--object-kb", type=float, default=10.0, help="KB per object (default 10)")
    p.add_argument("--state", default="automaton.jsonl", help="state file (automaton.jsonl)")
    p.add_argument("--fresh", action="store_true", help="start from an empty state file")
    p.add_argument("--leak-kb", type=float, default=0.0,
                   help="KB per step leaked outside every bounded store (default 0)")
    p.add_argument("--bounded", action="store_true",
                   help="use the default profile's limits even without a supervisor")
    p.add_argument("--ready-file", default=None,
                   help="touch this file once the state is loaded (memwarden --ready-file)")
    args = p.parse_args(argv)
    if args.rate <= 0 or args.object_kb <= 0:
        p.error("--rate and --object-kb must be positive")
    logging.basicConfig(level=logging.INFO, format="example_automaton: %(message)s")
    if args.fresh and os.path.exists(args.state):
        os.unlink(args.state)
    client = workers.connect()
    limits = None if client.supervised or args.bounded else UNBOUNDED
    automaton = Example(args.state, int(args.object_kb * 1000), limits,
                        int(args.leak_kb * 1000))
    if args.ready_file:  # the state is loaded: this generation can take over
        Path(args.ready_file).touch()
    mode = "supervised" if client.supervised else ("bounded" if args.bounded else "unbounded")
    print(f"example_automaton: {mode}, max_objects {automaton.limits.max_objects}, "
          f"{args.rate:g} steps/s of {args.object_kb:g} KB", file=sys.stderr, flush=True)
    duration = args.duration if args.until is None else max(0.0, args.until - time.time())
    done = automaton.run(steps=args.steps, duration_s=duration, interval_s=1 / args.rate)
    print(f"example_automaton: {done} steps, {len(automaton.objects)} objects kept, "
          f"{len(automaton.duplicates)} duplicate ids", file=sys.stderr, flush=True)
    automaton.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

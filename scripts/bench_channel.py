#!/usr/bin/env python3
"""What a worker flooding its channel costs the supervisor, against a quiet worker measured
in the same run.

    .venv/bin/python scripts/bench_channel.py [--seconds 20] [--quick]

Runs memwarden (1 ms interval, no snapshots) twice for `--seconds` each: with a worker that
sleeps, then with one that writes valid `stats` messages as fast as its socket takes them.
Prints for each: memwarden's CPU (share of one core, from /proc), the share of late and
missed ticks (from `memwarden status --json`) and, for the flood, the messages the worker
wrote. The channel is read at `supervisor.loop.channel.RATE` lines a second; before that limit a
flood of 259,000 messages a second took 0.8 of a core and made 79 % of ticks late.
`--quick` is a smoke run (2 s each) whose figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

QUIET = "import time; time.sleep(3600)"
FLOOD = r"""
import os, socket, sys
s = socket.socket(fileno=int(os.environ["MEMWARDEN_FD"]))
line = b'{"type":"stats","objects":1}\n' * 256
sent = 0
out = open(sys.argv[1], "w")
try:
    while True:
        s.sendall(line)
        sent += 256
        if sent % 4096 == 0:
            out.seek(0); out.write(str(sent)); out.flush()
except OSError:
    pass
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status(sock: str) -> dict:
    r = subprocess.run([sys.executable, "-m", "supervisor", "status", "--json", "--control",
                        sock], capture_output=True, text=True, timeout=30, cwd=ROOT)
    return json.loads(r.stdout) if r.returncode == 0 else {}


def run(code: str, seconds: float, tmp: str) -> dict:
    sock = os.path.join(tmp, "ctl.sock")
    count = os.path.join(tmp, "sent")
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "run", "--snapshots", "", "--control", sock,
         "--", sys.executable, "-c", code, count], cwd=ROOT, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not status(sock).get("workers") and time.monotonic() < deadline:
            time.sleep(0.1)
        before, cpu0, t0 = status(sock), cpu_seconds(proc.pid), time.monotonic()
        time.sleep(seconds)
        after, cpu1, t1 = status(sock), cpu_seconds(proc.pid), time.monotonic()
    finally:
        proc.terminate()
        proc.wait(30)
    ticks = after.get("ticks", 0) - before.get("ticks", 0)
    sent = int(Path(count).read_text() or 0) if os.path.exists(count) else 0
    return {"cpu": (cpu1 - cpu0) / (t1 - t0), "ticks": ticks,
            "late": (after.get("late", 0) - before.get("late", 0)) / max(ticks, 1),
            "missed": (after.get("missed", 0) - before.get("missed", 0)) / max(ticks, 1),
            "sent_per_s": sent / (t1 - t0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--quick", action="store_true", help="a 2 s smoke run")
    args = parser.parse_args()
    seconds = 2.0 if args.quick else args.seconds
    with tempfile.TemporaryDirectory() as tmp:
        quiet = run(QUIET, seconds, tmp)
    with tempfile.TemporaryDirectory() as tmp:
        flood = run(FLOOD, seconds, tmp)
    print(f"{'worker':8} {'cpu':>7} {'ticks':>8} {'late':>7} {'missed':>7} {'msgs/s':>9}")
    for name, r in (("quiet", quiet), ("flood", flood)):
        print(f"{name:8} {r['cpu']:7.1%} {r['ticks']:8d} {r['late']:7.2%} {r['missed']:7.2%} "
              f"{r['sent_per_s']:9.0f}")
    print("reference: the quiet worker; the flood should cost about the same "
          "(channel read at most RATE lines/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

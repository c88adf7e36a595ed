#!/usr/bin/env python3
"""What `memwarden status --check` costs as a probe (an exec probe runs it inside the very
cgroup memwarden watches): wall time and peak RSS per run, beside the floor of a bare
interpreter and of `import msgspec` (the wire format's decoder), and `memwarden status`.

    .venv/bin/python scripts/bench_probe.py           # 30 runs of each
    .venv/bin/python scripts/bench_probe.py --quick   # 3 runs: a smoke test

Prints one line per command: median and p90 wall time (ms), median peak RSS (MB).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def measure(argv: list[str], runs: int) -> tuple[list[float], list[float]]:
    """Wall seconds and peak RSS (MB) of each of `runs` runs of `argv`."""
    walls, peaks = [], []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        walls.append(time.perf_counter() - start)
        proc.returncode = os.waitstatus_to_exitcode(status)
        peaks.append(usage.ru_maxrss / 1024)  # KiB on Linux
    return walls, peaks


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 runs of each: a smoke test")
    p.add_argument("--runs", type=int, default=30)
    args = p.parse_args()
    runs = 3 if args.quick else args.runs
    with tempfile.TemporaryDirectory() as tmp:
        sock = os.path.join(tmp, "control.sock")
        memwarden = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "run", "--control", sock, "--snapshots", "",
             "--ready-after", "0.1s", "--interval", "10ms", "--", "sleep", "3600"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        try:
            deadline = time.monotonic() + 30
            while not os.path.exists(sock):
                if time.monotonic() > deadline or memwarden.poll() is not None:
                    print("memwarden did not start", file=sys.stderr)
                    return 1
                time.sleep(0.05)
            time.sleep(0.3)  # past --ready-after: the check answers 0
            commands = {
                "floor: python -c pass": [sys.executable, "-c", "pass"],
                "floor: python -c 'import msgspec'": [sys.executable, "-c", "import msgspec"],
                "memwarden status --check": [sys.executable, "-m", "supervisor", "status",
                                             "--check", "--control", sock],
                "memwarden status": [sys.executable, "-m", "supervisor", "status",
                                     "--control", sock],
            }
            print(f"{runs} runs each (RSS: peak, as the kernel counts it against the cgroup)")
            for name, argv in commands.items():
                walls, peaks = measure(argv, runs)
                walls.sort()
                p90 = walls[min(len(walls) - 1, int(len(walls) * 0.9))]
                print(f"{name:36} median {statistics.median(walls) * 1e3:6.1f} ms  "
                      f"p90 {p90 * 1e3:6.1f} ms  peak RSS {statistics.median(peaks):5.1f} MB")
        finally:
            memwarden.terminate()
            memwarden.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())

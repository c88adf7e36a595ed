#!/usr/bin/env python3
"""Benchmark of the worker library; every figure is set against a reference measured in
the same run, each case in a fresh interpreter so that RSS figures are its own.

    .venv/bin/python scripts/bench_workers.py [--objects 1000000] [--repeat 5]

Prints: import time and memory of `workers` (vs a bare `python -c pass`), trim time and
RSS returned for N small objects (oldest-first vs scattered), the `malloc_trim` gain,
the gc pause with and without `gc.freeze()`, and the investigator's cost at N objects
(vs `sys.getallocatedblocks()`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 1e6

PRELUDE = """
import gc, json, sys, time
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
"""

IMPORT = PRELUDE + """
r0, t0 = rss(), time.perf_counter()
import workers
workers.connect()
import workers.bounded, workers.automaton
print(json.dumps({"s": time.perf_counter() - t0, "bytes": rss() - r0}))
"""

FILL = PRELUDE + """
from workers.client import Client
from workers.bounded import RecentStore
from workers import memory
from workers.trim import TrimPolicy
N = @N@
client = Client(policy=TrimPolicy(malloc_trim=@TRIM@))
store = RecentStore(2 * N, follow=None, client=client)
before = rss()
for i in range(N):
    store.put(i, (i, "value-%d" % i))
filled = rss()
"""

TRIM_OLDEST = FILL + """
t0 = time.perf_counter()
result = client.trimmer.run(0.5)
print(json.dumps({"held": filled - before, "returned": filled - rss(),
                  "ms": (time.perf_counter() - t0) * 1000}))
"""

# The same half dropped, but every other entry; then the same rebuild and malloc_trim.
TRIM_SCATTERED = FILL + """
t0 = time.perf_counter()
d = store._d
for i in range(0, N, 2):
    del d[i]
store._d = dict(d)
del d
memory.malloc_trim()
print(json.dumps({"held": filled - before, "returned": filled - rss(),
                  "ms": (time.perf_counter() - t0) * 1000}))
"""

MALLOC_TRIM = FILL + """
client.trimmer.run(0.5)
after_drop = rss()
t0 = time.perf_counter()
memory.malloc_trim()
ms = (time.perf_counter() - t0) * 1000
small = after_drop - rss()
# Buffers of 64 KB (below glibc's mmap threshold, so they live in the heap), all freed
# but the last, which pins the top of the heap: only malloc_trim can return the rest.
bufs = [bytearray(b"x" * 65536) for _ in range(3000)]
keep = bufs[-1]
del bufs
freed = rss()
t1 = time.perf_counter()
memory.malloc_trim()
print(json.dumps({"small_gain": small, "small_ms": ms, "buf_gain": freed - rss(),
                  "buf_ms": (time.perf_counter() - t1) * 1000}))
"""

GC_PAUSE = PRELUDE + """
N = @N@
state = [[i] for i in range(N)]   # N tracked containers
def pause():
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        gc.collect()
        times.append((time.perf_counter() - t0) * 1000)
    return sorted(times)[1]
tracked = len(gc.get_objects())
plain = pause()
gc.freeze()
frozen = pause()
print(json.dumps({"plain_ms": plain, "frozen_ms": frozen, "tracked": tracked}))
"""

INVESTIGATE = PRELUDE + """
N = @N@
state = [[i] for i in range(N)]
from workers.investigate import Investigator
inv = Investigator()
t0 = time.perf_counter()
blocks = sys.getallocatedblocks()
blocks_ms = (time.perf_counter() - t0) * 1000
first = inv.report("a", top=10)
state += [[i] for i in range(N // 10)]
second = inv.report("b", top=10)
print(json.dumps({"first_ms": first.ms, "second_ms": second.ms, "objects": second.objects,
                  "blocks_ms": blocks_ms, "growth": second.growth}))
"""


def run(code: str, env: dict[str, str]) -> tuple[dict[str, float], float, int]:
    """Run `code` in a fresh interpreter; return its JSON output, wall seconds, max RSS."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                            cwd=ROOT)
    out = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark case failed with status {proc.returncode}:\n{code}")
    return (json.loads(out) if out.strip() else {}), wall, usage.ru_maxrss * 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--objects", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    n = args.objects
    with tempfile.TemporaryDirectory() as cache:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("MEMWARDEN_") and k != "PYTHONDONTWRITEBYTECODE"}
        # Bytecode cached outside the checkout, as an installed package has it.
        env.update(PYTHONPATH=str(ROOT), PYTHONPYCACHEPREFIX=cache)
        run(IMPORT, env)  # compile and cache once

        print(f"workers benchmark: Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
              f"N = {n:,} objects")
        print()
        bare_wall, bare_rss, imp_wall, imp_rss, inproc_s, inproc_b = [], [], [], [], [], []
        for _ in range(args.repeat):
            _, wall, maxrss = run("pass", env)
            bare_wall.append(wall)
            bare_rss.append(maxrss)
            found, wall, maxrss = run(IMPORT, env)
            imp_wall.append(wall)
            imp_rss.append(maxrss)
            inproc_s.append(found["s"])
            inproc_b.append(found["bytes"])
        med = statistics.median
        import_ms = med(inproc_s) * 1000
        import_mb = med(inproc_b) / MB
        print("import workers + connect() + bounded + automaton "
              f"(median of {args.repeat} fresh interpreters)")
        print(f"  python -c pass (reference)   {med(bare_wall) * 1000:7.1f} ms wall  "
              f"{med(bare_rss) / MB:6.1f} MB max RSS")
        print(f"  python + import workers      {med(imp_wall) * 1000:7.1f} ms wall  "
              f"{med(imp_rss) / MB:6.1f} MB max RSS")
        print(f"  difference                   {(med(imp_wall) - med(bare_wall)) * 1000:7.1f} ms"
              f"       {(med(imp_rss) - med(bare_rss)) / MB:6.1f} MB")
        print(f"  measured inside the process  {import_ms:7.1f} ms       {import_mb:6.1f} MB"
              f"   budget 50 ms, 5 MB: {verdict(import_ms <= 50 and import_mb <= 5)}")
        print()

        oldest, _, _ = run(case(TRIM_OLDEST, n, True), env)
        scattered, _, _ = run(case(TRIM_SCATTERED, n, True), env)
        print(f"trim half of {n:,} small objects (RecentStore of (int, str) tuples)")
        for name, r in (("oldest-first", oldest), ("scattered (reference)", scattered)):
            share = r["returned"] / (r["held"] / 2)
            print(f"  {name:22} held {r['held'] / MB:6.1f} MB  returned "
                  f"{r['returned'] / MB:6.1f} MB = {share:4.0%} of the dropped half  "
                  f"in {r['ms']:6.1f} ms")
        ratio = oldest["returned"] / max(scattered["returned"], 1)
        print(f"  oldest-first returns {ratio:.1f}x the scattered drop; at least half the "
              f"dropped half: {verdict(oldest['returned'] >= oldest['held'] / 4)}")
        print()

        mt, _, _ = run(case(MALLOC_TRIM, n, False), env)
        print("malloc_trim(0) after the trim (glibc)")
        print(f"  small objects (pymalloc)     gain {mt['small_gain'] / MB:6.1f} MB "
              f"in {mt['small_ms']:5.1f} ms")
        print(f"  freed 64 KB heap buffers     gain {mt['buf_gain'] / MB:6.1f} MB "
              f"in {mt['buf_ms']:5.1f} ms")
        print()

        gcp, _, _ = run(case(GC_PAUSE, n, True), env)
        print(f"gc.collect() pause with {gcp['tracked']:,} tracked objects (median of 3)")
        print(f"  without freeze (reference)   {gcp['plain_ms']:8.2f} ms")
        print(f"  after gc.freeze()            {gcp['frozen_ms']:8.4f} ms   "
              f"({gcp['plain_ms'] / max(gcp['frozen_ms'], 1e-6):,.0f}x shorter)")
        print()

        inv, _, _ = run(case(INVESTIGATE, n, True), env)
        print(f"leak investigator at {inv['objects']:,} tracked objects")
        print(f"  sys.getallocatedblocks() (reference) {inv['blocks_ms']:8.2f} ms")
        print(f"  first report                         {inv['first_ms']:8.1f} ms")
        print(f"  second report (growth since first)   {inv['second_ms']:8.1f} ms   "
              f"top growth {next(iter(inv['growth'].items()), None)}")
    return 0


def case(code: str, n: int, malloc_trim: bool) -> str:
    """Fill in a case's parameters (str.format would trip over the JSON braces)."""
    return code.replace("@N@", str(n)).replace("@TRIM@", str(malloc_trim))


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


if __name__ == "__main__":
    sys.exit(main())

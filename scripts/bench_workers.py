#!/usr/bin/env python3
"""Benchmark of the worker library; every figure is set against a reference measured in
the same run, each case in a fresh interpreter so that RSS figures are its own.

    .venv/bin/python scripts/bench_workers.py [--objects 1000000] [--repeat 5]
    .venv/bin/python scripts/bench_workers.py --quick     # a smoke run at tiny sizes

Prints: import time and memory of `workers` (vs a bare `python -c pass`), trim time and
RSS returned for N small objects (oldest-first vs scattered), the `malloc_trim` gain,
what a collection after a trim returns and costs (state with and without reference
cycles), the gc pause with and without `gc.freeze()`, collections and garbage held with
the profiles' gc thresholds vs the interpreter's, the vector store's memory per vector
(float16 vs float32, from RSS), its trim and search times (numpy vs the standard
library), the state file's locked append (vs a bare write), and the investigator's cost
at N objects (vs `sys.getallocatedblocks()`).
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


# A trim of 10 % of N objects with or without reference cycles, with or without the
# collection the trim policy runs after the callbacks.
TRIM_COLLECT = PRELUDE + """
from workers.client import Client
from workers.bounded import RecentStore
from workers import memory
from workers.trim import TrimPolicy
N = @N@
CYCLIC = @CYCLIC@
client = Client(policy=TrimPolicy(collect=@COLLECT@))
store = RecentStore(2 * N, follow=None, client=client)
for i in range(N):
    o = {"id": i, "links": [{"href": "u%d" % j} for j in range(3)], "text": "t%d" % i * 5}
    if CYCLIC:
        for link in o["links"]:
            link["page"] = o
    store.put(i, o)
gc.collect()
held, tracked = rss(), len(gc.get_objects())
t0 = time.perf_counter()
client.trimmer.run(0.1)
ms = (time.perf_counter() - t0) * 1000
after = rss()
gc.collect()
memory.malloc_trim()
print(json.dumps({"tracked": tracked, "ms": ms, "returned": held - after,
                  "left": after - rss()}))
"""

# A worker with a large long-lived state whose steps make short-lived reference cycles
# (a page kept for 50 steps): collections, their pauses and the garbage held, by threshold.
GC_THRESHOLDS = PRELUDE + """
N, STEPS = @N@, @STEPS@
state = {i: {"id": i, "tags": [i, i + 1], "meta": {"n": i}} for i in range(N)}
gc.collect()
gc.set_threshold(*@THRESHOLDS@)
pauses = []
started = [0.0]
def watch(phase, info):
    if phase == "start":
        started[0] = time.perf_counter()
    else:
        pauses.append(time.perf_counter() - started[0])
gc.callbacks.append(watch)
base = peak = rss()
recent = []
for s in range(STEPS):
    page = {"id": s, "links": [{"href": str(j), "n": j} for j in range(20)]}
    page["self"] = page
    recent.append(page)
    if len(recent) > 50:
        recent.pop(0)
    if s % 1000 == 0:
        peak = max(peak, rss())
gc.callbacks.remove(watch)
pauses.sort()
print(json.dumps({"collections": len(pauses), "total_ms": sum(pauses) * 1000,
                  "p99_ms": pauses[int(len(pauses) * 0.99)] * 1000 if pauses else 0.0,
                  "max_ms": pauses[-1] * 1000 if pauses else 0.0, "held": peak - base}))
"""

# N vectors of DIM floats: RSS per vector, trim of half, one search.
VECTORS = PRELUDE + """
from workers.client import Client
from workers.vectors import VectorStore
N, DIM = @N@, @DIM@
vector = [((i * 7919) % 1000) / 1000.0 - 0.5 for i in range(DIM)]
keys = list(range(N))
vs = VectorStore(DIM, N, dtype="@DTYPE@", backend="@BACKEND@", client=Client())
vs.add(-1, vector)
vs.pop(-1)
before = rss()
t0 = time.perf_counter()
for k in keys:
    vs.add(k, vector)
add_s = time.perf_counter() - t0
held = rss() - before
t0 = time.perf_counter()
vs.search(vector, k=10)
search_ms = (time.perf_counter() - t0) * 1000
t0 = time.perf_counter()
vs.trim(0.5)
trim_ms = (time.perf_counter() - t0) * 1000
print(json.dumps({"per_vector": held / N, "nbytes": vs.nbytes * 2 / N, "add_us": add_s / N * 1e6,
                  "search_ms": search_ms, "trim_ms": trim_ms}))
"""

# Appending N lines to a state file through the shared-file lock, against bare writes.
APPEND = PRELUDE + """
import os, tempfile
from workers import statefile
N = @N@
line = statefile.encode({"id": "x", "data": "d" * 200}, 0)
with tempfile.TemporaryDirectory() as d:
    fd = os.open(d + "/bare", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    t0 = time.perf_counter()
    for _ in range(N):
        os.write(fd, line)
    bare = (time.perf_counter() - t0) / N * 1e6
    os.close(fd)
    sf = statefile.StateFile(d + "/state.jsonl")
    sf.load(10)
    t0 = time.perf_counter()
    for _ in range(N):
        with sf.locked(10):
            sf.append(line)
    locked = (time.perf_counter() - t0) / N * 1e6
    sf.close()
print(json.dumps({"bare_us": bare, "locked_us": locked}))
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
    p.add_argument("--vectors", type=int, default=100_000, help="vectors stored (default "
                   "100,000 of 384 floats)")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 20,000 objects, 2,000 vectors, one repeat")
    args = p.parse_args()
    if args.quick:
        args.objects, args.vectors, args.repeat = 20_000, 2_000, 1
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

        print(f"a trim of 10 % of {n // 5:,} objects, then gc.collect() or not "
              "(TrimPolicy(collect=...))")
        for cyclic in (False, True):
            for collect in (False, True):
                code = case(TRIM_COLLECT, n // 5, True).replace("@CYCLIC@", str(cyclic)) \
                    .replace("@COLLECT@", str(collect))
                r, _, _ = run(code, env)
                print(f"  {'cyclic' if cyclic else 'acyclic':8} collect={collect!s:5}  "
                      f"{r['tracked']:>10,} tracked  {r['ms']:8.1f} ms  returned "
                      f"{r['returned'] / MB:6.1f} MB  left for a later full collection "
                      f"{r['left'] / MB:6.1f} MB")
        print()

        steps = max(20_000, n // 5)
        print(f"gc thresholds: {n // 3:,} long-lived objects, {steps:,} steps each making a "
              "page with a reference cycle kept for 50 steps")
        for label, thresholds in (("interpreter (700, 10, 10) (reference)", (700, 10, 10)),
                                  ("profile default (10000, 10, 10)", (10_000, 10, 10))):
            code = case(GC_THRESHOLDS, n // 3, True).replace("@STEPS@", str(steps)) \
                .replace("@THRESHOLDS@", repr(thresholds))
            r, _, _ = run(code, env)
            print(f"  {label:38} {r['collections']:>6,} collections  total "
                  f"{r['total_ms']:7.1f} ms  p99 {r['p99_ms']:6.2f} ms  max "
                  f"{r['max_ms']:6.2f} ms  garbage held {r['held'] / MB:6.1f} MB")
        print()

        dim = 384
        print(f"vector store: {args.vectors:,} vectors of {dim} floats (RSS per vector; "
              "float32 is the reference)")
        backends = ["numpy", "stdlib"] if _has_numpy(env) else ["stdlib"]
        for backend in backends:
            count = args.vectors if backend == "numpy" else max(1000, args.vectors // 20)
            per = {}
            for dtype in ("float32", "float16"):
                code = VECTORS.replace("@N@", str(count)).replace("@DIM@", str(dim)) \
                    .replace("@DTYPE@", dtype).replace("@BACKEND@", backend)
                r, _, _ = run(code, env)
                per[dtype] = r["per_vector"]
                print(f"  {backend:6} {dtype}  {count:>8,} vectors  {r['per_vector']:7.0f} B "
                      f"per vector (slab {r['nbytes']:5.0f} B)  add {r['add_us']:6.1f} us  "
                      f"search {r['search_ms']:8.2f} ms  trim half {r['trim_ms']:7.2f} ms")
            print(f"  {backend:6} float16 / float32 = {per['float16'] / per['float32']:.2f} "
                  f"(target 0.50 plus the per-key bookkeeping)")
        print()

        r, _, _ = run(case(APPEND, max(2000, n // 10), True), env)
        print("state file append, one 220-byte line")
        print(f"  bare os.write (reference)     {r['bare_us']:6.2f} us")
        print(f"  locked, caught up, reopened   {r['locked_us']:6.2f} us")
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


def _has_numpy(env: dict[str, str]) -> bool:
    return subprocess.run([sys.executable, "-c", "import numpy"], env=env,
                          capture_output=True).returncode == 0


def case(code: str, n: int, malloc_trim: bool) -> str:
    """Fill in a case's parameters (str.format would trip over the JSON braces)."""
    return code.replace("@N@", str(n)).replace("@TRIM@", str(malloc_trim))


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Benchmark of the millisecond sampler, against a floor measured in the same run.

Prints: the cost of one bare os.pread of statm (the floor) and memwarden's cost per worker
per tick; the achieved interval (median, p99, p99.9, max), share of missed ticks and CPU %
of one core at 1 ms with 1 and 100 workers and at 10 ms with 100 workers; the same at 1 ms
while another thread encodes JSON in a loop (the sampler shares the GIL); and the process's
RSS at start and after 10 million samples. Workers are idle `/bin/sleep` processes, all
killed at the end. Targets: the performance contract in docs/design.md.

    .venv/bin/python scripts/bench_sampler.py            # about three minutes
    .venv/bin/python scripts/bench_sampler.py --quick    # shorter phases, fewer samples

Every interval figure is printed next to a reference measured in the same run: an empty
1 ms deadline loop, which shows what the (shared, noisy) machine allows at that moment.
The realtime phases repeat the key cases with `Sampler(realtime=True)` (SCHED_FIFO).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import contextlib
import itertools

import msgspec

from supervisor.config import Config
from supervisor.pressure import Thresholds
from supervisor.procfs import PAGE_SIZE
from supervisor.sampler import Sampler


def rss_mb() -> float:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * PAGE_SIZE / 1e6


def thread_cpu_s(tid: int | None) -> float:
    """CPU seconds (user + system) of one thread of this process."""
    try:
        with open(f"/proc/self/task/{tid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spawn_idle(n: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen(["/bin/sleep", "100000"]) for _ in range(n)]


def floor_ns(pid: int, n: int = 200_000) -> float:
    """Cost of one bare os.pread of a kept-open statm, loop overhead included."""
    fd = os.open(f"/proc/{pid}/statm", os.O_RDONLY)
    pread = os.pread
    try:
        t0 = time.perf_counter_ns()
        for _ in range(n):
            pread(fd, 64, 0)
        return (time.perf_counter_ns() - t0) / n
    finally:
        os.close(fd)


def thresholds() -> Thresholds:
    return Thresholds.from_config(Config(), None)


def cost_per_worker_ns(pids: list[int], ticks: int = 3000) -> float:
    """memwarden's tick (reads, sums, ring append, classifier) per worker, on this thread."""
    s = Sampler(interval_s=0.001, discover_interval_s=0.1, ring_seconds=5,
                thresholds=thresholds(), on_change=lambda c: None)
    for i, pid in enumerate(pids):
        s.watch(f"w{i}", pid)
    tick = s._tick
    now = time.monotonic_ns
    t0 = time.perf_counter_ns()
    for _ in range(ticks):
        tick(now())
    per = (time.perf_counter_ns() - t0) / ticks / len(pids)
    s.stop()
    return per


def percentile(sorted_values: list[int], q: float) -> float:
    return sorted_values[min(int(len(sorted_values) * q), len(sorted_values) - 1)]


def reference_phase(interval_s: float, seconds: float) -> dict[str, float]:
    """The same deadline loop with no work at all: what this machine allows right now."""
    from supervisor.timing import lower_timer_slack

    result: dict[str, float] = {}

    def loop() -> None:
        lower_timer_slack(1)
        interval = int(interval_s * 1e9)
        deadline = time.monotonic_ns() + interval
        end = deadline + int(seconds * 1e9)
        times: list[int] = []
        missed = 0
        cpu0 = os.times()
        while deadline < end:
            now = time.monotonic_ns()
            if now < deadline:
                time.sleep((deadline - now) * 1e-9)
                now = time.monotonic_ns()
            if now - deadline >= interval:
                missed += (now - deadline) // interval
                deadline += (now - deadline) // interval * interval
            times.append(now)
            deadline += interval
        cpu1 = os.times()
        gaps = sorted(b - a for a, b in itertools.pairwise(times))
        result.update(
            median_ms=percentile(gaps, 0.5) / 1e6,
            p99_ms=percentile(gaps, 0.99) / 1e6,
            p999_ms=percentile(gaps, 0.999) / 1e6,
            max_ms=gaps[-1] / 1e6,
            missed_pct=missed / (len(times) + missed) * 100,
            cpu_pct=(cpu1.user + cpu1.system - cpu0.user - cpu0.system) / seconds * 100,
        )

    thread = threading.Thread(target=loop)
    thread.start()
    thread.join()
    r = result
    print(f"{'reference: empty 1 ms deadline loop':<38} interval median {r['median_ms']:.3f} ms, "
          f"p99 {r['p99_ms']:.3f}, p99.9 {r['p999_ms']:.3f}, max {r['max_ms']:.2f}; missed "
          f"{r['missed_pct']:.2f} %; CPU {r['cpu_pct']:.1f} % of a core")
    return result


def run_phase(label: str, pids: list[int], interval_s: float, seconds: float,
              ring_seconds: float = 60.0, busy: bool = False,
              realtime: bool = False, settle_s: float = 0.5) -> dict[str, float]:
    """Run a real sampler for `seconds`; return interval figures, missed share and CPU %."""
    s = Sampler(interval_s=interval_s, discover_interval_s=0.1, ring_seconds=ring_seconds,
                thresholds=thresholds(), on_change=lambda c: None, realtime=realtime)
    for i, pid in enumerate(pids):
        s.watch(f"w{i}", pid)
    stop = threading.Event()
    encoded = [0]

    def encode_loop() -> None:
        # What the event loop does when it writes snapshots: encode records, in a loop.
        enc = msgspec.json.Encoder()
        records = [{"kind": "sample", "worker": "w", "rss": i, "t": i * 0.001}
                   for i in range(1000)]
        while not stop.is_set():
            enc.encode(records)
            encoded[0] += 1000

    busy_thread = threading.Thread(target=encode_loop, daemon=True) if busy else None
    s.start()
    rss_boot = rss_mb()
    if busy_thread:
        busy_thread.start()
    # Let the first discovery settle (and, for RSS, every growth trend fill), then measure.
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        time.sleep(0.05)
    ticks0, missed0 = s.stats.ticks, s.stats.missed
    tids = [t.native_id for t in s._threads]
    threads0 = [thread_cpu_s(tid) for tid in tids]
    cpu0 = os.times()
    wall0 = time.monotonic_ns()
    rss_start = rss_mb()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.25)
    wall1 = time.monotonic_ns()
    cpu1 = os.times()
    threads1 = [thread_cpu_s(tid) for tid in tids]
    rss_end = rss_mb()
    ticks, missed = s.stats.ticks - ticks0, s.stats.missed - missed0
    view = s.view("w0")
    assert view is not None
    ts, _ = view.ring.window(wall0, wall1)
    stop.set()
    if busy_thread:
        busy_thread.join()
    s.stop()
    gaps = sorted(b - a for a, b in itertools.pairwise(ts))
    wall = (wall1 - wall0) / 1e9
    cpu = (cpu1.user + cpu1.system - cpu0.user - cpu0.system) / wall * 100
    out = {
        "median_ms": percentile(gaps, 0.5) / 1e6,
        "p99_ms": percentile(gaps, 0.99) / 1e6,
        "p999_ms": percentile(gaps, 0.999) / 1e6,
        "max_ms": gaps[-1] / 1e6,
        "missed_pct": missed / max(ticks + missed, 1) * 100,
        "cpu_pct": cpu,
        "samples": ticks * len(pids),
        "rss_boot": rss_boot,
        "rss_start": rss_start,
        "rss_end": rss_end,
    }
    ticker, discoverer = ((b - a) / wall * 100 for a, b in zip(threads0, threads1, strict=True))
    extra = f" (sampler thread {ticker:.1f} %, discovery {discoverer:.1f} %)"
    if busy:
        extra += f", encoder thread {encoded[0] / wall / 1e6:.2f} M records/s"
    print(f"{label:<38} interval median {out['median_ms']:.3f} ms, p99 {out['p99_ms']:.3f}, "
          f"p99.9 {out['p999_ms']:.3f}, max {out['max_ms']:.2f}; missed "
          f"{out['missed_pct']:.2f} %; CPU {cpu:.1f} % of a core{extra}")
    return out


def verdicts(normal: dict[str, dict[str, float]], realtime: dict[str, dict[str, float]],
             per_worker_ns: float) -> list[tuple[str, bool, bool]]:
    """Each target with whether the normal-priority and the realtime runs met it."""

    def interval_ok(r: dict[str, float], cpu: float) -> bool:
        return r["p99_ms"] <= 1.10 and r["missed_pct"] <= 0.5 and r["cpu_pct"] <= cpu

    long = normal["100 workers @ 1 ms"]
    rss_ok = long["rss_end"] <= 30 and long["rss_end"] - long["rss_start"] <= 1
    return [
        ("per worker per tick <= 2 us", per_worker_ns <= 2000, per_worker_ns <= 2000),
        ("1 worker @ 1 ms: p99 <= 1.10 ms, missed <= 0.5 %, CPU <= 3 %",
         interval_ok(normal["1 worker @ 1 ms"], 3), interval_ok(realtime["1 worker @ 1 ms"], 3)),
        ("100 workers @ 1 ms: p99 <= 1.10 ms, missed <= 0.5 %, CPU <= 25 %",
         interval_ok(long, 25), interval_ok(realtime["100 workers @ 1 ms"], 25)),
        ("100 workers @ 10 ms: CPU <= 4 %", normal["100 workers @ 10 ms"]["cpu_pct"] <= 4,
         realtime["100 workers @ 10 ms"]["cpu_pct"] <= 4),
        ("RSS <= 30 MB and growth <= 1 MB (normal run only)", rss_ok, rss_ok),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short phases (about a minute)")
    args = parser.parse_args()
    phase_s = 4.0 if args.quick else 10.0
    long_s = 20.0 if args.quick else 100.0  # 100 workers x 1 ms x 100 s = 10 million samples

    children = spawn_idle(100)
    try:
        pids = [p.pid for p in children]
        print(f"machine: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
              f"switch interval while sampling lowered to 0.1 ms (from "
              f"{sys.getswitchinterval() * 1e3:g} ms)")
        floor = floor_ns(pids[0])
        per1 = cost_per_worker_ns(pids[:1])
        per100 = cost_per_worker_ns(pids)
        print(f"floor: one bare os.pread of statm          {floor / 1e3:.2f} us")
        print(f"memwarden per worker per tick, 1 worker   {per1 / 1e3:.2f} us "
              f"({per1 / floor:.1f}x floor)")
        print(f"memwarden per worker per tick, 100 workers {per100 / 1e3:.2f} us "
              f"({per100 / floor:.1f}x floor; target <= 2 us)")
        # The long phase comes first, so that RSS is measured in a process that has not yet
        # built and dropped other samplers. It doubles as the 100-worker 1 ms figure.
        # Rings are 1 s here: a 60 s ring at 1 ms is 0.96 MB per worker, resident once
        # written, so 100 default rings alone would be 96 MB (see the note printed below).
        long = run_phase(f"100 workers @ 1 ms ({long_s:g} s)", pids, 0.001, long_s,
                         ring_seconds=1.0, settle_s=6.0)
        reference_phase(0.001, phase_s)
        results = {
            "1 worker @ 1 ms": run_phase("1 worker @ 1 ms", pids[:1], 0.001, phase_s),
            "100 workers @ 10 ms": run_phase("100 workers @ 10 ms", pids, 0.010, phase_s),
            "1 worker @ 1 ms, busy": run_phase("1 worker @ 1 ms, encoder busy", pids[:1],
                                               0.001, phase_s, busy=True),
            "100 workers @ 1 ms, busy": run_phase("100 workers @ 1 ms, encoder busy", pids,
                                                  0.001, phase_s, busy=True),
            "100 workers @ 1 ms": long,
        }
        reference_phase(0.001, phase_s)  # again: the machine's noise may have changed
        print("with realtime=True (SCHED_FIFO for the sampler thread):")
        rt = {
            "1 worker @ 1 ms": run_phase("  1 worker @ 1 ms", pids[:1], 0.001, phase_s,
                                         realtime=True),
            "100 workers @ 1 ms": run_phase("  100 workers @ 1 ms", pids, 0.001, phase_s,
                                            realtime=True),
            "100 workers @ 10 ms": run_phase("  100 workers @ 10 ms", pids, 0.010, phase_s,
                                             realtime=True),
            "100 workers @ 1 ms, busy": run_phase("  100 workers @ 1 ms, encoder busy", pids,
                                                  0.001, phase_s, busy=True, realtime=True),
        }
        print(f"RSS: {long['rss_boot']:.1f} MB at start, {long['rss_start']:.1f} MB after 6 s "
              f"(growth trends full), {long['rss_end']:.1f} MB after a further "
              f"{long['samples'] / 1e6:.1f} million samples (growth "
              f"{long['rss_end'] - long['rss_start']:+.2f} MB); 100 rings of 1 s; each 60 s "
              f"ring at 1 ms adds 0.96 MB per worker")
        print("targets (normal priority | realtime):")
        for name, normal, realtime in verdicts(results, rt, per100):
            print(f"  {'met ' if normal else 'MISS'} | {'met ' if realtime else 'MISS'}  {name}")
        return 0
    finally:
        for p in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p.pid, signal.SIGKILL)
            p.wait()


if __name__ == "__main__":
    sys.exit(main())

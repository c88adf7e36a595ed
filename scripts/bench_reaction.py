#!/usr/bin/env python3
"""How fast memwarden reacts: from a worker's own crossing of a line to the level change.

First the reaction table: a worker runs under memwarden in its generation's cgroup
(`--measure cgroup`) and crosses a MEDIUM line again and again. It grows in small steps
(`--step`, default 64 KiB, at `--rate` MB/s), touching every page, and after each step reads
its own cgroup's figure the way `--measure cgroup` computes it (usage minus the inactive
file cache plus swap: `supervisor.sensing.measure`); the CLOCK_MONOTONIC time after the
first step that takes it to the line is the crossing, known to the worker alone. The level
change is the monotonic time of the sample that confirmed LOW -> MEDIUM (`Change.t_ns`, the
`confirmed_ns` of the level event): taken on the sampler thread before the read that
confirmed it, so a figure can be slightly negative where memwarden read the charge before
the worker's own read returned. Each row is one memwarden run with `--crossings` crossings:
median, p99 and max in ms, and what woke the confirming reads (the kernel's threshold
notification, or a tick). Rows: `--interval` 1 ms and 10 ms, with and without the kernel's
notifications (`app.build(notify=False)`), on a quiet host and beside two CPU-bound
processes (`sha1sum /dev/zero`, killed after).

Then, for the replacement (`--repeat`, 0: skip), a worker growing at 50 MB/s past a 200 MB
HIGH threshold: ticks and ms from the crossing to the level change, ms from the level change
to the replacement's spawn, ms to its readiness, the overshoot above the threshold, and the
time with no live worker, from the ring's own sample times and the supervisor's events.

Then a long run (`--long`, default 180 s): every generation leaks 50 MiB/s under
`--cooldown 1s` and the default thresholds, and memwarden must keep replacing it: the
number of replacements, the spawn latency after crossings that no cooldown held back,
the time with no live worker, and how far each generation went above the line that had
it replaced.

Usage: .venv/bin/python scripts/bench_reaction.py [--crossings 40] [--step 64]
       [--repeat 5] [--rate 50] [--high 200] [--long 180] [--long-rate 52.4] [--quick]
Run it under `flock -x /tmp/memwarden-bench.lock` beside other benchmarks.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import anyio

from supervisor import app
from supervisor.loop.events import EventLog
from supervisor.settings import loading

# Generation 1 grows at the given rate; later generations hold still. Each says ready on
# the channel as soon as it runs, as a cooperative worker would.
WORKER = r"""
import os, socket, sys, time
socket.socket(fileno=int(os.environ["MEMWARDEN_FD"])).sendall(b'{"type":"ready"}\n')
rate = float(sys.argv[1]) * 1e6 if os.environ["MEMWARDEN_GENERATION"] == "1" else 0.0
hold, held, t0 = [], 0, time.monotonic()
while True:
    want = int((time.monotonic() - t0) * rate)
    while held < want:
        hold.append(b"\xa5" * (1 << 20))
        held += 1 << 20
    time.sleep(0.001)
"""


def one_run(rate_mb_s: float, high_mb: float) -> dict[str, float]:
    cfg = loading.load({
        "command": [sys.executable, "-c", WORKER, str(rate_mb_s)],
        "medium": f"{high_mb * 0.75:g}MB", "high": f"{high_mb:g}MB", "critical": "100GB",
        "snapshots": "", "control": "", "log_level": "warning",
        "pressure": {"growth_medium": "100GB/s", "growth_high": "200GB/s"},
    }, environ={})
    events = EventLog()
    arbiter = app.build(app.assemble(cfg), events)
    seen: dict[str, tuple[int, object]] = {}
    figures: dict[str, float] = {}

    def on_event(event: object) -> None:
        now = time.monotonic_ns()
        kind, gen = event.type, event.generation  # type: ignore[attr-defined]
        key = f"{kind}#{gen}#{getattr(event, 'level', '')}" if kind == "level" else f"{kind}#{gen}"
        if key in seen:
            return
        seen[key] = (now, event)
        if kind == "level" and gen == 1 and event.level == "high":  # type: ignore[attr-defined]
            data = event.data  # type: ignore[attr-defined]
            view = arbiter.sampler.view("worker#1")
            assert view is not None
            t_ns, rss = view.ring.window(data["crossed_ns"] - 50_000_000, data["confirmed_ns"])
            threshold = high_mb * 1e6
            first = next(i for i, v in enumerate(rss) if v >= threshold)
            figures["ticks"] = len(t_ns) - first  # samples from the crossing to the change
            figures["detect_ms"] = (t_ns[-1] - t_ns[first]) / 1e6
            figures["overshoot_mb"] = (rss[-1] - threshold) / 1e6
            seen["confirmed"] = (data["confirmed_ns"], None)
        if kind == "exit" and gen == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # the replacement is done: stop the run

    events.listeners.append(on_event)
    anyio.run(arbiter.run)
    confirmed, spawn = seen["confirmed"][0], seen["spawn#2"][0]
    figures["spawn_ms"] = (spawn - confirmed) / 1e6
    figures["ready_ms"] = (seen["ready#2"][0] - spawn) / 1e6
    figures["no_worker_ms"] = max(0.0, (spawn - seen["exit#1"][0]) / 1e6)
    return figures


# Every generation grows at the given rate (MB/s) and says ready at once.
LEAKER = WORKER.replace('if os.environ["MEMWARDEN_GENERATION"] == "1" else 0.0', "")


def long_run(seconds: float, rate_mb_s: float) -> dict[str, object]:
    """A leaker replaced for `seconds`: figures from the events and a 5 ms watch of memory."""
    cfg = loading.load({
        "command": [sys.executable, "-c", LEAKER, str(rate_mb_s)], "cooldown": "1s",
        "snapshots": "", "control": "", "log_level": "warning",
    }, environ={})
    events = EventLog()
    arbiter = app.build(app.assemble(cfg), events)
    log: list[tuple[int, object]] = []
    events.listeners.append(lambda e: log.append((time.monotonic_ns(), e)))
    peaks: dict[int, int] = {}
    alive = []

    async def watch() -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for h in arbiter.live():
                view = arbiter.sampler.view(h.key)
                if view is not None:
                    peaks[h.number] = max(peaks.get(h.number, 0), view.rss)
            await anyio.sleep(0.005)
        alive.append(not arbiter.stopping)  # nothing ended supervision before the deadline
        os.kill(os.getpid(), signal.SIGTERM)

    async def both() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await arbiter.run()
            tg.cancel_scope.cancel()

    anyio.run(both)
    by = {}
    for t, e in log:
        by.setdefault((e.type, e.generation), (t, e))  # type: ignore[attr-defined]
    spawns = sorted(g for (kind, g) in by if kind == "spawn")
    latencies, overshoots, gap_ns = [], [], 0
    for g in spawns:
        old = g - 1
        level = [(t, e) for t, e in log if e.type == "level" and e.generation == old  # type: ignore[attr-defined]
                 and e.level in ("high", "critical") and t <= by[("spawn", g)][0]]  # type: ignore[attr-defined]
        held = any(e.type == "cooldown" and e.generation == old for _, e in log)  # type: ignore[attr-defined]
        if level and not held:
            confirmed = level[-1][1].data["confirmed_ns"]  # type: ignore[attr-defined]
            latencies.append((by[("spawn", g)][0] - confirmed) / 1e6)
        if level:
            overshoots.append((peaks.get(old, 0) - level[-1][1].threshold) / 1e6)  # type: ignore[attr-defined]
        if ("exit", old) in by:
            gap_ns += max(0, by[("spawn", g)][0] - by[("exit", old)][0])
    cooldowns = [e.data.get("cooldown_s") for _, e in log if e.type == "backoff"]  # type: ignore[attr-defined]
    return {"replacements": len(spawns), "latencies": latencies, "gap_ms": gap_ns / 1e6,
            "overshoots": overshoots, "cooldowns": cooldowns,
            "alive": alive == [True]}

# Crosses the MEDIUM line `cycles` times: fills to `lead` below it at once, then grows in
# steps of `step` bytes at `rate` bytes/s, reading its own cgroup's figure after each step,
# and appends the monotonic ns after the first step at the line to the file `out`; then
# grows a little further (the confirming reads see it above), frees all and waits for the
# level to come down (the bench's `dwell_medium`) before the next crossing.
CROSSER = r"""
import mmap, os, socket, sys, time
socket.socket(fileno=int(os.environ["MEMWARDEN_FD"])).sendall(b'{"type":"ready"}\n')
line, rate, step, cycles, out = (int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]),
                                 int(sys.argv[4]), sys.argv[5])
for entry in open("/proc/self/cgroup"):
    _, controllers, path = entry.rstrip("\n").split(":", 2)
    if "memory" in controllers.split(","):
        base, v1 = "/sys/fs/cgroup/memory" + path, True
        break
else:
    base, v1 = "/sys/fs/cgroup" + path, False
usage_fd = os.open(base + ("/memory.usage_in_bytes" if v1 else "/memory.current"), os.O_RDONLY)
swap_name = "/memory.memsw.usage_in_bytes" if v1 else "/memory.swap.current"
swap_fd = os.open(base + swap_name, os.O_RDONLY) if os.path.exists(base + swap_name) else -1
stat_fd = os.open(base + "/memory.stat", os.O_RDONLY)
inactive = b"total_inactive_file " if v1 else b"inactive_file "

def figure():
    # As `--measure cgroup` computes it: usage - inactive file cache + swap.
    stat = os.pread(stat_fd, 1 << 16, 0)
    at = stat.index(inactive) + len(inactive)
    cache = int(stat[at:stat.index(b"\n", at)])
    swap = int(os.pread(swap_fd, 64, 0)) if swap_fd >= 0 else 0
    usage = int(os.pread(usage_fd, 64, 0))
    swap = max(swap - usage, 0) if v1 and swap_fd >= 0 else swap
    return usage - cache + swap

chunk, big = b"\xa5" * step, b"\xa5" * (1 << 20)
for _ in range(cycles):
    m = mmap.mmap(-1, line + (64 << 20))
    at = 0
    while figure() < line - (4 << 20):
        m[at:at + len(big)] = big
        at += len(big)
    time.sleep(0.05)
    t0, grown, crossed = time.monotonic(), 0, None
    while crossed is None or grown < crossed + (1 << 20):
        due = t0 + grown / rate
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        m[at:at + step] = chunk
        at += step
        grown += step
        t = time.monotonic_ns()
        if crossed is None and figure() >= line:
            crossed = grown
            with open(out, "a") as f:
                f.write(f"{t}\n")
    time.sleep(0.03)
    m.close()
    time.sleep(0.25)
"""

#: The rows of the reaction table: (host, interval, notifications).
ROWS = [(host, interval, notify) for host in ("quiet", "2 CPU-bound")
        for interval in ("1ms", "10ms") for notify in (True, False)]


def crossing_run(interval: str, notify: bool, crossings: int, rate_mb_s: float,
                 step: int, line_mb: float) -> dict[str, object]:
    """One memwarden run whose worker crosses the MEDIUM line `crossings` times: the ms
    from each crossing to the level change, and what woke the confirming reads."""
    line = int(line_mb * 1e6)
    with tempfile.NamedTemporaryFile(prefix="memwarden-crossings-") as out:
        cfg = loading.load({
            "command": [sys.executable, "-c", CROSSER, str(line), str(rate_mb_s * 1e6),
                        str(step), str(crossings), out.name],
            "interval": interval, "measure": "cgroup", "medium": f"{line}B",
            "high": "50GB", "critical": "100GB", "snapshots": "", "control": "",
            "log_level": "warning",
            "pressure": {"growth_medium": "100GB/s", "growth_high": "200GB/s",
                         "dwell_medium": "50ms"},
        }, environ={})
        events = EventLog()
        arbiter = app.build(app.assemble(cfg), events, notify=notify)
        ups: list[tuple[int, str]] = []

        def on_event(event: object) -> None:
            if event.generation != 1:  # type: ignore[attr-defined]
                return
            if event.type == "level" and event.level == "medium" \
                    and event.previous == "low":  # type: ignore[attr-defined]
                data = event.data  # type: ignore[attr-defined]
                ups.append((data["confirmed_ns"], data["source"]))
            elif event.type == "exit":  # type: ignore[attr-defined]
                os.kill(os.getpid(), signal.SIGTERM)  # all crossed: stop the run

        events.listeners.append(on_event)
        anyio.run(arbiter.run)
        crossed = [int(x) for x in pathlib.Path(out.name).read_text().split()]
    # Each crossing's level change: the first LOW -> MEDIUM confirmed after the worker's
    # step that crossed began (a step takes tens of microseconds) and before the next one.
    delays, sources, unmatched = [], [], 0
    for k, t in enumerate(crossed):
        end = crossed[k + 1] if k + 1 < len(crossed) else 1 << 62
        match = next(((c, src) for c, src in ups if t - 5_000_000 <= c < end), None)
        if match is None:
            unmatched += 1
            continue
        delays.append((match[0] - t) / 1e6)
        sources.append(match[1])
    return {"delays": delays, "sources": sources, "unmatched": unmatched,
            "notifications": arbiter.sampler.notifications}


def p99(values: list[float]) -> float:
    """The 99th percentile by nearest rank (the ceil(0.99 n)-th smallest): with fewer than
    100 values it is the largest, so a row's p99 never hides its worst crossing."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, -(-99 * len(ordered) // 100) - 1))]


def hogs(n: int) -> list[subprocess.Popen[bytes]]:
    """`n` CPU-bound processes beside memwarden (the caller kills them)."""
    return [subprocess.Popen(["sha1sum", "/dev/zero"]) for _ in range(n)]


def reaction_table(crossings: int, rate_mb_s: float, step: int, line_mb: float,
                   rows: list[tuple[str, str, bool]]) -> bool:
    """Print the table; return whether p99 <= 1 ms held in every row with notifications."""
    print(f"reaction: crossing -> level change (LOW -> MEDIUM at {line_mb:g} MB), "
          f"worker growing {rate_mb_s:g} MB/s in {step // 1024} KiB steps, "
          f"{crossings} crossings a row, confirm 3")
    print(f"  {'host':12} {'interval':>8} {'notify':>6} {'n':>4} {'median':>8} {'p99':>8} "
          f"{'max':>8}  ms   source of the level change")
    ok = True
    running: list[subprocess.Popen[bytes]] = []
    try:
        for host, interval, notify in rows:
            if host != "quiet" and not running:
                running = hogs(2)
            r = crossing_run(interval, notify, crossings, rate_mb_s, step, line_mb)
            delays: list[float] = r["delays"]  # type: ignore[assignment]
            sources: list[str] = r["sources"]  # type: ignore[assignment]
            said = ", ".join(f"{sources.count(s)} {s}" for s in sorted(set(sources)))
            if r["unmatched"]:
                said += f"; {r['unmatched']} crossing(s) without a level change"
            if notify and r["notifications"].startswith("none"):  # type: ignore[union-attr]
                said += f"; notifications {r['notifications']}"
            if not delays:
                print(f"  {host:12} {interval:>8} {'on' if notify else 'off':>6}    0  {said}")
                ok = ok and not notify
                continue
            worst = p99(delays)
            ok = ok and (not notify or worst <= 1.0)
            print(f"  {host:12} {interval:>8} {'on' if notify else 'off':>6} {len(delays):4} "
                  f"{statistics.median(delays):8.3f} {worst:8.3f} {max(delays):8.3f}      {said}")
    finally:
        for hog in running:
            hog.kill()
            hog.wait()
    print("target (with notifications p99 <= 1 ms in every row):", "met" if ok else "NOT met")
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crossings", type=int, default=40,
                        help="crossings in each row of the reaction table (0: skip it)")
    parser.add_argument("--step", type=int, default=64,
                        help="the crossing worker's allocation step in KiB")
    parser.add_argument("--line", type=float, default=64.0,
                        help="the MEDIUM line the crossing worker crosses, MB")
    parser.add_argument("--quick", action="store_true",
                        help="a check that it runs: 3 crossings, quiet host, 1 ms, no "
                        "replacement runs, no long run")
    parser.add_argument("--repeat", type=int, default=5,
                        help="replacement runs past HIGH (0: skip them)")
    parser.add_argument("--rate", type=float, default=50.0, help="growth in MB/s")
    parser.add_argument("--high", type=float, default=200.0, help="HIGH threshold in MB")
    parser.add_argument("--long", type=float, default=180.0,
                        help="seconds of the long run with a leaker (0: skip it)")
    parser.add_argument("--long-rate", type=float, default=52.4,
                        help="growth of every generation in the long run, MB/s (50 MiB/s)")
    args = parser.parse_args()
    rows = ROWS
    if args.quick:
        args.crossings, args.repeat, args.long = 3, 0, 0
        rows = [row for row in ROWS if row[0] == "quiet" and row[1] == "1ms"]
    if args.crossings > 0:
        reaction_table(args.crossings, args.rate, args.step * 1024, args.line, rows)
    if args.repeat > 0:
        replacement_report(args.repeat, args.rate, args.high)
    if args.long > 0:
        long_report(args.long, args.long_rate)


def replacement_report(repeat: int, rate_mb_s: float, high_mb: float) -> None:
    """Run the replacement runs past HIGH and print their figures."""
    print(f"\nreplacement: worker growing {rate_mb_s:g} MB/s past HIGH {high_mb:g} MB, "
          f"1 ms interval, confirm 3, {repeat} runs")
    runs = [one_run(rate_mb_s, high_mb) for _ in range(repeat)]
    figures = [
        ("crossing -> level change", "ticks", "ticks", "<= 3"),
        ("crossing -> level change", "detect_ms", "ms", ""),
        ("level change -> spawn", "spawn_ms", "ms", "<= 5"),
        ("spawn -> ready", "ready_ms", "ms", ""),
        ("overshoot above HIGH", "overshoot_mb", "MB", ""),
        ("time with no live worker", "no_worker_ms", "ms", "== 0"),
    ]
    print(f"  {'figure':28} {'median':>9} {'max':>9}  unit   target")
    for label, key, unit, target in figures:
        values = [r[key] for r in runs]
        print(f"  {label:28} {statistics.median(values):9.3f} {max(values):9.3f}  "
              f"{unit:5}  {target}")
    verdict = (max(r["ticks"] for r in runs) <= 3
               and statistics.median(r["spawn_ms"] for r in runs) <= 5
               and max(r["no_worker_ms"] for r in runs) == 0)
    print("targets:", "met" if verdict else "NOT met")


def long_report(seconds: float, rate_mb_s: float) -> None:
    """Run the long run with a leaker and print its figures."""
    print(f"\nlong run: every generation leaks {rate_mb_s:g} MB/s, --cooldown 1s, "
          f"default thresholds (HIGH 200 MB, CRITICAL 500 MB), {seconds:g} s")
    r = long_run(seconds, rate_mb_s)
    lat: list[float] = r["latencies"]  # type: ignore[assignment]
    over: list[float] = r["overshoots"]  # type: ignore[assignment]
    print(f"  replacements                    {r['replacements']}")
    print(f"  memwarden still supervising     {'yes' if r['alive'] else 'NO'}")
    if lat:
        print(f"  spawn after an unheld crossing  median {statistics.median(lat):.3f} ms, "
              f"max {max(lat):.3f} ms over {len(lat)} crossings (target <= 5 ms)")
    print(f"  time with no live worker        {r['gap_ms']:.3f} ms (must be 0)")
    if over:
        print(f"  peak above the line crossed     median {statistics.median(over):.1f} MB, "
              f"max {max(over):.1f} MB")
    print(f"  cooldowns recorded (s)          {r['cooldowns']}")
    ok = r["alive"] and r["gap_ms"] == 0 and (not lat or statistics.median(lat) <= 5)
    print("targets:", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()

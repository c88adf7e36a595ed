#!/usr/bin/env python3
"""How fast memwarden reacts: a worker growing at 50 MB/s past a 200 MB HIGH threshold.

For each repetition it runs the real supervisor in this process and reports, from the
ring's own sample times and the supervisor's events: ticks and ms from the crossing to the
level change, ms from the level change to the replacement's spawn, ms to its readiness,
the overshoot above the threshold, and the time with no live worker.

Then a long run (`--long`, default 180 s): every generation leaks 50 MiB/s under
`--cooldown 1s` and the default thresholds, and memwarden must keep replacing it: the
number of replacements, the spawn latency after crossings that no cooldown held back,
the time with no live worker, and how far each generation went above the line that had
it replaced.

Usage: .venv/bin/python scripts/bench_reaction.py [--repeat 5] [--rate 50] [--high 200]
       [--long 180] [--long-rate 52.4]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--rate", type=float, default=50.0, help="growth in MB/s")
    parser.add_argument("--high", type=float, default=200.0, help="HIGH threshold in MB")
    parser.add_argument("--long", type=float, default=180.0,
                        help="seconds of the long run with a leaker (0: skip it)")
    parser.add_argument("--long-rate", type=float, default=52.4,
                        help="growth of every generation in the long run, MB/s (50 MiB/s)")
    args = parser.parse_args()
    print(f"reaction: worker growing {args.rate:g} MB/s past HIGH {args.high:g} MB, "
          f"1 ms interval, confirm 3, {args.repeat} runs")
    runs = [one_run(args.rate, args.high) for _ in range(args.repeat)]
    rows = [
        ("crossing -> level change", "ticks", "ticks", "<= 3"),
        ("crossing -> level change", "detect_ms", "ms", ""),
        ("level change -> spawn", "spawn_ms", "ms", "<= 5"),
        ("spawn -> ready", "ready_ms", "ms", ""),
        ("overshoot above HIGH", "overshoot_mb", "MB", ""),
        ("time with no live worker", "no_worker_ms", "ms", "== 0"),
    ]
    print(f"  {'figure':28} {'median':>9} {'max':>9}  unit   target")
    for label, key, unit, target in rows:
        values = [r[key] for r in runs]
        print(f"  {label:28} {statistics.median(values):9.3f} {max(values):9.3f}  "
              f"{unit:5}  {target}")
    verdict = (max(r["ticks"] for r in runs) <= 3
               and statistics.median(r["spawn_ms"] for r in runs) <= 5
               and max(r["no_worker_ms"] for r in runs) == 0)
    print("targets:", "met" if verdict else "NOT met")
    if args.long <= 0:
        return
    print(f"\nlong run: every generation leaks {args.long_rate:g} MB/s, --cooldown 1s, "
          f"default thresholds (HIGH 200 MB, CRITICAL 500 MB), {args.long:g} s")
    r = long_run(args.long, args.long_rate)
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

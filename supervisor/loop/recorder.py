"""Turns what the sampler saw into snapshot records: a Sample per worker per period, and
bursts (the ring's full-resolution window) around events. Runs on the event loop, never on
the sampling thread."""

from __future__ import annotations

import time
from dataclasses import dataclass

from snapshots.burst import encode_burst
from snapshots.schema import Sample
from supervisor.linux import breakdown
from supervisor.loop.events import Sink
from supervisor.loop.handles import Handle
from supervisor.sensing.sampler import Sampler, WorkerView

BURST_BEFORE_S = 2.0
BURST_AFTER_S = 1.0


@dataclass(slots=True)
class _PendingBurst:
    due: float
    gen: Handle
    cause: str
    t_event_ns: int


class Recorder:
    """Periodic summaries and flight-recorder bursts, handed to the snapshot sink."""

    def __init__(self, sink: Sink, *, period_s: float, interval_s: float,
                 limit: int | None) -> None:
        self.sink = sink
        self.period_s = period_s
        self.interval_us = max(1, round(interval_s * 1e6))
        self.limit = limit
        self._wall_offset = time.time() - time.monotonic()
        self._next = time.monotonic() + period_s
        self._since_ns: dict[str, int] = {}
        self._curve_written: set[str] = set()  # generations whose envelope was written
        self._bursts: dict[str, _PendingBurst] = {}
        self._late_seen = 0
        self._missed_seen = 0

    def tick(self, live: list[Handle], sampler: Sampler) -> None:
        """Write what is due: bursts whose after-window has passed, and the period's samples."""
        now = time.monotonic()
        for key, pending in list(self._bursts.items()):
            if pending.due <= now:
                del self._bursts[key]
                self._write_burst(pending, sampler)
        if now < self._next:
            return
        self._next += self.period_s * max(1, int((now - self._next) // self.period_s) + 1)
        now_ns = time.monotonic_ns()
        container = sampler.container()
        ticking = sampler.stats
        late, missed = ticking.late - self._late_seen, ticking.missed - self._missed_seen
        self._late_seen, self._missed_seen = ticking.late, ticking.missed
        for gen in live:
            view = sampler.view(gen.key)
            if view is None:
                continue
            since = self._since_ns.get(gen.key, now_ns - int(self.period_s * 1e9))
            summary = view.ring.summary(since, now_ns)
            self._since_ns[gen.key] = now_ns
            if summary is None:
                continue
            last, low, high, mean, count = summary
            # The ring holds the figure thresholds compare; the rss figures are the tree's
            # plain RSS, the period's lowest, mean and highest scaled alike (the analysis
            # scales them back by memory / rss).
            ratio = view.rss / last if last > 0 and view.rss > 0 else 1.0
            stats = gen.stats
            self.sink.submit(Sample(
                t=time.time(), worker=gen.worker, generation=gen.number, pid=gen.pid,
                memory=last, rss=int(last * ratio), rss_min=int(low * ratio),
                rss_max=int(high * ratio), rss_mean=mean * ratio, ticks=count, late=late,
                missed=missed, members=self._members(view, sampler),
                procs=view.procs, slope=view.slope or 0.0, level=view.level.label,
                container=container.working_set
                if container is not None and container.working_set >= 0 else None,
                limit=self.limit,
                stats={} if stats is None else {
                    "objects": stats.objects, "history": stats.history, "blocks": stats.blocks,
                    "gc_collections": stats.gc_collections, "gc_pause_ms": stats.gc_pause_ms,
                    "rss": stats.rss},
                startup=self._startup(gen.key, gen.worker, view, sampler),
            ))
        for key in [k for k in self._since_ns if not any(g.key == k for g in live)]:
            del self._since_ns[key]
            self._curve_written.discard(key)

    def _startup(self, key: str, worker: str, view: WorkerView,
                 sampler: Sampler) -> dict[str, object]:
        """The view's start-up, with the worker's envelope on the generation's first sample
        after its start-up ended (once: the curve is hundreds of points)."""
        if "ended" not in view.startup or key in self._curve_written:
            return view.startup
        self._curve_written.add(key)
        return {**view.startup, "curve": [list(p) for p in sampler.envelope(worker)]}

    def _members(self, view: WorkerView, sampler: Sampler) -> list[dict[str, object]]:
        """The few biggest processes of a tree of more than one, as the sampler has them."""
        if view.procs <= 1:
            return []
        return [{"pid": m.pid, "name": m.name, "rss": m.rss}
                for m in breakdown.members(view.sizes, sampler.names, memory=None,
                                           limit=breakdown.SAMPLE_MEMBERS)]

    def burst_later(self, gen: Handle, cause: str, sampler: Sampler) -> None:
        """Record the ring around now: 2 s before, and 1 s after unless the worker is gone.

        When the worker is gone its pending burst is written at once too: its ring goes
        with it, and that burst may hold the crossing that had it replaced."""
        pending = _PendingBurst(time.monotonic() + BURST_AFTER_S, gen, cause,
                                time.monotonic_ns())
        if not gen.alive:
            earlier = self._bursts.pop(gen.key, None)
            if earlier is not None:
                self._write_burst(earlier, sampler)
            self._write_burst(pending, sampler)
        elif gen.key not in self._bursts:  # one burst at a time per worker covers flapping
            self._bursts[gen.key] = pending

    def _write_burst(self, pending: _PendingBurst, sampler: Sampler) -> None:
        view = sampler.view(pending.gen.key)
        if view is None:
            return
        start = pending.t_event_ns - int(BURST_BEFORE_S * 1e9)
        t_ns, rss = view.ring.window(start, pending.t_event_ns + int(BURST_AFTER_S * 1e9))
        if not t_ns:
            return
        gen = pending.gen
        self.sink.submit(encode_burst(
            gen.worker, gen.number, gen.pid, pending.cause,
            t_ns[0] / 1e9 + self._wall_offset, t_ns, rss, self.interval_us))

"""The `--metrics` figures as Prometheus metric families (prometheus-client).

A custom collector reads the same view as `memwarden status` (`view.status`) at
every scrape: no second copy of any figure, nothing updated on the sampling path.
`ProcessCollector` adds memwarden's own `process_*` family (RSS, CPU, descriptors).

Labels are stable: `worker` and `role` (`current`, `pending` for a replacement starting,
`retiring`), never the generation number, which would start new series at every
replacement; the number is a value (`memwarden_worker_generation`). Monotonic figures
are counters with `_total`. Values are exact (prometheus-client writes integers up to
2^53 in full; the exposition written by hand once served RSS 46321664 as 4.63217e+07).

Imported only when `--metrics` is given: prometheus-client and the http, ssl and urllib
modules it imports add 6.5 MB to memwarden's RSS (2.8 MB of it private), measured after
the supervisor's own imports.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)

from snapshots.schema import Event
from supervisor import __version__
from supervisor.faces import control
from workers.protocol import Level

#: Processes exported per worker and role, biggest first: a browser's tree of 60 would
#: otherwise make 60 series per scrape, and new ones with every new pid.
TOP_PROCESSES = 5
_LEVELS = {level.label: int(level) for level in Level}


class EventCounts:
    """Events by worker and type, and OOM kills by worker, counted as they are emitted
    (an `EventLog` listener; the worker is "" for the container's events)."""

    def __init__(self) -> None:
        self.events: Counter[tuple[str, str]] = Counter()
        self.oom_kills: Counter[str] = Counter()

    def __call__(self, event: Event) -> None:
        self.events[(event.worker, str(event.type))] += 1
        if event.oom_kill:
            self.oom_kills[event.worker] += 1


class Collector:
    """Metric families over `status()` (a `control.Reply`) and `counts`, at each scrape."""

    def __init__(self, status: Callable[[], control.Reply], counts: EventCounts) -> None:
        self.status = status
        self.counts = counts

    def collect(self) -> Iterator[Metric]:
        reply = self.status()
        yield from _workers(reply)
        yield from _processes(reply)
        yield from _memwarden(reply)
        events = CounterMetricFamily("memwarden_events", "events memwarden recorded, by "
                                     "worker ('' for the container) and type",
                                     labels=["worker", "type"])
        for (worker, kind), n in sorted(self.counts.events.items()):
            events.add_metric([worker, kind], n)
        yield events
        oom = CounterMetricFamily("memwarden_oom_kills", "workers' generations killed by the "
                                  "kernel's OOM killer", labels=["worker"])
        for worker in reply.started:
            oom.add_metric([worker], self.counts.oom_kills.get(worker, 0))
        yield oom


def _workers(reply: control.Reply) -> Iterator[Metric]:
    labels = ["worker", "role"]
    rss = GaugeMetricFamily("memwarden_worker_rss_bytes", "RSS of the generation's process "
                            "tree (summed over the generations of one role)", labels=labels)
    memory = GaugeMetricFamily("memwarden_worker_memory_bytes", "the memory figure thresholds "
                               "compare (see memwarden_memory_measure_info)", labels=labels)
    procs = GaugeMetricFamily("memwarden_worker_processes", "processes in the tree",
                              labels=labels)
    level = GaugeMetricFamily("memwarden_worker_level", "pressure level: 0 low, 1 medium, "
                              "2 high, 3 critical", labels=labels)
    growth = GaugeMetricFamily("memwarden_worker_growth_bytes_per_second", "sustained growth "
                               "rate of the tree", labels=labels)
    number = GaugeMetricFamily("memwarden_worker_generation", "the generation's number "
                               "(the newest, when one role has several)", labels=labels)
    uptime = GaugeMetricFamily("memwarden_worker_uptime_seconds", "time since the "
                               "generation started", labels=labels)
    lines = GaugeMetricFamily("memwarden_worker_threshold_bytes", "the worker's own line "
                              "for each level (its medium, high, critical)",
                              labels=["worker", "level"])
    for w in {w.name: w for w in reply.workers}.values():
        for name, value in w.thresholds.items():
            lines.add_metric([w.name, name], value)
    for (worker, role), gens in _by_role(reply).items():
        key = [worker, role]
        if any(g.rss is not None for g in gens):
            rss.add_metric(key, sum(g.rss or 0 for g in gens))
        if any(g.memory is not None for g in gens):
            memory.add_metric(key, sum(g.memory or 0 for g in gens))
        if any(g.procs is not None for g in gens):
            procs.add_metric(key, sum(g.procs or 0 for g in gens))
        levels = [_LEVELS[g.level] for g in gens if g.level in _LEVELS]
        if levels:
            level.add_metric(key, max(levels))
        if any(g.growth is not None for g in gens):
            growth.add_metric(key, sum(g.growth or 0.0 for g in gens))
        number.add_metric(key, max(g.generation for g in gens))
        uptime.add_metric(key, min(g.uptime_s for g in gens))
    started = CounterMetricFamily("memwarden_worker_generations_started", "generations "
                                  "started (first starts, restarts and replacements)",
                                  labels=["worker"])
    ready = GaugeMetricFamily("memwarden_worker_ready", "1 when the worker has a ready "
                              "generation", labels=["worker"])
    ready_workers = {w.name for w in reply.workers if w.state == "ready"}
    for worker, n in reply.started.items():
        started.add_metric([worker], n)
        ready.add_metric([worker], int(worker in ready_workers))
    yield from (rss, memory, procs, level, growth, number, uptime, started, ready, lines)


def _by_role(reply: control.Reply) -> dict[tuple[str, str], list[control.WorkerStatus]]:
    """Generations grouped by (worker, role): two retiring generations of one worker (rapid
    replacements under CRITICAL) share one series rather than making a duplicate."""
    groups: dict[tuple[str, str], list[control.WorkerStatus]] = {}
    for w in reply.workers:
        groups.setdefault((w.name, w.role or "current"), []).append(w)
    return groups


def _processes(reply: control.Reply) -> Iterator[Metric]:
    labels = ["worker", "role", "pid", "name"]
    rss = GaugeMetricFamily("memwarden_process_rss_bytes", "RSS of one process of a worker's "
                            f"tree (the {TOP_PROCESSES} biggest per worker and role)",
                            labels=labels)
    pss = GaugeMetricFamily("memwarden_process_pss_bytes", "proportional set size of one "
                            f"process (the {TOP_PROCESSES} biggest per worker and role)",
                            labels=labels)
    for (worker, role), gens in _by_role(reply).items():
        members = sorted((m for g in gens for m in g.members), key=lambda m: -m.rss)
        for m in members[:TOP_PROCESSES]:
            key = [worker, role, str(m.pid), m.name]
            rss.add_metric(key, m.rss)
            if m.pss is not None:
                pss.add_metric(key, m.pss)
    yield rss
    yield pss


def _memwarden(reply: control.Reply) -> Iterator[Metric]:
    info = InfoMetricFamily("memwarden_build", "memwarden's version")
    info.add_metric([], {"version": __version__})
    yield info
    measure = InfoMetricFamily("memwarden_memory_measure", "how memwarden_worker_memory_bytes "
                               "is measured: cgroup, pss or rss")
    measure.add_metric([], {"measure": reply.measure})
    yield measure
    yield GaugeMetricFamily("memwarden_live", "1 while the sampler ticks (as /livez)",
                            value=int(bool(reply.live)))
    yield GaugeMetricFamily("memwarden_ready", "1 when every worker has a ready generation "
                            "(as /readyz)", value=int(bool(reply.ready)))
    for name, text, value in (
            ("memwarden_sampler_ticks", "sampling ticks taken", reply.ticks),
            ("memwarden_sampler_late_ticks", "ticks that started more than a tenth of the "
             "interval late", reply.late),
            ("memwarden_sampler_missed_ticks", "deadlines skipped: ticks not taken",
             reply.missed)):
        yield CounterMetricFamily(name, text, value=value)
    if reply.interval_s is not None:
        yield GaugeMetricFamily("memwarden_sampler_interval_seconds", "the sampling interval",
                                value=reply.interval_s)
    if reply.limit is not None:
        yield GaugeMetricFamily("memwarden_limit_bytes", "the memory limit in force",
                                value=reply.limit)
    if reply.container is not None:
        yield GaugeMetricFamily("memwarden_container_working_set_bytes", "the cgroup's usage "
                                "minus inactive file cache", value=reply.container)
    if reply.container_level in _LEVELS:
        yield GaugeMetricFamily("memwarden_container_level", "the container's pressure level "
                                "(0 low .. 3 critical)", value=_LEVELS[reply.container_level])
    if reply.snapshots_written is not None:
        yield CounterMetricFamily("memwarden_snapshot_records_written", "snapshot records "
                                  "written", value=reply.snapshots_written)
    if reply.snapshots_dropped is not None:
        yield CounterMetricFamily("memwarden_snapshot_records_dropped", "snapshot records "
                                  "dropped (disk full or slow)", value=reply.snapshots_dropped)


class Exposition:
    """The registry a scrape reads: memwarden's collector and its own process."""

    def __init__(self, status: Callable[[], control.Reply], counts: EventCounts) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(Collector(status, counts))
        ProcessCollector(registry=self.registry)

    def render(self, accept: str) -> tuple[bytes, str]:
        """(body, content type): OpenMetrics when `accept` asks for it, else the text
        format 0.0.4, also for an `Accept` header prometheus-client cannot follow."""
        if accept:
            try:
                encode, content_type = choose_encoder(accept)
                return encode(self.registry), content_type
            except Exception:  # the header is the client's: `version=abc` raised TypeError
                pass
        encode, content_type = choose_encoder("")
        return encode(self.registry), content_type


__all__ = ["TOP_PROCESSES", "Collector", "EventCounts", "Exposition"]

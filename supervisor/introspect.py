"""Read-only views of a running supervisor: `memwarden status` and the `--metrics` figures."""

from __future__ import annotations

from typing import TYPE_CHECKING

from supervisor import breakdown, control, metrics

if TYPE_CHECKING:
    from supervisor.arbiter import Arbiter


def status(arbiter: Arbiter,
           members: dict[str, list[control.Member]] | None = None) -> control.Reply:
    """What `memwarden status` shows: every live generation, the container, the sampler.

    States and profiles come from the policy, which owns them; pids and figures from the
    process handles and the sampler; `members` (by generation key) from
    `breakdown.members`, when the caller looked them up.
    """
    workers = []
    policy = arbiter.policy
    for gen in policy.generations():
        h = arbiter.handles.get(f"{gen.worker}#{gen.number}")
        if h is None or not h.alive:
            continue
        view = arbiter.sampler.view(h.key)
        workers.append(control.WorkerStatus(
            name=gen.worker, generation=gen.number, pid=h.pid, state=gen.state.value,
            profile=gen.profile, uptime_s=h.uptime, generations=policy.started(gen.worker),
            memory=view.memory if view else None,
            rss=view.rss if view else None, procs=view.procs if view else None,
            level=view.level.label if view else None, growth=view.slope if view else None,
            members=(members or {}).get(h.key, [])))
    container = arbiter.sampler.container()
    stats = arbiter.sampler.stats
    return control.Reply(ok=True, workers=workers, limit=arbiter.limit,
                         container=container.working_set
                         if container and container.working_set >= 0 else None,
                         ticks=stats.ticks, late=stats.late, missed=stats.missed,
                         measure=arbiter.measure.how)


def trees(arbiter: Arbiter) -> list[tuple[str, tuple[int, ...], int]]:
    """(key, pids, memory) of every live generation, taken on the event loop's thread."""
    return [(h.key, view.pids, view.memory) for h in arbiter.live()
            if (view := arbiter.sampler.view(h.key)) is not None]


def members(found: list[tuple[str, tuple[int, ...], int]]) -> dict[str, list[control.Member]]:
    """Each tree's processes, biggest first: reads /proc and smaps_rollup, so run it off the
    event loop, on what `trees` took."""
    return {key: breakdown.members(pids, memory=memory) for key, pids, memory in found}


def gauges(arbiter: Arbiter) -> list[metrics.Gauge]:
    """The figures `--metrics` serves."""
    out: list[metrics.Gauge] = []
    for h in arbiter.live():
        view = arbiter.sampler.view(h.key)
        labels = {"worker": h.worker, "generation": str(h.number)}
        if view is not None:
            out += [
                ("memwarden_worker_rss_bytes", "RSS of the worker's process tree",
                 labels, view.rss),
                ("memwarden_worker_level", "pressure level (0 low .. 3 critical)",
                 labels, int(view.level)),
                ("memwarden_worker_processes", "processes in the worker's tree",
                 labels, view.procs),
                ("memwarden_worker_growth_bytes_per_second", "robust growth rate",
                 labels, view.slope or 0.0),
            ]
    for name in arbiter.policy.workers():
        out.append(("memwarden_worker_generations", "generations started so far",
                    {"worker": name}, arbiter.policy.started(name)))
    stats = arbiter.sampler.stats
    out += [("memwarden_sampler_ticks", "sampling ticks so far", {}, stats.ticks),
            ("memwarden_sampler_late_ticks", "ticks that ran late", {}, stats.late),
            ("memwarden_sampler_missed_ticks", "deadlines skipped: ticks not taken", {},
             stats.missed)]
    container = arbiter.sampler.container()
    if container is not None and container.working_set >= 0:
        out.append(("memwarden_container_working_set_bytes",
                    "cgroup usage minus inactive file cache", {}, container.working_set))
    if arbiter.limit is not None:
        out.append(("memwarden_limit_bytes", "memory limit in force", {}, arbiter.limit))
    sink = arbiter.events.sink
    if sink is not None:
        out.append(("memwarden_snapshot_records_dropped", "snapshot records dropped",
                    {}, getattr(sink, "dropped", 0)))
    return out

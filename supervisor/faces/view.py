"""Read-only views of a running supervisor: `memwarden status`, which `--metrics`,
`status --check` and `top` also read, so that they cannot disagree."""

from __future__ import annotations

from typing import TYPE_CHECKING

from supervisor.core.identity import GenerationId
from supervisor.core.pressure import Thresholds
from supervisor.faces import control
from supervisor.linux import breakdown

if TYPE_CHECKING:
    from supervisor.loop.arbiter import Arbiter
    from supervisor.loop.handles import Handle


def status(arbiter: Arbiter,
           members: dict[str, list[control.Member]] | None = None) -> control.Reply:
    """What `memwarden status` shows: every live generation (and a retired one until the
    rest of its tree is gone and its cgroup removed), the container, the sampler,
    whether memwarden is live and ready.

    States, roles and profiles come from the policy, which owns them; pids and figures from
    the process handles and the sampler; `members` (by generation key) from `members`,
    when the caller looked them up.
    """
    workers = []
    policy = arbiter.policy
    for gen in policy.generations():
        h = arbiter.handles.get(str(GenerationId(gen.worker, gen.number)))
        if h is None or not h.alive:
            continue
        view = arbiter.sampler.view(h.key)
        workers.append(control.WorkerStatus(
            name=gen.worker, generation=gen.number, pid=h.pid, state=gen.state.value,
            profile=gen.profile, uptime_s=h.uptime, generations=policy.started(gen.worker),
            role=policy.role(gen.worker, gen.number) or "",
            memory=view.memory if view else None,
            rss=view.rss if view else None, procs=view.procs if view else None,
            level=view.level.label if view else None, growth=view.slope if view else None,
            members=(members or {}).get(h.key, []),
            thresholds=_lines(arbiter.specs[gen.worker].thresholds)))
    for h in arbiter.handles.values():
        if not h.alive:  # its main process is gone; what it left is being stopped
            workers.append(_leftover(arbiter, h, members))
    container = arbiter.sampler.container()
    stats = arbiter.sampler.stats
    live, ready = arbiter.health.live(), arbiter.health.ready()
    sink = arbiter.events.sink
    return control.Reply(ok=True, workers=workers, limit=arbiter.limit,
                         container=container.working_set
                         if container and container.working_set >= 0 else None,
                         container_level=container.level.label if container else None,
                         ticks=stats.ticks, late=stats.late, missed=stats.missed,
                         live=live.ok, ready=ready.ok,
                         health="; ".join(v.why for v in (live, ready) if not v.ok),
                         started={name: policy.started(name) for name in policy.workers()},
                         snapshots_written=getattr(sink, "written", None),
                         snapshots_dropped=getattr(sink, "dropped", None),
                         interval_s=float(arbiter.cfg.interval),
                         notifications=arbiter.sampler.notifications,
                         notified=stats.notified,
                         measure=arbiter.measure.how)


def _leftover(arbiter: Arbiter, h: Handle,
              members: dict[str, list[control.Member]] | None) -> control.WorkerStatus:
    """A generation whose main process has exited while the rest of its tree is stopped
    and its cgroup removed: still `retiring`, with its figure and members, so that the
    memory it holds is seen until it is gone."""
    view = arbiter.sampler.view(h.key)
    return control.WorkerStatus(
        name=h.worker, generation=h.number, pid=h.pid, state="retiring", profile=h.profile,
        uptime_s=h.uptime, generations=arbiter.policy.started(h.worker), role="retiring",
        memory=view.memory if view else None, rss=view.rss if view else None,
        procs=view.procs if view else 0, level=view.level.label if view else None,
        growth=view.slope if view else None, members=(members or {}).get(h.key, []),
        thresholds=_lines(arbiter.specs[h.worker].thresholds))


def _lines(thresholds: Thresholds) -> dict[str, int]:
    return {name: int(value) for name, value in zip(("medium", "high", "critical"),
                                                    thresholds.rss, strict=True)
            if value is not None}


def members(arbiter: Arbiter) -> dict[str, list[control.Member]]:
    """Each sampled generation's processes (a retiring one's leftovers included), biggest
    first, from what the sampler already keeps: no /proc walk and no smaps_rollup read per
    request, only a process's name the first time it is listed."""
    names = arbiter.sampler.names
    return {h.key: breakdown.members(view.sizes, names, memory=view.memory)
            for h in arbiter.handles.values()
            if (view := arbiter.sampler.view(h.key)) is not None}

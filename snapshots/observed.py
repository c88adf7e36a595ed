"""What the recommendation learns from one analysed worker: its healthy operation only.

A limit derived from a leak's peaks grows with the leak (the flaw of recommenders that feed
their own out-of-memory bumps back into their input). Here the peak a limit comes from
leaves out every generation that leaked and every generation's start-up, and says so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from snapshots.pooled import STARTUP_PERIODS, startup_end
from snapshots.recommend import Observed
from snapshots.shape import GROWTH_SHAPES
from snapshots.trend import peak, thin

if TYPE_CHECKING:
    from snapshots.worker import WorkerResult


def observed(r: WorkerResult) -> Observed:
    """What the recommendation needs of one analysed worker.

    The healthy peak comes from healthy operation only: generations that leaked (pooled,
    judged `likely` or worse, or suspected in a growth shape) and every generation's
    start-up (up to its ready event plus the growth window) are left out, and so, beside a
    leak, are generations too short to judge; the reason says so. When every generation
    leaked there is no healthy peak: the advice is to fix or bound the leak.
    """
    w = r.out
    leak = w.leak
    leaking = w.verdict in ("likely", "confirmed")
    ready = {e.generation: e.t for e in r.data.events if e.type == "ready"}
    startups = [float(g.at_ready) for g in w.generations if g.at_ready is not None]
    highs = [h for g in r.generations for h in thin(g.windows.t, g.windows.hi, 2000)[1]]
    leaked = set(leak.generations) if leak else set()
    # A generation growing in a growth shape leaked, even when too short for more than a
    # suspicion: its peak is where the growth took it, not a working set.
    leaked |= {g.generation for g in r.generations if g.verdict in ("likely", "confirmed")
               or (g.verdict == "suspected" and g.shape.name in GROWTH_SHAPES)}
    # Beside a leak, a generation too short to tell its shape is no evidence of healthy
    # operation: it is as likely the next leaking generation cut short (its own deadline, the
    # end of the record), and its memory once warm would turn the advice into a larger HIGH.
    unjudged = ({g.generation for g in r.generations
                 if g.shape.name == "short" and g.generation not in leaked} if leaked else set())
    healthy: list[float] = []
    for g in r.generations:
        if g.generation in leaked or g.generation in unjudged:
            continue
        after = startup_end(ready.get(g.generation, g.start), r.data.period_s)
        healthy.extend(h for t, h in zip(g.windows.t, g.windows.hi, strict=True) if t >= after)
    slope = 0.0
    if leak is not None:
        slope = leak.rate_mb_s * 1e6
    elif r.main is not None and r.main.generation in leaked:
        slope = max(0.0, r.main.shape.relevant.slope)
    # Every generation judged past its start-up leaked: there is no healthy operation.
    all_leaked = bool(leaked) and not healthy
    if healthy:
        peak_seen = max(healthy)
    elif all_leaked and r.main is not None and r.main.shape.name != "short":
        peak_seen = peak(r.main.windows, r.main.shape.relevant, at=r.main.start)
    elif all_leaked and startups:  # no generation long enough for a trend: at ready
        peak_seen = max(startups)
    else:  # nothing ran past its start-up: the highest memory recorded, said so
        peak_seen = max((max(g.windows.hi) for g in r.generations if len(g.windows)),
                        default=0.0)
    excluded = []
    if leaked:
        excluded.append("the leaking generation(s) " + ", ".join(map(str, sorted(leaked))))
    if unjudged:
        excluded.append("the generation(s) " + ", ".join(map(str, sorted(unjudged)))
                        + ", too short to judge")
    excluded.append("each generation's start-up (to "
                    f"{STARTUP_PERIODS * r.data.period_s:g} s after ready)")
    killed = {e.generation for e in r.data.events if e.type == "exit" and e.oom_kill}
    ooms = [max(g.windows.hi) for g in r.generations
            if len(g.windows) and g.generation in killed]
    return Observed(
        worker=w.worker, verdict=w.verdict, leaking=leaking or slope > 0, slope=slope,
        startups=startups, highs=highs, healthy_peak=peak_seen,
        ready_s=[x.ready_after_s for x in w.replacements if x.ready_after_s is not None],
        thresholds=w.thresholds, ending=w.ending, oom_peaks=ooms, flapping=w.flapping,
        baseline_high=w.events.get("baseline_high", 0), span_s=w.end - w.start,
        judged=leak is not None or (r.main is not None and r.main.shape.name != "short"),
        all_leaked=all_leaked, excluded=" and ".join(excluded),
        lifetime_s=leak.lifetime_max_s if leak else None)


__all__ = ["observed", "peak"]

"""Is memwarden alive, and are its workers ready? The one judgement behind `/livez`,
`/readyz`, `memwarden status --check` and the systemd watchdog.

* **Live**: the sampler's tick count still moves. The event loop answering the question is
  the other half: a loop that is stuck answers nothing, and the probe times out. A tick
  count that has not moved for `stale_s` (ten intervals, at least 5 s: a garbage
  collection or a starved machine delays ticks by milliseconds, not seconds) means the
  sampling thread is gone or stuck, and nothing would be replaced before the kernel acts.
* **Ready**: every worker has a generation that said ready (or was supervised as ready).
  A make-before-break replacement stays ready throughout; a worker that ended, or waits
  for a restart, or is being stopped, is not.

Nothing here has its own thread: the tick count is compared whenever someone asks, so
the first question after a stall is answered "live" and the stall is seen once the count
has stood still for `stale_s` between two questions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from supervisor.core.lifecycle import Generation
from supervisor.core.states import GenerationState
from supervisor.core.units import format_duration

#: The shortest time a still tick count is tolerated before memwarden counts as not live.
MIN_STALE_S = 5.0


class _Ticks(Protocol):
    ticks: int


class _Sampler(Protocol):
    @property
    def stats(self) -> _Ticks: ...


class _Policy(Protocol):
    def workers(self) -> list[str]: ...
    def generations(self) -> list[Generation]: ...
    def ending(self, worker: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Verdict:
    """One answer: `ok`, and `why` for people when not (empty when ok)."""

    ok: bool
    why: str = ""


class Health:
    """Judges liveness from `sampler.stats.ticks` and readiness from `policy`."""

    def __init__(self, sampler: _Sampler, policy: _Policy, interval_s: float,
                 stale_s: float | None = None) -> None:
        self.sampler = sampler
        self.policy = policy
        self.interval_s = interval_s
        self.stale_s = stale_s if stale_s is not None else max(MIN_STALE_S, 10 * interval_s)
        self._ticks = -1
        self._since = 0.0

    def live(self, now: float | None = None) -> Verdict:
        """Live while the tick count moved within `stale_s` (monotonic `now`, default now)."""
        now = time.monotonic() if now is None else now
        ticks = self.sampler.stats.ticks
        if ticks != self._ticks:
            self._ticks, self._since = ticks, now
            return Verdict(True)
        still = now - self._since
        if still <= self.stale_s:
            return Verdict(True)
        return Verdict(False, f"the sampler has not ticked for {format_duration(still)} "
                       f"(interval {format_duration(self.interval_s)}, {ticks} ticks so far)")

    def ready(self) -> Verdict:
        """Ready when every worker has a READY generation; else which worker is not, and why."""
        by_worker: dict[str, list[Generation]] = {}
        for g in self.policy.generations():
            by_worker.setdefault(g.worker, []).append(g)
        for worker in self.policy.workers():
            gens = by_worker.get(worker, [])
            if any(g.state is GenerationState.READY for g in gens):
                continue
            if gens:
                seen = ", ".join(f"generation {g.number} {g.state.value}" for g in gens)
            else:
                seen = "none running"
            ending = self.policy.ending(worker)
            return Verdict(False, f"worker {worker!r} has no ready generation ({seen})"
                           + (f"; ending: {ending}" if ending else ""))
        return Verdict(True)


__all__ = ["MIN_STALE_S", "Health", "Verdict"]

"""What memwarden answers on its control socket: each request carried out, or refused with
what really happened (`memwarden replace | set | investigate | stop | status`).

Every answer says what was done, or why nothing was: a refusal is `ok: false` and the
command line exits non-zero with it. The main loop owns the processes and the policy; this
module only turns requests into calls on them and their outcome into sentences.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
import msgspec

from snapshots.schema import EventType
from supervisor.core.identity import GenerationId
from supervisor.core.policy import Refused
from supervisor.core.units import format_duration, format_size
from supervisor.faces import control, view
from supervisor.loop.handles import Handle
from supervisor.settings import validate
from workers import protocol

if TYPE_CHECKING:
    from supervisor.loop.arbiter import Arbiter

#: How long `memwarden investigate` waits for the worker's report (the investigation pauses
#: the worker: ~0.5 s for a million objects); the control connection allows a little more.
REPORT_WAIT_S = 10.0


async def answer(arbiter: Arbiter, request: control.Request) -> control.Reply:
    """Carry out one control request; never raises for what the request asks."""
    if isinstance(request, control.Status):
        return view.status(arbiter, view.members(arbiter))
    if isinstance(request, control.Stop):
        arbiter.stop("asked by memwarden stop")
        return control.Reply(ok=True, message="stopping every worker")
    if request.worker not in arbiter.specs:
        return _no(f"no worker {protocol.shown(request.worker, 80)} "
                   f"(workers: {', '.join(arbiter.specs)})")
    if isinstance(request, control.Replace):
        return _replace(arbiter, request.worker)
    h = _current(arbiter, request.worker)
    if h is None:
        return _no(f"no running generation of {request.worker!r}")
    if not h.spoke:
        return _no(f"not sent: worker {request.worker!r} (generation {h.number}) does not "
                   "speak the channel; only a worker using the memwarden client (or the "
                   "protocol in docs/protocol.md) can take it")
    if isinstance(request, control.Investigate):
        return await _investigate(arbiter, h, request.top)
    return _set(arbiter, h, request.limits)


def _replace(arbiter: Arbiter, worker: str) -> control.Reply:
    try:
        actions = arbiter.policy.replace(time.monotonic(), worker,
                                         "requested with memwarden replace")
    except Refused as e:
        return _no(str(e))
    arbiter.execute(actions)
    return control.Reply(ok=True, message=f"replacing worker {worker!r}: generation "
                         f"{arbiter.policy.started(worker)} is starting; the current one is "
                         "retired once it is ready (make before break)")


def _set(arbiter: Arbiter, h: Handle, given: dict[str, int | float]) -> control.Reply:
    problem = validate.limits_refused(given)
    if problem:
        return _no(f"nothing sent: {problem}")
    g = arbiter.policy.generation(h.worker, h.number)
    profile = g.profile if g is not None else "normal"
    now: protocol.Limits = getattr(arbiter.specs[h.worker].profiles, profile)
    limits = msgspec.convert({**msgspec.to_builtins(now), **given}, protocol.Limits)
    if not arbiter.send(h, protocol.SetLimits(profile=profile, limits=limits)):  # type: ignore[arg-type]
        return _no(f"not sent: the channel of generation {h.number} of {h.worker!r} is closed "
                   "or full")
    shown = ", ".join(f"{k}={v}" for k, v in given.items())
    arbiter.events.emit(EventType.LIMITS, f"limits set by hand: {shown}", worker=h.worker,
                        generation=h.number, pid=h.pid, data=dict(given))
    return control.Reply(ok=True, message=f"limits sent to generation {h.number} of "
                         f"{h.worker!r}: {shown}")


async def _investigate(arbiter: Arbiter, h: Handle, top: int) -> control.Reply:
    rid = f"ctl-{time.time_ns()}"
    waiter = h.await_report(rid)
    if not arbiter.send(h, protocol.Investigate(id=rid, top=top)):
        h.forget_report(rid)
        return _no(f"not sent: the channel of generation {h.number} of {h.worker!r} is closed "
                   "or full")
    with anyio.move_on_after(REPORT_WAIT_S):
        await _first(waiter.wait, h.exited.wait)
    h.forget_report(rid)
    report = waiter.report
    if report is None:
        why = "it exited" if not h.alive else f"none came within {format_duration(REPORT_WAIT_S)}"
        return _no(f"asked generation {h.number} of {h.worker!r} for a leak report, but {why}; "
                   "a late report still reaches the log and the snapshots")
    if report.error:
        when = (f", next in {format_duration(report.retry_after_s)}"
                if report.retry_after_s else "")
        return _no(f"refused by generation {h.number} of {h.worker!r}: "
                   f"{protocol.escape(report.error, 500)}{when}")
    return control.Reply(ok=True, message=describe_report(h, report))


def describe_report(h: Handle, r: protocol.Report) -> str:
    """A leak report as people read it: the finding first, then what it rests on. Every text
    of the worker's is escaped: it goes to the operator's terminal (a report once sent OSC
    and ESC sequences there). Its figures were bounded on the way in (`report_problem`)."""
    def text(value: object, limit: int = 120) -> str:
        return protocol.escape(str(value), limit)

    lines = [f"leak report of generation {h.number} of {h.worker!r} (pid {h.pid}), "
             f"{r.objects:,} tracked objects, RSS {format_size(r.rss)}, made in {r.ms:.0f}ms"]
    if r.finding:
        lines += ["", text(r.finding, 2000)]
    if r.shapes:
        lines += ["", "state by shape:"]
        lines += [f"  {s.get('count', 0):>9,}  {format_size(s.get('bytes', 0)):>10}  "  # type: ignore[arg-type]
                  f"{text(s.get('store', ''))}: {text(s.get('shape', ''))}" for s in r.shapes[:8]]
    if r.arrays:
        lines += ["", "largest containers in the state:"]
        lines += [f"  {a.get('len', 0):>9,}  {text(a.get('type', ''))} at "
                  f"{text(a.get('where', ''))}"
                  + (f" (+{a['grew']:,} since the last report)" if a.get("grew") else "")
                  for a in r.arrays[:8]]
    if r.store_growth:
        lines += ["", "stores since the last report: " + ", ".join(
            f"{text(name, 60)} {delta:+,}" for name, delta in list(r.store_growth.items())[:20])]
    if r.growth:
        grown = sorted(r.growth.items(), key=lambda kv: -kv[1])[:8]
        lines += ["", "object types grown: " + ", ".join(f"{text(t, 60)} {n:+,}"
                                                         for t, n in grown)]
    if r.duplicates:
        lines += ["", f"duplicate ids: {len(r.duplicates)} ("
                  f"{', '.join(text(d, 60) for d in r.duplicates[:5])}"
                  + (", ..." if len(r.duplicates) > 5 else "") + ")"]
    return "\n".join(lines)


async def _first(*waits: object) -> None:
    """Return as soon as one of the awaitable factories `waits` completes."""
    async with anyio.create_task_group() as tg:
        async def one(wait) -> None:  # type: ignore[no-untyped-def]
            await wait()
            tg.cancel_scope.cancel()
        for wait in waits:
            tg.start_soon(one, wait)


def _current(arbiter: Arbiter, worker: str) -> Handle | None:
    for g in arbiter.policy.generations():
        if g.worker == worker and arbiter.policy.role(worker, g.number) == "current":
            h = arbiter.handles.get(str(GenerationId(worker, g.number)))
            return h if h is not None and h.alive else None
    return None


def _no(message: str) -> control.Reply:
    return control.Reply(ok=False, message=message)

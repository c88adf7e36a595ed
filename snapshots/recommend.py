"""Settings recommended from a record: the container's memory limit and request, memwarden's
HIGH and CRITICAL thresholds per worker and its cooldown, each with the reason, and the same
paste-ready for memwarden (TOML), Kubernetes (`resources`) and compose (`mem_limit`).

The sizing follows Kubernetes' VPA recommender where it applies: the request is the 90th
percentile of the observed memory plus a 15 % safety margin, and after an OOM kill the limit
is at least the memory at the kill plus 100 MiB, or 1.2 times it. The limit itself comes from
what memwarden needs room for: every worker at the top of its healthy working set, one of
them at HIGH with its replacement starting beside it (make before break), the margin, and
memwarden's own budget. A leaking worker has no natural peak: its HIGH is its working set once
warm plus about an hour of the leak, so that replacements contain it.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass, field
from typing import Any

from snapshots.report import Advice, Ending, Recommendation, WorkerAdvice
from snapshots.text import duration, size
from snapshots.windows import quantile

#: VPA's default safety margin (`recommendation-margin-fraction`).
MARGIN = 0.15
#: VPA's target percentile for memory.
TARGET_PERCENTILE = 0.90
#: VPA's OOM bump: the memory at the kill times this, or plus OOM_MIN_BUMP, whichever is more.
OOM_BUMP_RATIO = 1.2
OOM_MIN_BUMP = 100 * 2**20
#: memwarden's own memory, counted in the container (its budget is 30 MB).
SUPERVISOR = 32 * 2**20
#: A leaking generation gets about this long to grow before HIGH replaces it; the allowance
#: stays between half and twice the warm working set.
LEAK_LIFETIME_S = 3600.0
#: memwarden's default cooldown; never recommended lower.
MIN_COOLDOWN_S = 5.0
#: Container sizes are rounded up to this (thresholds to 1 MiB).
_ROUND = 16 * 2**20
_MIB = 2**20
_COOLDOWNS = (5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600, 900, 1800, 3600)
#: Records shorter than this size a limit from too little: said in the notes.
_SHORT_RECORD_S = 24 * 3600.0


@dataclass
class Observed:
    """One analysed worker, as the recommendation needs it (bytes, seconds, bytes/s)."""

    worker: str
    verdict: str
    leaking: bool
    slope: float  # the leak's growth (0 unless leaking)
    startups: list[float]  # each generation's memory once ready
    highs: list[float]  # the windows' highest memory, every generation
    healthy_peak: float  # highest memory of healthy operation (for a leak: once warm)
    ready_s: list[float] = field(default_factory=list)
    thresholds: dict[str, int] = field(default_factory=dict)
    ending: Ending | None = None
    oom_peaks: list[float] = field(default_factory=list)
    flapping: bool = False
    baseline_high: int = 0
    span_s: float = 0.0
    judged: bool = True
    all_leaked: bool = False  # no generation ran healthy: there is no healthy peak
    excluded: str = ""  # what the healthy peak leaves out, in words
    lifetime_s: float | None = None  # how long a leaking generation lasted before replacement


@dataclass
class _Plan:
    o: Observed
    startup: float
    base: float
    top: float  # where this worker usually is at most: HIGH for a leak, else its peak
    high: float
    high_why: str


def recommend(source: str, observed: list[Observed], config: dict[str, Any],
              limit: int | None, margin: float = MARGIN) -> Recommendation:
    """The recommendation for one source (a container) and the workers recorded in it.

    `config` is the configuration recorded in the header (for the cooldown and the worker
    entries), `limit` the limit in force (for comparison in the reasons).
    """
    plans = [_plan(o, margin) for o in observed]
    need = sum(p.top for p in plans) + max((p.high - p.top + p.startup for p in plans),
                                           default=0.0)
    raw = need * (1 + margin) + SUPERVISOR
    limit_why = (f"{_each(plans)}, +{margin:.0%} margin as Kubernetes' VPA recommender adds, "
                 f"+{size(SUPERVISOR)} for memwarden itself")
    ooms = [p for o in observed for p in o.oom_peaks]
    if ooms:
        bump = max(max(p + OOM_MIN_BUMP, p * OOM_BUMP_RATIO) for p in ooms)
        limit_why += (f"; after an OOM kill at {size(max(ooms))}, at least the larger of "
                      f"+{size(OOM_MIN_BUMP)} and x{OOM_BUMP_RATIO:g} over it, as VPA bumps "
                      + ("(this raised it)" if bump > raw else "(met)"))
        raw = max(raw, bump)
    if limit:
        limit_why += f" (recorded limit: {size(limit)})"
    limit_bytes = _round_up(raw, _ROUND)
    typical = sum(quantile(p.o.highs, TARGET_PERCENTILE) if p.o.highs else p.base for p in plans)
    request = min(limit_bytes, _round_up(typical * (1 + margin) + SUPERVISOR, _ROUND))
    workers = []
    for p in plans:
        others = sum(q.top for q in plans if q is not p)
        room = limit_bytes - SUPERVISOR - others - p.startup
        critical = max(room, p.high * 1.05)
        why = (f"the most {p.o.worker} can hold while a replacement ({size(p.startup)} at "
               f"ready) still fits beside it under the limit ({size(limit_bytes)}"
               + (f", the others at {size(others)}" if others else "")
               + "): above it memwarden stops the old generation before starting the new one")
        if room < p.high * 1.05:
            why = (f"5 % above HIGH: the limit leaves no room between HIGH and a replacement "
                   f"beside it ({size(room)})")
        rec = p.o.thresholds.get("critical")
        if rec:
            why += f" (recorded: {size(rec)})"
        high_b = _round_up(p.high, _MIB)
        critical_b = max(_round_up(critical, _MIB), high_b + _MIB)
        workers.append(WorkerAdvice(
            worker=p.o.worker, startup=int(p.startup) if p.o.startups else None,
            typical=int(quantile(p.o.highs, TARGET_PERCENTILE) if p.o.highs else p.base),
            peak=int(p.base), growth_mb_h=p.o.slope * 3600 / 1e6,
            high=Advice(name="high", value=high_b, text=_mib(high_b), reason=p.high_why),
            critical=Advice(name="critical", value=critical_b, text=_mib(critical_b),
                            reason=why)))
    cooldown = _cooldown(plans, config)
    out = Recommendation(
        source=source, margin=margin,
        limit=Advice(name="limit", value=limit_bytes, text=_mi(limit_bytes), reason=limit_why),
        request=Advice(name="request", value=request, text=_mi(request),
                       reason=f"the {TARGET_PERCENTILE * 100:.0f}th percentile of the observed "
                       f"memory ({size(typical)} summed over the workers), +{margin:.0%} margin "
                       "and memwarden's own budget, as VPA computes its target"),
        cooldown=cooldown, workers=workers, notes=_notes(plans),
        toml="", kubernetes="", compose="")
    out.toml = toml(out, config)
    out.kubernetes = kubernetes(out)
    out.compose = compose(out)
    return out


def _plan(o: Observed, margin: float) -> _Plan:
    startup = max(o.startups) if o.startups else o.healthy_peak
    base = max(o.healthy_peak, startup)
    recorded = o.thresholds.get("high")
    leak = f"+{o.slope / 1e6:.1f} MB/s"
    if o.leaking and o.slope > 0:
        allowance = min(max(o.slope * LEAK_LIFETIME_S, 0.5 * base), 2.0 * base)
        high = base * (1 + margin) + allowance
        why = (f"{margin:.0%} above its memory in healthy operation ({size(base)}; "
               f"{o.excluded} left out) plus {size(allowance)} of the leak ({leak}): a "
               f"generation is replaced after about {duration(allowance / o.slope)}, before "
               "the leak matters")
        if o.all_leaked:
            # No generation ran healthy: a larger HIGH only postpones each replacement.
            if recorded and recorded < high:
                high = float(recorded)
                every = f" about every {duration(o.lifetime_s)}" if o.lifetime_s else ""
                why = f"the recorded HIGH, which replaces a generation{every}"
                recorded = None
            why = (f"every generation leaked ({leak}): fix the leak; until then bound it "
                   f"with HIGH, not a larger one: {why}")
        top = high
    else:
        high = base * (1 + margin)
        if o.judged:
            why = (f"{margin:.0%} above its highest memory in healthy operation "
                   f"({size(base)}; {o.excluded} left out): memwarden replaces nothing "
                   "that works")
        else:
            why = (f"{margin:.0%} above the highest memory recorded ({size(base)}; no "
                   "generation ran long enough to judge growth)")
        top = base
    if recorded:
        why += f" (recorded: {size(recorded)}"
        if o.ending is not None and o.ending.reason == "limits_too_small":
            why += (": generations reached it within the cooldown of becoming ready, so "
                    "memwarden gave up")
        elif recorded < base and not o.leaking and o.judged:
            why += ", below it: healthy generations were replaced"
        why += ")"
    return _Plan(o, startup, base, top, high, why)


def _each(plans: list[_Plan]) -> str:
    """What the limit makes room for, in words."""
    if len(plans) == 1:
        p = plans[0]
        return (f"{p.o.worker} at HIGH ({size(p.high)}) with its replacement starting beside it "
                f"({size(p.startup)} at ready: make before break)")
    return ("the workers at their usual tops (" + ", ".join(
        f"{p.o.worker} {size(p.top)}" for p in plans) + "), one of them at HIGH with its "
            "replacement starting beside it (make before break)")


def _cooldown(plans: list[_Plan], config: dict[str, Any]) -> Advice:
    ready = [r for p in plans for r in p.o.ready_s]
    recorded = config.get("cooldown")
    if ready:
        slowest = max(ready)
        seconds = _nice(max(MIN_COOLDOWN_S, 2.0 * slowest))
        why = (f"twice the slowest time from spawn to ready ({slowest:.1f} s): a replacement "
               "is ready and its effect seen before memwarden acts again")
    else:
        seconds = MIN_COOLDOWN_S
        why = "no replacement was recorded: memwarden's default"
    for p in plans:
        if p.o.leaking and p.o.slope > 0:
            reach = (p.high - p.startup) / p.o.slope
            if seconds > reach / 2:
                seconds = max(MIN_COOLDOWN_S, _nice(reach / 2, up=False))
                why += (f"; at most half the time a new generation of {p.o.worker} takes to "
                        f"reach HIGH ({duration(reach)}), so memwarden can act again in time")
    if isinstance(recorded, int | float):
        why += f" (recorded: {recorded:g} s)"
    return Advice(name="cooldown", value=seconds, text=f"{seconds:g}s", reason=why)


def _notes(plans: list[_Plan]) -> list[str]:
    notes = []
    for p in plans:
        o = p.o
        if o.ending is not None and o.ending.kind == "gave_up":
            notes.append(f"memwarden gave up on {o.worker} ({o.ending.reason.replace('_', ' ')})"
                         ": HIGH above is above everything its generations were seen to hold")
        if o.all_leaked and o.slope > 0:
            notes.append(f"{o.worker}: every generation leaked (+{o.slope / 1e6:.1f} MB/s, "
                         f"verdict {o.verdict}): fix the leak, or bound it with HIGH; a "
                         "bigger limit does not help")
        elif o.leaking:
            notes.append(f"{o.worker} leaks (+{o.slope / 1e6:.1f} MB/s, verdict "
                         f"{o.verdict}): these settings contain the leak, they do not fix it")
        if o.flapping:
            notes.append(f"{o.worker}'s levels flap within generations: widen "
                         "`pressure.margin` or lengthen `pressure.dwell_medium`")
        if o.baseline_high:
            notes.append(f"{o.worker}: {o.baseline_high} replacement(s) reached HIGH within "
                         "the cooldown of becoming ready")
        if not o.judged:
            notes.append(f"{o.worker}: no generation ran long enough to judge growth; the "
                         "working set may be larger than recorded: record again with these "
                         "settings")
    span = max((p.o.span_s for p in plans), default=0.0)
    if span < _SHORT_RECORD_S:
        notes.append(f"sized from {duration(span)} of record; VPA sizes from days of peaks: "
                     "record a day of typical load before fixing a limit")
    return notes


def toml(r: Recommendation, config: dict[str, Any]) -> str:
    """memwarden settings as TOML: top-level keys, and `[[worker]]` entries of the recorded
    configuration (name and command as recorded) with their thresholds."""
    entries = [w for w in config.get("worker", []) if isinstance(w, dict) and w.get("name")]
    by_entry: dict[str, list[WorkerAdvice]] = {}
    loose: list[WorkerAdvice] = []
    for a in r.workers:
        entry = next((w["name"] for w in entries if a.worker == w["name"]
                      or a.worker.startswith(f"{w['name']}-")), None)
        if entry is None:
            loose.append(a)
        else:
            by_entry.setdefault(entry, []).append(a)
    lines = [f"# memwarden.toml, recommended by `memwarden analyze` for {r.source}",
             *_comment(f"cooldown: {r.cooldown.reason}"), f'cooldown = "{r.cooldown.text}"']
    if loose:
        high = max(loose, key=lambda a: a.high.value)
        critical = max(loose, key=lambda a: a.critical.value)
        lines += [*_comment(f"high ({high.worker}): {high.high.reason}"),
                  f'high = "{high.high.text}"',
                  *_comment(f"critical ({critical.worker}): {critical.critical.reason}"),
                  f'critical = "{critical.critical.text}"']
        if len(loose) > 1:
            lines += _comment("per worker: " + "; ".join(
                f"{a.worker} high {a.high.text}, critical {a.critical.text}" for a in loose))
    for entry in entries:
        advice = by_entry.get(entry["name"])
        if not advice:
            continue
        high = max(advice, key=lambda a: a.high.value)
        critical = max(advice, key=lambda a: a.critical.value)
        lines += ["", "[[worker]]", f"name = {_toml(entry['name'])}"]
        if entry.get("command"):
            lines.append(f"command = {_toml(entry['command'])}")
        if entry.get("replicas", 1) != 1:
            lines.append(f"replicas = {_toml(entry['replicas'])}")
        lines += [*_comment(high.high.reason), f'high = "{high.high.text}"',
                  *_comment(critical.critical.reason), f'critical = "{critical.critical.text}"']
    return "\n".join(lines) + "\n"


def _comment(text: str) -> list[str]:
    """TOML comment lines of at most 88 characters."""
    return ["# " + line for line in textwrap.wrap(text, 86)]


def kubernetes(r: Recommendation) -> str:
    """A container's `resources` block."""
    return ("resources:\n"
            "  requests:\n"
            f'    memory: "{r.request.text}"\n'
            "  limits:\n"
            f'    memory: "{r.limit.text}"\n')


def compose(r: Recommendation) -> str:
    """The compose service key (compose reads `m` as MiB)."""
    return f"mem_limit: {int(r.limit.value) // _MIB}m\n"


def _toml(value: object) -> str:
    """A TOML value for recorded strings, numbers and lists of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    text = str(value)
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    escaped = "".join(c if c >= " " else f"\\u{ord(c):04x}" for c in escaped)
    return f'"{escaped}"'


def _round_up(value: float, step: int) -> int:
    return int(math.ceil(max(value, 1.0) / step) * step)


def _mib(n: float) -> str:
    return f"{int(n) // _MIB}MiB"


def _mi(n: float) -> str:
    return f"{int(n) // _MIB}Mi"


def _nice(seconds: float, *, up: bool = True) -> float:
    """A round cooldown: the next (or previous) of 5, 10, 15, 20, 30 s ... 1 h."""
    if up:
        return float(next((c for c in _COOLDOWNS if c >= seconds), _COOLDOWNS[-1]))
    return float(next((c for c in reversed(_COOLDOWNS) if c <= seconds), _COOLDOWNS[0]))


__all__ = ["MARGIN", "OOM_BUMP_RATIO", "OOM_MIN_BUMP", "SUPERVISOR", "TARGET_PERCENTILE",
           "Observed", "compose", "kubernetes", "recommend", "toml"]

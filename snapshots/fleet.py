"""A fleet: many replicas of a few workloads, one verdict and one recommendation per workload.

Kubernetes sizes per workload (the VPA's unit), not per pod: the replicas of one Deployment
share one request and one limit. So the records of several sources are grouped by workload:
the workload the header records (`WORKLOAD_NAME`, a pod label given by the downward API),
else the pod's owner, told from the pod name the downward API gives memwarden (`POD_NAME`:
`<deployment>-<pod-template-hash>-<suffix>`, `<daemonset or job>-<suffix>`,
`<statefulset>-<ordinal>`), with the namespace and the worker's name; without either, the
worker's name and its command. Per workload: the highest verdict that at least half its
replicas reach (one odd replica neither hides nor makes a leak), the spread of the leaking
replicas' rates, and one recommendation from the 90th percentile of the replicas' healthy
peaks (a high percentile, not the maximum: one replica's bad hour does not size them all).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from snapshots.recommend import Observed, recommend
from snapshots.report import VERDICTS, SourceSummary, Verdict, Worker, Workload
from snapshots.schema import Header
from snapshots.text import size
from snapshots.windows import median, quantile

#: The percentile of the replicas' healthy peaks a workload's settings come from.
PERCENTILE = 0.90
# Kubernetes' generated name suffixes use this alphabet (no vowels, no 0/1/3).
_SAFE = "[bcdfghjklmnpqrstvwxz2456789]"
_OWNER = (re.compile(rf"^(?P<owner>.+)-{_SAFE}{{6,10}}-{_SAFE}{{5}}$"),  # Deployment
          re.compile(rf"^(?P<owner>.+)-{_SAFE}{{5}}$"),  # DaemonSet, Job, bare ReplicaSet
          re.compile(r"^(?P<owner>.+)-\d+$"))  # StatefulSet


#: How a workload was told, the surest first.
_TOLD = ("recorded", "pod_owner", "worker_command")


def owner(pod: str) -> str:
    """The name of the controller that made `pod`, from the pod's generated name; the pod's
    own name when it has no generated suffix."""
    for pattern in _OWNER:
        m = pattern.match(pod)
        if m:
            return m.group("owner")
    return pod


def command(config: dict[str, Any], worker: str) -> str:
    """The command recorded for `worker`: its `[[worker]]` entry (`name` or `name-N` for
    replicas), else the command given on memwarden's command line."""
    for entry in config.get("worker", []):
        if isinstance(entry, dict) and entry.get("name") and (
                worker == entry["name"] or worker.startswith(f"{entry['name']}-")):
            cmd = entry.get("command")
            break
    else:
        cmd = config.get("command")
    if isinstance(cmd, list):
        return " ".join(map(str, cmd))
    return str(cmd) if cmd else ""


def key(summary: SourceSummary, header: Header | None, worker: str) -> tuple[str, str, str]:
    """(workload, how it was told, worker name) of one worker of one source: the workload the
    header records (1.2) where there is one, as a pod's name may not follow the owner's."""
    ns = f"{summary.namespace}/" if summary.namespace else ""
    if header is not None and header.workload:
        return f"{ns}{header.workload} / {worker}", "recorded", worker
    if summary.pod:
        return f"{ns}{owner(summary.pod)} / {worker}", "pod_owner", worker
    cmd = command(header.config if header else {}, worker)
    base = worker.rsplit("-", 1)[0] if worker.rsplit("-", 1)[-1].isdigit() else worker
    return (f"{base}: {cmd}" if cmd else base), "worker_command", base


def workloads(members: list[tuple[SourceSummary, Header | None, Worker, Observed]],
              margin: float) -> list[Workload]:
    """Group analysed workers by workload; one row each, in name order."""
    groups: dict[tuple[str, str], list[tuple[Header | None, Worker, Observed]]] = {}
    told: dict[tuple[str, str], str] = {}
    for summary, header, w, o in members:
        name, by, worker = key(summary, header, w.worker)
        groups.setdefault((name, worker), []).append((header, w, o))
        # Pods that record their workload and pods that do not (older memwardens in a
        # rollout) are one workload when they name the same; the row says the weaker telling.
        told[name, worker] = max(told.get((name, worker), by), by, key=_TOLD.index)
    return [_workload(name, told[name, worker], worker, group, margin)
            for (name, worker), group in sorted(groups.items())]


def _workload(name: str, by: str, worker: str,
              group: list[tuple[Header | None, Worker, Observed]], margin: float) -> Workload:
    ranks = sorted((VERDICTS.index(w.verdict) for _, w, _ in group), reverse=True)
    verdict: Verdict = VERDICTS[ranks[(len(ranks) - 1) // 2]]  # reached by at least half
    counts = {v: sum(1 for _, w, _ in group if w.verdict == v) for v in VERDICTS}
    rates = sorted(o.slope / 1e6 for _, _, o in group if o.leaking and o.slope > 0)
    peaks = [o.healthy_peak for _, _, o in group]
    peak = quantile(peaks, PERCENTILE)
    observed = [o for _, _, o in group]
    leaking = VERDICTS.index(verdict) >= VERDICTS.index("likely")
    merged = replace(
        observed[0], worker=worker, verdict=verdict, leaking=leaking and bool(rates),
        slope=median(rates) * 1e6 if rates and leaking else 0.0,
        startups=[x for o in observed for x in o.startups],
        highs=[x for o in observed for x in o.highs], healthy_peak=peak,
        ready_s=[x for o in observed for x in o.ready_s], ending=None,
        oom_peaks=[x for o in observed for x in o.oom_peaks],
        flapping=any(o.flapping for o in observed),
        baseline_high=sum(o.baseline_high for o in observed),
        span_s=max(o.span_s for o in observed), judged=any(o.judged for o in observed),
        all_leaked=all(o.all_leaked for o in observed),
        excluded=f"{observed[0].excluded}, in every replica",
        lifetime_s=max((o.lifetime_s for o in observed if o.lifetime_s), default=None))
    header = group[0][0]
    rec = recommend(name, [merged], header.config if header else {},
                    header.limit if header else None, margin)
    spread = (f"; rate {rates[0]:.1f}-{rates[-1]:.1f} MB/s (median {median(rates):.1f}) over "
              f"{len(rates)} leaking replica(s)" if rates else "")
    reached = sum(1 for r in ranks if r >= VERDICTS.index(verdict))
    summary = (f"verdict {verdict} in {reached} of {len(group)} replicas{spread}; "
               f"healthy peak {size(peak)} (the {PERCENTILE * 100:.0f}th percentile of the "
               f"replicas'): high {rec.workers[0].high.text}, limit {rec.limit.text}")
    return Workload(
        workload=name, by=by, worker=worker, replicas=len(group),
        members=[f"{w.source} / {w.worker}" for _, w, _ in group], verdict=verdict,
        verdicts={k: v for k, v in counts.items() if v}, leaking=len(rates),
        rate_low_mb_s=rates[0] if rates else None,
        rate_median_mb_s=median(rates) if rates else None,
        rate_high_mb_s=rates[-1] if rates else None, percentile=PERCENTILE,
        healthy_peak=int(peak), recommendation=rec, summary=summary)


__all__ = ["PERCENTILE", "command", "key", "owner", "workloads"]

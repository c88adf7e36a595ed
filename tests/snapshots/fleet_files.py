"""A fleet's records in the format memwarden writes: pods of a few workloads, each pod's
supervisor writing a header with the downward-API names, 1.1 samples and the events of its
replacements."""

from __future__ import annotations

import pathlib
import random

from snapshots import synthetic
from snapshots.schema import Event, Record, Sample

MB = 1_000_000
T0 = 1.7e9
HIGH = 200 * MB


def _samples(worker: str, g: int, t0: float, values: list[float], rng: random.Random
             ) -> list[Record]:
    out: list[Record] = []
    for i, v in enumerate(values):
        rss = int(v * 1.08)  # the tree's RSS; `memory` is the working set thresholds compare
        out.append(Sample(t=t0 + i, worker=worker, generation=g, pid=100 + g, rss=rss,
                          memory=int(v), rss_min=int(rss - 0.4 * MB),
                          rss_max=int(rss + 0.4 * MB), rss_mean=float(rss), ticks=1000,
                          level="high" if v >= HIGH else "low",
                          slope=rng.gauss(0, 1e4)))
    return out


def pod(directory: pathlib.Path, name: str, kind: str, seed: int, seconds: int = 1200,
        workload: str | None = None, causes: bool = False) -> None:
    """One pod's record: `kind` flat (a steady working set), plateau (warms up, then holds)
    or leak (about 2 MB/s, replaced at HIGH again and again); `workload` in its header when
    given (1.2); with `causes`, spawns say why in `data.cause` (1.2), not in their reason."""
    rng = random.Random(seed)
    records: list[Record] = [synthetic.header(
        f"node-{seed % 3}", t0=T0, limit=1024 * 2**20, pod=name, namespace="shop",
        container="app", measure="cgroup", workload=workload,
        thresholds={"medium": 150 * MB, "high": HIGH, "critical": 400 * MB},
        config={"command": ["python", f"{name.split('-')[0]}.py"], "cooldown": 5.0})]
    base = (80 + 10 * rng.random()) * MB
    if kind != "leak":
        values = [base + (40 * MB * (1 - 2.718 ** (-i / 120)) if kind == "plateau" else 0.0)
                  + rng.gauss(0, 0.5 * MB) for i in range(seconds)]
        records += _samples("worker", 1, T0, values, rng)
        records.append(Event(t=T0, type="start", worker="worker", generation=1, pid=101))
        records.append(Event(t=T0 + 1, type="ready", worker="worker", generation=1))
    else:
        rate = (1.8 + 0.4 * rng.random()) * MB
        t, g = T0, 1
        while t < T0 + seconds:
            lasted = int((HIGH - base) / rate) + 1
            values = [base + rate * i + rng.gauss(0, 0.3 * MB) for i in range(lasted)]
            records += _samples("worker", g, t, values, rng)
            records.append(Event(t=t, type="start" if g == 1 else "spawn", worker="worker",
                                 generation=g, pid=100 + g, profile="normal",
                                 reason=None if g == 1 or causes else
                                 f"generation {g - 1} of 'worker' at high pressure",
                                 data={"cause": "start" if g == 1 else "pressure"}
                                 if causes else {}))
            records.append(Event(t=t + 1, type="ready", worker="worker", generation=g))
            end = t + lasted
            records.append(Event(t=end - 1, type="level", worker="worker", generation=g,
                                 level="high", previous="low", metric="memory",
                                 value=float(HIGH), threshold=float(HIGH)))
            records.append(Event(t=end + 2, type="exit", worker="worker", generation=g,
                                 returncode=0, expected=True))
            t, g = end, g + 1
    records.sort(key=lambda r: r.t)
    synthetic.write(str(directory / f"memwarden-{name}-0000.jsonl"), records)


#: Three workloads of four pods each: names as Kubernetes makes them.
PODS = [(f"api-7d9f8b6c5d-{s}", "flat") for s in ("x2k4m", "b7q9z", "c5w2n", "d8t6p")] + \
    [(f"indexer-5c8d7f9b4-{s}", "leak") for s in ("k2m4n", "q7r9s", "t2v4w", "x6z8b")] + \
    [(f"cache-{k}", "plateau") for k in range(4)]


def fleet(directory: pathlib.Path) -> pathlib.Path:
    """Write the 12 pods' records of PODS into `directory`."""
    directory.mkdir(exist_ok=True)
    for seed, (name, kind) in enumerate(PODS):
        pod(directory, name, kind, seed)
    return directory

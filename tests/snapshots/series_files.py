"""Builders of snapshot files for the snapshot tests."""

from __future__ import annotations

import pathlib

from snapshots import synthetic
from snapshots.schema import Record


def write_shape(path: pathlib.Path, shape: str, *, host: str = "host-a", worker: str = "w",
                seconds: int = 7200, seed: int = 1, **kw: object) -> pathlib.Path:
    """One file: a header and `seconds` samples of `shape`."""
    records: list[Record] = [synthetic.header(host)]
    records += synthetic.samples(worker, synthetic.series(shape, seconds, seed=seed),
                                 **kw)  # type: ignore[arg-type]
    synthetic.write(str(path), records)
    return path


def write_generations(path: pathlib.Path, *, objects_grow: bool = True) -> pathlib.Path:
    """A worker that leaks, is replaced twice (HIGH), trims along the way and flaps once.

    Generation g runs 1800 s from 100 MB at 100 MB/h; at the end of each generation the
    level goes to HIGH and the next generation is spawned, becomes ready, and the old one
    is retired and exits. Counters grow with RSS when `objects_grow`, else stay flat.
    """
    from snapshots.schema import Event

    t0 = 1.7e9
    records: list[Record] = [synthetic.header("host-a", limit=1_000_000_000)]
    events: list[Record] = []
    for g in (1, 2, 3):
        start = t0 + (g - 1) * 1800
        values = synthetic.series("leak", 1800, seed=g, base=100e6, leak_per_h=100e6)
        for i, v in enumerate(values):
            level = "high" if i >= 1790 else ("medium" if i >= 1500 else "low")
            objects = 1000 + (i * 5 if objects_grow else (i % 50))
            records += synthetic.samples("crawler", [v], t0=start + i, generation=g, pid=100 + g,
                                         level=level, stats={"objects": objects,
                                                             "gc_collections": i // 10,
                                                             "gc_pause_ms": i * 0.2})
        events.append(Event(t=start, type="spawn", worker="crawler", generation=g,
                            pid=100 + g, profile="normal" if g == 1 else "high",
                            reason="start" if g == 1 else "high pressure"))
        events.append(Event(t=start + 1, type="ready", worker="crawler", generation=g))
        events.append(Event(t=start + 600, type="trimmed", worker="crawler", generation=g,
                            rss=int(values[600]), rss_after=int(values[600] - 5e6), dropped=300,
                            ms=4.0))
        events.append(Event(t=start + 1500, type="level", worker="crawler", generation=g,
                            level="medium", previous="low", metric="rss", value=150e6,
                            threshold=150e6))
        events.append(Event(t=start + 1790, type="level", worker="crawler", generation=g,
                            level="high", previous="medium", metric="rss", value=150e6,
                            threshold=150e6))
        if g > 1:
            events.append(Event(t=start + 2, type="retire", worker="crawler", generation=g - 1))
            events.append(Event(t=start + 3, type="exit", worker="crawler", generation=g - 1,
                                returncode=0, expected=True))
    records += events
    records.sort(key=lambda r: r.t)
    synthetic.write(str(path), records)
    return path

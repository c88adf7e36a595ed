#!/usr/bin/env python3
"""Benchmark the snapshot writer and `memwarden analyze` against bare msgspec in the same run.

Prints:
  * records/s through SnapshotWriter (submit -> encode -> disk, rotation on) against a bare
    `msgspec.json.Encoder.encode_into` loop over the same records writing one file;
  * analysis MB/s over a generated snapshot set (default ~200 MB, several workers, events and
    bursts) against a bare typed msgspec decode (`Decoder(AnyRecord).decode_lines`) of the
    same files.
Targets: writer >= 500 000 records/s; analysis >= 200 MB/s and within 3x of the bare decode.
Exit status 1 when a target is missed.

Usage: scripts/bench_snapshots.py [--mb 200] [--dir DIR] [--keep] [--quick]
(--quick: 5 MB and one run each, to check that the script works; its figures mean nothing)
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import msgspec

from snapshots.analysis import analyze
from snapshots.burst import encode_burst
from snapshots.schema import AnyRecord, Event, Record, Sample
from snapshots.synthetic import header
from snapshots.writer import SnapshotWriter

WRITER_FLOOR = 500_000
ANALYSIS_FLOOR_MB = 200.0
ANALYSIS_RATIO = 3.0


def make_records(n_samples: int, workers: int = 8, seed: int = 1) -> list[Record]:
    """Samples as the supervisor writes them (1 s, counters, the measured figure beside the
    plain RSS), with events and bursts."""
    rng = random.Random(seed)
    t0 = 1.7e9
    per_worker = n_samples // workers
    out: list[Record] = []
    for i in range(per_worker):
        t = t0 + i
        for k in range(workers):
            base = 100e6 + k * 10e6 + (i * (50e6 / 3600) if k % 2 else 0.0)
            rss = int(base + rng.gauss(0, 1e6))
            out.append(Sample(t=t, worker=f"worker-{k}", generation=1, pid=1000 + k, rss=rss,
                              memory=rss - 6_000_000 - k * 100_000,  # the working set
                              rss_min=rss - 524288, rss_max=rss + 524288, rss_mean=rss + 0.5,
                              ticks=1000, late=rng.randrange(3), procs=1,
                              slope=rng.gauss(0, 2e4), level="low",
                              stats={"objects": 1000 + i % 500, "history": 500,
                                     "blocks": 20000 + i % 900, "gc_collections": i // 7,
                                     "gc_pause_ms": i * 0.02}))
        if i % 600 == 0:
            out.append(Event(t=t, type="trimmed", worker="worker-0", generation=1, pid=1000,
                             rss=120_000_000, rss_after=110_000_000, dropped=200, ms=3.5))
        if i % 3600 == 0:
            ts = [int(j * 1e6) for j in range(3000)]
            out.append(encode_burst("worker-1", 1, 1001, "level", t, ts,
                                    [100_000_000 + (j % 13) * 4096 for j in range(3000)], 1000))
    return out


def bench_writer(records: list[Record], directory: str, repeat: int = 3
                 ) -> tuple[float, float]:
    """Return (writer records/s, bare encoder records/s), best of `repeat` runs each."""
    best_writer = best_bare = 0.0
    for _ in range(repeat):
        w, b = _bench_writer_once(records, directory)
        best_writer, best_bare = max(best_writer, w), max(best_bare, b)
    return best_writer, best_bare


def _bench_writer_once(records: list[Record], directory: str) -> tuple[float, float]:
    n = len(records)
    wdir = os.path.join(directory, "writer")
    w = SnapshotWriter(wdir, header("bench"), queue_limit=n + 1, keep=1000,
                       flush_interval_s=1.0)
    w.start()
    start = time.perf_counter()
    submit = w.submit
    for r in records:
        submit(r)
    w.close(timeout_s=600)
    writer_s = time.perf_counter() - start
    assert w.written == n and w.dropped == 0, (w.written, w.dropped)

    enc = msgspec.json.Encoder()
    buf = bytearray()
    start = time.perf_counter()
    with open(os.path.join(directory, "bare.jsonl"), "wb") as f:
        for r in records:
            enc.encode_into(r, buf, -1)
            buf.extend(b"\n")
            if len(buf) > 1 << 20:
                f.write(buf)
                buf.clear()
        f.write(buf)
    bare_s = time.perf_counter() - start
    shutil.rmtree(wdir)
    os.unlink(os.path.join(directory, "bare.jsonl"))
    return n / writer_s, n / bare_s


def bench_analysis(directory: str, repeat: int = 3) -> tuple[float, float, float]:
    """Return (MB, analysis MB/s, bare decode MB/s) over the files in `directory`.

    Best of `repeat` runs each, alternating, so that both see the same machine (it is
    shared and noisy); both read the files from the page cache.
    """
    paths = sorted(os.path.join(directory, p) for p in os.listdir(directory))
    size = sum(os.path.getsize(p) for p in paths) / 1e6
    for p in paths:
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass
    dec = msgspec.json.Decoder(AnyRecord)
    bare_s = analysis_s = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        count = 0
        for p in paths:
            with open(p, "rb") as f:
                count += len(dec.decode_lines(f.read()))
        bare_s = min(bare_s, time.perf_counter() - start)
        start = time.perf_counter()
        result = analyze([directory])
        analysis_s = min(analysis_s, time.perf_counter() - start)
        assert result.report.read.records == count, (result.report.read.records, count)
        del result
    return size, size / analysis_s, size / bare_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=200.0, help="size of the snapshot set")
    parser.add_argument("--dir", help="work directory (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the generated files")
    parser.add_argument("--quick", action="store_true",
                        help="5 MB, one run each: a smoke run whose figures mean nothing")
    args = parser.parse_args()
    repeat = 1 if args.quick else 3
    if args.quick:
        args.mb = 5.0
    directory = args.dir or tempfile.mkdtemp(prefix="memwarden-bench-")
    os.makedirs(directory, exist_ok=True)
    ok = True
    try:
        print(f"generating ~{args.mb:.0f} MB of snapshot records ...", flush=True)
        # ~305 bytes per record on average (samples with counters, events, bursts), measured
        records = make_records(int(args.mb * 1e6 / 305))
        wr, bare = bench_writer(records[:1_000_000], directory, repeat)
        print(f"writer:   {wr:12,.0f} records/s   bare encoder {bare:12,.0f} records/s   "
              f"ratio {bare / wr:.2f}x   target >= {WRITER_FLOOR:,}")
        ok &= wr >= WRITER_FLOOR
        data = os.path.join(directory, "set")
        w = SnapshotWriter(data, header("bench"), queue_limit=len(records) + 1, keep=1000)
        w.start()
        for r in records:
            w.submit(r)
        w.close(timeout_s=600)
        del records
        size, mbs, bare_mbs = bench_analysis(data, repeat)
        print(f"analysis: {mbs:12,.1f} MB/s        bare decode  {bare_mbs:12,.1f} MB/s        "
              f"ratio {bare_mbs / mbs:.2f}x   over {size:.0f} MB in "
              f"{len(os.listdir(data))} files   target >= {ANALYSIS_FLOOR_MB:.0f} MB/s, "
              f"<= {ANALYSIS_RATIO:.0f}x")
        ok &= mbs >= ANALYSIS_FLOOR_MB and bare_mbs / mbs <= ANALYSIS_RATIO
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
    if args.quick:
        print("quick run: the script works; run it without --quick for figures")
        return 0
    print("all targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

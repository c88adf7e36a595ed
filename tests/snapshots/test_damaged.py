"""`memwarden analyze` on damaged sets: no traceback, figures no record can hold dropped and
counted (never charted or recommended from), and resident memory within the documented
budget whatever the input (measured from the analysing child's ru_maxrss)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import msgspec
import pytest

from snapshots import html, synthetic, text
from snapshots.analysis import analyze
from snapshots.report import Report
from snapshots.schema import Burst, Event, Record
from tests.conftest import ROOT

#: The analysis' documented memory budget (docs/analyze.md, "Memory").
BUDGET_MIB = 160


def _all_formats(path: pathlib.Path) -> Report:
    a = analyze([str(path)])
    text.render(a.report)
    html.render(a)
    return msgspec.json.decode(msgspec.json.encode(a.report), type=Report)


def test_records_sharing_one_timestamp(tmp_path: pathlib.Path) -> None:
    records: list[Record] = [synthetic.header()]
    records += synthetic.samples("w", [1e8 + k for k in range(50)], period_s=0.0)
    records.append(Event(t=1.7e9, type="level", worker="w", level="high", previous="low"))
    synthetic.write(str(tmp_path / "a.jsonl"), records)
    (w,) = _all_formats(tmp_path / "a.jsonl").workers
    assert w.end == w.start and w.samples == 50


def test_a_sample_in_the_year_30_000_is_dropped_and_counted(tmp_path: pathlib.Path) -> None:
    records: list[Record] = [synthetic.header(), *synthetic.samples("w", [1e8] * 120)]
    records += synthetic.samples("w", [1e8], t0=1e18)
    records.append(Event(t=1e18, type="level", worker="w", level="high", previous="low"))
    synthetic.write(str(tmp_path / "a.jsonl"), records)
    rep = _all_formats(tmp_path / "a.jsonl")
    (w,) = rep.workers
    assert rep.read.implausible == 2 and w.samples == 120
    assert w.end - w.start == pytest.approx(119.0)  # the record's own span, not 10^18 s


def test_memory_no_machine_holds_is_dropped_never_recommended(tmp_path: pathlib.Path) -> None:
    records: list[Record] = [synthetic.header(), *synthetic.samples("w", [1e8] * 600)]
    huge = synthetic.samples("w", [1e8], t0=1.7e9 + 600)[0]
    huge.rss_max, huge.memory, huge.rss_mean = 2**62, 2**62, 1e30
    records.append(huge)
    synthetic.write(str(tmp_path / "a.jsonl"), records)
    rep = _all_formats(tmp_path / "a.jsonl")
    assert rep.read.implausible == 1
    (w,) = rep.workers
    assert max(g.rss_max for g in w.generations) < 2e8
    (adv,) = rep.recommendations[0].workers
    assert adv.high.value < 2e8 and rep.recommendations[0].limit.value < 1e9


def test_analyze_dash_reads_json_with_spaces(tmp_path: pathlib.Path) -> None:
    records: list[Record] = [synthetic.header(), *synthetic.samples("w", [1e8] * 30)]
    spaced = "".join(f"2026-01-01T00:00:00Z stdout F {json.dumps(msgspec.to_builtins(r))}\n"
                     for r in records)
    assert '"kind": "sample"' in spaced
    r = subprocess.run([sys.executable, "-m", "snapshots", "-", "--format", "json"],
                       input=spaced.encode(), capture_output=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    rep = msgspec.json.decode(r.stdout, type=Report)
    assert rep.read.records == 31 and rep.workers[0].samples == 30


def _rss_mib(path: pathlib.Path, out: pathlib.Path) -> tuple[float, Report]:
    """Analyse `path` in a child of a fresh interpreter; return the child's peak resident
    memory (MiB, its ru_maxrss as the interpreter that reaped it sees it) and the report."""
    probe = subprocess.run(
        [sys.executable, "-c", "import resource, subprocess, sys; "
         "subprocess.run(sys.argv[1:], check=True, timeout=170); "
         "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
         sys.executable, "-m", "snapshots", str(path), "--format", "json", "-o", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert probe.returncode == 0, probe.stderr
    return int(probe.stdout) / 1024, msgspec.json.decode(out.read_bytes(), type=Report)


@pytest.mark.timeout(600)
@pytest.mark.slow
def test_memory_stays_within_the_budget_on_damaged_sets(tmp_path: pathlib.Path) -> None:
    # a sparse file: a header, then a gibibyte of zeros without a newline
    sparse = tmp_path / "sparse.jsonl"
    synthetic.write(str(sparse), [synthetic.header(), *synthetic.samples("w", [1e8] * 100)])
    with open(sparse, "r+b") as f:
        f.truncate(2**30)
    rss, rep = _rss_mib(sparse, tmp_path / "sparse.json")
    assert rss < BUDGET_MIB and rep.read.corrupt == 1 and rep.workers[0].samples == 100

    # 50,000 worker names
    many = tmp_path / "many.jsonl"
    records: list[Record] = [synthetic.header()]
    for i in range(50_000):
        records += synthetic.samples(f"w{i}", [1e8, 1e8], t0=1.7e9 + i * 1e-3)
    records.sort(key=lambda r: r.t)
    synthetic.write(str(many), records)
    rss, rep = _rss_mib(many, tmp_path / "many.json")
    assert rss < BUDGET_MIB and len(rep.workers) == 256
    assert rep.read.beyond_workers == 2 * (50_000 - 256)

    # a very long line (a burst of 3 million samples, just under the 32 MiB line limit)
    long = tmp_path / "long.jsonl"
    n = 3_000_000
    synthetic.write(str(long), [synthetic.header(), *synthetic.samples("w", [1e8] * 10),
                                Burst(t=1.7e9 + 5, worker="w", generation=1, pid=1,
                                      cause="level", interval_us=1000, rss0=10**8,
                                      dt_us=[1000] * n, rss_delta=[4096] * n)])
    assert 20 * 2**20 < long.stat().st_size < 32 * 2**20
    rss, rep = _rss_mib(long, tmp_path / "long.json")
    assert rss < BUDGET_MIB and rep.workers[0].bursts == 1

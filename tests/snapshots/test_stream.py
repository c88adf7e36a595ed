"""`--snapshots -`: snapshot records on standard output, read back by `memwarden analyze -`."""

from __future__ import annotations

import io
import json
import pathlib
import signal
import subprocess
import sys

import pytest

from snapshots import reader
from tests.conftest import ROOT, python, wait_until

# Prints a line of its own now and then, on the same standard output as the records.
CHATTY = ("import sys, time\nblock = []\nfor i in range(100000):\n"
          "    print(f'worker line {i}', flush=True)\n    block.append(b'x' * 200_000)\n"
          "    time.sleep(0.02)\n")


@pytest.mark.slow
def test_snapshots_to_stdout_read_back_by_analyze(memwarden, tmp_path) -> None:
    out = tmp_path / "pod.log"
    with open(out, "wb") as f:
        m = memwarden("run", "--snapshots", "-", "--sample-period", "0.1s", "--control", "",
                      "--ready-after", "0.1s", "--log-format", "json", "--", *python(CHATTY),
                      stdout=f)
        wait_until(lambda: out.read_text().count('{"kind":"sample"') >= 15,
                   what="15 samples on standard output")
        m.signal(signal.SIGTERM)
        assert m.wait() == 128 + signal.SIGTERM  # the worker died of the TERM passed on
    text = out.read_text()
    assert "worker line 3\n" in text  # the worker's output is there, untouched
    records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert records[0]["kind"] == "header"
    kinds = {r["kind"] for r in records}
    assert kinds == {"header", "sample", "event"}  # no bursts: lines a runtime would split
    assert max(len(line) for line in text.splitlines()) < 4096  # one atomic write each
    assert "snapshots to standard output" in m.stderr()

    # As a log pipeline keeps it: the runtime's prefix on every line.
    piped = "".join(f"2026-01-01T00:00:00.000000000Z stdout F {line}\n"
                    for line in text.splitlines())
    r = subprocess.run([sys.executable, "-m", "supervisor", "analyze", "-", "--format", "json"],
                       input=piped, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["read"]["files"] == 1 and report["read"]["corrupt"] == 0
    (worker,) = report["workers"]
    assert worker["worker"] == "worker" and worker["samples"] >= 15


def test_analyze_dash_without_records_or_from_a_terminal_exits_2() -> None:
    r = subprocess.run([sys.executable, "-m", "supervisor", "analyze", "-"],
                       input="just a worker's output\n", capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert r.returncode == 2 and "no snapshot records on standard input" in r.stderr


def test_spool_splits_runs_at_their_headers_and_skips_other_lines(tmp_path) -> None:
    header = b'{"kind":"header","t":1.0,"host":"h","supervisor_pid":%d}'
    sample = b'{"kind":"sample","t":2.0,"worker":"w","generation":1,"pid":3,"rss":1,' \
             b'"rss_min":1,"rss_max":1,"rss_mean":1.0}'
    stream = io.BytesIO(b"\n".join([
        sample,  # before any header: a file of its own
        b"hello from the worker",
        b"[pod/a/c] " + header % 1, sample,
        b"x" * (reader.MAX_LINE + 10),  # too long: skipped whole
        header % 2, sample, sample, b""]))
    paths = reader.spool(stream, str(tmp_path))
    assert [p.rsplit("/", 1)[1] for p in paths] == ["stdin-0000.jsonl", "stdin-0001.jsonl",
                                                     "stdin-0002.jsonl"]
    lines = [pathlib.Path(p).read_bytes().splitlines() for p in paths]
    assert lines == [[sample], [header % 1, sample], [header % 2, sample, sample]]


def test_the_writer_leaves_standard_output_open_and_bursts_out(tmp_path) -> None:
    code = r"""
import os, sys, time
from snapshots.schema import Burst, Event, Header
from snapshots.writer import SnapshotWriter
w = SnapshotWriter("-", Header(t=time.time(), host="h"))
w.start()
assert w.submit(Burst(t=1.0, worker="w", generation=1, pid=2, cause="x", interval_us=1000,
                      rss0=1, dt_us=[1] * 5000, rss_delta=[1] * 5000))
for i in range(3):
    w.submit(Event(t=1.0, type="ready", message=f"m{i}"))
w.close()
print("still open", flush=True)
sys.stderr.write(f"{w.written} {w.dropped} {w.files}\n")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert [json.loads(line)["kind"] for line in lines[:-1]] == ["header", "event", "event",
                                                                 "event"]
    assert lines[-1] == "still open"
    assert r.stderr.strip() == "3 0 ['-']"

"""`memwarden analyze` from the command line: formats, exit statuses, errors."""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys

import msgspec
import pytest

from snapshots import cli, synthetic
from snapshots.report import Report
from tests.snapshots.series_files import write_shape

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return cli.run(parser.parse_args(list(argv)))


def test_text_report_names_the_verdict_and_reasons(tmp_path, capsys) -> None:
    write_shape(tmp_path / "a.jsonl", "leak", worker="crawler")
    assert _run(str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "host-a / crawler: leak verdict" in out
    assert "MB/h" in out and "time to high" in out and "gen" in out


def test_json_report_follows_the_documented_schema(tmp_path) -> None:
    write_shape(tmp_path / "a.jsonl", "sawtooth", worker="w")
    out = tmp_path / "r.json"
    assert _run(str(tmp_path / "a.jsonl"), "--format", "json", "-o", str(out)) == 0
    report = msgspec.json.decode(out.read_bytes(), type=Report)
    assert report.schema == "memwarden.analysis/1"
    (w,) = report.workers
    assert w.segment is not None and w.segment.shape == "sawtooth"
    assert w.verdict == "none" and w.generations[0].generation == 1


@pytest.mark.parametrize(("shape", "fail_on", "status"), [
    ("leak", "likely", 1), ("flat", "likely", 0), ("leak", "confirmed", 1),
    ("flat", "suspected", 0),
])
def test_fail_on_verdict(tmp_path, capsys, shape: str, fail_on: str, status: int) -> None:
    write_shape(tmp_path / "a.jsonl", shape)
    assert _run(str(tmp_path), "--fail-on", fail_on) == status


def test_fail_on_pressure_level(tmp_path) -> None:
    records = [synthetic.header()]
    records += synthetic.samples("w", [1e8] * 50)
    records += synthetic.samples("w", [3e8] * 50, t0=1.7e9 + 50, level="high")
    synthetic.write(str(tmp_path / "a.jsonl"), records)
    assert _run(str(tmp_path), "--fail-on", "high", "-o", str(tmp_path / "r.txt")) == 1
    assert _run(str(tmp_path), "--fail-on", "critical", "-o", str(tmp_path / "r.txt")) == 0


def test_unknown_version_exits_2_with_a_clear_message(tmp_path, capsys) -> None:
    (tmp_path / "a.jsonl").write_bytes(b'{"kind":"header","t":1,"version":"7.1"}\n')
    assert _run(str(tmp_path)) == 2
    assert "format '7.1' is not supported" in capsys.readouterr().err


def test_python_dash_m_entry(tmp_path) -> None:
    write_shape(tmp_path / "a.jsonl", "flat", seconds=300)
    done = subprocess.run([sys.executable, "-m", "snapshots", str(tmp_path), "--format", "json"],
                          cwd=ROOT, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert msgspec.json.decode(done.stdout, type=Report).workers[0].worker == "w"
    done = subprocess.run([sys.executable, "-m", "snapshots", str(tmp_path / "missing")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "no such file" in done.stderr
    done = subprocess.run([sys.executable, "-m", "snapshots", str(tmp_path), "--window", "x"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "expected a positive duration" in done.stderr


def test_memwarden_analyze_command(tmp_path) -> None:
    if not (ROOT / "supervisor" / "cli.py").exists():
        pytest.skip("supervisor/cli.py (the memwarden command) is not in this checkout yet")
    write_shape(tmp_path / "a.jsonl", "leak", seconds=1200)
    done = subprocess.run([sys.executable, "-m", "supervisor", "analyze", str(tmp_path),
                           "--fail-on", "likely"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1, done.stderr
    assert "leak verdict" in done.stdout


def test_margin_of_the_recommendation(tmp_path) -> None:
    write_shape(tmp_path / "a.jsonl", "sawtooth", seconds=1800)
    highs = []
    for margin in ("15%", "30%"):
        out = tmp_path / f"r{margin[:2]}.json"
        assert _run(str(tmp_path / "a.jsonl"), "--format", "json", "--margin", margin,
                    "-o", str(out)) == 0
        report = msgspec.json.decode(out.read_bytes(), type=Report)
        (rec,) = report.recommendations
        assert rec.margin == float(margin[:2]) / 100
        highs.append(rec.workers[0].high.value)
    peak = report.workers[0].generations[0].rss_max
    assert highs[0] >= peak * 1.15 and highs[1] >= peak * 1.30 > highs[0]
    with pytest.raises(SystemExit):
        _run(str(tmp_path), "--margin", "0")

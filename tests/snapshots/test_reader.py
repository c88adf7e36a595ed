"""The reader: damaged files, gzip, rotated sets, many hosts, versions it does not know."""

from __future__ import annotations

import gzip
import pathlib

import msgspec
import pytest

from snapshots import reader, synthetic
from snapshots.analysis import analyze
from snapshots.schema import Sample
from tests.snapshots.series_files import write_shape


def _samples(paths: list[str]) -> tuple[list[tuple[str, Sample]], reader.ReadStats]:
    stats = reader.ReadStats()
    out = []
    for src in reader.sources(paths):
        for sf in src.files:
            for chunk in reader.iter_chunks(sf, stats):
                out.extend((src.label, r) for r in chunk if isinstance(r, Sample))
    return out, stats


def test_truncated_last_line_is_counted_and_ignored(tmp_path: pathlib.Path) -> None:
    path = write_shape(tmp_path / "a.jsonl", "flat", seconds=100)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])  # a crash in the middle of the last line
    got, stats = _samples([str(path)])
    assert len(got) == 99
    assert (stats.truncated, stats.corrupt) == (1, 0)


def test_corrupt_line_in_the_middle_is_skipped_and_counted(tmp_path: pathlib.Path) -> None:
    path = write_shape(tmp_path / "a.jsonl", "flat", seconds=100)
    lines = path.read_bytes().split(b"\n")
    lines[50] = b'{"kind":"sample","t":1.0,"worker":' + b"\xff garbage"
    lines[60] = b'{"kind":"sample","t":"not a number"}'
    path.write_bytes(b"\n".join(lines))
    got, stats = _samples([str(path)])
    assert len(got) == 98
    assert stats.corrupt == 2 and stats.truncated == 0
    assert any("a.jsonl:51" in p for p in stats.problems)


def test_unknown_fields_and_kinds_are_ignored(tmp_path: pathlib.Path) -> None:
    path = write_shape(tmp_path / "a.jsonl", "flat", seconds=10)
    with open(path, "ab") as f:
        f.write(b'{"kind":"sample","t":2e9,"worker":"w","generation":1,"pid":1,"rss":5,'
                b'"rss_min":5,"rss_max":5,"rss_mean":5.0,"future_field":[1,2]}\n')
        f.write(b'{"kind":"hologram","t":2e9}\n')
    got, stats = _samples([str(path)])
    assert len(got) == 11 and got[-1][1].rss == 5
    assert (stats.unknown, stats.corrupt) == (1, 0)


def test_gzip_reads_like_plain(tmp_path: pathlib.Path) -> None:
    plain = write_shape(tmp_path / "a.jsonl", "leak", seconds=500)
    packed = tmp_path / "b" / "a.jsonl.gz"
    packed.parent.mkdir()
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    a, _ = _samples([str(plain)])
    b, _ = _samples([str(packed.parent)])
    assert [s.rss for _, s in a] == [s.rss for _, s in b]


def test_rotated_set_reads_in_writing_order_whatever_the_names(tmp_path: pathlib.Path) -> None:
    values = synthetic.series("leak", 300)
    records = synthetic.samples("w", values)
    for index, name in enumerate(["zz.jsonl", "aa.jsonl", "mm.jsonl"]):
        header = msgspec.structs.replace(synthetic.header("h"), file_index=index)
        synthetic.write(str(tmp_path / name), [header, *records[index * 100:(index + 1) * 100]])
    got, _ = _samples([str(tmp_path / "*.jsonl")])
    assert [s.t for _, s in got] == [r.t for r in records]


def test_two_hosts_are_merged_and_kept_apart(tmp_path: pathlib.Path) -> None:
    write_shape(tmp_path / "a.jsonl", "leak", host="host-a", worker="web")
    write_shape(tmp_path / "b.jsonl", "flat", host="host-b", worker="web")
    report = analyze([str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]).report
    assert [s.label for s in report.sources] == ["host-a", "host-b"]
    by_source = {w.source: w for w in report.workers}
    assert by_source["host-a"].segment.shape == "linear"  # type: ignore[union-attr]
    assert by_source["host-b"].segment.shape == "stable"  # type: ignore[union-attr]
    assert report.verdict == by_source["host-a"].verdict


def test_unknown_major_version_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "new.jsonl"
    path.write_bytes(b'{"kind":"header","t":1.0,"version":"2.0","host":"h"}\n'
                     b'{"kind":"sample","t":2.0,"quantum":true}\n')
    with pytest.raises(reader.UnsupportedVersion, match=r"format '2.0'.*reads format 1.x"):
        analyze([str(path)])


def test_missing_path_and_empty_directory_are_clear_errors(tmp_path: pathlib.Path) -> None:
    with pytest.raises(reader.SnapshotError, match="no such file"):
        reader.expand([str(tmp_path / "nope")])
    with pytest.raises(reader.SnapshotError, match="no snapshot files"):
        reader.expand([str(tmp_path)])


def test_overlapping_runs_of_one_host_are_read_in_time_order(tmp_path: pathlib.Path) -> None:
    # Two supervisors on one host wrote the same worker name over overlapping hours.
    for pid, t0 in ((1, 1.7e9), (2, 1.7e9 + 1800)):
        header = msgspec.structs.replace(synthetic.header("h", t0=t0), supervisor_pid=pid)
        synthetic.write(str(tmp_path / f"run{pid}.jsonl"),
                        [header, *synthetic.samples("w", synthetic.series("flat", 3600),
                                                    t0=t0)])
    result = analyze([str(tmp_path)])
    (w,) = result.report.workers
    assert w.samples == 7200 and w.end - w.start == pytest.approx(5399)
    windows = result.workers[0].generations[0].windows
    assert windows.t == sorted(windows.t)
    assert w.verdict == "none"


# -- damaged and hostile input: bounded, reported, the rest read ------------------------------

def test_lines_that_break_decoders_are_corrupt_lines(tmp_path: pathlib.Path) -> None:
    path = write_shape(tmp_path / "a.jsonl", "flat", seconds=100)
    lines = path.read_bytes().split(b"\n")
    lines[40] = b'{"kind":"sample","worker":"\xff"}'
    lines[50] = b'{"kind":"sample","x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    path.write_bytes(b"\n".join(lines))
    got, stats = _samples([str(path)])
    assert len(got) == 98 and stats.corrupt == 2


def test_an_overlong_line_is_skipped_with_memory_bounded(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(reader, "MAX_LINE", 1 << 20)
    monkeypatch.setattr(reader, "CHUNK", 1 << 16)
    path = write_shape(tmp_path / "a.jsonl", "flat", seconds=100)
    lines = path.read_bytes().split(b"\n")
    lines[50] = b'{"kind":"event","t":1.0,"message":"' + b"x" * (3 << 20) + b'"}'
    path.write_bytes(b"\n".join(lines))
    with gzip.open(tmp_path / "b.jsonl.gz", "wb") as f:
        f.write(b"\n".join(lines))
    for name in ("a.jsonl", "b.jsonl.gz"):
        got, stats = _samples([str(tmp_path / name)])
        assert len(got) == 99 and stats.corrupt == 1, stats.problems
        assert "longer than 1048576" in stats.problems[0]


def test_gzip_without_a_newline_is_read_in_bounded_memory(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(reader, "MAX_LINE", 1 << 20)
    path = tmp_path / "bomb.jsonl.gz"
    with gzip.open(path, "wb") as f:
        for _ in range(64):
            f.write(b"\0" * (1 << 20))  # 64 MiB of zeros, no newline: a 64 KiB file
    got, stats = _samples([str(path)])
    assert got == [] and stats.corrupt == 1


def _damaged_set(tmp_path: pathlib.Path) -> pathlib.Path:
    """One good file and every kind of file that cannot be read, in one directory."""
    import os

    d = tmp_path / "snaps"
    d.mkdir()
    write_shape(d / "good.jsonl", "flat", seconds=100)
    os.mkfifo(d / "fifo.jsonl")
    os.symlink("/dev/zero", d / "zero.jsonl")
    os.symlink(d / "missing", d / "dangling.jsonl")
    os.symlink("loop.jsonl", d / "loop.jsonl")
    (d / "dir.jsonl").mkdir()
    whole = gzip.compress((d / "good.jsonl").read_bytes())
    (d / "cut.jsonl.gz").write_bytes(whole[:30])  # cut inside its first line
    return d


def test_unreadable_files_are_reported_and_the_rest_read(tmp_path: pathlib.Path) -> None:
    d = _damaged_set(tmp_path)
    got, stats = _samples([str(d)])
    assert len(got) == 100
    assert stats.unreadable == 6
    problems = stats.problems[:6]
    for name, why in (("fifo.jsonl", "a FIFO"), ("zero.jsonl", "a device"),
                      ("dangling.jsonl", "No such file"), ("loop.jsonl", "symbolic links"),
                      ("dir.jsonl", "a directory"), ("cut.jsonl.gz", "")):
        assert any(name in p and reader.UNREADABLE in p and why in p for p in problems), name


def test_analyze_reports_unreadable_files_and_analyses_the_rest(tmp_path) -> None:
    import json
    import subprocess
    import sys

    d = _damaged_set(tmp_path)
    r = subprocess.run([sys.executable, "-m", "supervisor", "analyze", str(d), "--format",
                        "json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert sum(reader.UNREADABLE in line for line in r.stderr.splitlines()) == 6
    report = json.loads(r.stdout)
    assert report["read"]["files"] == 1
    assert sum(reader.UNREADABLE in p for p in report["read"]["problems"]) == 6
    r = subprocess.run([sys.executable, "-m", "supervisor", "analyze",
                        str(d / "fifo.jsonl")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "a FIFO" in r.stderr

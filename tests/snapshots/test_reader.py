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

"""The writer: rotation, retention, headers, counters, and a disk that fills up."""

from __future__ import annotations

import logging
import os
import pathlib
import threading
import time

import msgspec

from snapshots import reader, synthetic
from snapshots.burst import decode_burst, encode_burst
from snapshots.schema import Burst, Event, Header, Sample
from snapshots.writer import SnapshotWriter, file_prefix
from tests.conftest import wait_until
from tests.snapshots.conftest import fill


def _samples(n: int, worker: str = "w") -> list[Sample]:
    return synthetic.samples(worker, [100e6 + i for i in range(n)])


def _read_all(directory: pathlib.Path) -> tuple[list[object], reader.ReadStats]:
    stats = reader.ReadStats()
    out: list[object] = []
    for src in reader.sources([str(directory)]):
        for sf in src.files:
            for chunk in reader.iter_chunks(sf, stats, bursts=True):
                out.extend(chunk)
    return out, stats


def test_every_record_written_in_order_with_a_header(tmp_path: pathlib.Path) -> None:
    w = SnapshotWriter(str(tmp_path), synthetic.header("h1"), flush_interval_s=0.05)
    w.start()
    records = _samples(2000)
    assert all(w.submit(r) for r in records)
    w.close()
    assert (w.written, w.dropped) == (2000, 0)
    (path,) = w.files
    assert os.path.basename(path).startswith(file_prefix("h1"))
    got, stats = _read_all(tmp_path)
    assert isinstance(got[0], Header) and got[0].version == "1.2" and got[0].host == "h1"
    assert [r.rss for r in got[1:]] == [r.rss for r in records]  # type: ignore[attr-defined]
    assert stats.corrupt == stats.truncated == 0


def test_rotation_keeps_the_newest_files_each_with_a_header(tmp_path: pathlib.Path) -> None:
    other = tmp_path / "memwarden-otherhost-20200101T000000-1-0000.jsonl"
    other.write_bytes(b"")
    w = SnapshotWriter(str(tmp_path), synthetic.header("h1"), max_bytes=20_000, keep=3,
                       flush_interval_s=0.01)
    w.start()
    for r in _samples(3000):
        while not w.submit(r):  # the queue is bounded: let the thread catch up
            time.sleep(0.001)
    w.close()
    assert len(w.files) > 5
    ours = sorted(p for p in tmp_path.iterdir() if p.name.startswith(file_prefix("h1")))
    assert [str(p) for p in ours] == w.files[-3:]
    assert other.exists(), "files of other hosts are not ours to prune"
    indices = []
    for p in ours:
        first = p.read_bytes().split(b"\n", 1)[0]
        header = msgspec.json.decode(first, type=Header)
        indices.append(header.file_index)
        assert p.stat().st_size < 20_000 + 1000  # one record past the limit at most
    assert indices == sorted(indices) and indices[-1] == len(w.files) - 1
    # what is kept reads back contiguous and in order
    got, _ = _read_all(tmp_path)
    rss = [r.rss for r in got if isinstance(r, Sample)]
    assert rss == sorted(rss) and rss[-1] == 100e6 + 2999
    assert rss == list(range(int(rss[0]), int(rss[0]) + len(rss)))


def test_retention_by_age(tmp_path: pathlib.Path) -> None:
    old = tmp_path / f"{file_prefix('h1')}20000101T000000-1-0000.jsonl"
    old.write_bytes(b"")
    os.utime(old, (time.time() - 10 * 86400,) * 2)
    w = SnapshotWriter(str(tmp_path), synthetic.header("h1"), max_age_s=86400)
    w.start()
    w.submit(_samples(1)[0])
    w.close()
    assert not old.exists()
    assert len(list(tmp_path.iterdir())) == 1


def test_submit_is_safe_from_many_threads_and_never_blocks(tmp_path: pathlib.Path) -> None:
    w = SnapshotWriter(str(tmp_path), synthetic.header("h1"), queue_limit=100)
    w.start()
    results: list[bool] = []

    def burst() -> None:
        results.extend(w.submit(r) for r in _samples(2000))

    threads = [threading.Thread(target=burst) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    w.close()
    assert len(results) == 8000
    assert w.written + w.dropped == 8000
    assert w.dropped == results.count(False)


def test_burst_round_trip() -> None:
    t_ns = [10_000_000_000 + i * 1_000_300 for i in range(3000)]
    rss = [50_000_000 + (i % 7) * 4096 for i in range(3000)]
    b = encode_burst("w", 2, 99, "level", 1.7e9, t_ns, rss, 1000)
    times, values = decode_burst(msgspec.json.decode(msgspec.json.encode(b), type=Burst))
    assert values == rss
    assert all(abs(a - (1.7e9 + (t - t_ns[0]) / 1e9)) < 2e-6 for a, t in zip(times, t_ns,
                                                                           strict=True))


def test_full_disk_drops_and_counts_and_recovers(small_tmpfs: pathlib.Path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="memwarden.snapshots")
    directory = small_tmpfs / "snaps"
    w = SnapshotWriter(str(directory), synthetic.header("h1"), flush_interval_s=0.01)
    w.start()
    filler = fill(small_tmpfs, leave=16 * 1024)
    submitted = 0
    records = iter(_samples(200_000))

    def dropping() -> bool:
        nonlocal submitted
        for _ in range(200):
            w.submit(next(records))
            submitted += 1
        return w.dropped > 0

    wait_until(dropping, timeout=30, what="the writer to drop records on a full disk")
    dropped_first = w.dropped
    # supervision goes on: submitting neither blocks nor raises while the disk is full
    for _ in range(1000):
        assert w.submit(next(records)) in (True, False)
        submitted += 1
    filler.unlink()
    before = w.written

    def writing_again() -> bool:
        nonlocal submitted
        w.submit(next(records))
        submitted += 1
        return w.written > before + 10

    wait_until(writing_again, timeout=30, what="the writer to write again once space is free")
    # The disk fills and frees again at once (a nearly full disk flaps): not said again.
    filler = fill(small_tmpfs, leave=16 * 1024)
    wait_until(lambda: dropping() and w.dropped > dropped_first + 1000, timeout=30,
               what="the writer to drop records again")
    filler.unlink()
    before = w.written
    wait_until(writing_again, timeout=30, what="the writer to write again")
    w.close()
    assert w.written + w.dropped == submitted
    got, stats = _read_all(directory)
    assert stats.corrupt == 0, stats.problems  # a partial line is cut back, never left
    notes = [r for r in got if isinstance(r, Event) and r.type == "dropped"]
    assert notes and sum(n.dropped or 0 for n in notes) == w.dropped
    # one warning when the disk fills, one when writing works again: not one per record,
    # nor one per flap; and each under memwarden's logger (its lines carry the prefix)
    messages = [r.getMessage() for r in caplog.records]
    assert all(r.name.startswith("memwarden.") for r in caplog.records)
    assert sum("cannot write" in m for m in messages) == 1, messages
    assert sum("writing to" in m and "again" in m for m in messages) == 1, messages


def test_a_record_that_cannot_be_encoded_is_dropped_alone(tmp_path: pathlib.Path) -> None:
    w = SnapshotWriter(str(tmp_path), synthetic.header("h1"))
    w.start()
    bad = Event(t=1.0, type="report", data={"x": object()})  # not JSON
    assert w.submit(_samples(1)[0]) and w.submit(bad) and w.submit(_samples(1)[0])
    w.close()
    assert (w.written, w.dropped) == (2, 1)
    got, stats = _read_all(tmp_path)
    assert stats.corrupt == 0 and sum(isinstance(r, Sample) for r in got) == 2


def test_a_removed_directory_is_created_again(tmp_path: pathlib.Path) -> None:
    import shutil

    directory = tmp_path / "snaps"
    w = SnapshotWriter(str(directory), synthetic.header("h1"), flush_interval_s=0.01)
    w.start()
    records = iter(_samples(100_000))
    for _ in range(100):
        w.submit(next(records))
    wait_until(lambda: w.written >= 100, what="the first records written")
    shutil.rmtree(directory)

    def written_again() -> bool:
        w.submit(next(records))
        return directory.exists() and any(directory.iterdir()) and w.written > 200

    wait_until(written_again, what="the directory made again and written to")
    w.close()
    got, stats = _read_all(directory)
    assert stats.corrupt == 0 and [r for r in got if isinstance(r, Sample)]

"""/proc reads against real processes: start times, trees, statm readers, the process table."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from supervisor.linux import procfs
from tests.conftest import wait_until

pytestmark = pytest.mark.timeout(60)

MiB = 1024 * 1024


def test_start_time_matches_stat_and_is_none_once_gone():
    with open("/proc/self/stat", "rb") as f:
        expected = int(f.read().rsplit(b")", 1)[1].split()[19])
    assert procfs.start_time(os.getpid()) == expected
    p = subprocess.Popen(["/bin/true"])
    p.wait(timeout=10)
    assert procfs.start_time(p.pid) is None


def test_start_time_survives_odd_command_names(tmp_path):
    odd = tmp_path / "a) (b"
    odd.symlink_to("/bin/sleep")
    p = subprocess.Popen([str(odd), "30"])
    try:
        assert wait_until(lambda: procfs.start_time(p.pid), what="start time")
        table = procfs.process_table()
        assert table[p.pid] == (os.getpid(), procfs.start_time(p.pid))
    finally:
        p.kill()
        p.wait(timeout=10)


def test_descendants_include_grandchildren(spawn_tree):
    root = spawn_tree(mb=0, kids=2)
    kids = wait_until(
        lambda: len(procfs.descendants(root.pid)) == 2 and procfs.descendants(root.pid),
        what="two children of the tree")
    assert root.pid not in kids
    mine = procfs.descendants(os.getpid())
    assert root.pid in mine and set(kids) <= set(mine)
    # The same answer from a shared scan.
    assert set(procfs.descendants(root.pid, procfs.parent_map())) == set(kids)


def test_statm_reader_reads_rss_and_reports_a_gone_process(spawn_tree):
    p = spawn_tree(mb=40)
    reader = procfs.StatmReader(p.pid)
    assert reader.pid == p.pid and reader.start == procfs.start_time(p.pid)
    assert reader.rss_pages() * procfs.PAGE_SIZE >= 40 * MiB
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    assert reader.rss_pages() == -1
    assert reader.rss_pages() == -1  # and it stays that way, without raising
    reader.close()
    reader.close()


def test_statm_reader_of_a_zombie_reads_zero(spawn_tree):
    p = spawn_tree(mb=20)
    reader = procfs.StatmReader(p.pid)
    os.kill(p.pid, signal.SIGKILL)  # not reaped yet: a zombie

    def state() -> bytes:
        with open(f"/proc/{p.pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0]

    wait_until(lambda: state() == b"Z", what="the zombie state")
    assert reader.rss_pages() == 0
    p.wait(timeout=10)
    assert reader.rss_pages() == -1
    reader.close()


def test_statm_reader_of_a_missing_pid_raises():
    p = subprocess.Popen(["/bin/true"])
    p.wait(timeout=10)
    with pytest.raises(ProcessLookupError):
        procfs.StatmReader(p.pid)


def test_closed_reader_reads_minus_one():
    reader = procfs.StatmReader(os.getpid())
    assert reader.rss_pages() > 0
    reader.close()
    assert reader.rss_pages() == -1


def test_process_table_tracks_births_deaths_and_parents(spawn_tree):
    table = procfs.ProcessTable()
    try:
        first = table.scan()
        assert first[os.getpid()] == (os.getppid(), procfs.start_time(os.getpid()))
        p = spawn_tree()
        second = table.scan()
        assert second[p.pid] == (os.getpid(), procfs.start_time(p.pid))
        again = table.scan()  # from kept-open descriptors this time
        assert again[p.pid] == second[p.pid]
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        assert p.pid not in table.scan()
    finally:
        table.close()


def test_process_table_generation_moves_only_with_changes(spawn_tree):
    table = procfs.ProcessTable(verify_every=1000)
    try:
        table.scan()
        p = spawn_tree(kids=1)  # a child and a grandchild appear
        scanned = table.scan()
        assert scanned[p.pid][0] == os.getpid()
        kid = next(pid for pid, (ppid, _) in scanned.items() if ppid == p.pid)
        generation = table.generation
        os.kill(kid, signal.SIGKILL)  # its parent reaps it
        wait_until(lambda: kid not in table.scan(), what="the grandchild gone from the table")
        assert table.generation > generation
        # A verifying scan re-reads everything and agrees with the incremental one.
        assert procfs.ProcessTable(verify_every=1).scan().get(p.pid) == table.scan()[p.pid]
    finally:
        table.close()

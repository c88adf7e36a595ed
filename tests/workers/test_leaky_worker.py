"""scripts/leaky_worker.py does what its options say, seen from /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workers.conftest import ROOT, Spawner, wait_until
from workers.protocol import Pressure

LEAKY = [sys.executable, str(ROOT / "scripts" / "leaky_worker.py")]
PAGE = os.sysconf("SC_PAGE_SIZE")
MB = 1_000_000

pytestmark = pytest.mark.timeout(90)


def rss(pid: int) -> int:
    """RSS of `pid` in bytes; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except (FileNotFoundError, ProcessLookupError):
        return 0


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


def test_grows_at_the_rate_then_holds_at_max(spawn: Spawner) -> None:
    proc, _ = spawn([*LEAKY, "--rate", "200MB/s", "--max", "80"], channel=False,
                    stderr=subprocess.DEVNULL)
    wait_until(lambda: rss(proc.pid) > 80 * MB, what="RSS above 80 MB")
    # Holding: it never goes far beyond the cap (interpreter overhead aside).
    for _ in range(20):
        assert rss(proc.pid) < 110 * MB
    assert proc.poll() is None


def test_exit_after_exits_with_the_code(spawn: Spawner) -> None:
    proc, _ = spawn([*LEAKY, "--exit-after", "0.2", "7"], channel=False,
                    stderr=subprocess.DEVNULL)
    assert proc.wait(timeout=30) == 7


def test_oscillates_between_low_and_high(spawn: Spawner) -> None:
    proc, _ = spawn([*LEAKY, "--oscillate", "10:70:0.6"], channel=False,
                    stderr=subprocess.DEVNULL)
    wait_until(lambda: rss(proc.pid) > 70 * MB, what="the high half")
    wait_until(lambda: 0 < rss(proc.pid) < 40 * MB, what="the low half")


def test_spike_comes_and_goes(spawn: Spawner) -> None:
    proc, _ = spawn([*LEAKY, "--spike", "80", "--spike-at", "0.1", "--spike-hold", "0.5"],
                    channel=False, stderr=subprocess.DEVNULL)
    wait_until(lambda: rss(proc.pid) > 80 * MB, what="the spike")
    wait_until(lambda: 0 < rss(proc.pid) < 40 * MB, what="the spike freed")


def test_children_allocate_and_die_with_the_worker(spawn: Spawner) -> None:
    proc, _ = spawn([*LEAKY, "--children", "2", "--child-mb", "30"], channel=False,
                    stderr=subprocess.DEVNULL)
    kids = wait_until(lambda: len(children(proc.pid)) == 2 and children(proc.pid),
                      what="two grandchildren")
    wait_until(lambda: all(rss(k) > 30 * MB for k in kids), what="grandchildren's memory")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    wait_until(lambda: all(rss(k) == 0 for k in kids), what="grandchildren gone")


def test_ignore_term_keeps_running(spawn: Spawner) -> None:
    proc, _ = spawn([*LEAKY, "--ignore-term"], channel=False, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    assert b"started" in proc.stderr.readline()
    proc.stderr.readline()  # the first status line: the handler is in place by now
    os.kill(proc.pid, signal.SIGTERM)
    assert b"t=" in proc.stderr.readline()  # a later status line: still running
    assert proc.poll() is None


def test_write_file_creates_page_cache(spawn: Spawner, tmp_path: Path) -> None:
    target = tmp_path / "cache.bin"
    proc, _ = spawn([*LEAKY, "--write-file", f"{target}:20", "--exit-after", "0", "0"],
                    channel=False, stderr=subprocess.DEVNULL)
    assert proc.wait(timeout=60) == 0
    assert target.stat().st_size == 20 * MB


def test_channel_pressure_frees_memory_and_reports(spawn: Spawner) -> None:
    proc, sup = spawn([*LEAKY, "--channel", "--start", "100"], stderr=subprocess.DEVNULL)
    assert sup is not None
    assert sup.expect("ready")["pid"] == proc.pid
    sup.send(Pressure(level="critical", rss=rss(proc.pid)))
    trimmed = sup.expect("trimmed")
    assert trimmed["dropped"] >= 40  # half of 100 chunks of 1 MB
    assert trimmed["rss_before"] - trimmed["rss_after"] > 40 * MB
    wait_until(lambda: rss(proc.pid) < 80 * MB, what="RSS down after the trim")


def test_bad_options_are_refused_clearly() -> None:
    out = subprocess.run([*LEAKY, "--rate", "fast"], capture_output=True, timeout=30)
    assert out.returncode == 2 and b"expected a size" in out.stderr

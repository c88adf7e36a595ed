"""Growth judged by the headroom it eats, with real programs: a slow start-up, a busy host, a
leak from a plateau, a leak from the start, a browser opening tabs and a burst of requests.
Only growth that would reach CRITICAL before a replacement could be ready replaces; the
size thresholds still catch the rest."""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from tests.conftest import wait_until
from tests.supervisor.browser import DRIVER
from tests.supervisor.test_replacement import events, grower, records

#: Real programs for tens of seconds each: the full suite only.
pytestmark = pytest.mark.slow

MB = 1_000_000

# Loads argv[1] MB in 10 MB steps over argv[2] s, then holds it flat; from argv[3] s on (0:
# never) generation 1 leaks argv[4] MB/s; exits 0 at argv[5] s.
LOADER = r"""
import os, sys, time
load, over, leak_at, rate, end = (float(a) for a in sys.argv[1:6])
if os.environ["MEMWARDEN_GENERATION"] != "1":
    leak_at = 0
t0 = time.monotonic()
held, steps = [], int(load // 10)
while time.monotonic() - t0 < end:
    age = time.monotonic() - t0
    want = min(int(age / over * steps) + 1, steps)
    if leak_at and age >= leak_at:
        want = steps + int((age - leak_at) * rate / 10)
    while len(held) < want:
        held.append(b"\x01" * (10 * 1000 * 1000))
    time.sleep(0.05)
"""


def run_args(snaps: pathlib.Path, *extra: str) -> list[str]:
    return ["run", "--snapshots", str(snaps), "--sample-period", "0.5s", *extra]


def burners(n: int) -> list[subprocess.Popen[bytes]]:
    """`n` CPU-bound processes: a busy host."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


@pytest.mark.timeout(150)
@pytest.mark.parametrize("busy", [0, 2])
def test_a_slow_start_up_is_not_replaced(memwarden, tmp_path, busy) -> None:
    # 600 MB over 20 s at 26-30 MB/s, then flat: CRITICAL 4 GB is minutes away.
    snaps = tmp_path / "s"
    hogs = burners(busy)
    try:
        m = memwarden(*run_args(snaps, "--medium", "2GB", "--high", "3GB", "--critical", "4GB"),
                      "--", sys.executable, "-c", LOADER, "600", "20", "0", "0", "35")
        assert m.wait(120) == 0, m.stderr()
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert not events(snaps, "spawn"), events(snaps, "spawn")
    levels = events(snaps, "level", worker="worker")
    assert all(e["level"] in ("low", "medium") for e in levels), levels
    # Its start-up ended when it levelled off; the snapshots carry the envelope it drew.
    ends = [r["startup"] for r in records(snaps, "sample") if "ended" in r.get("startup", {})]
    assert ends and ends[0]["ended"] == "it levelled off", ends[:1]
    assert ends[0]["curve"][-1][1] >= 550 * MB, ends[0]["curve"]


@pytest.mark.timeout(150)
def test_a_leak_from_the_plateau_is_replaced_before_critical(memwarden, tmp_path) -> None:
    # The same start-up, then 30 MB/s from the plateau at 25 s: HIGH 1 GB after ~13 s more,
    # CRITICAL 1.5 GB after ~30 s.
    snaps = tmp_path / "s"
    m = memwarden(*run_args(snaps, "--medium", "800MB", "--high", "1GB", "--critical", "1.5GB"),
                  "--", sys.executable, "-c", LOADER, "600", "20", "25", "30", "90")
    try:
        wait_until(lambda: events(snaps, "spawn"), timeout=100, what="a replacement")
    finally:
        m.signal(signal.SIGTERM)
        m.wait(30)
    first = [e for e in events(snaps, "level", worker="worker") if e["generation"] == 1]
    assert first and all(e["level"] != "critical" for e in first), first


@pytest.mark.timeout(150)
def test_a_leak_from_the_start_is_replaced(memwarden, tmp_path) -> None:
    snaps, log = tmp_path / "s", tmp_path / "gens"
    m = memwarden(*run_args(snaps, "--high", "200MB", "--critical", "500MB"),
                  "--", *grower(log, 100_000, 1, 5))
    try:
        spawned = wait_until(lambda: events(snaps, "spawn"), timeout=100, what="a replacement")
    finally:
        m.signal(signal.SIGTERM)
        m.wait(30)
    assert spawned[0]["generation"] == 2


# A gunicorn app whose every request allocates 1 MB and lets it go.
APP = """
def app(environ, start_response):
    block = bytearray(1_000_000)
    block[::4096] = b"\\x01" * len(block[::4096])
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%d" % len(block)]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(150)
def test_a_burst_of_requests_is_not_a_leak(memwarden, tmp_path) -> None:
    gunicorn = shutil.which("gunicorn", path=os.path.dirname(sys.executable))
    if gunicorn is None:
        pytest.skip("gunicorn is not installed (it comes with the dev extras)")
    (tmp_path / "burstapp.py").write_text(APP)
    snaps, port = tmp_path / "s", free_port()
    m = memwarden(*run_args(snaps, "--high", "700MB", "--critical", "1.5GB"), "--",
                  gunicorn, "--preload", "-w", "8", "-b", f"127.0.0.1:{port}",
                  "--chdir", str(tmp_path), "burstapp:app")
    url = f"http://127.0.0.1:{port}/"

    def answers() -> bool:
        try:
            return urllib.request.urlopen(url, timeout=5).status == 200
        except OSError:
            return False

    done = threading.Event()
    served = [0]

    def client() -> None:
        while not done.is_set():
            try:
                urllib.request.urlopen(url, timeout=5).read()
                served[0] += 1
            except OSError:
                pass

    try:
        wait_until(lambda: answers() or m.proc.poll() is not None, timeout=60,
                   what="gunicorn to answer")
        assert m.proc.poll() is None, m.stderr()[-3000:]
        clients = [threading.Thread(target=client) for _ in range(16)]
        for c in clients:
            c.start()
        wait_until(lambda: served[0] >= 2000, timeout=60, what="a burst of 2000 requests")
        done.set()
        for c in clients:
            c.join(10)
        # Three growth windows after the burst: the moment it was replaced before.
        seen = len(events(snaps, "level"))
        end = time.monotonic() + 15
        wait_until(lambda: time.monotonic() > end, timeout=30, what="15 s after the burst")
        assert not events(snaps, "spawn"), (events(snaps, "spawn"), seen)
    finally:
        done.set()
        m.signal(signal.SIGTERM)
        m.wait(30)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
@pytest.mark.timeout(240)
def test_a_browser_opening_tabs_is_replaced_only_past_high(memwarden, tmp_path) -> None:
    if (os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) < 4 * 10**9:
        pytest.skip("under 4 GB of memory free: the browser cannot be given 800 MB and more")
    snaps, profile = tmp_path / "s", tmp_path / "profile"
    m = memwarden(*run_args(snaps, "--high", "800MB", "--critical", "2GB", "--measure", "pss"),
                  "--", sys.executable, "-c", DRIVER, str(profile), "60", "6000000", "2")
    try:
        spawned = wait_until(lambda: events(snaps, "spawn"), timeout=200,
                             what="a replacement once the browser passed 800 MB")
    finally:
        m.signal(signal.SIGTERM)
        m.wait(60)
        left = subprocess.run(["pgrep", "-f", f"user-data-dir={profile}-"],
                              capture_output=True, text=True).stdout.split()
        for pid in left:  # this test's browsers only: their profile is its own directory
            os.kill(int(pid), signal.SIGKILL)
    first = [e for e in events(snaps, "level", worker="worker") if e["generation"] == 1]
    rises = [e for e in first if e["level"] in ("high", "critical")]
    # The first rise to HIGH, the one that replaced it, is its size crossing 800 MB.
    assert rises and rises[0]["metric"] == "memory" and rises[0]["value"] >= 800 * MB, rises
    assert spawned[0]["generation"] == 2

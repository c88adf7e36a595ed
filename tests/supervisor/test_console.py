"""`memwarden status` and `top` as people and probes see them."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios

from supervisor.faces import console, control
from tests.conftest import ROOT, wait_until


def _worker(members: int) -> control.WorkerStatus:
    return control.WorkerStatus(
        name="browser", generation=2, pid=10, state="ready", profile="normal", uptime_s=3.0,
        rss=700_000_000, memory=650_000_000, procs=members,
        members=[control.Member(pid=10 + i, name=f"chrome{i}", cmdline=f"chrome --type={i}",
                                rss=(i + 1) * 10_000_000, pss=(i + 1) * 9_000_000,
                                share=(i + 1) / 28) for i in range(members)])


def test_the_table_lists_the_biggest_processes_first() -> None:
    reply = control.Reply(ok=True, workers=[_worker(7)], measure="pss", live=True, ready=False,
                          health="worker 'x' has no ready generation (none running)")
    lines = console.render(reply)
    assert "memory by pss" in lines[0]
    row = lines[2]
    assert row.split()[:5] == ["browser", "2", "10", "ready", "normal"]
    assert "650.0 MB" in row and "700.0 MB" in row
    members = lines[3:8]
    assert [int(line.split()[0]) for line in members] == [16, 15, 14, 13, 12]
    assert "chrome --type=6" in members[0] and "pss 63.0 MB" in members[0]
    assert " 25%" in members[0]
    assert lines[8].strip() == "... and 2 more processes (memwarden status --json lists them all)"
    assert lines[-1] == "worker 'x' has no ready generation (none running)"


def test_rows_drop_columns_by_rank_to_fit_a_terminal() -> None:
    reply = control.Reply(ok=True, workers=[_worker(2)], measure="pss", live=True, ready=True)
    every = console.render(reply)[1].split()
    assert every == [name for name, *_ in console.COLUMNS]  # no width: every column
    for width, shown in [
            (200, every),
            (80, ["worker", "gen", "pid", "state", "memory", "level", "growth", "uptime"]),
            (60, ["worker", "gen", "memory", "level", "growth", "uptime"]),
            (10, ["worker"])]:
        header, row = console.render(reply, width=width)[1:3]
        assert header.split() == shown, width
        # Every cell of the row under its header (sizes hold a space: "650.0 MB").
        assert len(row) == len(header) <= max(width, len("browser")), (row, header)
    # A name longer than the widest column is cut, never pushes the others out.
    long = control.Reply(ok=True, workers=[_worker(0)], measure="pss", live=True, ready=True)
    long.workers[0].name = "a-worker-with-a-very-long-name"
    row = console.render(long, width=80)[2]
    assert row.startswith("a-worker-with-a- ") and len(row) <= 80


def test_check_exit_statuses() -> None:
    ok = control.Reply(ok=True, live=True, ready=True, started={"a": 1}, ticks=5)
    assert console.check(ok) == (0, "ready: 1 worker(s) with a ready generation, the "
                                    "sampler ticks")
    starting = control.Reply(ok=True, live=True, ready=False, health="worker 'a' ...")
    assert console.check(starting)[0] == console.EXIT_NOT_READY == 3
    assert console.check(starting, "live")[0] == 0
    stuck = control.Reply(ok=True, live=False, ready=True, health="the sampler has not ticked")
    assert console.check(stuck) == (4, "not live: the sampler has not ticked")
    assert console.check(stuck, "live")[0] == console.EXIT_NOT_LIVE
    assert console.check(control.Reply(ok=True))[0] == console.EXIT_NO_ANSWER  # an old one


def test_the_check_imports_only_the_client_side() -> None:
    # The probe runs inside the cgroup it watches: no psutil, no anyio, no prometheus-client,
    # no analysis code (`scripts/bench_probe.py` measures its time and memory).
    code = ("import sys; from supervisor import cli; cli.main(['status', '--check', "
            "'--control', '/nonexistent/x.sock']); print(' '.join(sorted(m for m in "
            "sys.modules if m.split('.')[0] in ('psutil', 'anyio', 'prometheus_client', "
            "'numpy') or m.startswith(('snapshots.analysis', 'supervisor.sensing.sampler')))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=30, cwd=ROOT)
    assert r.stdout.strip() == "", r.stdout


def test_top_prints_blocks_without_escape_codes_when_not_a_terminal(memwarden,
                                                                    tmp_path) -> None:
    sock = tmp_path / "ctl.sock"
    m = memwarden("run", "--control", str(sock), "--snapshots", "", "--", "sleep", "600")
    wait_until(sock.exists, what="the control socket")
    r = subprocess.run([sys.executable, "-m", "supervisor", "top", "--count", "2",
                        "--interval", "100ms", "--control", str(sock)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout
    blocks = r.stdout.strip().split("\n\n")
    assert len(blocks) == 2 and all(b.startswith("memwarden top  ") for b in blocks)
    assert "every 0.1s" in blocks[0] and "worker" in blocks[1]
    for bad in ("0.05s", "2h", "fast"):
        r = subprocess.run([sys.executable, "-m", "supervisor", "top", "--interval", bad,
                            "--control", str(sock)], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 2 and "expected a duration such as" in r.stderr, r.stderr
    m.signal(signal.SIGTERM)
    assert m.wait() == 128 + signal.SIGTERM  # the worker died of the TERM passed on


def test_top_draws_on_the_alternate_screen_of_a_terminal(memwarden, tmp_path) -> None:
    sock = tmp_path / "ctl.sock"
    m = memwarden("run", "--control", str(sock), "--snapshots", "", "--", "sleep", "600")
    wait_until(sock.exists, what="the control socket")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # 80 columns
    proc = subprocess.Popen([sys.executable, "-m", "supervisor", "top", "--count", "3",
                             "--interval", "0.1", "--control", str(sock)],
                            stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 20)
            assert ready, "top wrote nothing for 20 s"
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            out += chunk
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
    text = out.decode()
    assert text.startswith("\x1b[?1049h\x1b[?25l")  # entered, the cursor hidden
    assert text.endswith("\x1b[?25h\x1b[?1049l")  # and left, the cursor back
    assert "\x1b[2J" not in text  # redrawn in place, never blanked first
    assert text.count("\x1b[H") == 3 and text.count("memwarden top") == 3
    # The last frame's lines (the terminal turns each \n into \r\n).
    frame = re.split(r"\x1b\[K\r*\n", text.split("\x1b[H")[-1].split("\x1b[J")[0])
    assert all(len(line) <= 80 for line in frame), frame
    header, row = frame[2].split(), frame[3].split()
    # The columns that say whether a worker is in trouble are all there, on every row.
    assert header[-3:] == ["level", "growth", "uptime"], frame
    assert len(frame[3]) == len(frame[2]) and row[-1].endswith("s"), frame  # the uptime
    m.signal(signal.SIGTERM)
    assert m.wait() == 128 + signal.SIGTERM  # the worker died of the TERM passed on

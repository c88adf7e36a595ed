"""memwarden as PID 1 of a PID namespace: orphans are reaped, signals still work."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, descendants, kill_tree, needs_root, wait_until

pytestmark = [
    needs_root(),
    pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)"),
]

ORPHANS = """
import os, subprocess, sys, time
# Each intermediate exits at once, so its child is re-parented to PID 1: memwarden.
for i in range(20):
    subprocess.Popen(["sh", "-c", "(sleep 0.2; touch %s/orphan-$$) &" % sys.argv[1]]).wait()
open(sys.argv[1] + "/spawned", "w").close()
time.sleep(600)
"""


def _zombies_under(pid: int) -> list[int]:
    out = []
    for child in descendants(pid):
        try:
            with open(f"/proc/{child}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    out.append(child)
        except OSError:
            pass
    return out


def _start(tmp_path, *worker: str) -> subprocess.Popen[bytes]:
    with open(tmp_path / "err", "wb") as err:
        return subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-m", "supervisor",
             "run", "--snapshots", "", "--ready-after", "0.1s", "--", *worker],
            cwd=ROOT, stderr=err, stdout=err)


def _memwarden_pid(unshare: int) -> int:
    """The host pid of memwarden: unshare's child, PID 1 inside the namespace."""
    def find() -> int | None:
        kids = [p for p in descendants(unshare) if _ppid(p) == unshare]
        return kids[0] if kids else None
    return wait_until(find, what="memwarden inside the namespace")


def _ppid(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1


def test_orphans_are_reaped_as_pid1(tmp_path) -> None:
    proc = _start(tmp_path, sys.executable, "-c", ORPHANS, str(tmp_path))
    try:
        inner = _memwarden_pid(proc.pid)
        with open(f"/proc/{inner}/status") as f:
            nspid = next(line for line in f if line.startswith("NSpid:"))
        assert nspid.split()[-1] == "1"  # PID 1 inside its namespace
        wait_until(lambda: (tmp_path / "spawned").exists(), what="orphans spawned")
        wait_until(lambda: len(list(tmp_path.glob("orphan-*"))) == 20, what="orphans to finish")
        # Every orphan has exited; the reaper must have collected each of them.
        wait_until(lambda: not _zombies_under(inner), timeout=10, what="no zombies")
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # and they stay collected
            assert not _zombies_under(inner)
            time.sleep(0.05)
        os.kill(inner, signal.SIGTERM)
        assert proc.wait(30) == 128 + signal.SIGTERM  # the worker died of the TERM passed on
    finally:
        kill_tree(proc)


def test_exit_status_passes_through_as_pid1(tmp_path) -> None:
    proc = _start(tmp_path, sys.executable, "-c", "raise SystemExit(42)")
    try:
        assert proc.wait(30) == 42
    finally:
        kill_tree(proc)

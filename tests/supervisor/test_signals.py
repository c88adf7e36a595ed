"""Signals as tini and dumb-init handle them: forwarded, survived in a storm, as a child and as
PID 1 of a PID namespace."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys

import pytest

from supervisor.arbiter import FORWARDED, NOT_FORWARDED
from tests.conftest import ROOT, alive, kill_tree, needs_root, wait_until
from tests.supervisor.test_pid1 import _memwarden_pid

pytestmark = pytest.mark.timeout(120)

# Records every signal it gets (one line each) in argv[1]; says ready once its handlers are in.
RECORDER = r"""
import os, signal, sys, time
out = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
def got(signum, frame):
    os.write(out, b"%d\n" % signum)
for s in range(1, 32):
    if s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD, signal.SIGTERM):
        signal.signal(s, got)
open(sys.argv[1] + ".ready", "w").close()
while True:
    time.sleep(1)
"""

#: What a storm is made of: forwarded, job-control, ignored and CHLD; never TERM or INT,
#: which mean "stop".
STORM = [s for s in range(1, 32) if s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGTERM,
                                               signal.SIGINT, signal.SIGSEGV, signal.SIGBUS,
                                               signal.SIGILL, signal.SIGFPE, signal.SIGTRAP,
                                               signal.SIGSYS)]
#: As PID 1 the faults are in the storm too: the kernel does not deliver them from outside.
STORM_PID1 = [s for s in range(1, 32) if s not in (signal.SIGKILL, signal.SIGSTOP,
                                                    signal.SIGTERM, signal.SIGINT)]


def received(log) -> list[int]:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def start(tmp_path, *, pid1: bool) -> tuple[subprocess.Popen[bytes], int]:
    """memwarden running RECORDER, as a child or as PID 1 of a new PID namespace; returns
    the process started and memwarden's pid (as seen from here)."""
    log = tmp_path / "signals"
    prefix = ["unshare", "--pid", "--fork", "--mount-proc"] if pid1 else []
    with open(tmp_path / "memwarden.err", "wb") as err:
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "supervisor", "run", "--snapshots", "",
             "--control", "", "--", sys.executable, "-c", RECORDER, str(log)],
            cwd=ROOT, stdout=err, stderr=err)
    wait_until(lambda: (tmp_path / "signals.ready").exists(), what="the worker's handlers")
    if not pid1:
        return proc, proc.pid
    return proc, _memwarden_pid(proc.pid)


def stop(proc: subprocess.Popen[bytes], memwarden: int) -> int:
    os.kill(memwarden, signal.SIGTERM)
    try:
        return proc.wait(30)
    finally:
        kill_tree(proc)


def test_the_signal_sets_match_tini() -> None:
    caught = set(range(1, 32)) - {signal.SIGKILL, signal.SIGSTOP}
    assert set(FORWARDED) | NOT_FORWARDED == caught | {signal.SIGKILL, signal.SIGSTOP}
    assert {signal.SIGALRM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH,
            signal.SIGQUIT, signal.SIGCONT, signal.SIGPWR, signal.SIGURG} <= set(FORWARDED)
    assert not {signal.SIGCHLD, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU,
                signal.SIGTERM, signal.SIGINT} & set(FORWARDED)


def _forwards_every_signal(tmp_path, *, pid1: bool) -> None:
    proc, memwarden = start(tmp_path, pid1=pid1)
    log = tmp_path / "signals"
    try:
        for sig in FORWARDED:
            os.kill(memwarden, sig)
            wait_until(lambda sig=sig: sig in received(log),
                       what=f"{signal.Signals(sig).name} forwarded to the worker")
        assert alive(memwarden)
    finally:
        status = stop(proc, memwarden)
    assert status == 0  # stopped as asked


def _survives_a_storm(tmp_path, *, pid1: bool) -> None:
    proc, memwarden = start(tmp_path, pid1=pid1)
    log = tmp_path / "signals"
    kinds = STORM_PID1 if pid1 else STORM
    rng = random.Random(7)
    storm = [*kinds, *(rng.choice(kinds) for _ in range(300 - len(kinds)))]  # each kind once
    rng.shuffle(storm)
    try:
        for sig in storm:
            os.kill(memwarden, sig)
        # The kernel discards a pending CONT when a stop signal (TSTP, TTIN, TTOU) is sent
        # after it, before memwarden took it: CONT may never reach memwarden in a storm.
        sent = {s for s in storm if s in FORWARDED} - {signal.SIGCONT}
        wait_until(lambda: sent <= set(received(log)),
                   what="every kind of forwarded signal of the storm at the worker")
        assert alive(memwarden) and proc.poll() is None
    finally:
        status = stop(proc, memwarden)
    assert status == 0  # it ran to the end, then stopped as asked


def test_every_catchable_signal_is_forwarded_as_a_child(tmp_path) -> None:
    _forwards_every_signal(tmp_path, pid1=False)


def test_a_storm_of_300_signals_is_survived_as_a_child(tmp_path) -> None:
    _survives_a_storm(tmp_path, pid1=False)


needs_unshare = [needs_root(), pytest.mark.skipif(shutil.which("unshare") is None,
                                                  reason="needs unshare(1)")]


@pytest.mark.root
@needs_unshare[0]
@needs_unshare[1]
def test_every_catchable_signal_is_forwarded_as_pid1(tmp_path) -> None:
    _forwards_every_signal(tmp_path, pid1=True)


@pytest.mark.root
@needs_unshare[0]
@needs_unshare[1]
def test_a_storm_of_300_signals_is_survived_as_pid1(tmp_path) -> None:
    _survives_a_storm(tmp_path, pid1=True)

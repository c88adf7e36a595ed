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

from supervisor.linux import sigwait
from supervisor.loop.arbiter import FORWARDED, HANDLED, NOT_FORWARDED
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

#: What a storm is made of: forwarded, job-control and CHLD; never TERM or INT, which mean
#: "stop".
STORM = [s for s in range(1, 32) if s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGTERM,
                                               signal.SIGINT)]


def received(log) -> list[int]:
    return [int(line) for line in log.read_text().split()] if log.exists() else []


def start(tmp_path, *, pid1: bool, worker: str = RECORDER,
          options: tuple[str, ...] = ()) -> tuple[subprocess.Popen[bytes], int]:
    """memwarden running `worker` (RECORDER: it writes to tmp_path/"signals", and creates
    "signals.ready" once its handlers are in), as a child or as PID 1 of a new PID
    namespace; returns the process started and memwarden's pid (as seen from here)."""
    log = tmp_path / "signals"
    prefix = ["unshare", "--pid", "--fork", "--mount-proc"] if pid1 else []
    with open(tmp_path / "memwarden.err", "wb") as err:
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "supervisor", "run", "--snapshots", "",
             "--control", "", *options, "--", sys.executable, "-c", worker, str(log)],
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


def test_every_catchable_signal_but_stop_chld_and_job_control_is_forwarded() -> None:
    caught = set(range(1, 32)) - {signal.SIGKILL, signal.SIGSTOP}
    assert set(FORWARDED) | NOT_FORWARDED == caught | {signal.SIGKILL, signal.SIGSTOP}
    assert set(FORWARDED) == caught - {signal.SIGCHLD, signal.SIGTSTP, signal.SIGTTIN,
                                       signal.SIGTTOU, signal.SIGTERM, signal.SIGINT}
    # Those that also report memwarden's own writes and faults go through sigwait.
    assert {signal.SIGPIPE, signal.SIGXFSZ, signal.SIGSEGV, signal.SIGBUS} <= sigwait.WAITED
    assert not set(HANDLED) & sigwait.WAITED and set(HANDLED) | sigwait.WAITED == set(FORWARDED)


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
    assert status == 128 + signal.SIGTERM  # the worker died of the TERM passed on, as tini's


def _survives_a_storm(tmp_path, *, pid1: bool) -> None:
    proc, memwarden = start(tmp_path, pid1=pid1)
    log = tmp_path / "signals"
    kinds = STORM
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
    assert status == 128 + signal.SIGTERM  # it ran to the end, then died of the TERM passed on


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


def test_a_broken_pipe_of_memwarden_itself_is_not_forwarded(tmp_path) -> None:
    """memwarden's log goes to a pipe nobody reads any more: its writes fail with EPIPE
    and raise PIPE on its own thread, which the worker must not get; one sent by kill(1)
    still reaches it."""
    log = tmp_path / "signals"
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "run", "--snapshots", "", "--control", "",
         "--log-level", "debug", "--ready-after", "0.1s", "--",
         sys.executable, "-c", RECORDER, str(log)],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    proc.stderr.close()  # every log line from now on is a write into a broken pipe
    try:
        wait_until(lambda: (tmp_path / "signals.ready").exists(), what="the worker's handlers")
        for _ in range(20):  # each forwarded signal is logged: more broken writes
            os.kill(proc.pid, signal.SIGALRM)
        wait_until(lambda: signal.SIGALRM in received(log), what="ALRM forwarded")
        os.kill(proc.pid, signal.SIGUSR1)  # once USR1 is there, every ALRM before it was handled
        wait_until(lambda: signal.SIGUSR1 in received(log), what="USR1 forwarded")
        assert signal.SIGPIPE not in received(log)
        os.kill(proc.pid, signal.SIGPIPE)
        wait_until(lambda: signal.SIGPIPE in received(log), what="a PIPE sent by kill forwarded")
        assert proc.poll() is None
    finally:
        status = stop(proc, proc.pid)
    assert status == 128 + signal.SIGTERM


# Leaves TERM and INT at their default dispositions: the forwarded signal kills it.
DEFAULT = r"""
import signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_DFL)  # Python's own handler would raise instead
open(sys.argv[1] + ".ready", "w").close()
time.sleep(600)
"""

# Catches TERM to finish its work, writing a line for each TERM it gets and ignoring
# every repeat; exits 0 once the test creates argv[1] + ".finish" (its work done).
FINISHER = r"""
import os, signal, sys, time
out = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
signal.signal(signal.SIGTERM, lambda *_: os.write(out, b"TERM\n"))
open(sys.argv[1] + ".ready", "w").close()
while not os.path.exists(sys.argv[1] + ".finish"):
    time.sleep(0.02)
"""

AS_CHILD_AND_PID1 = pytest.mark.parametrize("pid1", [
    False, pytest.param(True, marks=[pytest.mark.root, *needs_unshare], id="pid1")])


@AS_CHILD_AND_PID1
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_worker_killed_by_the_forwarded_signal_makes_memwarden_exit_128_plus_n(
        tmp_path, pid1: bool, sig: int) -> None:
    # As tini and dumb-init: an evicted Job's pod, a CI step killed by its timeout, must
    # not read as a success.
    proc, memwarden = start(tmp_path, pid1=pid1, worker=DEFAULT)
    try:
        os.kill(memwarden, sig)
        assert proc.wait(30) == 128 + sig
    finally:
        kill_tree(proc)
    err = (tmp_path / "memwarden.err").read_text()
    assert f"exiting with status {128 + sig}" in err, err


def _terms(tmp_path) -> int:
    log = tmp_path / "signals"
    return log.read_text().count("TERM") if log.exists() else 0


def _term_twice(tmp_path, *, pid1: bool, grace: str) -> subprocess.Popen[bytes]:
    """memwarden running FINISHER with `grace`, sent TERM, and TERM again once the worker
    has the first; the caller kills what is left of it."""
    proc, memwarden = start(tmp_path, pid1=pid1, worker=FINISHER, options=("--grace", grace))
    try:
        os.kill(memwarden, signal.SIGTERM)
        wait_until(lambda: _terms(tmp_path) == 1, what="the first TERM at the worker")
        os.kill(memwarden, signal.SIGTERM)
    except BaseException:
        kill_tree(proc)
        raise
    return proc


@AS_CHILD_AND_PID1
def test_a_repeated_term_is_forwarded_and_a_worker_that_ignores_it_finishes(
        tmp_path, pid1: bool) -> None:
    proc = _term_twice(tmp_path, pid1=pid1, grace="10min")
    try:
        wait_until(lambda: _terms(tmp_path) == 2, what="the repeated TERM at the worker")
        assert proc.poll() is None  # both survived: only the grace escalates
        (tmp_path / "signals.finish").touch()
        assert proc.wait(30) == 0  # it caught TERM and finished: a clean stop
    finally:
        kill_tree(proc)
    err = (tmp_path / "memwarden.err").read_text()
    assert "SIGKILL to" not in err, err  # nobody was killed


@AS_CHILD_AND_PID1
def test_a_worker_ignoring_repeated_terms_is_killed_only_once_the_grace_has_run_out(
        tmp_path, pid1: bool) -> None:
    proc = _term_twice(tmp_path, pid1=pid1, grace="2s")
    try:
        assert proc.wait(30) == 128 + signal.SIGKILL
    finally:
        kill_tree(proc)
    err = (tmp_path / "memwarden.err").read_text()
    assert "still running 2s after SIGTERM: SIGKILL to 1 process" in err, err

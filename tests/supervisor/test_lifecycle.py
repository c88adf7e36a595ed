"""The supervising core with real processes and real signals: exit statuses, forwarding,
graceful stop, escalation, restarts, start failures, pass-through of stdio and environment."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from tests.conftest import alive, kill_tree, python, wait_until

FAST = ["--ready-after", "0.1s", "--grace", "5s"]


@pytest.mark.parametrize("code", [0, 1, 42])
def test_exit_status_is_the_workers(memwarden, code: int) -> None:
    m = memwarden("run", *FAST, "--", *python(f"raise SystemExit({code})"))
    assert m.wait() == code
    assert f"exited with status {code}" in m.stderr()


def test_signal_death_is_128_plus_n(memwarden) -> None:
    m = memwarden("run", *FAST, "--", *python(
        "import os, signal; os.kill(os.getpid(), signal.SIGUSR1)"))
    assert m.wait() == 128 + signal.SIGUSR1
    assert "killed by SIGUSR1" in m.stderr()


WAITER = """
import os, signal, sys, time
out = open(sys.argv[1], "a", buffering=1)
def note(signum, frame):
    out.write(signal.Signals(signum).name + "\\n")
    if signum in (signal.SIGTERM, signal.SIGINT):
        sys.exit(0)
for s in (signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH,
          signal.SIGTERM, signal.SIGINT):
    signal.signal(s, note)
out.write("up\\n")
while True:
    time.sleep(1)
"""


def test_signals_are_forwarded(memwarden, tmp_path) -> None:
    log = tmp_path / "got"
    m = memwarden("run", *FAST, "--", sys.executable, "-c", WAITER, str(log))
    wait_until(lambda: log.exists() and "up" in log.read_text(), what="worker start")
    for sig in (signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH):
        m.signal(sig)
        wait_until(lambda sig=sig: sig.name in log.read_text(), what=f"{sig.name} forwarded")
    m.signal(signal.SIGTERM)
    assert m.wait() == 0  # the worker handled TERM and exited 0
    assert "SIGTERM" in log.read_text()


def test_int_stops_gracefully(memwarden, tmp_path) -> None:
    log = tmp_path / "got"
    m = memwarden("run", *FAST, "--", sys.executable, "-c", WAITER, str(log))
    wait_until(lambda: log.exists() and "up" in log.read_text(), what="worker start")
    m.signal(signal.SIGINT)
    assert m.wait() == 0
    assert "SIGINT" in log.read_text()


def test_a_requested_stop_passes_the_workers_death_by_the_term_through(memwarden,
                                                                       tmp_path) -> None:
    # A worker at TERM's default dies of it: 143, as tini and dumb-init exit; a service
    # manager that finds 143 fine says so (the example unit's SuccessExitStatus=143).
    ready = tmp_path / "ready"
    m = memwarden("run", *FAST, "--", *python(
        f"import time; open({str(ready)!r}, 'w').close(); time.sleep(600)"))
    wait_until(ready.exists, what="worker start")
    m.signal(signal.SIGTERM)
    assert m.wait() == 128 + signal.SIGTERM
    assert "exiting with status 143: worker 'worker' ended with status 143 (received " \
        "SIGTERM)" in m.stderr()


def test_a_term_memwarden_did_not_send_passes_through(memwarden, tmp_path) -> None:
    pidfile = tmp_path / "pid"
    m = memwarden("run", *FAST, "--", *python(
        f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(600)"))
    worker = int(wait_until(lambda: pidfile.exists() and pidfile.read_text(), what="worker pid"))
    os.kill(worker, signal.SIGTERM)  # not a stop of memwarden: the worker died by itself
    assert m.wait() == 128 + signal.SIGTERM


def test_a_worker_failing_its_stop_keeps_its_status(memwarden, tmp_path) -> None:
    ready = tmp_path / "ready"
    m = memwarden("run", *FAST, "--", *python(
        "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(5)); "
        f"open({str(ready)!r}, 'w').close(); time.sleep(600)"))
    wait_until(ready.exists, what="worker start")
    m.signal(signal.SIGTERM)
    assert m.wait() == 5


def test_worker_ignoring_term_is_killed_after_grace(memwarden, tmp_path) -> None:
    ready = tmp_path / "ready"
    m = memwarden("run", "--grace", "0.5s", "--", *python(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"open({str(ready)!r}, 'w').close(); time.sleep(600)"))
    wait_until(ready.exists, what="worker start")
    m.signal(signal.SIGTERM)
    assert m.wait() == 128 + signal.SIGKILL
    err = m.stderr()
    assert "still running 500ms after SIGTERM: SIGKILL to 1 process" in err


def test_sigkill_of_memwarden_leaves_no_worker(memwarden, tmp_path) -> None:
    pidfile = tmp_path / "pid"
    m = memwarden("run", *FAST, "--", *python(
        f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(600)"))
    worker = int(wait_until(lambda: pidfile.exists() and pidfile.read_text(), what="worker pid"))
    assert alive(worker)
    m.signal(signal.SIGKILL)
    m.wait()
    wait_until(lambda: not alive(worker), what="worker to die with its supervisor")


GRANDPARENT = """
import os, subprocess, sys, time
# one grandchild in the worker's group, one that leaves it (its own session)
a = subprocess.Popen([sys.executable, "-c",
                      "import time; b = bytearray(60 << 20); time.sleep(600)"])
b = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
open(sys.argv[1], "w").write(f"{a.pid} {b.pid}")
time.sleep(600)
"""


def test_grandchildren_are_sampled_and_stopped(memwarden, tmp_path) -> None:
    pids = tmp_path / "pids"
    snaps = tmp_path / "snaps"
    m = memwarden("run", *FAST, "--snapshots", str(snaps), "--sample-period", "0.2s",
                  "--", sys.executable, "-c", GRANDPARENT, str(pids))
    a, b = map(int, wait_until(lambda: pids.exists() and pids.read_text(), what="pids").split())

    def sampled_tree() -> bool:
        for f in snaps.glob("*.jsonl"):
            for line in f.read_text().splitlines():
                if not line.endswith("}"):
                    continue
                r = json.loads(line)
                # procs is left out when it is 1 (the default; omit_defaults)
                if r.get("kind") == "sample" and r.get("procs", 1) >= 3 \
                        and r["rss_max"] >= 60 << 20:
                    return True
        return False

    wait_until(sampled_tree, timeout=30, what="a sample counting the grandchildren")
    m.signal(signal.SIGTERM)
    m.wait()
    assert not alive(a) and not alive(b)


def test_crash_loop_backs_off_then_gives_up(memwarden) -> None:
    m = memwarden("run", "--restart", "on-failure", "--restart-budget", "3",
                  "--backoff-initial", "0.05s", "--", *python("raise SystemExit(3)"))
    assert m.wait(60) == 3
    err = m.stderr()
    assert err.count("started ") == 4
    for delay in ("50ms", "100ms", "200ms"):
        assert f"restarting in {delay}" in err
    assert "giving up on worker 'worker'" in err and "restart budget spent" in err


def test_on_failure_does_not_restart_success(memwarden) -> None:
    m = memwarden("run", "--restart", "on-failure", "--", *python("pass"))
    assert m.wait() == 0
    assert m.stderr().count("started ") == 1


def test_always_restarts_success(memwarden, tmp_path) -> None:
    counter = tmp_path / "count"
    code = (f"import os; p = {str(counter)!r}; n = int(open(p).read()) + 1 if os.path.exists(p) "
            "else 1; open(p, 'w').write(str(n)); raise SystemExit(0 if n < 3 else 5)")
    m = memwarden("run", "--restart", "always", "--restart-budget", "2",
                  "--backoff-initial", "0.01s", "--", *python(code))
    assert m.wait() == 5
    assert counter.read_text() == "3"


def test_command_not_found_is_127(memwarden) -> None:
    m = memwarden("run", "--", "/nonexistent/program")
    assert m.wait() == 127
    assert "cannot start '/nonexistent/program'" in m.stderr()


def test_command_not_executable_is_126(memwarden, tmp_path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    m = memwarden("run", "--", str(script))
    assert m.wait() == 126
    assert "Permission denied" in m.stderr()


def test_stdio_passes_through_binary_safe(memwarden, tmp_path) -> None:
    data = os.urandom(3 << 20) + b"\x00\xff\n" * 1000
    src, dst = tmp_path / "in", tmp_path / "out"
    src.write_bytes(data)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        m = memwarden("run", "--", "cat", stdin=fin, stdout=fout)
        assert m.wait(60) == 0
    assert dst.read_bytes() == data


def test_argv_env_cwd_and_signal_state_reach_the_worker(memwarden, tmp_path) -> None:
    out = tmp_path / "seen.json"
    code = (
        "import json, os, sys\n"
        "status = dict(l.split(':', 1) for l in open('/proc/self/status'))\n"
        f"json.dump({{'argv': sys.argv[1:], 'cwd': os.getcwd(), 'env': os.environ.get('ODD'),"
        "'pgid_is_pid': os.getpgrp() == os.getpid(), 'fd': os.environ.get('MEMWARDEN_FD'),"
        "'gen': os.environ.get('MEMWARDEN_GENERATION'),"
        "'profile': os.environ.get('MEMWARDEN_PROFILE'),"
        "'adj': open('/proc/self/oom_score_adj').read().strip()}"
        f", open({str(out)!r}, 'w'))\n"
    )
    odd = "spaces and 'quotes' and $VARS and ünïcode"
    m = memwarden("run", "--", sys.executable, "-c", code, "a b", "", "--x=1", "*",
                  cwd=tmp_path, env={"ODD": odd})
    assert m.wait() == 0
    seen = json.loads(out.read_text())
    assert seen["argv"] == ["a b", "", "--x=1", "*"]
    assert seen["cwd"] == str(tmp_path)
    assert seen["env"] == odd
    assert seen["pgid_is_pid"] is True
    assert seen["fd"] is not None and seen["gen"] == "1" and seen["profile"] == "normal"
    assert seen["adj"] == "500"


def test_no_signal_is_blocked_or_ignored_in_the_worker(memwarden, tmp_path) -> None:
    # grep, not Python: the interpreter itself ignores SIGPIPE and SIGXFSZ at start-up. And
    # it reads its own status (exec), not the shell's: a waiting shell blocks signals itself.
    out = tmp_path / "sig"
    m = memwarden("run", "--", "sh", "-c",
                  f"exec grep -E '^Sig(Blk|Ign)' /proc/self/status > {out}")
    assert m.wait() == 0
    masks = dict(line.split(":") for line in out.read_text().splitlines())
    assert int(masks["SigBlk"], 16) == 0 and int(masks["SigIgn"], 16) == 0, masks


def test_stop_signals_neither_stop_nor_confuse_memwarden(memwarden, tmp_path) -> None:
    pidfile = tmp_path / "pid"
    m = memwarden("run", *FAST, "--", *python(
        f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(600)"))
    worker = int(wait_until(lambda: pidfile.exists() and pidfile.read_text(), what="worker pid"))
    for sig in (signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
        m.signal(sig)
    os.kill(worker, signal.SIGSTOP)
    wait_until(lambda: _state(worker) == "T", what="worker stopped")
    assert _state(m.pid) in ("S", "R")
    os.kill(worker, signal.SIGCONT)
    wait_until(lambda: _state(worker) in ("S", "R"), what="worker continued")
    assert "exited" not in m.stderr()
    m.signal(signal.SIGTERM)
    assert m.wait() == 128 + signal.SIGTERM  # the worker died of the TERM passed on


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


def test_terminal_foreground_and_ctrl_c(tmp_path) -> None:
    import pty
    import termios

    master, slave = pty.openpty()
    out = tmp_path / "fg"

    def controlling_tty() -> None:
        os.setsid()
        import fcntl
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

    code = (f"import os, time; open({str(out)!r}, 'w')"
            ".write(str(os.tcgetpgrp(0) == os.getpgrp())); time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-m", "supervisor", "run", "--snapshots", "",
                             "--", sys.executable, "-c", code],
                            stdin=slave, stdout=slave, stderr=slave, preexec_fn=controlling_tty)
    try:
        os.close(slave)
        assert wait_until(lambda: out.exists() and out.read_text(), what="worker") == "True"
        os.write(master, b"\x03")  # Ctrl-C: SIGINT to the foreground group, the worker's
        assert proc.wait(30) == 128 + signal.SIGINT
    finally:
        kill_tree(proc)
        os.close(master)


# Holds 60 MB without ever speaking its channel; notes every USR1 it gets in argv[1].
SILENT_HOLDER = r"""
import os, signal, sys, time
signal.signal(signal.SIGUSR1, lambda *_: open(sys.argv[1], "a").write("USR1\n"))
block = b"\x01" * 60_000_000
while True:
    time.sleep(1)
"""


@pytest.mark.timeout(90)
@pytest.mark.parametrize("medium_signal", [None, "USR1"])
@pytest.mark.slow
def test_a_worker_without_a_channel_is_never_said_to_be_told_via_it(
        memwarden, tmp_path, medium_signal: str | None) -> None:
    got, snaps = tmp_path / "got", tmp_path / "s"
    m = memwarden("run", *FAST, "--medium", "30MB", "--high", "2GB", "--critical", "3GB",
                  "--cooldown", "1s", "--snapshots", str(snaps), "--sample-period", "0.2s",
                  "--control", "", *(["--medium-signal", medium_signal] if medium_signal
                                     else []),
                  "--", sys.executable, "-c", SILENT_HOLDER, str(got))
    wait_until(lambda: "low -> medium" in m.stderr(), what="MEDIUM")

    def samples_since_medium() -> bool:
        records = [json.loads(line) for f in sorted(snaps.glob("*.jsonl"))
                   for line in f.read_text().splitlines() if line.endswith("}")]
        medium = [r["t"] for r in records if r.get("type") == "level"]
        times = [r["t"] for r in records if r.get("kind") == "sample"]
        return bool(medium) and max(times, default=0) - medium[0] >= 3.5

    # Three reminder periods (the cooldown, 1 s) pass at MEDIUM, as memwarden's own
    # sample records show.
    wait_until(samples_since_medium, what="3.5 s of samples at MEDIUM")
    m.signal(signal.SIGTERM)
    m.wait()
    lines = m.stderr().splitlines()
    assert not [line for line in lines if "told of" in line and "not told of" not in line]
    assert not [line for line in lines if "via channel" in line]
    if medium_signal is None:
        untold = [line for line in lines if "not told of medium pressure: no channel (it "
                  "never spoke one) and no --medium-signal" in line]
        assert len(untold) == 1, lines  # once, not at every reminder
    else:
        signalled = [line for line in lines if "signalled SIGUSR1 for medium pressure" in line]
        assert len(signalled) >= 2, lines  # the reminders are signals too
        assert "USR1" in got.read_text()
        assert "not told" not in m.stderr()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv(1) to run as root without CAP_SYS_RESOURCE")
@pytest.mark.parametrize(("workers_adj", "said"), [("1000", False), ("0", True)])
def test_memwardens_own_score_is_mentioned_only_when_the_user_can_act(
        memwarden, workers_adj: str, said: bool) -> None:
    # As root in most containers: lowering memwarden's own score needs CAP_SYS_RESOURCE.
    # While the workers' score stays above memwarden's, nothing follows from that.
    m = memwarden("run", "--oom-score-adj", workers_adj, "--snapshots", "", "--control", "",
                  "--", "true", prefix=["setpriv", "--bounding-set=-sys_resource",
                                        "--inh-caps=-sys_resource"])
    assert m.wait() == 0
    err = m.stderr()
    assert ("oom_score_adj" in err) == said, err
    if said:
        assert "may pick memwarden before a worker; grant CAP_SYS_RESOURCE or raise " \
            "--oom-score-adj" in err

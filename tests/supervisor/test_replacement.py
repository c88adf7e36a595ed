"""Pressure end to end: real leaking workers, real memory cgroups, the policy's actions seen in
memwarden's own snapshot records and in what the workers themselves log."""

from __future__ import annotations

import json
import pathlib
import signal
import sys

import pytest

from tests.conftest import ROOT, in_cgroup, wait_until

# Each test runs with each sampler ticker (MEMWARDEN_TICKER, set by the `ticker` fixture).
pytestmark = pytest.mark.usefixtures("ticker")

LEAKY = [sys.executable, str(ROOT / "scripts" / "leaky_worker.py")]
MB = 1_000_000

# Grows only in generations up to argv[3], logs its start and exit on the system-wide
# monotonic clock, so that the test can check that two generations overlapped. With a
# sixth argument it says "ready" on the channel once its first argv[5] MB are held (a
# readiness timer would guess, and on a busy host guess before they are).
GROWER = r"""
import os, signal, sys, time
gen = int(os.environ["MEMWARDEN_GENERATION"])
log = open(sys.argv[1], "a", buffering=1)
log.write(f"start {gen} {os.environ['MEMWARDEN_PROFILE']} {time.monotonic()}\n")
def bye(*_):
    log.write(f"exit {gen} {time.monotonic()}\n")
    os._exit(0)
signal.signal(signal.SIGTERM, bye)
target = int(float(sys.argv[2]) * 1e6) if gen <= int(sys.argv[3]) else 0
rate = float(sys.argv[4]) * 1e6
start = int(float(sys.argv[5]) * 1e6) if len(sys.argv) > 5 else 0
hold, held, t0 = [], 0, time.monotonic()
say_ready = len(sys.argv) > 6
while True:
    want = start + min(target, int((time.monotonic() - t0) * rate))
    while held < want:
        hold.append(b"\xa5" * (1 << 20))
        held += 1 << 20
    if say_ready:
        from workers.client import client
        client().ready()
        say_ready = False
    time.sleep(0.002)
"""


def grower(log: pathlib.Path, mb: float, generations: int, rate_mb_s: float,
           start_mb: float = 0, *, say_ready: bool = False) -> list[str]:
    return [sys.executable, "-c", GROWER, str(log), str(mb), str(generations), str(rate_mb_s),
            str(start_mb), *(["ready"] if say_ready else [])]


def config(tmp_path: pathlib.Path, text: str = "") -> str:
    """A config file that turns the growth-rate input off unless `text` says otherwise."""
    path = tmp_path / "memwarden.toml"
    path.write_text('[pressure]\ngrowth_medium = "10GB/s"\ngrowth_high = "20GB/s"\n' + text)
    return str(path)


def records(directory: pathlib.Path, kind: str = "event") -> list[dict]:
    out = []
    for f in sorted(directory.glob("*.jsonl")):
        for line in f.read_text().splitlines():
            if line.endswith("}"):
                r = json.loads(line)
                if r.get("kind") == kind:
                    out.append(r)
    return out


def events(directory: pathlib.Path, type_: str, **match: object) -> list[dict]:
    return [e for e in records(directory) if e["type"] == type_
            and all(e.get(k) == v for k, v in match.items())]


def lifetimes(log: pathlib.Path) -> dict[int, dict[str, object]]:
    gens: dict[int, dict[str, object]] = {}
    for line in log.read_text().splitlines():
        parts = line.split()
        if parts[0] == "start":
            gens[int(parts[1])] = {"profile": parts[2], "start": float(parts[3])}
        elif parts[0] == "exit":
            gens[int(parts[1])]["exit"] = float(parts[2])
    return gens


def common(tmp_path: pathlib.Path, snaps: pathlib.Path, *extra: str) -> list[str]:
    # Snapshot records are flushed at least every second; the sample period is short so
    # that the tests see records soon.
    return ["run", "--snapshots", str(snaps), "--sample-period", "0.2s", "--ready-after", "0.3s",
            "--grace", "3s", *extra]


@pytest.mark.slow
def test_medium_sends_one_pressure_message(memwarden, tmp_path) -> None:
    snaps = tmp_path / "s"
    m = memwarden(*common(tmp_path, snaps, "--config", config(tmp_path), "--medium", "40MB",
                          "--high", "2GB", "--critical", "3GB", "--cooldown", "60s"),
                  "--", *LEAKY, "--channel", "--rate", "30MB/s", "--max", "80")
    wait_until(lambda: events(snaps, "trimmed"), timeout=30, what="the worker's trimmed answer")
    m.signal(signal.SIGTERM)
    m.wait()
    notes = events(snaps, "notify")
    assert len(notes) == 1, notes
    assert notes[0]["level"] == "medium" and "channel" in notes[0]["message"]
    assert not events(snaps, "spawn")


def test_high_replaces_make_before_break(memwarden, tmp_path) -> None:
    snaps, log = tmp_path / "s", tmp_path / "gens"
    m = memwarden(*common(tmp_path, snaps, "--config", config(tmp_path), "--medium", "off",
                          "--high", "60MB", "--critical", "3GB"),
                  "--", *grower(log, 100, 1, 50))
    wait_until(lambda: log.exists() and "exit 1" in log.read_text(), timeout=30,
               what="generation 1 retired")
    gens = lifetimes(log)
    assert gens[2]["profile"] == "high"
    assert gens[2]["start"] < gens[1]["exit"], "a moment without a live worker"
    wait_until(lambda: events(snaps, "retire", generation=1), what="retire record")
    ready, retire = events(snaps, "ready", generation=2), events(snaps, "retire", generation=1)
    assert ready and retire and ready[0]["t"] <= retire[0]["t"]
    exits = events(snaps, "exit", generation=1)
    assert not exits or exits[0]["expected"] is True
    m.signal(signal.SIGTERM)
    m.wait()
    # why each generation started, for readers that pool a leak's replacements
    assert events(snaps, "start", generation=1)[0]["data"] == {"cause": "start"}
    assert events(snaps, "spawn", generation=2)[0]["data"] == {"cause": "pressure"}


@pytest.mark.slow
def test_cooldown_holds_between_replacements(memwarden, tmp_path) -> None:
    snaps, log = tmp_path / "s", tmp_path / "gens"
    m = memwarden(*common(tmp_path, snaps, "--config", config(tmp_path), "--medium", "off",
                          "--high", "40MB", "--critical", "3GB", "--cooldown", "2s",
                          "--baseline-generations", "5"),
                  "--", *grower(log, 80, 9, 100))
    wait_until(lambda: len(events(snaps, "spawn")) >= 2, timeout=60, what="two replacements")
    m.signal(signal.SIGTERM)
    m.wait()
    spawns = events(snaps, "spawn")
    assert spawns[1]["t"] - spawns[0]["t"] >= 2.0
    assert events(snaps, "cooldown")


@pytest.mark.slow
def test_oscillation_around_a_threshold_does_not_flap(memwarden, tmp_path) -> None:
    snaps = tmp_path / "s"
    m = memwarden(*common(tmp_path, snaps, "--config", config(tmp_path), "--medium", "50MB",
                          "--high", "2GB", "--critical", "3GB"),
                  "--", *LEAKY, "--oscillate", "30:70:0.5")
    # Six full periods of the square wave, seen in the samples memwarden wrote.
    wait_until(lambda: len(records(snaps, "sample")) >= 15, timeout=60, what="3 s of samples")
    m.signal(signal.SIGTERM)
    m.wait()
    changes = events(snaps, "level", worker="worker")
    assert [c["level"] for c in changes] == ["medium"], changes


def test_dry_run_acts_on_nothing(memwarden, tmp_path) -> None:
    snaps, log = tmp_path / "s", tmp_path / "gens"
    m = memwarden(*common(tmp_path, snaps, "--config", config(tmp_path), "--medium", "20MB",
                          "--high", "40MB", "--critical", "3GB", "--dry-run"),
                  "--", *grower(log, 80, 9, 100))
    wait_until(lambda: any("would" in e["message"] for e in events(snaps, "dry_run")),
               timeout=30, what="a dry-run record")
    m.signal(signal.SIGTERM)
    m.wait()
    assert not events(snaps, "spawn") and not events(snaps, "notify")
    assert list(lifetimes(log)) == [1]


GARBAGE = r"""
import os, socket, sys, time
s = socket.socket(fileno=int(os.environ["MEMWARDEN_FD"]))
s.sendall(b"\x00\xffnot json\n" + b"{" * 100000 + b"\n" + b'{"type":"nonsense"}\n'
          + b'{"type":"ready"}\n')
time.sleep(0.5)
raise SystemExit(7)
"""


def test_garbage_on_the_channel_changes_nothing(memwarden, tmp_path) -> None:
    snaps = tmp_path / "s"
    m = memwarden(*common(tmp_path, snaps), "--", sys.executable, "-c", GARBAGE)
    assert m.wait() == 7
    assert events(snaps, "ready", generation=1)
    assert "dropped 2 more bad lines (3 in all)" in m.stderr()  # logged, not line by line


@pytest.mark.timeout(180)
def test_fast_leak_in_a_limited_cgroup_is_replaced_before_the_oom_killer(
        memwarden, memory_cgroup, tmp_path) -> None:
    (memory_cgroup / "memory.limit_in_bytes").write_text(str(300 * 2**20))
    snaps, log = tmp_path / "s", tmp_path / "gens"
    m = memwarden(*common(tmp_path, snaps, "--config", config(tmp_path), "--medium", "30%",
                          "--high", "50%", "--critical", "70%"),
                  "--", *grower(log, 1000, 1, 100), prefix=in_cgroup(memory_cgroup))
    wait_until(lambda: log.exists() and "exit 1" in log.read_text(), timeout=60,
               what="generation 1 replaced")
    m.signal(signal.SIGTERM)
    m.wait()
    header = records(snaps, "header")[0]
    assert header["limit"] == 300 * 2**20  # discovered from the cgroup
    assert "oom_kill 0" in (memory_cgroup / "memory.oom_control").read_text()
    assert lifetimes(log)[2]["profile"] in ("high", "critical")


@pytest.mark.timeout(180)
@pytest.mark.slow
def test_critical_with_small_headroom_stops_first(memwarden, memory_cgroup, tmp_path) -> None:
    (memory_cgroup / "memory.limit_in_bytes").write_text(str(400 * 2**20))
    snaps, log = tmp_path / "s", tmp_path / "gens"
    # Generation 1 starts with 150 MB and then leaks; at CRITICAL (250 MB) the container has
    # less headroom than a new generation's expected footprint (~150 MB): stop, then start.
    # It says ready once it holds its 150 MB: that is the footprint the policy expects.
    m = memwarden(*common(tmp_path, snaps, "--config", config(tmp_path), "--medium", "off",
                          "--high", "off", "--critical", "250MB", "--ready-after", "20s"),
                  "--", *grower(log, 1000, 1, 40, start_mb=150, say_ready=True),
                  prefix=in_cgroup(memory_cgroup))
    wait_until(lambda: log.exists() and "start 2" in log.read_text(), timeout=60,
               what="generation 2")
    m.signal(signal.SIGTERM)
    m.wait()
    assert events(snaps, "break_before_make")
    gens = lifetimes(log)
    assert gens[1]["exit"] < gens[2]["start"]
    assert gens[2]["profile"] == "critical"
    assert "oom_kill 0" in (memory_cgroup / "memory.oom_control").read_text()


@pytest.mark.timeout(180)
def test_page_cache_under_a_limit_stays_low(memwarden, memory_cgroup, tmp_path) -> None:
    (memory_cgroup / "memory.limit_in_bytes").write_text(str(200 * 2**20))
    snaps = tmp_path / "s"
    big = tmp_path / "big.bin"
    m = memwarden(*common(tmp_path, snaps, "--medium", "60%", "--high", "80%",
                          "--critical", "95%"),
                  "--", *LEAKY, "--write-file", f"{big}:400", "--exit-after", "0.5", "0",
                  prefix=in_cgroup(memory_cgroup))
    assert m.wait(120) == 0
    assert big.stat().st_size >= 400 * MB
    assert not events(snaps, "level"), events(snaps, "level")
    assert not events(snaps, "spawn")


@pytest.mark.timeout(180)
@pytest.mark.slow
def test_shared_limit_retires_the_fastest_grower(memwarden, memory_cgroup, tmp_path) -> None:
    (memory_cgroup / "memory.limit_in_bytes").write_text(str(400 * 2**20))
    snaps, slow_log, fast_log = tmp_path / "s", tmp_path / "slow", tmp_path / "fast"
    cfg = config(tmp_path, "".join(
        f'[[worker]]\nname = "{name}"\ncommand = {json.dumps(cmd)}\n'
        for name, cmd in (("slow", grower(slow_log, 60, 9, 20)),
                          ("fast", grower(fast_log, 1000, 1, 40)))))
    m = memwarden(*common(tmp_path, snaps, "--config", cfg, "--medium", "off", "--high", "off",
                          "--critical", "off"), prefix=in_cgroup(memory_cgroup))
    wait_until(lambda: events(snaps, "spawn"), timeout=60, what="a replacement")
    m.signal(signal.SIGTERM)
    m.wait()
    assert {e["worker"] for e in events(snaps, "spawn")} == {"fast"}
    assert list(lifetimes(slow_log)) == [1]
    assert "oom_kill 0" in (memory_cgroup / "memory.oom_control").read_text()


@pytest.mark.slow
def test_retired_generation_sends_a_leak_report_first(memwarden, tmp_path) -> None:
    snaps = tmp_path / "s"
    m = memwarden(*common(tmp_path, snaps, "--config", config(tmp_path), "--medium", "off",
                          "--high", "60MB", "--critical", "3GB", "--investigate-on-retire"),
                  "--", *LEAKY, "--channel", "--rate", "40MB/s", "--max", "90")
    wait_until(lambda: events(snaps, "exit", generation=1), timeout=60, what="a retirement")
    m.signal(signal.SIGTERM)
    m.wait()
    reports = events(snaps, "report", generation=1)
    assert reports and reports[0]["data"]["id"] == "shutdown", reports
    retire = events(snaps, "retire", generation=1)[0]
    assert reports[0]["t"] <= events(snaps, "exit", generation=1)[0]["t"]
    assert retire["t"] <= reports[0]["t"]


def test_a_replacement_that_cannot_start_leaves_the_worker_running(memwarden, tmp_path) -> None:
    snaps, log = tmp_path / "s", tmp_path / "gens"
    script = tmp_path / "worker.py"
    # The program removes itself once running: its replacement cannot be started.
    script.write_text(f"#!{sys.executable}\nimport os, sys\nos.unlink(__file__)\n"
                      f"sys.argv[1:] = {grower(log, 100, 1, 50)[3:]!r}\n" + GROWER)
    script.chmod(0o755)
    m = memwarden(*common(tmp_path, snaps, "--config", config(tmp_path), "--medium", "off",
                          "--high", "60MB", "--critical", "3GB"), "--", str(script))
    wait_until(lambda: events(snaps, "spawn_failed"), timeout=30, what="the failed start")
    failed = events(snaps, "spawn_failed")[0]
    assert failed["generation"] == 2 and "No such file" in failed["message"]
    assert m.proc.poll() is None  # memwarden still supervises generation 1
    m.signal(signal.SIGTERM)
    assert m.wait() == 0  # generation 1 exits 0 on TERM, as the grower does
    assert list(lifetimes(log)) == [1]

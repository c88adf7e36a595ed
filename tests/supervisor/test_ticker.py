"""The sampler's two tickers: the compiled one (`supervisor/sensing/_ticker.c`) and the Python one.

What the compiled ticker adds to the sampler tests (which run under both): its appends read
by Python readers while it runs without the GIL, the tick accounting, work queued by other
threads run on its thread, failures logged, no allocation per tick, and the choice between
the two (built or not, MEMWARDEN_TICKER)."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest

from supervisor.core.pressure import Change
from supervisor.sensing import layout
from supervisor.sensing import ticker as ticking
from supervisor.sensing.sampler import Sampler
from supervisor.sensing.ticker import choose_ticker
from supervisor.settings.config import ConfigError, convert
from supervisor.settings.specs import thresholds as resolve_thresholds
from tests.conftest import ROOT, wait_until
from workers.protocol import Level

pytestmark = pytest.mark.timeout(90)

needs_built = pytest.mark.skipif(not ticking.BUILT,
                                 reason="supervisor.sensing._ticker is not built here")


@pytest.fixture
def started(ticker: str) -> Iterator[list[Sampler]]:
    """Samplers the test starts, stopped at teardown."""
    samplers: list[Sampler] = []
    yield samplers
    for s in samplers:
        s.stop()


def start(samplers: list[Sampler], ticker: str, **options: object) -> tuple[Sampler, list[Change]]:
    changes: list[Change] = []
    settings = {"interval_s": 0.001, "discover_interval_s": 0.05, "ring_seconds": 10.0,
                "thresholds": resolve_thresholds(convert({}), None)}
    settings.update(options)
    s = Sampler(on_change=changes.append, ticker=ticker, **settings)  # type: ignore[arg-type]
    samplers.append(s)
    s.start()
    return s, changes


def test_the_compiled_ticker_is_built_wherever_it_can_be():
    # `pip install` builds it as an optional extension: a failed build passes silently, and
    # the compiled path would then go untested. Where a compiler and the headers exist (CI),
    # it must be there.
    headers = os.path.join(sysconfig.get_paths()["include"], "Python.h")
    if not (shutil.which("cc") or shutil.which("gcc")) or not os.path.exists(headers):
        pytest.skip("no C compiler or no Python headers: the Python ticker is the one")
    assert ticking.BUILT, ("supervisor.sensing._ticker is missing or stale although it can "
                           "be built here: run scripts/setup.sh")


@needs_built
def test_python_readers_see_the_compiled_tickers_appends_whole(spawn_tree, started):
    # The compiled ticker appends without the GIL while this thread reads: every read must
    # be time-ordered pairs that were really appended, across many wraps of a 50-sample ring.
    s, _ = start(started, "c", ring_seconds=0.05)
    p = spawn_tree(mb=8)
    s.watch("w", p.pid)
    ring = s.view("w").ring
    assert ring.capacity == 50
    wait_until(lambda: s.view("w").memory >= 8 << 20, what="the first samples")
    first = ring.newest()[0]
    reads = 0
    while reads < 20_000 or ring.newest()[0] < first + 200_000_000:  # 4 wraps at least
        if reads > 2_000_000:
            raise AssertionError("the ring stopped moving")
        ts, values = ring.last(50)
        assert all(a < b for a, b in itertools.pairwise(ts))
        assert len(ts) == len(values) and all(v >= 8 << 20 for v in values)
        newest = ring.newest()
        assert newest is not None and newest[0] >= ts[-1]
        reads += 1
    assert len(ring) == 50


def test_late_and_missed_ticks_are_counted(spawn_tree, started, ticker):
    # A stall of 50 ms inside one tick (work queued for the ticker) makes the next tick
    # start at least 49 intervals after its deadline: 49 deadlines skipped, at the least.
    s, _ = start(started, ticker)
    p = spawn_tree(mb=1)
    s.watch("w", p.pid)
    wait_until(lambda: s.stats.ticks > 20, what="ticking")
    before = (s.stats.missed, s.stats.late)
    ran: list[int] = []

    def stall(_now: int) -> None:
        ran.append(threading.get_native_id())
        time.sleep(0.05)

    s._ticking.queue(stall)
    ticks = wait_until(lambda: ran and s.stats.ticks, what="the stall to run")
    wait_until(lambda: s.stats.ticks > ticks + 2, what="ticks after the stall")
    assert ran == [s._threads[0].native_id]  # on the ticker's own thread
    assert s.stats.missed - before[0] >= 49
    assert s.stats.late - before[1] >= 1
    assert s.stats.max_late_ns >= 49_000_000


def test_a_failure_in_queued_work_is_logged_and_sampling_goes_on(spawn_tree, started, ticker,
                                                                   caplog):
    s, _ = start(started, ticker)
    p = spawn_tree(mb=1)
    s.watch("w", p.pid)
    boom = RuntimeError("boom")

    def fail(_now: int) -> None:
        raise boom

    s._ticking.queue(fail)
    record = wait_until(lambda: next((r for r in caplog.records
                                      if r.getMessage().startswith("sampler tick failed")), None),
                        what="the failure logged")
    assert record.name == "memwarden.ticker" and record.exc_info[1] is boom
    ticks = s.stats.ticks
    wait_until(lambda: s.stats.ticks > ticks + 10 and s.view("w").memory > 0,
               what="sampling going on")


def test_level_changes_are_reported_from_the_tickers_thread(spawn_tree, started, ticker):
    threads: list[int] = []
    th = resolve_thresholds(convert({"medium": "20MB", "high": "40MB", "critical": "4GB"}),
                                None)
    s, changes = start(started, ticker, thresholds=th)
    s._ticking.on_change = lambda c: (threads.append(threading.get_native_id()), changes.append(c))
    p = spawn_tree(mb=10, step=10, every=0.05, top=60)
    s.watch("w", p.pid)
    wait_until(lambda: any(c.level == Level.HIGH for c in changes), what="HIGH")
    assert set(threads) == {s._threads[0].native_id}
    high = next(c for c in changes if c.level == Level.HIGH)
    times, values = s.view("w").ring.window(high.first_ns, high.t_ns)
    assert len(times) == th.confirm and high.value == values[-1]


@pytest.mark.slow
def test_a_tick_keeps_no_memory(spawn_tree, ticker):
    # Only the ticker runs here: the discoverer's tables follow the machine's processes.
    s = Sampler(interval_s=0.001, discover_interval_s=0.05, ring_seconds=1.0,
                thresholds=resolve_thresholds(convert({}), None), on_change=print,
                ticker=ticker)
    p = spawn_tree(mb=1)
    s.watch("w", p.pid)
    thread = threading.Thread(target=s._ticking.run)
    thread.start()
    try:
        wait_until(lambda: s.stats.ticks > 1500, what="the ring written once round")
        tracemalloc.start()
        try:
            ticks = s.stats.ticks
            wait_until(lambda: s.stats.ticks > ticks + 50, what="ticks under tracemalloc")
            before = tracemalloc.get_traced_memory()[0]
            ticks = s.stats.ticks
            wait_until(lambda: s.stats.ticks > ticks + 2000, what="2000 ticks")
            after = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
    finally:
        s._ticking.control[layout.STOP] = 1
        s._ticking.stopping.set()
        thread.join()
        s.stop()
    assert after - before < 1024  # 2000 ticks: not a byte kept per tick


def test_the_choice_of_ticker(monkeypatch):
    monkeypatch.delenv("MEMWARDEN_TICKER", raising=False)
    assert choose_ticker()[0] == ("c" if ticking.BUILT else "python")
    assert choose_ticker("python") == ("python", "asked=python")
    monkeypatch.setenv("MEMWARDEN_TICKER", "python")
    assert choose_ticker() == ("python", "MEMWARDEN_TICKER=python")
    monkeypatch.setenv("MEMWARDEN_TICKER", "fast")
    with pytest.raises(ConfigError, match="MEMWARDEN_TICKER=fast: expected python or c"):
        choose_ticker()
    # A build of another version of the source is not used.
    monkeypatch.delenv("MEMWARDEN_TICKER")
    monkeypatch.setattr(ticking, "BUILT", False)
    assert choose_ticker()[0] == "python"
    with pytest.raises(ConfigError, match="not built here, or is stale"):
        choose_ticker("c")


def run_memwarden(env: dict[str, str], block: bool, tmp_path) -> tuple[int | None, str]:
    """A real `memwarden run -- sleep`, the compiled ticker made unimportable when `block`;
    return (exit status, None if still running once its sampler started; its stderr)."""
    code = ("import sys\n"
            + ("sys.modules['supervisor.sensing._ticker'] = None\n" if block else "")
            + "from supervisor.cli import main\nsys.exit(main())\n")
    err = tmp_path / "err"
    with open(err, "wb") as errors:
        proc = subprocess.Popen(
            [sys.executable, "-c", code, "run", "--snapshots", "", "--control", "",
             "--measure", "rss", "--", "sleep", "60"],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=errors, env={**os.environ, **env})
    try:
        wait_until(lambda: proc.poll() is not None or "sampling every" in err.read_text(),
                   what="memwarden's start")
        return proc.poll(), err.read_text()
    finally:
        proc.terminate()
        proc.wait(30)


def test_without_the_compiled_ticker_memwarden_runs_the_python_one(tmp_path, monkeypatch):
    monkeypatch.delenv("MEMWARDEN_TICKER", raising=False)
    status, log = run_memwarden({}, True, tmp_path)
    assert status is None
    assert ("sampling every 1ms with the Python ticker (supervisor.sensing._ticker is not built "
            "here" in log)
    status, log = run_memwarden({"MEMWARDEN_TICKER": "c"}, True, tmp_path)
    assert status == 2
    assert log.strip().splitlines() == [
        "memwarden: MEMWARDEN_TICKER=c: the compiled ticker (supervisor.sensing._ticker) is "
        "not built here, or is stale; reinstall memwarden where a C compiler and the Python "
        "headers exist, or use python"]
    if ticking.BUILT:
        status, log = run_memwarden({}, False, tmp_path)
        assert status is None
        assert "sampling every 1ms with the compiled ticker (supervisor.sensing._ticker)" in log

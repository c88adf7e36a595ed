"""The sampler against real processes: trees, exits mid-sampling, level changes delivered.
Every test runs with each ticker (the compiled one and the Python one: the `ticker` fixture)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from supervisor.core.pressure import Change, Thresholds
from supervisor.linux.cgroup import CgroupMemory
from supervisor.linux.timing import SAMPLER_NICE
from supervisor.linux.trees import CgroupTree
from supervisor.sensing.sampler import Sampler
from supervisor.settings.config import convert
from supervisor.settings.specs import thresholds as resolve_thresholds
from tests.conftest import ROOT, in_cgroup, python, wait_until
from workers.protocol import Level

pytestmark = pytest.mark.timeout(90)

MiB = 1024 * 1024
MB = 1_000_000


def thresholds(limit: int | None = None, **values: object) -> Thresholds:
    return resolve_thresholds(convert(values), limit)


@pytest.fixture
def make_sampler(ticker: str) -> Iterator[Callable[..., tuple[Sampler, list[Change]]]]:
    """Build and start samplers that record their changes; stop them at teardown."""
    samplers: list[Sampler] = []

    def make(th: Thresholds | None = None, **kwargs: object) -> tuple[Sampler, list[Change]]:
        changes: list[Change] = []
        options = {"interval_s": 0.001, "discover_interval_s": 0.05, "ring_seconds": 10.0,
                   "ticker": ticker}
        options.update(kwargs)
        s = Sampler(thresholds=th or thresholds(), on_change=changes.append, **options)
        samplers.append(s)
        s.start()
        return s, changes

    yield make
    for s in samplers:
        s.stop()


def test_a_child_allocating_is_seen(spawn_tree, make_sampler):
    s, _ = make_sampler()
    p = spawn_tree(mb=60)
    s.watch("w", p.pid)
    view = wait_until(lambda: (v := s.view("w")) and v.rss >= 60 * MiB and len(v.ring) >= 10 and v,
                      what="60 MiB in the view")
    assert view.procs == 1 and view.pids == (p.pid,)
    times, values = view.ring.last(10)
    assert len(times) == 10 and times == sorted(times) and max(values) >= 60 * MiB
    assert s.stats.ticks > 0


def test_grandchildren_are_counted(spawn_tree, make_sampler):
    s, _ = make_sampler()
    p = spawn_tree(mb=30, kids=2)
    s.watch("tree", p.pid)
    view = wait_until(lambda: (v := s.view("tree")) and v.procs == 3 and v.rss >= 90 * MiB and v,
                      what="the whole tree summed")
    assert p.pid in view.pids


def test_a_process_exiting_is_dropped_without_error(spawn_tree, make_sampler, caplog):
    caplog.set_level(logging.WARNING, logger="memwarden")
    s, _ = make_sampler()
    p = spawn_tree(mb=10, kids=2)
    s.watch("tree", p.pid)
    view = wait_until(lambda: (v := s.view("tree")) and v.procs == 3 and v, what="three procs")
    victim = next(pid for pid in view.pids if pid != p.pid)
    os.kill(victim, signal.SIGKILL)  # its parent reaps it; the sampler is mid-flight
    wait_until(lambda: (v := s.view("tree")) and v.procs == 2 and victim not in v.pids,
               what="the dead child dropped")
    ticks = s.stats.ticks
    wait_until(lambda: s.stats.ticks > ticks + 10, what="ticks going on")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_whole_tree_exiting_leaves_an_empty_sum(spawn_tree, make_sampler):
    s, _ = make_sampler()
    p = spawn_tree(mb=10)
    s.watch("w", p.pid)
    wait_until(lambda: s.view("w").rss > 0, what="a first sample")
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=10)
    wait_until(lambda: s.view("w").rss == 0 and s.view("w").procs == 0, what="an empty tree")
    s.unwatch("w")
    assert s.view("w") is None


def test_watching_a_gone_pid_raises(make_sampler):
    s, _ = make_sampler()
    p = subprocess.Popen(["/bin/true"])
    p.wait(timeout=10)
    with pytest.raises(ProcessLookupError):
        s.watch("w", p.pid)


def test_level_changes_of_a_growing_process_reach_on_change(spawn_tree, make_sampler):
    th = thresholds(medium="40MB", high="80MB", critical="4GB")
    s, changes = make_sampler(th)
    p = spawn_tree(mb=10, step=10, every=0.05, top=120)
    s.watch("w", p.pid)
    wait_until(lambda: any(c.level == Level.HIGH for c in changes), what="HIGH")
    medium, high = changes[:2]
    assert (medium.key, medium.previous, medium.level, medium.metric) == (
        "w", Level.LOW, Level.MEDIUM, "memory")
    assert (high.previous, high.level, high.threshold) == (Level.MEDIUM, Level.HIGH, 80 * MB)
    # Detection takes exactly the confirmation count of ticks, measured on the ring itself.
    times, values = s.view("w").ring.window(high.first_ns, high.t_ns)
    assert len(times) == th.confirm
    assert all(v >= 80 * MB for v in values)
    assert high.value == values[-1]


def test_sustained_growth_is_reported_once_the_window_is_full(spawn_tree, make_sampler):
    # CRITICAL 1 GB is under a minute away at 40 MiB/s: inside the MEDIUM horizon (2 min).
    # A worker that said ready has ended its start-up: its growth is judged at once.
    th = thresholds(medium="4GB", high="5GB", critical="1GB",
                    pressure={"growth_window": "1s"})
    s, changes = make_sampler(th)
    p = spawn_tree(mb=0, step=4, every=0.1, top=800)  # about 40 MiB/s for up to 20 s
    s.watch("w", p.pid)
    s.growth_from("w", said_ready=True)
    change = wait_until(lambda: next((c for c in changes if c.metric == "projection"), None),
                        what="a growth change")
    assert change.level >= Level.MEDIUM and change.detail.startswith("at ")
    assert s.view("w").slope is not None


def test_an_idle_worker_stays_low(spawn_tree, make_sampler):
    th = thresholds(pressure={"growth_window": "0.3s"})
    s, changes = make_sampler(th)
    p = spawn_tree(mb=5)
    s.watch("w", p.pid)
    s.growth_from("w")
    wait_until(lambda: s.view("w").slope is not None and s.stats.discoveries > 10,
               what="a few growth evaluations")
    assert changes == []


def test_growth_before_ready_is_not_judged(spawn_tree, make_sampler):
    # A start-up ramp: loading, not leaking. Without growth_from (the worker never became
    # ready) no growth figure exists, however fast it grows.
    th = thresholds(medium="4GB", high="5GB", critical="6GB",
                    pressure={"growth_window": "0.5s"})
    s, changes = make_sampler(th)
    p = spawn_tree(mb=0, step=4, every=0.05, top=200)
    s.watch("w", p.pid)
    wait_until(lambda: s.stats.discoveries > 40 and s.view("w").rss > 100 * MiB,
               what="more than four growth windows of growth")
    assert s.view("w").slope is None and changes == []


@pytest.mark.slow
def test_a_one_off_step_is_not_sustained_growth(spawn_tree, make_sampler):
    # 10 MiB, then one step of 60 MiB half a second in, then flat: the whole-window slope
    # sees the step, but the thirds without it bring the sustained growth to about zero.
    th = thresholds(medium="4GB", high="5GB", critical="6GB",
                    pressure={"growth_window": "1s"})
    s, changes = make_sampler(th)
    p = spawn_tree(mb=10, step=60, every=0.5, top=70)
    s.watch("w", p.pid)
    s.growth_from("w")
    wait_until(lambda: s.view("w").rss > 70 * MiB, what="the step")
    # Ticks, not discovery rounds, measure the time: with nothing changing after the step,
    # the rounds back off to a second apart.
    seen = s.stats.ticks
    wait_until(lambda: s.stats.ticks > seen + 3000, timeout=60,
               what="three windows of ticks past the step")
    assert [c for c in changes if c.metric == "projection"] == []


def write_v2(cg: Path, current: int, inactive_file: int = 0) -> None:
    (cg / "memory.current").write_text(f"{current}\n")
    (cg / "memory.stat").write_text(f"anon {current - inactive_file}\nfile {inactive_file}\n"
                                    f"inactive_file {inactive_file}\nactive_file 0\n")


def test_container_headroom_changes_reach_on_change(tmp_path, make_sampler):
    cg = tmp_path / "pod"
    cg.mkdir()
    (cg / "memory.max").write_text(f"{1000 * MB}\n")
    (cg / "memory.high").write_text("max\n")
    (cg / "memory.events").write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    (cg / "memory.pressure").write_text("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
                                        "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    write_v2(cg, 100 * MB)
    cgroup = CgroupMemory.at(str(cg), 2)
    th = thresholds(1000 * MB, pressure={"dwell_high": "100ms", "dwell_medium": "100ms"})
    s, changes = make_sampler(th, cgroup=cgroup, limit=cgroup.limit())
    wait_until(lambda: s.container().usage == 100 * MB, what="the first container sample")
    assert s.container().level == Level.LOW
    write_v2(cg, 920 * MB)  # 8 % left: HIGH
    change = wait_until(lambda: next(iter(changes), None), what="a container change")
    assert (change.key, change.level, change.metric) == ("", Level.HIGH, "headroom")
    assert change.value == pytest.approx(0.08)
    # Most of it turns out to be inactive page cache: the working set is small again.
    write_v2(cg, 920 * MB, inactive_file=600 * MB)
    wait_until(lambda: s.container().level == Level.LOW, what="back to LOW")
    # Both lines were left at the same moment and both dwells are 100 ms: one step down.
    assert [c.level for c in changes] == [Level.HIGH, Level.LOW]
    assert s.container().working_set == 320 * MB
    cgroup.close()


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_no_descriptor_outlives_its_watch(spawn_tree, ticker):
    before = open_fds()
    s = Sampler(interval_s=0.001, discover_interval_s=0.02, ring_seconds=1.0,
                thresholds=thresholds(), on_change=lambda c: None, ticker=ticker)
    try:
        s.start()
        p = spawn_tree(mb=1, kids=2)
        for round_ in range(3):
            s.watch("tree", p.pid)  # watching again replaces the earlier watch
            wait_until(lambda: s.view("tree").procs == 3, what=f"the tree, round {round_}")
        s.watch("other", p.pid)
        wait_until(lambda: s.view("other").procs == 3, what="a second watch of the tree")
        s.unwatch("tree")
        s.unwatch("other")
        s.unwatch("never watched")
        ticks = s.stats.ticks
        wait_until(lambda: s.stats.ticks > ticks + 5, what="the ticker closing retired readers")
    finally:
        s.stop()
    leaked = {fd for fd in open_fds() - before
              if os.readlink(f"/proc/self/fd/{fd}").startswith("/proc/")}
    assert not leaked


def test_realtime_puts_only_the_ticker_under_sched_fifo(spawn_tree, make_sampler):
    if os.geteuid() != 0:
        pytest.skip("SCHED_FIFO needs root (CAP_SYS_NICE)")
    s, _ = make_sampler(realtime=True)
    p = spawn_tree(mb=1)
    s.watch("w", p.pid)
    wait_until(lambda: s.view("w").rss > 0, what="a first sample")
    ticker, discoverer = s._threads
    fifo = os.SCHED_FIFO
    wait_until(lambda: os.sched_getscheduler(ticker.native_id) & ~os.SCHED_RESET_ON_FORK == fifo,
               what="the ticker under SCHED_FIFO")
    assert os.sched_getscheduler(discoverer.native_id) == os.SCHED_OTHER
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # this thread: untouched


def test_the_ticker_alone_runs_at_a_raised_priority(spawn_tree, make_sampler):
    if os.geteuid() != 0:
        pytest.skip("a negative nice value needs root (CAP_SYS_NICE)")
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    s, _ = make_sampler()
    p = spawn_tree(mb=1)
    s.watch("w", p.pid)
    wait_until(lambda: s.view("w").rss > 0, what="a first sample")
    ticker, discoverer = s._threads

    def nice(tid: int) -> int:  # field 19 of the thread's stat
        with open(f"/proc/self/task/{tid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[16])

    assert nice(ticker.native_id) == SAMPLER_NICE
    assert nice(discoverer.native_id) == before
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before


def test_a_refused_priority_leaves_the_thread_as_it_was_and_says_so():
    # Without CAP_SYS_NICE (and RLIMIT_NICE 0): the nice value may not be lowered. As root,
    # the capability is dropped from the bounding set rather than the user changed: another
    # user may not be able to read the checkout (a CI clone under a private directory).
    code = ("import logging, os, threading\n"
            "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
            "from supervisor.linux.timing import raise_priority\n"
            "print(raise_priority(), os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))")
    if os.geteuid() == 0:
        command = ["setpriv", "--bounding-set=-sys_nice", "--inh-caps=-sys_nice",
                   sys.executable, "-c", code]
    else:
        command = [sys.executable, "-c", code]
    r = subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT,
                       env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", str(os.getpriority(os.PRIO_PROCESS, 0))]
    assert "sampler thread stays at the normal nice value (nice -10 refused" in r.stderr


# -- cgroup mode: the discoverer reads a cgroup's list and memory.stat only when needed ---

def cgroup_working_set(directory: Path) -> int:
    stat = dict(line.split() for line in (directory / "memory.stat").read_text().splitlines())
    return int((directory / "memory.usage_in_bytes").read_text()) - int(
        stat["total_inactive_file"])


@pytest.fixture
def in_own_cgroup(memory_cgroup):
    """Start processes (`sleep` by default) in `memory_cgroup`, or outside it; all killed at
    teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(inside: bool = True, command: list[str] | None = None) -> subprocess.Popen[bytes]:
        command = command or ["sleep", "600"]
        p = subprocess.Popen([*(in_cgroup(memory_cgroup) if inside else []), *command],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        started.append(p)
        if inside:
            wait_until(lambda: str(p.pid) in (memory_cgroup / "cgroup.procs").read_text(),
                       what="the process in its cgroup")
        return p

    yield start
    for p in started:
        with contextlib.suppress(ProcessLookupError):
            p.kill()
        p.wait(timeout=10)


def watch_cgroup(s: Sampler, key: str, root: int, directory: Path) -> CgroupMemory:
    cgroup = CgroupMemory.at(str(directory), 1)
    s.watch(key, root, CgroupTree(root, str(directory / "cgroup.procs")), cgroup)
    return cgroup


def test_cgroup_members_moved_in_or_gone_are_followed(make_sampler, memory_cgroup,
                                                      in_own_cgroup):
    # With no process created and none gone, rounds do not read the cgroup's list; a
    # process written into it by hand is found by the verification round all the same.
    s, _ = make_sampler(measure="cgroup")
    root = in_own_cgroup()
    watch_cgroup(s, "w", root.pid, memory_cgroup)
    wait_until(lambda: s.view("w").pids == (root.pid,), what="the root")
    other = in_own_cgroup(inside=False)
    rounds = s.stats.discoveries
    wait_until(lambda: s.stats.discoveries > rounds + 2, what="rounds after its creation")
    (memory_cgroup / "cgroup.procs").write_text(str(other.pid))
    wait_until(lambda: set(s.view("w").pids) == {root.pid, other.pid}, what="the moved process")
    other.kill()
    other.wait(timeout=10)
    wait_until(lambda: s.view("w").pids == (root.pid,), what="the dead member dropped")


def test_cgroup_page_cache_written_is_not_counted(make_sampler, memory_cgroup, in_own_cgroup,
                                                  tmp_path):
    # 64 MiB of new page cache: usage jumps, the working set hardly moves. The figure must
    # follow the working set (memory.stat is read again when usage moves).
    s, _ = make_sampler(measure="cgroup")
    writer = in_own_cgroup(command=[*python(
        "import sys\n"
        "sys.stdin.readline()\n"
        "with open(sys.argv[1], 'wb') as f:\n"
        "    for _ in range(64):\n"
        "        f.write(b'x' * (1 << 20))\n"
        "print('done', flush=True)\n"
        "sys.stdin.read()\n"), str(tmp_path / "cache.bin")])
    watch_cgroup(s, "w", writer.pid, memory_cgroup)
    wait_until(lambda: s.view("w").memory > 0 and s.stats.discoveries > 3, what="a figure")
    usage_before = int((memory_cgroup / "memory.usage_in_bytes").read_text())
    assert writer.stdin is not None and writer.stdout is not None
    writer.stdin.write(b"go\n")
    writer.stdin.flush()
    assert writer.stdout.readline() == b"done\n"
    assert int((memory_cgroup / "memory.usage_in_bytes").read_text()) > usage_before + 32 * MiB

    def near() -> bool:
        want = cgroup_working_set(memory_cgroup)
        return abs(s.view("w").memory - want) <= max(0.2 * want, 8 * MiB)

    wait_until(near, what="the figure back at the working set")
    assert s.view("w").memory < usage_before + 16 * MiB

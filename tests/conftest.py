"""Shared test tools: bounded waits and memwarden processes that are always cleaned up."""

from __future__ import annotations

import contextlib
import os
import pathlib
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
T = TypeVar("T")


@pytest.fixture(autouse=True)
def private_runtime_dir(tmp_path_factory: pytest.TempPathFactory,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test's memwarden keeps its default control socket in a directory of its own: a
    memwarden running elsewhere on the host (or left by another test) must not answer it."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path_factory.mktemp("run")))


def wait_until(condition: Callable[[], T], timeout: float = 20.0, what: str = "condition") -> T:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def descendants(pid: int) -> list[int]:
    """Every process below `pid`, from a /proc scan (test-side, independent of supervisor code)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process started by a test and everything below it, then collect it."""
    for pid in [proc.pid, *descendants(proc.pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


# A process tree: holds `mb` MiB, starts `kids` copies of itself (each holding `mb` MiB and
# not growing), then grows by `step` MiB every `every` seconds up to `top` MiB; says "ready"
# once its own block and children exist, reaps its children as they exit, in any order (a
# killed child must not stay a zombie: a zombie is still a process of the tree), and exits
# when its stdin closes.
TREE = r"""
import os, subprocess, sys, threading, time
mb, kids, step, every, top, me = sys.argv[1:7]
mb, kids, step, every, top = int(mb), int(kids), int(step), float(every), int(top)
procs = [subprocess.Popen([sys.executable, "-c", me, str(mb), "0", "0", "1", "0", me],
                          stdout=subprocess.DEVNULL)  # only the root says ready
         for _ in range(kids)]
held = [b"\x01" * (mb * 1024 * 1024)]
def grow():
    total = mb
    while step and total < top:
        time.sleep(every)
        held.append(b"\x01" * (step * 1024 * 1024))
        total += step
threading.Thread(target=grow, daemon=True).start()
print("ready", flush=True)
for _ in procs:
    os.wait()
sys.stdin.read()
"""


@pytest.fixture
def spawn_tree() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start TREE processes, each in a process group of its own; return once one says "ready"
    (20 s at most). Every group is killed at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(mb: int = 0, kids: int = 0, step: int = 0, every: float = 1.0,
              top: int = 0) -> subprocess.Popen[bytes]:
        args = [str(mb), str(kids), str(step), str(every), str(top), TREE]
        p = subprocess.Popen([*python(TREE), *args], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, start_new_session=True)
        started.append(p)
        assert p.stdout is not None
        ready, _, _ = select.select([p.stdout], [], [], 20)
        assert ready and p.stdout.readline() == b"ready\n", "child did not start"
        return p

    yield start
    for p in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait(timeout=10)


class Memwarden:
    """A `memwarden` process started by a test, its output going to files."""

    def __init__(self, args: list[str], tmp: pathlib.Path, *, prefix: list[str] | None = None,
                 **popen: object) -> None:
        self.out = tmp / "memwarden.out"
        self.err = tmp / "memwarden.err"
        env = dict(os.environ)
        env.setdefault("MEMWARDEN_SNAPSHOTS", str(tmp / "snapshots"))
        env.update(popen.pop("env", {}) or {})  # type: ignore[arg-type]
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                [*(prefix or []), sys.executable, "-m", "supervisor", *args],
                stdout=popen.pop("stdout", out), stderr=err, cwd=popen.pop("cwd", ROOT),
                env=env, **popen,  # type: ignore[arg-type]
            )
        self.pid = self.proc.pid

    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"memwarden did not exit within {timeout:g}s; stderr:\n{self.stderr()}") from None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def kill_tree(self) -> None:
        kill_tree(self.proc)


@pytest.fixture
def memwarden(tmp_path: pathlib.Path) -> Iterator[Callable[..., Memwarden]]:
    """Start memwarden processes; every one (and its tree) is killed at teardown."""
    started: list[Memwarden] = []

    def start(*args: str, prefix: list[str] | None = None, **popen: object) -> Memwarden:
        m = Memwarden(list(args), tmp_path, prefix=prefix, **popen)
        started.append(m)
        return m

    yield start
    for m in started:
        m.kill_tree()


@pytest.fixture(params=["c", "python"])
def ticker(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each of the sampler's tickers in turn: the name to pass to `Sampler(ticker=...)`, also
    set in MEMWARDEN_TICKER for the memwarden processes the test starts. The compiled one is
    skipped where it is not built (`test_ticker.py` checks it is built wherever it can be)."""
    from supervisor.sensing import ticker as ticking

    if request.param == "c" and not ticking.BUILT:
        pytest.skip("the compiled ticker (supervisor.sensing._ticker) is not built here")
    monkeypatch.setenv("MEMWARDEN_TICKER", request.param)
    return request.param


def own_v1_memory_cgroup() -> pathlib.Path | None:
    """Our own cgroup v1 memory directory, when the machine has that controller mounted."""
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if "memory" in controllers.split(","):
                directory = pathlib.Path("/sys/fs/cgroup/memory" + path)
                return directory if (directory / "memory.limit_in_bytes").exists() else None
    return None


@pytest.fixture
def memory_cgroup() -> Iterator[pathlib.Path]:
    """A fresh v1 memory cgroup under our own; its tasks are killed and it is removed after."""
    if os.geteuid() != 0:
        pytest.skip("creating a memory cgroup needs root")
    parent = own_v1_memory_cgroup()
    if parent is None:
        pytest.skip("no cgroup v1 memory controller on this machine")
    child = parent / f"memwarden-test-{os.getpid()}-{time.monotonic_ns()}"
    child.mkdir()
    try:
        yield child
    finally:
        remove_cgroup(child)


def remove_cgroup(top: pathlib.Path) -> None:
    """Kill every task below `top` (memwarden's own cgroups included), then remove it all."""
    deadline = time.monotonic() + 10
    while True:  # the kernel refuses while a task is still being torn down
        dirs = [pathlib.Path(d) for d, _, _ in os.walk(top, topdown=False)]
        for d in dirs:
            for pid in (d / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
        try:
            for d in dirs:
                d.rmdir()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def in_cgroup(directory: pathlib.Path) -> list[str]:
    """A command prefix that moves itself into `directory`, then execs the rest."""
    return ["sh", "-c", f'echo $$ > {directory}/cgroup.procs && exec "$@"', "sh"]


def python(code: str) -> list[str]:
    """A worker command running `code` in this interpreter."""
    return [sys.executable, "-c", code]


def needs_root() -> pytest.MarkDecorator:
    return pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, cgroups, mounts)")

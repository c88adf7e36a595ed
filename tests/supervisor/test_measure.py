"""What a worker really holds, with the programs users run: a prefork tree, gunicorn with
--preload, headless Chromium with several tabs, a double-forked helper. Each figure
memwarden compares is checked against an independent reading, the working set of a cgroup
holding just that tree (in cgroup mode the generation's own; in pss mode one the test puts
the worker in), as kubelet computes it: usage minus inactive file cache."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import pytest

from tests.conftest import ROOT, alive, in_cgroup, needs_root, wait_until
from tests.supervisor.browser import DRIVER

# Each test runs with each sampler ticker (MEMWARDEN_TICKER, set by the `ticker` fixture);
# real programs (Chromium, gunicorn) for seconds each: the full suite only.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240), pytest.mark.usefixtures("ticker")]

MODES = ["cgroup", "pss"]
LAX = ["--medium", "20GB", "--high", "30GB", "--critical", "40GB", "--ready-after", "0.3s"]


def ctl(sock: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor", *args, "--control", str(sock)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def workers(sock: pathlib.Path) -> list[dict]:
    r = ctl(sock, "status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout).get("workers", [])


def cgroup_dir(pid: int) -> pathlib.Path:
    for line in pathlib.Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return pathlib.Path("/sys/fs/cgroup/memory" + path)
    raise AssertionError("no memory cgroup")


def working_set(directory: pathlib.Path) -> int:
    """usage minus inactive file cache, as kubelet computes it."""
    stat = dict(line.split() for line in (directory / "memory.stat").read_text().splitlines())
    usage = int((directory / "memory.usage_in_bytes").read_text())
    return usage - int(stat.get("total_inactive_file", 0))


def settled(sock: pathlib.Path, procs: int) -> dict:
    """The one worker, ready, once its whole tree is seen and listed."""
    def one() -> dict | None:
        ws = workers(sock)
        return ws[0] if len(ws) == 1 and ws[0]["state"] == "ready" \
            and (ws[0].get("procs") or 0) >= procs and len(ws[0]["members"]) >= procs else None
    return wait_until(one, timeout=90, what=f"a tree of {procs} processes")


def close_to(sock: pathlib.Path, expected, what: str, share: float = 0.2) -> dict:
    """Wait (bounded) until memwarden's figure is within `share` of `expected()`: in pss mode
    every process's share is read within a CPU budget, a few seconds after it appears."""
    seen: list[tuple[int, int]] = []

    def near() -> dict | None:
        w = workers(sock)[0]
        want = expected()
        seen.append((w["memory"], want))
        return w if abs(w["memory"] - want) <= share * want else None
    try:
        return wait_until(near, timeout=90, what=what)
    except AssertionError:
        raise AssertionError(f"{what}: last (memwarden, expected) {seen[-3:]}") from None


@pytest.fixture
def run(memwarden, memory_cgroup, tmp_path):
    """Start memwarden in a mode; return it, its control socket, and the reference: the
    working set of the cgroup holding the worker's tree (in pss mode the worker is started
    in the test's own cgroup for that)."""
    def start(mode: str, *command: str, extra: tuple[str, ...] = ()):
        sock = tmp_path / f"ctl-{mode}"
        prefix = in_cgroup(memory_cgroup) if mode == "pss" else []
        m = memwarden("run", "--measure", mode, "--control", str(sock), "--snapshots", "",
                      *LAX, *extra, "--", *prefix, *command)
        wait_until(sock.exists, what="the control socket")

        def reference() -> int:
            if mode == "pss":
                return working_set(memory_cgroup)
            return working_set(cgroup_dir(workers(sock)[0]["pid"]))
        return m, sock, reference
    return start


PREFORK = r"""
import os, sys, time
data = bytearray(400 << 20)
for i in range(0, len(data), 4096):
    data[i] = 1  # resident in the parent
for n in range(7):
    if os.fork() == 0:
        view, total = memoryview(data), 0
        for i in range(0, len(data), 4096):
            total += view[i]  # read only: the pages stay shared
        open(f"{sys.argv[1]}.{n}", "w").close()
        while True:
            time.sleep(1)
while True:
    time.sleep(1)
"""


@needs_root()
@pytest.mark.parametrize("mode", MODES)
def test_a_prefork_tree_is_measured_as_what_it_holds(run, tmp_path, mode) -> None:
    marks = tmp_path / "kid"
    _, sock, reference = run(mode, sys.executable, "-c", PREFORK, str(marks))
    wait_until(lambda: len(list(tmp_path.glob("kid.*"))) == 7, what="seven children")
    w = settled(sock, 8)
    assert len(w["members"]) == 8
    w = close_to(sock, reference, f"the prefork tree ({mode})")
    # Summed RSS counts the 400 MB eight times; what the tree holds is about 0.45 GB.
    assert w["rss"] > 3 * w["memory"], w
    assert w["memory"] < 700_000_000, w


GUNICORN_APP = """
BIG = bytearray(150 << 20)
for i in range(0, len(BIG), 4096):
    BIG[i] = 1


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""


@needs_root()
@pytest.mark.parametrize("mode", MODES)
def test_gunicorn_with_preload_and_eight_workers(run, tmp_path, mode) -> None:
    gunicorn = shutil.which("gunicorn", path=os.path.dirname(sys.executable))
    if gunicorn is None:
        pytest.skip("gunicorn is not installed (it comes with the dev extras)")
    (tmp_path / "app.py").write_text(GUNICORN_APP)
    _, sock, reference = run(mode, gunicorn, "--preload", "-w", "8", "-b", "127.0.0.1:0",
                             "--chdir", str(tmp_path), "app:app")
    w = settled(sock, 9)
    listed = [(m["pid"], m["name"]) for m in w["members"]]
    assert len(listed) == 9 and all("gunicorn" in n for _, n in listed), listed
    w = close_to(sock, reference, f"gunicorn --preload -w 8 ({mode})")
    assert w["rss"] > 3 * w["memory"], w


def chromium_pids(profile: pathlib.Path, generation: int | str = "") -> list[int]:
    """Chromium processes of one generation's profile (or of every generation's)."""
    out = subprocess.run(["pgrep", "-f", f"user-data-dir={profile}-{generation}"],
                         capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@needs_root()
@pytest.mark.skipif(shutil.which("chromium") is None,
                    reason="Debian's chromium is not installed (.ci/run installs it)")
@pytest.mark.parametrize("mode", MODES)
def test_headless_chromium_with_tabs(run, tmp_path, mode) -> None:
    profile, up = tmp_path / f"profile-{mode}", tmp_path / "browser"
    try:
        _, sock, reference = run(mode, sys.executable, "-c", DRIVER, str(profile), "4", "3000000",
                                 "0", str(up), extra=("--grace", "5s"))
        first = tmp_path / "browser-1"
        wait_until(lambda: first.exists() and first.read_text(), timeout=90,
                   what="chromium and 4 tabs")
        w = settled(sock, 8)
        w = close_to(sock, reference, f"chromium with 4 tabs ({mode})")
        assert w["rss"] > 1.5 * w["memory"], w
        # Every process of the tree is listed, biggest first.
        tree = set(chromium_pids(profile, 1)) | {w["pid"]}
        listed = [m["pid"] for m in w["members"]]
        assert tree <= set(listed), (tree, listed)
        sizes = [m["rss"] for m in w["members"]]
        assert sizes == sorted(sizes, reverse=True)
        old = chromium_pids(profile, 1)
        assert ctl(sock, "replace", "worker").returncode == 0
        wait_until(lambda: [x["generation"] for x in workers(sock)] == [2], timeout=60,
                   what="generation 1 retired")
        wait_until(lambda: not any(alive(p) for p in old), timeout=5,
                   what="no chromium of generation 1 left 5 s after its retirement")
    finally:
        for pid in chromium_pids(profile):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


# The worker double-forks a helper that holds 200 MB and leaves memwarden's sight: its
# parent exits, it is re-parented to memwarden, in a session of its own.
DOUBLE_FORK = r"""
import os, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        held = bytearray(200 << 20)
        for i in range(0, len(held), 4096):
            held[i] = 1
        open(sys.argv[1] + "." + os.environ["MEMWARDEN_GENERATION"], "w").write(str(os.getpid()))
        while True:
            time.sleep(1)
    os._exit(0)
while True:
    time.sleep(1)
"""


@needs_root()
@pytest.mark.parametrize("mode", MODES)
def test_a_double_forked_helper_is_counted_and_stopped_with_its_generation(
        run, tmp_path, mode) -> None:
    marks = tmp_path / "helper"
    _, sock, _ = run(mode, sys.executable, "-c", DOUBLE_FORK, str(marks))
    first = tmp_path / "helper.1"
    helper = int(wait_until(lambda: first.exists() and first.read_text(), what="the helper"))
    w = wait_until(lambda: (x := workers(sock)) and x[0]["memory"] > 200_000_000
                   and x[0]["state"] == "ready" and x[0],
                   timeout=60, what="the helper's 200 MB counted in its ready worker")
    assert helper in [m["pid"] for m in w["members"]]
    assert ctl(sock, "replace", "worker").returncode == 0
    wait_until(lambda: not alive(helper), timeout=30, what="the helper stopped with generation 1")
    second = tmp_path / "helper.2"
    wait_until(lambda: second.exists() and second.read_text(), what="generation 2's helper")
    assert alive(int(second.read_text()))


@needs_root()
def test_a_retired_generations_cgroup_is_removed(run, tmp_path) -> None:
    m, sock, _ = run("cgroup", "sleep", "600")
    w = wait_until(lambda: (x := workers(sock)) and x[0]["state"] == "ready" and x[0],
                   what="generation 1 ready")
    first = cgroup_dir(w["pid"])
    assert first.name == "worker.1" and first.parent.name.startswith(f"memwarden-{m.pid}-")
    assert ctl(sock, "replace", "worker").returncode == 0
    wait_until(lambda: not first.exists(), timeout=30, what="generation 1's cgroup removed")
    instance = first.parent
    m.signal(signal.SIGTERM)
    m.wait(30)
    assert not instance.exists()


# Starts a grandchild that takes no parent-death signal, in a session of its own.
LINGER = r"""
import os, subprocess, sys, time
kid = subprocess.Popen(["sleep", "600"], start_new_session=True)
open(sys.argv[1], "w").write(str(kid.pid))
while True:
    time.sleep(1)
"""


@needs_root()
def test_a_killed_memwardens_cgroups_are_emptied_at_the_next_start(
        memwarden, memory_cgroup, tmp_path) -> None:
    marks = tmp_path / "lingering"
    first = memwarden("run", "--control", "", "--snapshots", "", "--", sys.executable, "-c",
                      LINGER, str(marks), prefix=in_cgroup(memory_cgroup))
    lingering = int(wait_until(lambda: marks.exists() and marks.read_text(), what="grandchild"))
    stale = wait_until(lambda: [d for d in memory_cgroup.iterdir()
                                if d.name.startswith("memwarden-")], what="its cgroup")
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    assert alive(lingering) and stale[0].exists()  # left behind
    second = memwarden("run", "--control", "", "--snapshots", "", "--ready-after", "0.1s",
                       "--", "true", prefix=in_cgroup(memory_cgroup))
    assert second.wait(60) == 0
    assert "emptied and removed 1 cgroup(s) left by a memwarden that was killed" in \
        second.stderr()
    wait_until(lambda: not alive(lingering), what="the lingering grandchild killed")
    assert not stale[0].exists()


@needs_root()
def test_where_cgroups_are_read_only_auto_falls_back_and_cgroup_is_refused(tmp_path) -> None:
    # As in an unprivileged container: memwarden's own cgroup mounted read-only.
    own = cgroup_dir(os.getpid())
    script = (f"mount --bind {own} {own} && mount -o bind,remount,ro {own} && "
              f'exec "$@"')
    base = ["unshare", "--mount", "sh", "-c", script, "sh", sys.executable, "-m", "supervisor",
            "run", "--snapshots", "", "--control", "", "--ready-after", "0.1s"]
    refused = subprocess.run([*base, "--measure", "cgroup", "--", "true"], capture_output=True,
                             text=True, timeout=60, cwd=ROOT)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.count("\n") == 1
    assert "--measure cgroup: not possible here: " in refused.stderr
    assert "is not writable" in refused.stderr
    auto = subprocess.run([*base, "--", "true"], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)
    assert auto.returncode == 0, auto.stderr
    assert "memory measured by pss: no cgroup of its own for each generation" in auto.stderr

"""A retired generation stays visible while what it left is stopped: its main process
gone, a 200 MB process of its tree still charged to its cgroup is in `status --json`
(role `retiring`, its figure and members) until it is gone and the cgroup removed."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

from tests.conftest import ROOT, alive, needs_root, python, wait_until

pytestmark = pytest.mark.timeout(180)

MB = 1_000_000

# Generation 1 leaves behind a child holding 200 MB that ignores TERM (KILLed after the
# grace); its main process exits at TERM. Later generations hold nothing.
LEAVES_200MB = """
import os, signal, sys, time
if os.environ["MEMWARDEN_GENERATION"] == "1" and os.fork() == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    kept = bytearray(200 * 1000 * 1000)
    for i in range(0, len(kept), 4096):
        kept[i] = 1
    with open(sys.argv[1], "w") as f:
        f.write(str(os.getpid()))
    while True:
        time.sleep(1)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
while True:
    time.sleep(1)
"""


def _ctl(sock: pathlib.Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor", *args, "--control", str(sock)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def _generation(sock: pathlib.Path, number: int) -> dict | None:
    listening = sock.exists()  # looked at before asking: the socket may appear meanwhile
    r = _ctl(sock, "status", "--json")
    assert r.returncode == 0 or not listening, r.stderr  # not listening yet: no socket
    if r.returncode != 0:
        return None
    return next((w for w in json.loads(r.stdout).get("workers", [])
                 if w["generation"] == number), None)


def _memory_cgroup(pid: int) -> pathlib.Path:
    for line in pathlib.Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(",") or controllers == "":
            base = "/sys/fs/cgroup/memory" if controllers else "/sys/fs/cgroup"
            return pathlib.Path(base + path)
    raise AssertionError(f"no memory cgroup for {pid}")


@needs_root()
@pytest.mark.slow
def test_a_retired_generations_leftover_stays_in_status_until_its_cgroup_is_gone(
        memwarden, tmp_path) -> None:
    sock = tmp_path / "ctl.sock"
    pidfile = tmp_path / "leftover.pid"
    m = memwarden("run", "--measure", "cgroup", "--ready-after", "0.3s", "--grace", "6s",
                  "--medium", "2GB", "--high", "3GB", "--critical", "4GB",
                  "--control", str(sock), "--", *python(LEAVES_200MB), str(pidfile))
    first = wait_until(lambda: (g := _generation(sock, 1)) and g["state"] == "ready"
                       and (g["memory"] or 0) >= 190 * MB and pidfile.exists() and g,
                       timeout=60, what="generation 1 ready holding 200 MB")
    leftover = int(pidfile.read_text())
    cgroup = _memory_cgroup(leftover)
    assert cgroup.name == "worker.1", cgroup
    assert _ctl(sock, "replace", "worker").returncode == 0
    # Generation 1's main process exits at TERM; the leftover ignores it.
    wait_until(lambda: not alive(first["pid"]), what="generation 1's main process to exit")
    seen = wait_until(lambda: (g := _generation(sock, 1)) and g, what="generation 1 listed")
    assert seen["role"] == "retiring" and seen["state"] == "retiring", seen
    assert seen["memory"] >= 190 * MB, seen
    assert [x["pid"] for x in seen["members"]] == [leftover], seen
    assert cgroup.exists() and alive(leftover)
    # Until the leftover is KILLed (after the 6 s grace) and the cgroup removed.
    wait_until(lambda: _generation(sock, 1) is None, timeout=60,
               what="generation 1 gone from status")
    assert not cgroup.exists(), f"{cgroup} still there while status no longer lists it"
    assert not alive(leftover)
    log = m.stderr()
    assert "exited with status 0" in log and "(retired)" in log, log[-2000:]

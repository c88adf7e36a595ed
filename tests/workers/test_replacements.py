"""Twenty replacements of a running Automaton under the real supervisor, make before break,
half of them with the new generation killed by SIGKILL at a random moment: every object a
generation acknowledged as saved is in the state file afterwards."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import alive, descendants
from tests.workers.conftest import ROOT, wait_until
from tests.workers.test_shared_state import (
    SHARED,
    _no_deleted_state_fds,
    acks_of,
    assert_all_acked_saved,
    read_acks,
)

pytestmark = pytest.mark.timeout(600)

ROUNDS = 20


def ctl(sock: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "supervisor", *args, "--control", str(sock)],
                          capture_output=True, text=True, timeout=30, cwd=ROOT)


def workers_now(sock: Path) -> list[dict[str, object]]:
    r = ctl(sock, "status", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout).get("workers", [])  # omitted while none runs


def settled(sock: Path) -> dict[str, object] | None:
    """The one live generation, once it is ready and alone."""
    ws = workers_now(sock)
    if len(ws) == 1 and ws[0]["state"] == "ready" and alive(int(ws[0]["pid"])):  # type: ignore[call-overload]
        return ws[0]
    return None


@pytest.mark.slow
def test_twenty_replacements_with_kills_lose_nothing_acknowledged(memwarden, tmp_path) -> None:
    path, ackdir, sock = tmp_path / "automaton.jsonl", tmp_path / "acks", tmp_path / "ctl.sock"
    ackdir.mkdir()
    config = tmp_path / "memwarden.toml"
    # Room for every object of every generation: the test is about loss, not the bound.
    config.write_text("[profiles.normal]\nmax_objects = 1000000\n")
    m = memwarden("run", "--config", str(config), "--control", str(sock), "--snapshots", "",
                  "--grace", "5s", "--restart", "always", "--restart-budget", "100",
                  "--backoff-initial", "100ms", "--backoff-max", "500ms",
                  "--", sys.executable, str(SHARED), str(path), str(ackdir))
    wait_until(sock.exists, what="the control socket")
    current = wait_until(lambda: settled(sock), what="generation 1 ready")

    rng = random.Random(11)
    killed_rounds = set(rng.sample(range(ROUNDS), ROUNDS // 2))
    overlapped = 0
    moments: list[str] = []
    for r in range(ROUNDS):
        before = int(current["generation"])  # type: ignore[call-overload]
        old_pid = int(current["pid"])  # type: ignore[call-overload]
        answer = ctl(sock, "replace", "worker")
        assert answer.returncode == 0, answer.stdout + answer.stderr
        # Found in /proc rather than by `status`, which takes as long as a start.
        pid = wait_until(lambda o=old_pid: next((p for p in descendants(m.pid) if p != o
                                                 and alive(p)), None),
                         what=f"round {r}: the new generation's process")
        if r in killed_rounds:
            # A random moment: while the interpreter starts, while it loads, while both
            # generations write before it is ready, or after.
            time.sleep(rng.uniform(0.0, 0.4))
            acks = [a for f in ackdir.glob(f"*-{pid}.acks") for a in f.read_text().split("\n")]
            os.kill(pid, signal.SIGKILL)
            moments.append("after ready" if any(a.startswith("seen") for a in acks)
                           else f"before ready ({max(len(acks) - 1, 0)} writes)")
        else:
            wait_until(lambda o=old_pid: not alive(o), what=f"round {r}: generation {before} "
                       "retired")
            gen = next(int(f.name.split("-")[0]) for f in ackdir.glob(f"*-{pid}.acks"))
            assert gen > before
            seen = [x for x in acks_of(ackdir, gen, pid) if x.startswith("seen")]
            assert seen and seen[0] != "seen 0", f"round {r}: generations did not overlap"
            overlapped += 1
        current = wait_until(lambda: settled(sock), what=f"round {r}: one ready generation")
        for w in workers_now(sock):
            _no_deleted_state_fds(int(w["pid"]), path)  # type: ignore[call-overload]

    assert ctl(sock, "stop").returncode == 0
    m.wait(60)
    acked = assert_all_acked_saved(path, ackdir)
    _, markers = read_acks(ackdir)
    print(f"{ROUNDS} replacements ({len(killed_rounds)} killed), {overlapped} overlapped, "
          f"{len(markers)} generations, {acked} objects acknowledged, all in the file; "
          f"kills: {', '.join(moments)}")
    assert overlapped == ROUNDS - len(killed_rounds)

"""Two generations on one state file: nothing acknowledged is lost, the newest write wins,
no process writes into a replaced file, whatever order shutdown, SIGTERM, SIGKILL and a
new generation's load come in."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workers.conftest import ROOT, Spawner, SupervisorEnd, wait_until
from workers import statefile
from workers.automaton import Automaton
from workers.client import Client
from workers.protocol import Limits, Shutdown

pytestmark = pytest.mark.timeout(180)

SHARED = ROOT / "tests" / "workers" / "shared_automaton.py"
BIG = Limits(max_objects=1_000_000)


def make(path: Path, limits: Limits = BIG) -> Automaton:
    return Automaton(str(path), client=Client(), limits=limits)


def file_ids(path: Path) -> dict[object, dict[str, object]]:
    return {k: obj for k, (obj, _) in statefile.load(str(path), 10**9).objects.items()}


def line_count(path: Path) -> int:
    return len(path.read_bytes().splitlines())


def test_two_loaders_share_one_file_and_the_newest_write_wins(tmp_path: Path) -> None:
    path = tmp_path / "automaton.jsonl"
    old, new = make(path), make(path)
    old.load()
    old.add({"id": "a1", "v": 1})
    new.load()
    assert new.get("a1") == {"id": "a1", "v": 1}
    old.add({"id": "a2", "v": 1})
    old.put({"id": "a1", "v": 2})
    new.add({"id": "b1", "v": 1})  # catches up first: the old one's writes are taken in
    assert new.get("a1") == {"id": "a1", "v": 2} and new.get("a2") == {"id": "a2", "v": 1}
    new.put({"id": "a1", "v": 3})
    old.refresh()
    assert old.get("a1") == {"id": "a1", "v": 3}
    assert old.duplicates == [] and new.duplicates == []  # revisions rise across both

    lines = line_count(path)
    old.save()  # superseded: leaves compaction to the newer loader
    assert line_count(path) == lines
    new.save()
    assert line_count(path) == 3
    old.add({"id": "a3", "v": 1})  # after the newer one replaced the file: reload, append
    assert old.get("b1") == {"id": "b1", "v": 1}
    assert {k: o["v"] for k, o in file_ids(path).items()} == {"a1": 3, "a2": 1, "b1": 1,
                                                            "a3": 1}
    new.close()
    old.close()


def two_generations(path: Path, objects: int) -> tuple[Automaton, Automaton]:
    """An old generation that wrote `objects` objects, and a new one that loaded them."""
    old = make(path)
    for i in range(objects):
        old.add({"id": i})
    new = make(path)
    assert new.load() == objects
    return old, new


def test_the_older_loader_is_in_charge_again_once_the_newer_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "automaton.jsonl"
    old, new = two_generations(path, 10)
    assert old._file.superseded()
    new.close()  # releases its loader lock, as a death would
    assert not old._file.superseded()
    old.add({"id": 10})
    old.save()
    assert line_count(path) == 11
    old.close()


def test_a_superseded_trim_keeps_what_the_newer_generation_loaded(tmp_path: Path) -> None:
    path = tmp_path / "automaton.jsonl"
    old, new = two_generations(path, 100)
    old.trim(0.5)
    assert len(old.objects) == 50
    assert len(file_ids(path)) == 100
    new.save()
    assert len(file_ids(path)) == 100
    new.trim(0.5)  # the newest loader's trim is saved
    assert len(file_ids(path)) == 50
    old.close()
    new.close()


def test_a_torn_line_of_a_dead_writer_is_cut_before_the_next_append(tmp_path: Path) -> None:
    path = tmp_path / "automaton.jsonl"
    a = make(path)
    a.add({"id": "x"})
    with open(path, "ab") as f:  # what a writer killed in the middle of a write leaves
        f.write(b'{"id":"torn","pad":"')
    a.add({"id": "y"})
    assert list(file_ids(path)) == ["x", "y"]
    a.close()


def _no_deleted_state_fds(pid: int, path: Path) -> None:
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except FileNotFoundError:
        return  # it has exited
    for fd in fds:
        try:
            target = os.readlink(fd)
        except FileNotFoundError:
            continue  # closed while we looked
        assert not (target.startswith(str(path)) and target.endswith("(deleted)")), \
            f"pid {pid} holds {target}"


def read_acks(ackdir: Path) -> tuple[dict[str, int], dict[str, list[str]]]:
    """Return (id -> highest acknowledged v, acks file -> its marker lines)."""
    acked: dict[str, int] = {}
    markers: dict[str, list[str]] = {}
    for f in ackdir.glob("*.acks"):
        markers[f.name] = []
        for line in f.read_bytes().split(b"\n"):
            parts = line.decode().split()
            if len(parts) != 2:
                continue  # the empty tail, or a line a kill cut short
            if parts[0] in ("seen", "stopped"):
                markers[f.name].append(" ".join(parts))
            else:
                acked[parts[0]] = max(acked.get(parts[0], -1), int(parts[1]))
    return acked, markers


def assert_all_acked_saved(path: Path, ackdir: Path) -> int:
    acked, _ = read_acks(ackdir)
    held = file_ids(path)
    missing = sorted(set(acked) - set(held))
    assert not missing, f"{len(missing)} acknowledged objects lost, e.g. {missing[:5]}"
    # The newest write wins: what the file holds is the last acknowledged value, or a
    # later write whose acknowledgement a kill cut off.
    stale = [k for k, v in acked.items() if int(held[k]["v"]) < v]  # type: ignore[call-overload]
    assert not stale, f"older values won for {stale[:5]}"
    return len(acked)


def acks_of(ackdir: Path, gen: int, pid: int) -> list[str]:
    f = ackdir / f"{gen}-{pid}.acks"
    return f.read_text().splitlines() if f.exists() else []


def start_generation(spawn: Spawner, gen: int, path: Path, ackdir: Path
                     ) -> tuple[subprocess.Popen[bytes], SupervisorEnd]:
    proc, sup = spawn([sys.executable, str(SHARED), str(path), str(ackdir)], limits=BIG,
                      env={"MEMWARDEN_GENERATION": str(gen)})
    assert sup is not None
    return proc, sup


def retire(proc: subprocess.Popen[bytes], sup: SupervisorEnd, how: str) -> int:
    """Stop a generation the way the supervisor might; return its exit status."""
    if how in ("shutdown", "shutdown+term"):
        sup.send(Shutdown(grace_s=5.0, reason="test"))
    if how in ("shutdown+term", "term"):
        os.kill(proc.pid, signal.SIGTERM)
    if how == "kill":
        os.kill(proc.pid, signal.SIGKILL)
    return proc.wait(timeout=60)


@pytest.mark.parametrize("how", ["shutdown", "shutdown+term", "term", "kill"])
def test_retiring_either_way_while_the_next_generation_writes(
        spawn: Spawner, tmp_path: Path, how: str) -> None:
    path, ackdir = tmp_path / "automaton.jsonl", tmp_path / "acks"
    ackdir.mkdir()
    old, old_sup = start_generation(spawn, 1, path, ackdir)
    old_sup.expect("ready")
    wait_until(lambda: len(acks_of(ackdir, 1, old.pid)) > 50, what="generation 1 writing")
    new, new_sup = start_generation(spawn, 2, path, ackdir)
    new_sup.expect("ready")
    seen = next(x for x in acks_of(ackdir, 2, new.pid) if x.startswith("seen"))
    assert seen != "seen 0", "generation 2 never saw a write of generation 1"

    status = retire(old, old_sup, how)
    assert status == (-signal.SIGKILL if how == "kill" else 0)
    if how != "kill":
        # Whichever of the message and the signal the loop noticed first.
        stopped = {"shutdown": {"shutdown"}, "shutdown+term": {"shutdown", "SIGTERM"},
                   "term": {"SIGTERM"}}[how]
        assert acks_of(ackdir, 1, old.pid)[-1].split()[-1] in stopped
    # Generation 2 compacts from now on; it never writes into a replaced file.
    count = len(acks_of(ackdir, 2, new.pid))
    for _ in range(3):
        count = wait_until(lambda c=count: (n := len(acks_of(ackdir, 2, new.pid))) > c + 45
                           and n, what="generation 2 compacting")
        _no_deleted_state_fds(new.pid, path)

    status = retire(new, new_sup, how)
    assert status == (-signal.SIGKILL if how == "kill" else 0)
    assert assert_all_acked_saved(path, ackdir) > 100


FORKER = """
import os, sys, time
from workers import statefile
sf = statefile.StateFile(sys.argv[1])
sf.load(10)
with sf.locked(10):
    child = os.fork()
    if child == 0:
        try:
            with sf.locked(10):
                pass
        except RuntimeError as e:  # one write each: two processes share the pipe
            sys.stdout.write(f"child: {e}\\n")
            sys.stdout.flush()
        time.sleep(60)
        os._exit(0)
    sys.stdout.write(f"{child}\\n")
    sys.stdout.flush()
    time.sleep(60)  # killed here by the test, the mutex held
"""


def test_a_forked_child_does_not_keep_its_dead_parents_lock(tmp_path: Path) -> None:
    path = tmp_path / "automaton.jsonl"
    parent = subprocess.Popen([sys.executable, "-c", FORKER, str(path)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
    child = 0
    try:
        assert parent.stdout is not None
        lines = [parent.stdout.readline(), parent.stdout.readline()]
        child = int(next(x for x in lines if x.strip().isdigit()))
        assert any("a forked child cannot write" in x for x in lines), lines
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(30)
        # The child lives on with a copy of every descriptor; the mutex is free all the same.
        a = make(path)
        a.add({"id": "after"})
        assert list(file_ids(path)) == ["after"]
        a.close()
    finally:
        for pid in (parent.pid, child):
            if pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        parent.wait(30)
        if parent.stdout is not None:
            parent.stdout.close()

"""The Node.js worker speaks the protocol: directly against a socketpair, and under
memwarden itself when the command line exists."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.workers.conftest import ROOT, Spawner, wait_until
from workers.protocol import Investigate, Limits, Pressure, SetLimits, Shutdown

NODE = shutil.which("node")
SCRIPT = str(ROOT / "scripts" / "node_worker.js")

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(NODE is None, reason="node is not installed"),
]


def test_node_worker_speaks_the_channel(spawn: Spawner) -> None:
    assert NODE is not None
    proc, sup = spawn([NODE, SCRIPT, "--stats-interval", "0.05"],
                      limits=Limits(max_objects=3000), stderr=subprocess.PIPE)
    assert sup is not None
    assert sup.expect("ready")["pid"] == proc.pid
    sup.expect("stats", lambda m: m["objects"] >= 1000 and m["rss"] > 0)
    sup.send_raw(b"garbage\n" + b"y" * 70_000 + b'\n{"type":"nope"}\n')
    sup.send(Pressure(level="high", rss=1))
    trimmed = sup.expect("trimmed")
    assert trimmed["dropped"] > 0 and trimmed["reason"] == "pressure high"
    sup.send(SetLimits(profile="critical", limits=Limits(max_objects=100)))
    sup.expect("stats", lambda m: 0 < m["objects"] <= 100)
    sup.send(Investigate(id="n1"))
    assert sup.expect("report", lambda m: m["id"] == "n1")["objects"] > 0
    sup.send(Shutdown(grace_s=1))
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert b"malformed" in err and b"overlong" in err and b"unknown message" in err


def test_node_worker_under_memwarden(spawn: Spawner, tmp_path: Path) -> None:
    if not (ROOT / "supervisor" / "cli.py").exists():
        pytest.skip("supervisor/cli.py is not there yet: memwarden run cannot start")
    assert NODE is not None
    snaps = tmp_path / "snaps"
    proc, _ = spawn([sys.executable, "-m", "supervisor", "run", "--snapshots", str(snaps),
                     "--", NODE, SCRIPT, "--stats-interval", "0.2"], channel=False,
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def ready_recorded() -> bool:
        for path in snaps.glob("*.jsonl*"):
            for line in path.read_text(errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("kind") == "event" and record.get("type") == "ready":
                    return True
        return False

    try:
        wait_until(lambda: ready_recorded() or proc.poll() is not None, 60,
                   "a ready event in the snapshots")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert ready_recorded(), f"no ready event; memwarden said: {err[-2000:]!r}"

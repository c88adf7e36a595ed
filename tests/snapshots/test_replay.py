"""`memwarden analyze --replay`: recorded samples through other thresholds."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import msgspec
import pytest

from snapshots import synthetic
from snapshots.schema import Event

ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    not (ROOT / "supervisor" / "core" / "pressure.py").exists(),
    reason="supervisor/core/pressure.py (the classifier replay runs) is not in this checkout yet")


def _climb(tmp_path: pathlib.Path) -> pathlib.Path:
    """100 MB -> 300 MB over 200 s, recorded under the defaults (HIGH from 200 MB)."""
    values = [100e6 + i * 1e6 for i in range(200)]
    records = [synthetic.header(), *synthetic.samples("w", values, spread=0.0)]
    records.append(Event(t=1.7e9 + 102, type="level", worker="w", generation=1, level="high",
                         previous="low", metric="rss", value=202e6, threshold=200e6))
    records.sort(key=lambda r: r.t)
    path = tmp_path / "climb.jsonl"
    synthetic.write(str(path), records)
    return path


def test_replay_shows_when_new_thresholds_would_fire(tmp_path: pathlib.Path) -> None:
    from supervisor.replay import replay
    from supervisor.settings import loading

    path = _climb(tmp_path)
    conf = tmp_path / "new.toml"
    conf.write_text('medium = "120MB"\nhigh = "150MB"\ncritical = "250MB"\n'
                    '[pressure]\nconfirm = 3\n')
    report = replay([str(path)], loading.load({}, environ={}, file=str(conf)), str(conf))
    (w,) = report.workers
    assert [f.level for f in w.replayed] == ["medium", "high", "critical"]
    # Sample i is 100 + i MB over the period ending at i: each line is crossed at the end of
    # a period, and confirmed within it; no burst: approximate.
    assert [f.t - 1.7e9 for f in w.replayed] == pytest.approx([20, 50, 150], abs=0.003)
    assert [f.metric for f in w.replayed] == ["memory"] * 3
    assert all(f.approximate for f in w.replayed)
    assert [f.level for f in w.recorded] == ["high"]


def test_replay_from_the_command_line(tmp_path: pathlib.Path) -> None:
    if not (ROOT / "supervisor" / "cli.py").exists():
        pytest.skip("supervisor/cli.py (the memwarden command) is not in this checkout yet")
    path = _climb(tmp_path)
    conf = tmp_path / "new.toml"
    conf.write_text('high = "150MB"\n')
    done = subprocess.run([sys.executable, "-m", "supervisor", "analyze", "--replay",
                           "--config", str(conf), str(path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "low->medium" in done.stdout and "medium->high" in done.stdout
    assert "first high: new ~+" in done.stdout and "+-" not in done.stdout
    done = subprocess.run([sys.executable, "-m", "supervisor", "analyze", "--replay",
                           "--config", str(conf), str(path), "--format", "json"], cwd=ROOT,
                          capture_output=True, timeout=60)
    assert msgspec.json.decode(done.stdout)["schema"] == "memwarden.replay/1"
    conf.write_text('high = "lots"\n')
    done = subprocess.run([sys.executable, "-m", "supervisor", "analyze", "--replay",
                           "--config", str(conf), str(path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "high" in done.stderr

"""Each `[[worker]]`'s own `medium`, `high` and `critical` decide for that worker alone: two
real workers step to about 120 MB under a global 500 MB HIGH; the one whose own line is
lower crosses it, the other crosses nothing."""

from __future__ import annotations

import signal
import sys

import pytest

from tests.conftest import wait_until
from tests.supervisor.test_replacement import events, records

MB = 1_000_000

# Holds 20 MiB, says nothing; after argv[1] seconds takes 95 MiB more at once (about 120 MB
# in all, a step: no growth to speak of); holds it until stopped.
STEPPER = r"""
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
held = [b"\x01" * (20 << 20)]
time.sleep(float(sys.argv[1]))
held.append(b"\x01" * (95 << 20))
while True:
    time.sleep(1)
"""

GLOBAL = 'medium = "400MB"\nhigh = "500MB"\ncritical = "1GB"\n'
#: Growth is not what these tests are about: only the sizes may raise a level.
NO_GROWTH = '[pressure]\ngrowth_medium = "10GB/s"\ngrowth_high = "20GB/s"\n'


def workers(own: str) -> str:
    """Two workers running STEPPER; `own` is the small one's threshold lines."""
    command = f'command = ["{sys.executable}", "-c", {_toml(STEPPER)}, "1"]\n'
    return (f'[[worker]]\nname = "small"\n{command}{own}\n'
            f'[[worker]]\nname = "big"\n{command}')


def run(memwarden, tmp_path, own: str, until_small: str, **match: object) -> list[dict]:
    """Run both workers until the small one's `until_small` event (with `match`) and five
    samples of the big one at 110 MB or more; stop memwarden; return every event."""
    snaps = tmp_path / "s"
    path = tmp_path / "memwarden.toml"
    path.write_text(GLOBAL + NO_GROWTH + workers(own))
    m = memwarden("run", "--config", str(path), "--snapshots", str(snaps), "--sample-period",
                  "0.2s", "--ready-after", "0.3s", "--grace", "2s", "--cooldown", "30s")
    try:
        wait_until(lambda: m.proc.poll() is not None or events(snaps, until_small,
                                                               worker="small", **match),
                   timeout=60,
                   what=f"{until_small} of the small worker")
        wait_until(lambda: sum(1 for s in records(snaps, "sample") if s["worker"] == "big"
                               and (s.get("memory") or 0) >= 110 * MB) >= 5, timeout=60,
                   what="the big worker held at about 120 MB")
        assert m.proc.poll() is None, m.stderr()
    finally:
        m.signal(signal.SIGTERM)
        m.wait(30)
    return records(snaps)


def _toml(text: str) -> str:
    """`text` as a TOML multi-line literal string."""
    return "'''" + text + "'''"


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_a_workers_own_high_replaces_it_and_no_other(memwarden, tmp_path) -> None:
    every = run(memwarden, tmp_path, 'medium = "40MB"\nhigh = "60MB"\n', "spawn")
    levels = [e for e in every if e["type"] == "level"]
    small = [e for e in levels if e["worker"] == "small" and e["level"] == "high"]
    assert small and small[0]["threshold"] == 60 * MB, levels
    assert not [e for e in levels if e["worker"] == "big"], levels
    assert not [e for e in every if e["type"] == "spawn" and e["worker"] == "big"]


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_a_workers_own_medium_tells_it_and_no_other(memwarden, tmp_path) -> None:
    every = run(memwarden, tmp_path, 'medium = "60MB"\n', "level", level="medium")
    levels = [e for e in every if e["type"] == "level"]
    small = [e for e in levels if e["worker"] == "small"]
    assert small[0]["level"] == "medium" and small[0]["threshold"] == 60 * MB, levels
    assert all(e["level"] == "medium" for e in small), levels
    assert not [e for e in levels if e["worker"] == "big"], levels


@pytest.mark.timeout(120)
@pytest.mark.slow
def test_a_workers_own_critical_is_its_own(memwarden, tmp_path) -> None:
    every = run(memwarden, tmp_path, 'medium = "30MB"\nhigh = "45MB"\ncritical = "60MB"\n',
                "level", level="critical")
    levels = [e for e in every if e["type"] == "level"]
    critical = [e for e in levels if e["worker"] == "small" and e["level"] == "critical"]
    assert critical and critical[0]["threshold"] == 60 * MB, levels
    assert not [e for e in levels if e["worker"] == "big"], levels

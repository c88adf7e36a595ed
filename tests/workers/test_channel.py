"""The channel: framing, tolerance of bad input, and live messages to a real worker."""

from __future__ import annotations

import sys

import pytest

from tests.workers.conftest import ROOT, Spawner
from workers.channel import Drops, LineReader, decode
from workers.protocol import (
    MAX_LINE,
    Investigate,
    Limits,
    Pressure,
    SetLimits,
    Shutdown,
)

WORKER = [sys.executable, str(ROOT / "tests" / "workers" / "channel_worker.py")]

pytestmark = pytest.mark.timeout(90)


def test_lines_split_across_reads_are_joined() -> None:
    reader = LineReader()
    assert reader.feed(b'{"type":"shut') == []
    assert reader.feed(b'down"}\n{"type"') == [b'{"type":"shutdown"}']
    assert reader.feed(b':"shutdown"}\n') == [b'{"type":"shutdown"}']


def test_an_overlong_line_is_discarded_up_to_its_newline() -> None:
    reader = LineReader(max_line=10)
    assert reader.feed(b"x" * 8) == []
    assert reader.feed(b"x" * 8) == []  # now over the limit: discarding
    assert reader.feed(b"yyy\nok\n") == [b"ok"]
    assert reader.feed(b"z" * 11 + b"\nfine\n") == [b"fine"]
    assert reader.discarded == 2


@pytest.mark.parametrize("line", [
    b"garbage", b"{}", b'{"type":"nope"}', b'{"type":"pressure","level":"extreme","rss":1}',
    b'{"type":"pressure"}', b"[1,2]", b"\xff\xfe",
])
def test_malformed_or_unknown_messages_decode_to_none(line: bytes) -> None:
    assert decode(line) is None


HOSTILE = [b'{"type":"shutdown","reason":"\xff\xfe"}', b"[" * 100_000, b'{"a":' * 50_000,
           b'{"type":"investigate","id":"' + b"\xc3" + b'"}']


@pytest.mark.parametrize("line", HOSTILE, ids=["bad-utf8", "deep-array", "deep-object",
                                               "truncated-utf8"])
def test_hostile_bytes_are_dropped_and_counted_never_raised(line: bytes) -> None:
    drops = Drops()
    assert decode(line, drops) is None
    assert drops.count == 1


def test_drops_are_logged_at_most_once_per_period(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    drops = Drops(clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="workers.channel"):
        for _ in range(1000):
            drops.add("bad", b"x")
        now[0] += 11.0
        drops.add("bad", b"y")
    assert drops.count == 1001
    assert [r.getMessage().split(" from")[0] for r in caplog.records] == [
        "channel: dropped 1 line(s)", "channel: dropped 1000 line(s)"]


def test_unknown_fields_are_ignored() -> None:
    msg = decode(b'{"type":"shutdown","grace_s":3,"future_field":1}')
    assert msg == Shutdown(grace_s=3)


def test_worker_sends_ready_and_stats(spawn: Spawner) -> None:
    _, sup = spawn(WORKER, limits=Limits(max_objects=300, max_history=50))
    assert sup is not None
    assert sup.expect("ready")["pid"] > 0
    stats = sup.expect("stats", lambda m: m.get("objects", 0) > 250)
    assert stats["objects"] <= 300
    assert 0 < stats["history"] <= 50
    assert stats["rss"] > 0 and stats["blocks"] > 0
    assert set(stats["stores"]) == {"objects", "history"}


def test_garbage_lines_are_ignored_and_the_worker_carries_on(spawn: Spawner) -> None:
    proc, sup = spawn(WORKER)
    assert sup is not None
    sup.expect("ready")
    sup.send_raw(b"garbage\n{\"type\":\"nope\"}\n" + b"x" * (MAX_LINE + 100) + b"\n\n")
    sup.send_raw(b'{"type":"pressure","level":"bogus","rss":5}\n')
    sup.send_raw(b"\n".join(HOSTILE) + b"\n")
    sup.send(Pressure(level="medium", rss=123))
    trimmed = sup.expect("trimmed")
    assert trimmed["dropped"] > 0 and trimmed["reason"] == "pressure medium"
    assert proc.poll() is None
    # garbage, nope, the long line, bogus, and the four hostile ones
    assert sup.expect("stats", lambda m: m.get("dropped", 0) >= 8)["dropped"] == 8


@pytest.mark.parametrize("mode", [[], ["--on-thread"]], ids=["checkpoint", "on-thread"])
def test_limits_change_live(spawn: Spawner, mode: list[str]) -> None:
    _, sup = spawn(WORKER + mode, limits=Limits(max_objects=1000, max_history=400))
    assert sup is not None
    sup.expect("ready")
    sup.expect("stats", lambda m: m["objects"] > 900)
    sup.send(SetLimits(profile="high", limits=Limits(max_objects=100, max_history=20)))
    # Stats taken before the change may still be in flight; wait for the new bound.
    sup.expect("stats", lambda m: 0 < m["objects"] <= 100 and m["history"] <= 20)
    sup.send(SetLimits(profile="normal", limits=Limits(max_objects=600)))
    sup.expect("stats", lambda m: 100 < m["objects"] <= 600)


def test_pressure_trims_more_at_higher_levels(spawn: Spawner) -> None:
    _, sup = spawn(WORKER, limits=Limits(max_objects=100_000, max_history=10))
    assert sup is not None
    sup.expect("ready")
    sup.expect("stats", lambda m: m["objects"] > 20_000)
    sup.send(Pressure(level="critical", rss=1, limit=2))
    trimmed = sup.expect("trimmed")
    assert trimmed["reason"] == "pressure critical"
    assert trimmed["rss_before"] > 0 and trimmed["rss_after"] > 0 and trimmed["ms"] >= 0


def test_investigate_is_answered_and_rate_limited(spawn: Spawner) -> None:
    _, sup = spawn(WORKER)
    assert sup is not None
    sup.expect("ready")
    sup.send(Investigate(id="a", top=5))
    report = sup.expect("report", lambda m: m["id"] == "a")
    assert not report.get("error")
    assert report["ms"] > 0 and report["objects"] > 0 and report["objects_per_mb"] > 0
    assert 0 < len(report["growth"]) <= 5
    assert report["largest"][0]["len"] >= report["largest"][-1]["len"]
    sup.send(Investigate(id="b"))
    assert "rate limited" in sup.expect("report", lambda m: m["id"] == "b")["error"]


def test_shutdown_ends_the_loop(spawn: Spawner) -> None:
    import subprocess

    proc, sup = spawn(WORKER, stdout=subprocess.PIPE)
    assert sup is not None
    sup.expect("ready")
    sup.send(Shutdown(grace_s=1, reason="retired"))
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0 and b"stopped after" in out


def test_bad_environment_falls_back_to_standalone(spawn: Spawner) -> None:
    import subprocess

    code = ("import workers; c = workers.connect(); "
            "print(c.supervised, c.limits.max_objects, c.generation)")
    proc, _ = spawn.python(code, channel=False, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env={"MEMWARDEN_FD": "99", "MEMWARDEN_LIMITS": "{bad",
                                "MEMWARDEN_GENERATION": "x"})
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert out.split() == [b"False", b"2000", b"0"]
    assert b"MEMWARDEN_FD" in err and b"MEMWARDEN_LIMITS" in err


def test_the_worked_example_in_the_protocol_document_decodes() -> None:
    import msgspec

    from workers.protocol import FromWorker, ToWorker

    text = (ROOT / "docs" / "protocol.md").read_text()
    example = text.split("## A worked exchange", 1)[1].split("```")[1]
    to_worker = msgspec.json.Decoder(ToWorker)
    from_worker = msgspec.json.Decoder(FromWorker)
    seen = set()
    for line in example.strip().splitlines():
        direction, _, payload = line.partition(" ")
        msg = (to_worker if direction == ">" else from_worker).decode(payload)
        seen.add(type(msg).__name__)
    assert seen == {"Ready", "Stats", "Pressure", "Trimmed", "Investigate", "Report",
                    "SetLimits", "Shutdown"}


GC_WORKER = """
import gc, workers
c = workers.connect()
print(gc.get_threshold(), flush=True)
c.ready()
c.shutdown_requested.wait(60)
print(gc.get_threshold(), flush=True)
"""


def test_gc_thresholds_follow_the_profile(spawn: Spawner) -> None:
    import subprocess

    proc, sup = spawn.python(GC_WORKER, limits=Limits(gc_threshold0=12345, gc_threshold2=50),
                             stdout=subprocess.PIPE)
    assert sup is not None
    sup.expect("ready")
    sup.send(SetLimits(profile="high", limits=Limits(gc_threshold0=0, gc_threshold1=20)))
    sup.send(Shutdown())
    out, _ = proc.communicate(timeout=30)
    assert out.decode().splitlines() == ["(12345, 10, 50)", "(700, 20, 10)"]


def test_standalone_the_gc_thresholds_are_left_alone(spawn: Spawner) -> None:
    import subprocess

    proc, _ = spawn.python("import gc, workers; workers.connect(); print(gc.get_threshold())",
                           channel=False, stdout=subprocess.PIPE,
                           limits=Limits(gc_threshold0=12345))
    out, _ = proc.communicate(timeout=30)
    assert out.strip() == b"(700, 10, 10)"

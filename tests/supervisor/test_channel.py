"""The supervisor's end of the channel: framing and decoding, bad input dropped and counted."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys

import pytest

from supervisor.loop.channel import LineReader, Throttle
from tests.conftest import wait_until
from workers import protocol


def test_messages_split_across_reads_and_bad_lines_dropped() -> None:
    reader = LineReader("w#1", max_line=64)
    assert reader.messages(b'{"type":"rea') == []
    got = reader.messages(b'dy","pid":7}\nnot json\n\n{"type":"nonsense"}\n'
                          + b"x" * 100 + b'\n{"type":"stats","objects":3}\n')
    assert got == [protocol.Ready(pid=7), protocol.Stats(objects=3)]
    assert reader.errors == 3  # not json, unknown type, too long
    assert reader.discarded == 1


def test_an_oversized_line_is_dropped_up_to_its_newline() -> None:
    reader = LineReader("w#1", max_line=16)
    assert reader.messages(b"y" * 40) == []
    assert reader.messages(b"y" * 40 + b'\n{"type":"ready"}\n') == [protocol.Ready()]
    assert reader.discarded == 1


# -- hostile input: contained, counted, logged once per interval, escaped ---------------------

def test_lines_that_break_decoders_are_dropped_not_raised() -> None:
    reader = LineReader("w#1")
    hostile = [b'{"type":"\xff"}', b'{"type":"ready","x":' + b"[" * 5000 + b"]" * 5000 + b"}",
               b"[" * 100000, b'{"type":"ready","pid":1e999}', b"\x00\x1b[2J", b"not json"]
    got = reader.messages(b"\n".join([*hostile, b'{"type":"ready"}', b""]))
    assert got == [protocol.Ready()]
    assert reader.errors == len(hostile)


def test_drops_are_logged_once_per_interval_with_control_characters_escaped(caplog) -> None:
    reader = LineReader("w#1")
    with caplog.at_level(logging.WARNING, logger="memwarden"):
        for _ in range(200):
            reader.messages(b'not json \x1b[31m\nforged\rmemwarden: [x] ready\n')
        reader.dropped.flush()
    lines = [r.getMessage() for r in caplog.records]
    assert reader.errors == 400
    assert len(lines) == 2  # the first drop at once, the 399 others in one line at the end
    assert "399 more bad lines (400 in all)" in lines[1]
    assert all("\x1b" not in line and "\r" not in line and "\n" not in line for line in lines)
    assert "\\x1b[31m" in lines[0]


def test_escape_keeps_a_log_line_one_line() -> None:
    assert protocol.escape(b"a\nb\x1b\xff\\") == "a\\x0ab\\x1b\\xff\\\\"
    assert protocol.escape("x" * 10, 4) == "xxxx..."
    assert protocol.escape("\u2028\x85") == "\\u2028\\x85"


def test_the_throttle_pauses_a_channel_beyond_its_rate() -> None:
    throttle = Throttle("w#1", rate=100.0, burst=100.0)
    assert throttle.spend(100) == 0.0
    pause = throttle.spend(50)
    assert 0.45 < pause <= 0.5  # 50 lines over budget at 100 a second


# A worker that writes every hostile line of the list above on its channel, then floods it
# with valid messages; memwarden must stay up, keep answering, and see it ready.
HOSTILE_WORKER = r"""
import os, socket, sys
s = socket.socket(fileno=int(os.environ["MEMWARDEN_FD"]))
s.sendall(b'{"type":"\xff"}\n' + b'{"type":"ready","x":' + b"[" * 5000 + b"]" * 5000 + b"}\n"
          + b"not json \x1b[2J\n" * 2000 + b"y" * 200000 + b"\n" + b'{"type":"ready"}\n')
stats = b'{"type":"stats","objects":1}\n' * 1000
while True:
    s.sendall(stats)
"""


@pytest.mark.slow
def test_a_hostile_worker_cannot_take_memwarden_down(memwarden, tmp_path) -> None:
    sock = tmp_path / "ctl.sock"
    m = memwarden("run", "--snapshots", "", "--control", str(sock), "--ready-after", "20s",
                  "--", sys.executable, "-c", HOSTILE_WORKER)
    wait_until(lambda: "ready (said ready)" in m.stderr(), what="the worker said ready")
    wait_until(lambda: "reading it more slowly" in m.stderr(), what="the flood throttled")
    r = subprocess.run([sys.executable, "-m", "supervisor", "status", "--control", str(sock)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "worker" in r.stdout
    m.signal(signal.SIGTERM)
    assert m.wait() == 128 + signal.SIGTERM  # the worker died of the TERM passed on
    err = m.stderr()
    assert "Traceback" not in err and "\x1b" not in err
    assert len([line for line in err.splitlines() if "dropped" in line]) <= 3


# -- figures a machine cannot hold, text that would forge a line (issue 21) --------------------

BIG = "9" * 400
FORGED = "x\\nmemwarden: [worker gen 9 pid 1] exited\\u0000\\u001b[2J\\u001b]0;pwned\\u0007"
ABSURD = [
    f'{{"type":"trimmed","dropped":1,"rss_before":{BIG},"rss_after":1,"ms":1}}',
    f'{{"type":"trimmed","dropped":1,"rss_before":1,"rss_after":1,"ms":{BIG}}}',
    f'{{"type":"stats","objects":{2**70}}}',
    f'{{"type":"stats","stores":{{"a":{2**60}}}}}',
    '{"type":"report","id":"r","shapes":[{"count":"many","bytes":1}]}',
    '{"type":"report","id":"r","shapes":[{"count":1,"bytes":[1,2]}]}',
    f'{{"type":"report","id":"r","shapes":[{{"count":1,"bytes":{BIG}}}]}}',
    f'{{"type":"report","id":"r","arrays":[{{"len":1,"grew":{"9" * 5000}}}]}}',
    '{"type":"report","id":"r","arrays":[{"len":1,"where":["a"]}]}',
    f'{{"type":"report","id":"r","growth":{{"dict":{BIG}}}}}',
    '{"type":"report","id":"r","objects_per_mb":1e300}',
]


def test_figures_no_machine_holds_are_dropped_and_counted() -> None:
    reader = LineReader("w#1")
    got = reader.messages("\n".join([*ABSURD, '{"type":"stats","objects":5}', ""]).encode())
    assert got == [protocol.Stats(objects=5)]
    assert reader.errors == len(ABSURD)


def test_a_report_is_printed_with_its_text_escaped() -> None:
    from types import SimpleNamespace

    from supervisor.faces.requests import describe_report

    line = ('{"type":"report","id":"r","finding":"' + FORGED + '","shapes":[{"count":3,'
            '"bytes":10,"store":"' + FORGED + '","shape":"s"}],"arrays":[{"len":2,"type":"'
            + FORGED + '","where":"w","grew":1}],"growth":{"' + FORGED + '":3},'
            '"duplicates":["' + FORGED + '"],"store_growth":{"' + FORGED + '":-1}}')
    (report,) = LineReader("w#1").messages(line.encode() + b"\n")
    text = describe_report(SimpleNamespace(number=1, worker="w", pid=2), report)  # type: ignore[arg-type]
    assert "\x1b" not in text and "\x00" not in text and "\x07" not in text
    assert not any(row.startswith("memwarden:") for row in text.splitlines())
    assert text.count("\\x1b[2J") == 6


# Writes the absurd lines and forging messages, then 3,000 valid `trimmed` ones, then says ready.
FORGER = r"""
import json, os, socket, sys
s = socket.socket(fileno=int(os.environ["MEMWARDEN_FD"]))
with open(sys.argv[1]) as f:  # not in argv: the snapshot header records the command
    absurd, forged = json.load(f)
s.sendall("\n".join(absurd).encode() + b"\n")
forged = json.loads('"' + forged + '"')
s.sendall(json.dumps({"type": "report", "id": forged, "finding": forged}).encode() + b"\n")
s.sendall(json.dumps({"type": "report", "id": "r2", "error": forged}).encode() + b"\n")
s.sendall(json.dumps({"type": "trimmed", "dropped": 1, "rss_before": 2, "rss_after": 1,
                      "ms": 1, "reason": forged}).encode() + b"\n")
line = b'{"type":"trimmed","dropped":1,"rss_before":2000000,"rss_after":1000000,"ms":1}\n'
s.sendall(line * 3000 + b'{"type":"ready"}\n')
s.recv(1)
"""


@pytest.mark.slow
def test_a_worker_cannot_forge_a_line_or_flood_the_log(memwarden, tmp_path) -> None:
    import json

    snaps, lines = tmp_path / "snaps", tmp_path / "lines.json"
    lines.write_text(json.dumps([ABSURD, FORGED]))
    m = memwarden("run", "--snapshots", str(snaps), "--control", "", "--ready-after", "20s",
                  "--", sys.executable, "-c", FORGER, str(lines))
    wait_until(lambda: "ready (said ready)" in m.stderr(), what="the worker said ready")
    m.signal(signal.SIGTERM)
    m.wait()
    err = m.stderr()
    assert "Traceback" not in err
    assert not any(c in err for c in "\x00\x1b\x07\r")
    assert not any(line.startswith("memwarden: [worker gen 9") for line in err.splitlines())
    assert err.count("] trimmed ") <= 12, err[-2000:]  # 3,001 trims: one quota's worth
    assert "not logged: more than 10 in 10s" in err or err.count("] trimmed ") <= 10
    assert "dropped" in err  # the absurd lines, counted
    recorded = b"".join(p.read_bytes() for p in snaps.rglob("*.jsonl*") if p.is_file())
    assert str(2**70).encode() not in recorded and BIG.encode() not in recorded
    assert recorded.count(b'"type":"trimmed"') >= 3000  # every trim recorded, few logged

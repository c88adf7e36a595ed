"""The supervisor's end of the channel: framing and decoding, bad input dropped and counted."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys

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

"""The supervisor's end of the channel: framing and decoding, bad input dropped and counted."""

from __future__ import annotations

from supervisor.channel import LineReader
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

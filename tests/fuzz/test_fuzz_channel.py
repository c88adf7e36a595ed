"""Fuzz the supervisor's end of the worker channel: no exception escapes, bad lines counted."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from supervisor.loop import channel
from tests.fuzz.conftest import COUNTS, fuzz
from workers import protocol

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=20)
TYPES = st.sampled_from(["ready", "stats", "trimmed", "report", "pressure", "", "\xff"])


@st.composite
def lines(draw) -> bytes:  # type: ignore[no-untyped-def]
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:  # an object with a known or odd type and any fields
        fields = draw(st.dictionaries(st.text(max_size=12), JSON, max_size=5))
        fields["type"] = draw(TYPES)
        return json.dumps(fields, allow_nan=True).encode()
    if kind == 2:  # deep nesting, anywhere
        depth = draw(st.integers(1, 3000))
        return b'{"type":"ready","x":' + b"[" * depth + b"]" * depth + b"}"
    if kind == 3:  # bytes that are not UTF-8 inside a string
        return b'{"type":"stats","stores":{"' + draw(st.binary(max_size=20)) + b'":1}}'
    return b"y" * draw(st.integers(0, 3000))  # long lines, around the test's max_line


@fuzz
@given(st.lists(lines(), max_size=20), st.lists(st.integers(0, 5000), max_size=6),
       st.integers(64, 2048))
def test_no_line_raises_and_every_bad_one_is_counted(chunks, cuts, max_line) -> None:
    COUNTS["channel decoder"] += 1
    data = b"\n".join(chunks) + b"\n"
    reader = channel.LineReader("fuzz#1", max_line=max_line)
    got = []
    start = 0
    for cut in [*sorted(c for c in cuts if c < len(data)), len(data)]:
        got += reader.messages(data[start:cut])
        start = cut
    assert all(isinstance(m, protocol.FromWorker) for m in got)
    assert len(got) + reader.errors <= reader.lines_seen <= data.count(b"\n") + reader.discarded


@fuzz
@given(st.lists(st.sampled_from([protocol.Ready(pid=3), protocol.Stats(objects=2),
                                 protocol.Trimmed(dropped=1, rss_before=5, rss_after=3, ms=1.0),
                                 protocol.Report(id="x", growth={"dict": 3})]), max_size=10),
       st.lists(st.integers(0, 2000), max_size=8))
def test_valid_messages_survive_any_split(messages, cuts) -> None:
    COUNTS["channel framing"] += 1
    data = b"".join(channel._encoder.encode(m) + b"\n" for m in messages)
    reader = channel.LineReader("fuzz#1")
    got = []
    start = 0
    for cut in [*sorted(c for c in cuts if c < len(data)), len(data)]:
        got += reader.messages(data[start:cut])
        start = cut
    assert got == messages and reader.errors == 0

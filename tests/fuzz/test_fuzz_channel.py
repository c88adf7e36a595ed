"""Fuzz the supervisor's end of the worker channel: no exception escapes, bad lines counted."""

from __future__ import annotations

import json

import msgspec
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


# -- figures and text from a worker: bounded where they enter, escaped where printed ----------

FIGURE = st.one_of(st.integers(-10, 10**6), st.integers(), st.just(2**70), st.just(10**400),
                   st.floats(), st.text(max_size=5), st.lists(st.integers(), max_size=2),
                   st.none(), st.booleans())
NASTY = st.one_of(st.text(max_size=30), st.sampled_from(
    ["a\nmemwarden: [w gen 9 pid 1] exited", "\x00\x1b[2J", "\x1b]0;x\x07", "\u2028", "\\"]))


@st.composite
def worker_messages(draw) -> bytes:  # type: ignore[no-untyped-def]
    kind = draw(st.sampled_from(["trimmed", "stats", "report"]))
    if kind == "trimmed":
        fields = {k: draw(FIGURE) for k in ("dropped", "rss_before", "rss_after", "ms")}
        fields["reason"] = draw(NASTY)
    elif kind == "stats":
        fields = {k: draw(FIGURE) for k in draw(st.lists(st.sampled_from(
            ["objects", "history", "rss", "gc_pause_ms", "dropped"]), max_size=3))}
        fields["stores"] = {draw(NASTY): draw(FIGURE)}
    else:
        entry = st.fixed_dictionaries({}, optional={
            "count": FIGURE, "bytes": FIGURE, "len": FIGURE, "grew": FIGURE, "store": NASTY,
            "shape": NASTY, "where": NASTY, "type": st.one_of(NASTY, FIGURE)})
        fields = {"id": draw(NASTY), "finding": draw(NASTY), "error": draw(NASTY),
                  "shapes": draw(st.lists(entry, max_size=3)),
                  "arrays": draw(st.lists(entry, max_size=3)),
                  "growth": {draw(NASTY): draw(FIGURE)}, "objects": draw(FIGURE),
                  "duplicates": draw(st.lists(NASTY, max_size=2))}
    fields["type"] = kind
    try:
        return json.dumps(fields).encode()
    except ValueError:  # an integer past 4300 digits: Python's own limit
        return b"{}"


@fuzz
@given(st.lists(worker_messages(), min_size=1, max_size=5))
def test_what_a_worker_sends_is_bounded_and_printed_escaped(lines) -> None:
    from types import SimpleNamespace

    from supervisor.core.units import format_size
    from supervisor.faces.requests import describe_report

    COUNTS["channel figures and text"] += 1
    reader = channel.LineReader("fuzz#1")
    got = reader.messages(b"\n".join(lines) + b"\n")
    assert len(got) + reader.errors == len(lines)
    for message in got:
        figures = [v for v in msgspec.structs.asdict(message).values()
                   if isinstance(v, int | float) and not isinstance(v, bool)]
        assert all(-protocol.MAX_FIGURE <= v <= protocol.MAX_FIGURE for v in figures)
        if isinstance(message, protocol.Trimmed):
            text = format_size(message.rss_before - message.rss_after)
        elif isinstance(message, protocol.Report):
            text = describe_report(SimpleNamespace(number=1, worker="w", pid=1), message)  # type: ignore[arg-type]
        else:
            continue
        assert not any(c in text for c in "\x00\x1b\x07\r\u2028")
        assert not any(row.startswith("memwarden:") for row in text.splitlines())

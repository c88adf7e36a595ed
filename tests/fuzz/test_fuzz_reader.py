"""Fuzz the snapshot reader: any file content, plain or gzip, whole or cut, is read without an
exception escaping (only a format of unknown major version is refused, by design)."""

from __future__ import annotations

import gzip
import os
import tempfile

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from snapshots import reader, synthetic
from snapshots.schema import Event, Sample
from tests.fuzz.conftest import COUNTS, fuzz

HEADER = msgspec.json.encode(synthetic.header("fuzz"))
VALID = [msgspec.json.encode(Sample(t=1.0 + i, worker="w", generation=1, pid=1, rss=i,
                                    rss_min=i, rss_max=i, rss_mean=float(i))) for i in range(3)]
VALID.append(msgspec.json.encode(Event(t=2.0, type="start", worker="w", generation=1)))


@st.composite
def snapshot_lines(draw) -> bytes:  # type: ignore[no-untyped-def]
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.sampled_from(VALID))
    if kind == 1:
        line = draw(st.sampled_from(VALID))
        return line[: draw(st.integers(0, len(line)))]
    if kind == 2:
        return draw(st.binary(max_size=100))
    if kind == 3:
        depth = draw(st.integers(1, 3000))
        return b'{"kind":"sample","x":' + b"[" * depth + b"]" * depth + b"}"
    if kind == 4:
        return b'{"kind":"event","t":1,"type":"x","worker":"' + draw(st.binary(max_size=10)) \
            + b'"}'
    return b'{"kind":"header","version":' + draw(st.sampled_from([b'"1.0"', b'"9.1"', b"null",
                                                                    b"[]", b'"\xff"'])) + b"}"


@fuzz
@given(st.booleans(), st.lists(snapshot_lines(), max_size=15), st.booleans(),
       st.integers(0, 400), st.booleans())
def test_no_file_content_raises(with_header, lines, compressed, cut, cut_it) -> None:
    COUNTS["snapshot reader"] += 1
    data = b"\n".join(([HEADER] if with_header else []) + lines)
    if compressed:
        data = gzip.compress(data)
    if cut_it:
        data = data[:cut]
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "f.jsonl.gz" if compressed else "f.jsonl")
        with open(path, "wb") as f:
            f.write(data)
        stats = reader.ReadStats()
        try:
            for src in reader.sources([d]):
                for sf in src.files:
                    for chunk in reader.iter_chunks(sf, stats, bursts=True):
                        assert isinstance(chunk, list)
        except reader.UnsupportedVersion as e:
            assert "\n" not in str(e)
        assert stats.records >= 0 and all("\n" not in p for p in stats.problems)

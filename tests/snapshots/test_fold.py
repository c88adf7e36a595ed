"""The compiled fold (`snapshots/_fold.c`) returns exactly what the pure-Python one
(`snapshots/fold.py`) returns, value for value and type for type, on ordinary records and
on the odd ones (a figure missing, out of order, implausible, too large for a double); and
an analysis gives the same report with it as without it."""

from __future__ import annotations

import pathlib
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapshots import fold, synthetic
from snapshots.analysis import analyze
from snapshots.plausible import MAX_BYTES, MAX_T
from snapshots.schema import Event, Header
from snapshots.series import ANALYSIS_TYPES, SampleView
from snapshots.windows import HEAD, LEVELS
from tests.snapshots import generators

_fold: Any = getattr(fold, "_fold", None)
needs_build = pytest.mark.skipif(
    _fold is None, reason="the compiled fold (snapshots._fold) is not built here")

_T0 = 1.7e9
_PLAIN = st.integers(0, 300_000_000)
#: Memory figures around the edges that matter: zero, the plausible limit, beyond a double.
_ODD = st.sampled_from([0, 1, int(MAX_BYTES), int(MAX_BYTES) + 1, 2**53 + 1, 2**64, 2**70,
                        -5, -(2**60)])


@st.composite
def _samples(draw: Any) -> list[SampleView]:
    """Samples of one generation: a second apart or with gaps and steps back; with or
    without `memory` (or some without); in about half the groups odd figures (zero, beyond
    a double, implausible times and sizes) now and then."""
    n = draw(st.integers(1, 60))
    t = _T0 + draw(st.floats(0, 1000, allow_nan=False))
    with_memory = draw(st.sampled_from(["all", "none", "some"]))
    odd = draw(st.booleans())

    def size(plain: st.SearchStrategy[int] = _PLAIN) -> int:
        return draw(st.one_of(plain, _ODD) if odd and draw(st.integers(0, 9)) == 0 else plain)

    out = []
    for _ in range(n):
        t += draw(st.one_of(st.just(1.0), st.floats(-3, 40, allow_nan=False),
                            st.sampled_from([0.0, 0.5, -0.0, 2.0000001])))
        when = t if not odd or draw(st.integers(0, 19)) else draw(
            st.sampled_from([-1.0, MAX_T, 0.0, MAX_T - 1]))
        rss = size(st.integers(0, 500_000_000))
        memory = {"all": int(rss * draw(st.floats(0.5, 1.01))) if rss < 2**53 else size(),
                  "none": None,
                  "some": draw(st.one_of(st.none(), st.just(size())))}[with_memory]
        out.append(SampleView(
            t=when, worker="w", generation=1, rss_min=size(), rss_max=size(),
            rss_mean=draw(st.one_of(st.floats(-1e3, 3e8, allow_nan=False),
                                    st.sampled_from([0.0, -0.0, 1e300]) if odd
                                    else st.just(1e8))),
            rss=rss, memory=memory, level=draw(st.sampled_from(LEVELS)),
            slope=draw(st.one_of(st.floats(-1e7, 1e7, allow_nan=False),
                                 st.sampled_from([0.0, -0.0]))),
            limit=draw(st.one_of(st.none(), st.integers(0, 2**40))),
            dropped=draw(st.integers(0, 3))))
    return out


def _same_scan(compiled: Any, reference: fold.Scan | None) -> None:
    if reference is None:
        assert compiled is None
        return
    found = fold.Scan._make(compiled)
    for name in fold.Scan._fields:
        a, b = getattr(found, name), getattr(reference, name)
        # repr tells an int from a float and -0.0 from 0.0; sets compare as sets
        assert (a == b) if name == "kinds" else repr(a) == repr(b), name


@needs_build
@settings(max_examples=300, deadline=None)
@given(group=_samples(), origin=st.sampled_from([_T0, 0.0, _T0 + 0.5, 1_700_000_000]),
       width=st.sampled_from([1.0, 0.7, 5, 60.0, 1e-3]),
       since=st.sampled_from([_T0, _T0 + 6.0, 0.0, float("inf"), _T0 + 200]),
       cap=st.sampled_from([2.0, 2, 0.5]))
def test_scan_compiled_is_the_reference(group, origin, width, since, cap) -> None:
    compiled = _fold.scan(group, origin, width, since, cap, HEAD)
    if compiled is NotImplemented:  # only integers beyond a double; checked below
        assert any(abs(v) > 2**53 for s in group for v in (s.memory or 0, s.rss))
        return
    _same_scan(compiled, fold._scan(group, origin, width, since, cap, HEAD))


@needs_build
def test_scan_declines_what_it_cannot_compute_as_python_does() -> None:
    sample = SampleView(t=_T0, worker="w", generation=1, rss_min=1, rss_max=2, rss_mean=1.5)
    assert _fold.scan([sample, Event(t=_T0, type="x")], 0.0, 1.0, 0.0, 2.0,
                      HEAD) is NotImplemented
    assert _fold.scan([SampleView(t=_T0, worker="w", generation=1, rss_min=2**1100,
                                  rss_max=2, rss_mean=1.5)], 0.0, 1.0, 0.0, 2.0,
                      HEAD) is NotImplemented
    assert _fold.scan((sample,), 0.0, 1.0, 0.0, 2.0, HEAD) is NotImplemented
    # what fold.scan then returns is the pure-Python result
    assert fold.scan((sample,), 0.0, 1.0, 0.0, 2.0, HEAD) == fold._scan(
        (sample,), 0.0, 1.0, 0.0, 2.0, HEAD)


@needs_build
@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(
    st.builds(lambda w, g, limit, dropped: SampleView(
        t=_T0, worker=w, generation=g, rss_min=1, rss_max=2, rss_mean=1.5, limit=limit,
        dropped=dropped),
        st.sampled_from([f"w{k}" for k in range(20)] + ["a", "b"]),
        st.sampled_from([1, 2, 300, 301]), st.one_of(st.none(), st.integers(0, 3)),
        st.sampled_from([0, 0, 0, 1, 7, 2**70])),
    st.builds(lambda: Event(t=_T0, type="level")),
    st.builds(lambda: Header(t=_T0))), max_size=80))
def test_split_compiled_is_the_reference(records) -> None:
    others, groups = _fold.split(records, SampleView)
    ref_others, ref_groups = fold._split(records, SampleView)
    assert [id(r) for r in others] == [id(r) for r in ref_others]
    assert list(groups) == list(ref_groups)
    for name, (samples, generation, limit, dropped) in groups.items():
        ref = ref_groups[name]
        assert [id(s) for s in samples] == [id(s) for s in ref.samples]
        assert (generation, limit, dropped) == (ref.generation, ref.limit, ref.dropped)


@needs_build
def test_records_as_read_take_the_compiled_path(tmp_path: pathlib.Path) -> None:
    """The records the reader decodes are what the compiled fold takes (else the analysis
    would silently run the slower pure-Python passes)."""
    records, _ = generators.replacement_with_burst(3)
    path = tmp_path / "r.jsonl"
    synthetic.write(str(path), records)
    decoded = msgspec.json.Decoder(ANALYSIS_TYPES).decode_lines(path.read_bytes())
    others, groups = _fold.split(decoded, SampleView)
    assert groups and others
    for samples, generation, _, _ in groups.values():
        if generation is not None:
            assert _fold.scan(samples, _T0, 1.0, _T0, 2.0, HEAD) is not NotImplemented


@needs_build
@pytest.mark.parametrize("generator", [generators.replacement_with_burst,
                                       generators.gappy_leak, generators.generations_at_high,
                                       generators.gave_up])
def test_an_analysis_reports_the_same_without_the_build(tmp_path, monkeypatch,
                                                        generator) -> None:
    records, _ = generator(5)
    path = tmp_path / "r.jsonl"
    synthetic.write(str(path), records)

    def report() -> str:
        done = analyze([str(path)])
        done.report.generated = 0.0
        return repr(done.report)

    compiled = report()
    monkeypatch.setattr(fold, "_fold", None)
    assert report() == compiled

"""The one grammar of sizes, durations and rates: exact values, every documented unit and
separator, and a round trip (what memwarden prints of a setting parses back to it)."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from supervisor.core import units
from supervisor.core.units import (
    MAX_BYTES,
    MAX_RATE,
    MAX_SECONDS,
    Size,
    parse_duration,
    parse_rate,
    parse_size,
    spell_duration,
    spell_rate,
)

#: The units the README documents (and their value), in the case it writes them and others.
SIZE_UNITS = {"B": 1, "k": 1024, "kB": 1000, "KiB": 1024, "Ki": 1024, "M": 2**20,
              "MB": 10**6, "MiB": 2**20, "Mi": 2**20, "G": 2**30, "GB": 10**9, "GiB": 2**30,
              "Gi": 2**30, "T": 2**40, "TB": 10**12, "TiB": 2**40, "Ti": 2**40}
DURATION_UNITS = {"ns": Fraction(1, 10**9), "us": Fraction(1, 10**6), "µs": Fraction(1, 10**6),
                  "ms": Fraction(1, 1000), "s": Fraction(1), "": Fraction(1),
                  "m": Fraction(60), "min": Fraction(60), "h": Fraction(3600),
                  "d": Fraction(86400)}
SPACES = st.sampled_from(["", " ", "  "])
#: A decimal as the grammar takes it: `12`, `1.5`, `.25`, `3.`.
NUMBERS = st.builds(lambda whole, frac, form: {0: whole, 1: f"{whole}.{frac}",
                                                2: f".{frac}", 3: f"{whole}."}[form],
                    st.integers(0, 10**6).map(str), st.integers(0, 10**6).map(str),
                    st.integers(0, 3))
grammar = settings(max_examples=300, deadline=None, derandomize=True, database=None)


@pytest.mark.parametrize(("text", "bytes_per_s"), [
    ("1MB/2s", 500_000.0), ("10MB/10s", 1_000_000.0), ("5MB/s", 5e6), ("300MB/min", 5e6),
    ("1MiB / 500ms", 2 * 2**20), ("5MB", 5e6), ("1.5GB/1.5h", 1e9 / 3600), ("1kB/.5s", 2000.0),
])
def test_rates_divide_by_the_whole_period(text: str, bytes_per_s: float) -> None:
    assert parse_rate(text) == bytes_per_s


@pytest.mark.parametrize("text", ["5MB/0s", "5MB/0.0min", "5MB/", "5MB/2", "80%/s", "off/s",
                                  "5/s", "5MB/s/s", "5MB/-1s", "5MB/1e3s", "5MB/s\n"])
def test_rates_without_a_period_above_0_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="expected a rate"):
        parse_rate(text)


def test_100us_is_100us() -> None:
    """`100 * 1e-6` is 9.999999999999999e-05: below the interval's 100us floor."""
    assert parse_duration("100us") == 100e-6 and parse_duration("250us") == 250e-6
    assert spell_duration(100e-6) == "100us"


@pytest.mark.parametrize("text", ["5MB\n", "5MB\n5", "1e3MB", "-5MB", "5 M B", "５MB"])
def test_sizes_are_one_line_of_the_grammar(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@grammar
@given(NUMBERS, st.sampled_from(sorted(SIZE_UNITS)), SPACES, st.booleans())
def test_every_size_unit_and_separator(number: str, unit: str, space: str, lower: bool) -> None:
    exact = Fraction(Decimal(number)) * SIZE_UNITS[unit]
    text = f"{number}{space}{unit.lower() if lower else unit}"
    if exact > MAX_BYTES:
        with pytest.raises(ValueError):
            parse_size(text)
    else:
        assert parse_size(text) == Size(bytes=int(exact))


@grammar
@given(NUMBERS, st.sampled_from(sorted(DURATION_UNITS)), SPACES)
def test_every_duration_unit_and_separator(number: str, unit: str, space: str) -> None:
    exact = Fraction(Decimal(number)) * DURATION_UNITS[unit]
    text = f"{number}{space if unit else ''}{unit}"
    if exact > MAX_SECONDS:
        with pytest.raises(ValueError):
            parse_duration(text)
    else:
        assert parse_duration(text) == float(exact)


@grammar
@given(NUMBERS, st.sampled_from(sorted(SIZE_UNITS)), st.one_of(st.none(), NUMBERS),
       st.sampled_from(sorted(u for u in DURATION_UNITS if u)), SPACES, SPACES)
def test_every_rate_unit_and_separator(number: str, size_unit: str, per: str | None,
                                       time_unit: str, space: str, around: str) -> None:
    amount = Fraction(Decimal(number)) * SIZE_UNITS[size_unit]
    period = (1 if per is None else Fraction(Decimal(per))) * DURATION_UNITS[time_unit]
    text = f"{number}{space}{size_unit}{around}/{around}{per or ''}{space}{time_unit}"
    if amount > MAX_BYTES or period == 0 or amount / period > MAX_RATE:
        with pytest.raises(ValueError):
            parse_rate(text)
    else:
        assert parse_rate(text) == float(amount / period)


@grammar
@given(st.one_of(st.integers(0, MAX_BYTES).map(lambda n: Size(bytes=n)),
                 st.floats(0, 100, exclude_min=True).map(lambda p: Size(percent=p)),
                 st.just(Size())))
def test_a_printed_size_parses_back(size: Size) -> None:
    assert parse_size(str(size)) == size


@grammar
@given(st.floats(0, MAX_SECONDS))
def test_a_printed_duration_parses_back(seconds: float) -> None:
    text = spell_duration(seconds)
    assert parse_duration(text) == seconds and "e" not in text.rstrip("ms").replace("min", "")


@grammar
@given(st.floats(0, MAX_RATE))
def test_a_printed_rate_parses_back(rate: float) -> None:
    assert parse_rate(spell_rate(rate)) == rate


def test_the_printed_forms_are_the_ones_people_write() -> None:
    assert [spell_duration(s) for s in (1e-3, 1.5, 60.0, 300.0, 86400.0)] == [
        "1ms", "1.5s", "1min", "5min", "1d"]
    assert [spell_rate(r) for r in (5e6, 5e5, 2**20, 0.0)] == [
        "5MB/s", "500kB/s", "1MiB/s", "0B/s"]
    assert str(Size(percent=1e-5)) == "0.00001%"
    assert units.format_size(1.5e6) == "1.5 MB"


@pytest.mark.parametrize("figure", [10**400, -(10**400), float("nan"), float("inf"), 2**70])
def test_a_size_no_machine_holds_is_not_printed(figure: float) -> None:
    """A worker's 400-digit `rss_before` raised OverflowError in the log line."""
    assert units.format_size(figure) == "out of range"
